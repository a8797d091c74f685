/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk bitmap: add, remove, clear, enable, disable or merge persistent
 * dirty bitmaps, the actions applied in command-line order (qemu-img bitmap).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "img.h"

enum { BM_ADD, BM_REMOVE, BM_CLEAR, BM_ENABLE, BM_DISABLE, BM_MERGE };

typedef struct {
    int act;
    const char *src; /* --merge SOURCE */
} bm_action;

int cmd_bitmap(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"add", no_argument, NULL, OPT_ADD},
        {"remove", no_argument, NULL, OPT_REMOVE},
        {"clear", no_argument, NULL, OPT_CLEAR},
        {"enable", no_argument, NULL, OPT_ENABLE},
        {"disable", no_argument, NULL, OPT_DISABLE},
        {"merge", required_argument, NULL, OPT_MERGE},
        {"granularity", required_argument, NULL, 'g'},
        {"source-file", required_argument, NULL, 'b'},
        {"source-format", required_argument, NULL, 'F'},
        {NULL, 0, NULL, 0},
    };
    const char *fmt = NULL, *src_filename = NULL, *src_fmt = NULL;
    bool image_opts = false, add = false, merge = false;
    uint64_t granularity = 0;
    bm_action *actions = NULL;
    size_t nact = 0;
    int c, ret = 1;
    vd_image *img = NULL, *src = NULL;

    img_common co = {0};
    while ((c = getopt_long(argc, argv, ":b:f:F:g:h", longopts, NULL)) != -1) {
        int act = -1;
        switch (img_common_option(&co, "bitmap", c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            free(actions);
            return 0;
        case IMG_OPT_FAIL:
            goto out;
        }
        switch (c) {
        case 'b':
            src_filename = optarg;
            break;
        case 'F':
            src_fmt = optarg;
            break;
        case 'g':
            if (!tool_parse_size("granularity", optarg, &granularity)) {
                goto out;
            }
            break;
        case OPT_ADD:
            act = BM_ADD;
            add = true;
            break;
        case OPT_REMOVE:
            act = BM_REMOVE;
            break;
        case OPT_CLEAR:
            act = BM_CLEAR;
            break;
        case OPT_ENABLE:
            act = BM_ENABLE;
            break;
        case OPT_DISABLE:
            act = BM_DISABLE;
            break;
        case OPT_MERGE:
            act = BM_MERGE;
            merge = true;
            break;
        default:
            free(actions);
            return img_bad_option(c, argv);
        }
        if (act >= 0) {
            bm_action *na = realloc(actions, (nact + 1) * sizeof(*actions));
            if (!na) {
                tool_error("Out of memory");
                goto out;
            }
            actions = na;
            actions[nact].act = act;
            actions[nact].src = act == BM_MERGE ? optarg : NULL;
            nact++;
        }
    }
    if (co.fmt) {
        fmt = co.fmt;
    }
    image_opts = co.image_opts;

    if (!nact) {
        tool_error("Need at least one of --add, --remove, --clear, --enable, --disable, or "
                   "--merge");
        goto out;
    }
    if (granularity && !add) {
        tool_error("granularity only supported with --add");
        goto out;
    }
    if (granularity > UINT32_MAX) {
        tool_error("Invalid granularity specified. Must be between 0 and %u.", UINT32_MAX);
        goto out;
    }
    if (src_fmt && !src_filename) {
        tool_error("-F only supported with -b");
        goto out;
    }
    if (src_filename && !merge) {
        tool_error("Merge bitmap source file only supported with --merge");
        goto out;
    }
    if (optind != argc - 2) {
        tool_error("Expecting filename and bitmap name");
        goto out;
    }
    const char *filename = argv[optind];
    const char *bitmap = argv[optind + 1];

    /* Bitmaps live in this image itself: its backing chain is not needed. */
    img = tool_open(filename, fmt, image_opts, NULL, VD_OPEN_RDWR | VD_OPEN_NO_BACKING, false);
    if (!img) {
        goto out;
    }
    if (src_filename) {
        src = tool_open(src_filename, src_fmt, false, NULL, VD_OPEN_NO_BACKING, false);
        if (!src) {
            goto out;
        }
    }

    for (size_t i = 0; i < nact; i++) {
        const char *op = "";
        int r = 0;
        switch (actions[i].act) {
        case BM_ADD:
            op = "add";
            r = vd_bitmap_add(img, bitmap, (uint32_t)granularity, false);
            break;
        case BM_REMOVE:
            op = "remove";
            r = vd_bitmap_remove(img, bitmap);
            break;
        case BM_CLEAR:
            op = "clear";
            r = vd_bitmap_clear(img, bitmap);
            break;
        case BM_ENABLE:
            op = "enable";
            r = vd_bitmap_enable(img, bitmap, true);
            break;
        case BM_DISABLE:
            op = "disable";
            r = vd_bitmap_enable(img, bitmap, false);
            break;
        case BM_MERGE:
            op = "merge";
            r = vd_bitmap_merge(img, bitmap, src ? src : img, actions[i].src);
            break;
        }
        if (r < 0) {
            tool_error_lib("Operation %s on bitmap %s failed", op, bitmap);
            goto out;
        }
    }
    if (vd_flush(img) < 0) {
        tool_error_lib("Could not flush '%s'", filename);
        goto out;
    }
    ret = 0;
out:
    if (src) {
        vd_close(src);
    }
    if (img) {
        vd_close(img);
    }
    free(actions);
    return ret;
}
