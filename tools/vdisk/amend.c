/* SPDX-License-Identifier: BSD-3-Clause */
/* vdisk amend: change format options of an existing image (qemu-img amend). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "img.h"

static int amend_help(const char *fmt)
{
    return img_print_amend_opts_help(fmt);
}

static bool str_differs(const char *a, const char *b)
{
    return (a == NULL) != (b == NULL) || (a && strcmp(a, b));
}

/*
 * vdisk's qcow2 amend rewrites the backing file reference; qemu-img 7.2
 * refuses any backing_file/backing_fmt that is not exactly the image's own
 * (both compared, so backing_file alone fails when the image names a
 * format).  Under QEMU's name the tool refuses as qemu-img does, before
 * anything is changed (qemu-img has already applied an upgrade, a refcount
 * width or data file change given in the same -o by then).
 */
static bool qemu_refuses_backing(vd_image *img, const vd_opts *opts)
{
    const char *bf = vd_opts_get(opts, "backing_file");
    const char *bfmt = vd_opts_get(opts, "backing_fmt");
    const char *fmt = vd_image_format(img);
    if (!tool_is_qemu_name() || (!bf && !bfmt) || !fmt || strcmp(fmt, "qcow2")) {
        return false;
    }
    vd_info *info = NULL;
    if (vd_get_info(img, &info) < 0) {
        return false;
    }
    bool refuse = str_differs(bf, info->backing_filename) ||
                  str_differs(bfmt, info->backing_format);
    vd_info_free(info);
    return refuse;
}

int cmd_amend(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"force", no_argument, NULL, OPT_FORCE},
        {NULL, 0, NULL, 0},
    };
    const char *fmt = NULL, *cache = NULL;
    char *options = NULL;
    bool quiet = false, progress = false, image_opts = false, force = false;
    int c, ret = 1;
    vd_image *img = NULL;
    vd_opts *opts = NULL, *extra = NULL;

    img_common co = {0};
    while ((c = getopt_long(argc, argv, ":ho:f:t:pq", longopts, NULL)) != -1) {
        switch (img_common_option(&co, "amend", c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            free(options);
            return 0;
        case IMG_OPT_FAIL:
            goto out;
        }
        switch (c) {
        case 'o':
            if (!img_add_options(&options, optarg)) {
                goto out;
            }
            break;
        case 't':
            cache = optarg;
            break;
        case 'p':
            progress = true;
            break;
        case OPT_FORCE:
            force = true;
            break;
        default:
            free(options);
            return img_bad_option(c, argv);
        }
    }
    if (co.fmt) {
        fmt = co.fmt;
    }
    quiet = co.quiet;
    image_opts = co.image_opts;
    if (!options) {
        return img_usage_error("Must specify options (-o)");
    }
    if (quiet) {
        progress = false;
    }
    const char *filename = optind == argc - 1 ? argv[argc - 1] : NULL;
    if (fmt && img_has_help_option(options)) {
        ret = amend_help(fmt);
        goto out;
    }
    if (!filename) {
        tool_error("Expecting one image file name");
        goto out;
    }
    extra = vd_opts_new();
    if (!extra) {
        tool_error("Out of memory");
        goto out;
    }
    bool writethrough = false;
    if (cache && !tool_parse_cache(cache, extra, &writethrough)) {
        goto out;
    }
    img = tool_open(filename, fmt, image_opts, vd_opts_count(extra) ? extra : NULL,
                    VD_OPEN_RDWR, quiet);
    if (!img) {
        goto out;
    }
    if (img_has_help_option(options)) {
        ret = amend_help(vd_image_format(img));
        goto out;
    }
    opts = vd_opts_new();
    if (!opts || vd_opts_parse(opts, options, NULL) < 0) {
        tool_error_lib("Invalid options '%s'", options);
        goto out;
    }

    tool_progress_init(progress);
    bool refused = qemu_refuses_backing(img, opts);
    int r = refused ? -1 : vd_amend(img, opts, force, tool_progress_cb, NULL);
    if (tool_is_qemu_name()) {
        /* qemu-img prints 100 % after the driver's own last report, which
         * is 100 % too (iotest 061), whatever the result */
        tool_progress_print(100.0);
    } else if (r == 0) {
        tool_progress_update(100.0);
    }
    tool_progress_end();
    if (refused) {
        tool_error("Cannot amend the backing file\nYou can use 'qemu-img rebase' instead.");
        goto out;
    }
    if (r < 0) {
        /* QEMU's words: the format's own refusal as it is; the prefix only
         * for a format that cannot amend at all (iotest 061) */
        const vd_driver_info *di = vd_driver_get_info(vd_image_format(img));
        if (vd_get_errno() == ENOTSUP && (!di || !di->can_amend)) {
            tool_error("Format driver '%s' does not support option amendment",
                       vd_image_format(img));
        } else {
            tool_error_last();
        }
        goto out;
    }
    if (vd_flush(img) < 0) {
        tool_error_lib("Could not flush '%s'", filename);
        goto out;
    }
    ret = 0;
out:
    if (img) {
        vd_close(img);
    }
    vd_opts_free(opts);
    vd_opts_free(extra);
    free(options);
    return ret;
}
