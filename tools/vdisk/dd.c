/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk dd: copy part of an image into a new image, with dd(1) operands
 * (bs, count, skip, if, of) as qemu-img dd.  The output size follows
 * qemu-img 7.2 exactly: the input size, or count*bs when that is smaller,
 * minus skip*bs (so count and skip together give count-skip blocks), and an
 * empty output when skip is past the end.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmds.h"
#include "img.h"
#include "tool.h"

#define DD_MAX_CHUNK ((uint64_t)4 << 20) /* memory bound per request */

int cmd_dd(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, 0, 'h'},
        {"object", required_argument, 0, OPT_OBJECT},
        {"image-opts", no_argument, 0, OPT_IMAGE_OPTS},
        {"force-share", no_argument, 0, 'U'},
        {0, 0, 0, 0},
    };
    const char *fmt = NULL, *out_fmt = "raw", *in_name = NULL, *out_name = NULL;
    bool image_opts = false, force_share = false;
    bool has_count = false, has_skip = false;
    uint64_t bs = 512, count = 0, skip = 0;
    vd_image *in = NULL, *out = NULL;
    vd_opts *create_opts = NULL;
    uint8_t *buf = NULL;
    int ret = 1;

    optind = 0;
    opterr = 0;
    img_common co = {0};
    for (;;) {
        int c = getopt_long(argc, argv, ":hf:O:U", long_options, NULL);
        if (c == -1) {
            break;
        }
        switch (img_common_option(&co, NULL, c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_FAIL:
            return 1;
        }
        switch (c) {
        case ':':
            tool_error("missing argument for option '%s'\nTry '%s --help' for more information",
                       argv[optind - 1], tool_progname());
            return 1;
        case '?':
            tool_error("unrecognized option '%s'\nTry '%s --help' for more information",
                       argv[optind - 1], tool_progname());
            return 1;
        case 'h':
            printf("usage: %s dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] "
                   "[count=blocks] [skip=blocks] if=input of=output\n",
                   tool_progname());
            return 0;
        case 'O':
            out_fmt = optarg;
            break;
        }
    }
    if (co.fmt) {
        fmt = co.fmt;
    }
    force_share = co.force_share;
    image_opts = co.image_opts;

    for (int i = optind; i < argc; i++) {
        const char *arg = argv[i];
        const char *eq = strchr(arg, '=');
        size_t klen = eq ? (size_t)(eq - arg) : 0;
        if (!eq) {
            tool_error("unrecognized operand %s", arg);
            return 1;
        }
        const char *val = eq + 1;
        if (klen == 2 && !strncmp(arg, "bs", 2)) {
            if (!tool_parse_size_range("bs", val, 1, INT32_MAX, &bs)) {
                return 1;
            }
        } else if (klen == 5 && !strncmp(arg, "count", 5)) {
            if (!tool_parse_size_range("count", val, 0, INT64_MAX, &count)) {
                return 1;
            }
            has_count = true;
        } else if (klen == 4 && !strncmp(arg, "skip", 4)) {
            if (!tool_parse_size_range("skip", val, 0, INT64_MAX, &skip)) {
                return 1;
            }
            has_skip = true;
        } else if (klen == 2 && !strncmp(arg, "if", 2)) {
            in_name = val;
        } else if (klen == 2 && !strncmp(arg, "of", 2)) {
            out_name = val;
        } else {
            tool_error("unrecognized operand %.*s", (int)klen, arg);
            return 1;
        }
    }
    if (!in_name || !out_name) {
        tool_error("Must specify both input and output files");
        return 1;
    }

    in =
        tool_open(in_name, fmt, image_opts, NULL,
                  force_share ? VD_OPEN_FORCE_SHARE : VD_OPEN_NO_SHARE, false);
    if (!in) {
        goto out;
    }
    const char *type = vd_driver_type(out_fmt);
    if (!type) {
        tool_error("Unknown file format");
        goto out;
    }

    int64_t len = vd_get_length(in);
    if (len < 0) {
        tool_error("Failed to get size for '%s'", in_name);
        goto out;
    }
    uint64_t size = (uint64_t)len;
    if (has_count && count <= INT64_MAX / bs && count * bs < size) {
        size = count * bs;
    }
    /* skip past the end (or overflowing): an empty output, like dd(1) */
    bool skip_past = has_skip && (skip > INT64_MAX / bs || size < skip * bs);
    uint64_t out_size = skip_past ? 0 : size - skip * bs;

    create_opts = vd_opts_new();
    char sizebuf[32];
    snprintf(sizebuf, sizeof(sizebuf), "%" PRIu64, out_size);
    if (!create_opts || vd_opts_set(create_opts, "size", sizebuf) < 0) {
        tool_error("Out of memory");
        goto out;
    }
    /* the input is opened without sharing writes: creating over it fails
     * on its lock, as in QEMU */
    if (vd_create(out_name, out_fmt, create_opts) < 0) {
        tool_error_lib("%s: error while creating output image", out_name);
        goto out;
    }
    out = tool_open(out_name, out_fmt, false, NULL, VD_OPEN_RDWR, false);
    if (!out) {
        goto out;
    }

    uint64_t in_pos;
    if (skip_past) {
        tool_error("%s: cannot skip to specified offset", in_name);
        in_pos = size;
    } else {
        in_pos = skip * bs;
    }

    size_t bufsize = (size_t)(bs < DD_MAX_CHUNK ? bs : DD_MAX_CHUNK);
    if (posix_memalign((void **)&buf, 4096, bufsize)) {
        tool_error("Out of memory");
        goto out;
    }
    /* block by block as qemu-img, each block in bounded pieces */
    for (uint64_t out_pos = 0; in_pos < size;) {
        uint64_t block = in_pos + bs > size ? size - in_pos : bs;
        while (block > 0) {
            size_t n = (size_t)(block < bufsize ? block : bufsize);
            if (vd_pread(in, buf, n, in_pos) < 0) {
                tool_error_lib("error while reading from input image file");
                goto out;
            }
            in_pos += n;
            if (vd_pwrite(out, buf, n, out_pos, 0) < 0) {
                tool_error_lib("error while writing to output image file");
                goto out;
            }
            out_pos += n;
            block -= n;
        }
    }
    ret = 0;

out:
    free(buf);
    if (out) {
        if (vd_flush(out) < 0 && ret == 0) {
            tool_error_lib("error while flushing '%s'", out_name);
            ret = 1;
        }
        vd_close(out);
    }
    if (in) {
        vd_close(in);
    }
    vd_opts_free(create_opts);
    return ret;
}
