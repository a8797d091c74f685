/* SPDX-License-Identifier: BSD-3-Clause */
/* vdisk snapshot: list, create, apply or delete internal snapshots. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "img.h"

enum { SNAP_NONE, SNAP_LIST, SNAP_APPLY, SNAP_CREATE, SNAP_DELETE };

int cmd_snapshot(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    int action = SNAP_NONE;
    const char *name = NULL;
    bool quiet = false, image_opts = false, force_share = false;
    unsigned flags = VD_OPEN_RDWR;
    int c;

    img_common co = {0};
    while ((c = getopt_long(argc, argv, ":la:c:d:hqU", longopts, NULL)) != -1) {
        switch (img_common_option(&co, "snapshot", c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            return 0;
        case IMG_OPT_FAIL:
            return 1;
        }
        switch (c) {
        case 'l':
        case 'a':
        case 'c':
        case 'd':
            if (action != SNAP_NONE) {
                return img_usage_error("Cannot mix '-l', '-a', '-c', '-d'");
            }
            action = c == 'l' ? SNAP_LIST
                     : c == 'a' ? SNAP_APPLY
                     : c == 'c' ? SNAP_CREATE
                                : SNAP_DELETE;
            if (c == 'l') {
                flags &= ~(unsigned)VD_OPEN_RDWR; /* listing needs no write access */
            } else {
                name = optarg;
            }
            break;
        default:
            return img_bad_option(c, argv);
        }
    }
    quiet = co.quiet;
    force_share = co.force_share;
    image_opts = co.image_opts;
    if (optind != argc - 1) {
        return img_usage_error("Expecting one image file name");
    }
    const char *filename = argv[optind];
    if (force_share) {
        if (flags & VD_OPEN_RDWR) {
            tool_error("force-share=on can only be used with read-only images");
            return 1;
        }
        flags |= VD_OPEN_FORCE_SHARE;
    }

    vd_image *img = tool_open(filename, NULL, image_opts, NULL, flags, quiet);
    if (!img) {
        return 1;
    }
    int ret = 0;
    switch (action) {
    case SNAP_LIST: {
        vd_snapshot_info *list = NULL;
        size_t n = 0;
        if (vd_snapshot_list(img, &list, &n) < 0) {
            /* like qemu-img: an image that cannot have snapshots has none */
            if (vd_get_errno() != ENOTSUP) {
                tool_error_lib("Could not list the snapshots of '%s'", filename);
                ret = 1;
            }
            break;
        }
        img_print_snapshots(list, n);
        vd_snapshot_list_free(list, n);
        break;
    }
    case SNAP_CREATE:
        if (vd_snapshot_create(img, name) < 0) {
            if (tool_is_qemu_name()) {
                /* qemu-img names only the errno (iotests 080, 112, 244) */
                int e = vd_get_errno() ? vd_get_errno() : EIO;
                tool_error("Could not create snapshot '%s': %d (%s)", name, -e, strerror(e));
            } else {
                tool_error_lib("Could not create snapshot '%s'", name);
            }
            ret = 1;
        }
        break;
    case SNAP_APPLY:
        if (vd_snapshot_apply(img, name) < 0) {
            tool_error_lib("Could not apply snapshot '%s'", name);
            ret = 1;
        }
        break;
    case SNAP_DELETE:
        if (vd_snapshot_delete(img, name) < 0) {
            tool_error_lib("Could not delete snapshot '%s'", name);
            ret = 1;
        }
        break;
    default:
        break;
    }
    if (!ret && (flags & VD_OPEN_RDWR) && vd_flush(img) < 0) {
        tool_error_lib("Could not flush '%s'", filename);
        ret = 1;
    }
    vd_close(img);
    return ret;
}
