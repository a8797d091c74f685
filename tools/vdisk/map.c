/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk map: the allocation of an image through its backing chain, as
 * qemu-img map prints it (same run merging, same JSON line layout).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "img.h"

typedef struct {
    int64_t start;
    int64_t length;
    bool data, zero, present, has_offset;
    int64_t offset;
    int64_t depth;
    char *filename; /* NULL when none */
} map_entry;

static bool entry_mergeable(const map_entry *cur, const map_entry *next)
{
    if (cur->length == 0) {
        return false;
    }
    if (cur->zero != next->zero || cur->data != next->data || cur->depth != next->depth ||
        cur->present != next->present || !cur->filename != !next->filename ||
        cur->has_offset != next->has_offset) {
        return false;
    }
    if (cur->filename && strcmp(cur->filename, next->filename)) {
        return false;
    }
    if (cur->has_offset && cur->offset + cur->length != next->offset) {
        return false;
    }
    return true;
}

/* Print cur; next (may be NULL) is the following entry, which the human
 * form may relax to merge more. */
static int dump_entry(enum img_output ofmt, const map_entry *cur, map_entry *next)
{
    if (ofmt == IMG_OUTPUT_HUMAN) {
        if (cur->data && !cur->has_offset) {
            tool_error("File contains external, encrypted or compressed clusters.");
            return -1;
        }
        if (cur->data && !cur->zero) {
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", (uint64_t)cur->start,
                   (uint64_t)cur->length, cur->has_offset ? (uint64_t)cur->offset : 0,
                   cur->filename ? cur->filename : "");
        }
        /* the human form does not tell zero from unallocated: merge them */
        if (next && (!next->data || next->zero)) {
            next->data = false;
            next->zero = true;
        }
        return 0;
    }
    printf("{ \"start\": %" PRId64 ", \"length\": %" PRId64 ", \"depth\": %" PRId64
           ", \"present\": %s, \"zero\": %s, \"data\": %s",
           cur->start, cur->length, cur->depth, cur->present ? "true" : "false",
           cur->zero ? "true" : "false", cur->data ? "true" : "false");
    if (cur->has_offset) {
        printf(", \"offset\": %" PRId64, cur->offset);
    }
    putchar('}');
    if (next) {
        puts(",");
    }
    return 0;
}

static int get_entry(vd_image *img, int64_t offset, int64_t len, map_entry *e)
{
    vd_extent ext;
    if (vd_block_status(img, (uint64_t)offset, (uint64_t)len, true, &ext) < 0) {
        return -1;
    }
    if (ext.length == 0) {
        /* a library answer that would never advance */
        ext.length = (uint64_t)len;
    }
    free(e->filename);
    /*
     * The library counts an extent no layer defines as one past the layer
     * where the walk stopped (the chain length); qemu-img map prints the
     * index of that last layer.
     */
    int depth = ext.depth;
    if (!(ext.flags & VD_BS_ALLOCATED) && depth > 0) {
        depth--;
    }
    bool has_offset = (ext.flags & VD_BS_OFFSET_VALID) != 0;
    *e = (map_entry){
        .start = offset,
        .length = (int64_t)ext.length,
        .data = (ext.flags & VD_BS_DATA) != 0,
        .zero = (ext.flags & VD_BS_ZERO) != 0,
        .present = (ext.flags & VD_BS_ALLOCATED) != 0,
        .has_offset = has_offset,
        .offset = has_offset ? (int64_t)ext.offset : 0,
        .depth = depth,
        .filename = has_offset && ext.file ? strdup(ext.file) : NULL,
    };
    return 0;
}

int cmd_map(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {"start-offset", required_argument, NULL, OPT_START_OFFSET},
        {"max-length", required_argument, NULL, OPT_MAX_LENGTH},
        {NULL, 0, NULL, 0},
    };
    const char *fmt = NULL, *output = NULL;
    bool image_opts = false, force_share = false;
    int64_t start_offset = 0, max_length = -1;
    uint64_t v;
    int c;

    img_common co = {0};
    while ((c = getopt_long(argc, argv, ":f:hU", longopts, NULL)) != -1) {
        switch (img_common_option(&co, "map", c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            return 0;
        case IMG_OPT_FAIL:
            return 1;
        }
        switch (c) {
        case OPT_START_OFFSET:
            if (!tool_parse_size("start offset", optarg, &v)) {
                return 1;
            }
            start_offset = (int64_t)v;
            break;
        case OPT_MAX_LENGTH:
            if (!tool_parse_size("max length", optarg, &v)) {
                return 1;
            }
            max_length = (int64_t)v;
            break;
        default:
            return img_bad_option(c, argv);
        }
    }
    if (co.fmt) {
        fmt = co.fmt;
    }
    force_share = co.force_share;
    if (co.output) {
        output = co.output;
    }
    image_opts = co.image_opts;
    if (optind != argc - 1) {
        return img_usage_error("Expecting one image file name");
    }
    enum img_output ofmt = IMG_OUTPUT_HUMAN;
    if (output && !img_parse_output(output, &ofmt)) {
        return 1;
    }

    vd_image *img = tool_open(argv[optind], fmt, image_opts, NULL,
                              force_share ? VD_OPEN_FORCE_SHARE : 0, false);
    if (!img) {
        return 1;
    }
    int ret = 1;
    int64_t length = vd_get_length(img);
    if (length < 0) {
        tool_error_lib("Could not get the size of '%s'", argv[optind]);
        goto out_close;
    }
    if (max_length != -1 && start_offset <= length && max_length < length - start_offset) {
        length = start_offset + max_length;
    }

    if (ofmt == IMG_OUTPUT_HUMAN) {
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    } else {
        printf("[");
    }

    map_entry cur = {.start = start_offset}, next = {0};
    while (cur.start + cur.length < length) {
        int64_t offset = cur.start + cur.length;
        if (get_entry(img, offset, length - offset, &next) < 0) {
            tool_error_lib("Could not read file metadata");
            goto out;
        }
        if (entry_mergeable(&cur, &next)) {
            cur.length += next.length;
            continue;
        }
        if (cur.length > 0 && dump_entry(ofmt, &cur, &next) < 0) {
            goto out;
        }
        free(cur.filename);
        cur = next;
        next.filename = NULL;
    }
    if (dump_entry(ofmt, &cur, NULL) < 0) {
        goto out;
    }
    if (ofmt == IMG_OUTPUT_JSON) {
        puts("]");
    }
    ret = 0;
out:
    free(cur.filename);
    free(next.filename);
    fflush(stdout);
out_close:
    vd_close(img);
    return ret;
}
