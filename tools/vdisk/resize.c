/* SPDX-License-Identifier: BSD-3-Clause */
/* vdisk resize: change the virtual size ([+|-]size), as qemu-img resize. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "img.h"

int cmd_resize(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"preallocation", required_argument, NULL, OPT_PREALLOCATION},
        {"shrink", no_argument, NULL, OPT_SHRINK},
        {NULL, 0, NULL, 0},
    };
    const char *fmt = NULL;
    bool quiet = false, image_opts = false, shrink = false;
    int prealloc = VD_PREALLOC_OFF;
    int c;

    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            img_command_help("resize");
            return 0;
        }
    }
    /* The size is taken off the end first so that "-5G" is not an option. */
    if (argc < 3) {
        return img_usage_error("Not enough arguments");
    }
    const char *size_arg = argv[--argc];

    img_common co = {0};
    while ((c = getopt_long(argc, argv, ":f:hq", longopts, NULL)) != -1) {
        switch (img_common_option(&co, "resize", c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            return 0;
        case IMG_OPT_FAIL:
            return 1;
        }
        switch (c) {
        case OPT_PREALLOCATION:
            prealloc = vd_prealloc_parse(optarg);
            if (prealloc < 0) {
                tool_error("Invalid preallocation mode '%s'", optarg);
                return 1;
            }
            break;
        case OPT_SHRINK:
            shrink = true;
            break;
        default:
            return img_bad_option(c, argv);
        }
    }
    if (co.fmt) {
        fmt = co.fmt;
    }
    quiet = co.quiet;
    image_opts = co.image_opts;
    if (optind != argc - 1) {
        return img_usage_error("Expecting image file name and size");
    }
    const char *filename = argv[optind];

    int relative = 0;
    if (size_arg[0] == '+') {
        relative = 1;
        size_arg++;
    } else if (size_arg[0] == '-') {
        relative = -1;
        size_arg++;
    }
    uint64_t n;
    if (!size_arg[0] || vd_parse_size(size_arg, &n) < 0) {
        if (size_arg[0] && vd_get_errno() == ERANGE) {
            tool_error("Value '%s' is out of range for parameter 'size'", size_arg);
        } else {
            tool_size_param_error(NULL, "size", size_arg);
        }
        return 1;
    }

    vd_image *img = tool_open(filename, fmt, image_opts, NULL, VD_OPEN_RDWR | VD_OPEN_RESIZE,
                              quiet);
    if (!img) {
        return 1;
    }
    int ret = 1;
    int64_t current = vd_get_length(img);
    if (current < 0) {
        tool_error_lib("Failed to inquire current image length");
        goto out;
    }

    /* Work in signed 128 bits so "+8E" or "-9E" cannot wrap around. */
    __int128 total;
    if (relative) {
        total = (__int128)current + (__int128)relative * (__int128)n;
    } else {
        total = (__int128)n;
    }
    if (total <= 0 || total > INT64_MAX) {
        tool_error(total <= 0 ? "New image size must be positive"
                              : "New image size must be less than 8 EiB");
        goto out;
    }
    if (total <= current && prealloc != VD_PREALLOC_OFF) {
        tool_error("Preallocation can only be used for growing images");
        goto out;
    }
    if (total < current && !shrink) {
        tool_error("Use the --shrink option to perform a shrink operation.");
        tool_warn("Shrinking an image will delete all data beyond the shrunken image's end. "
                  "Before performing such an operation, make sure there is no important data "
                  "there.");
        goto out;
    }
    if (vd_truncate(img, (uint64_t)total, shrink, (vd_prealloc)prealloc) < 0) {
        tool_error_last();
        goto out;
    }
    if (!quiet) {
        printf("Image resized.\n");
    }
    ret = 0;
out:
    vd_close(img);
    return ret;
}
