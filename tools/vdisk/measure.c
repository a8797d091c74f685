/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk measure: space a new image needs, for a given size or to hold a
 * copy of an existing image (qemu-img measure).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "img.h"
#include "qjson.h"

int cmd_measure(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"size", required_argument, NULL, OPT_SIZE},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    const char *fmt = NULL, *out_fmt = "raw", *output = NULL, *snapshot = NULL;
    char *options = NULL;
    bool image_opts = false, force_share = false, have_size = false;
    uint64_t img_size = 0;
    int c, ret = 1;
    vd_image *in = NULL, *snap = NULL;
    vd_opts *opts = NULL;

    img_common co = {0};
    while ((c = getopt_long(argc, argv, ":hf:O:o:l:U", longopts, NULL)) != -1) {
        switch (img_common_option(&co, "measure", c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            free(options);
            return 0;
        case IMG_OPT_FAIL:
            goto out;
        }
        switch (c) {
        case 'O':
            out_fmt = optarg;
            break;
        case 'o':
            if (!img_add_options(&options, optarg)) {
                goto out;
            }
            break;
        case 'l':
            snapshot = optarg;
            break;
        case OPT_SIZE:
            if (!tool_parse_size("image size", optarg, &img_size)) {
                goto out;
            }
            have_size = true;
            break;
        default:
            free(options);
            return img_bad_option(c, argv);
        }
    }
    if (co.fmt) {
        fmt = co.fmt;
    }
    force_share = co.force_share;
    image_opts = co.image_opts;
    if (co.output) {
        output = co.output;
    }
    enum img_output ofmt = IMG_OUTPUT_HUMAN;
    if (output && !img_parse_output(output, &ofmt)) {
        goto out;
    }
    const char *filename = NULL;
    if (argc - optind > 1) {
        tool_error("At most one filename argument is allowed.");
        goto out;
    } else if (argc - optind == 1) {
        filename = argv[optind];
    }
    if (!filename && (image_opts || fmt || snapshot)) {
        tool_error("--image-opts, -f, and -l require a filename argument.");
        goto out;
    }
    if (filename && have_size) {
        tool_error("--size N cannot be used together with a filename.");
        goto out;
    }
    if (!filename && !have_size) {
        tool_error("Either --size N or one filename must be specified.");
        goto out;
    }
    if (img_has_help_option(options)) {
        ret = img_print_create_opts_help(out_fmt, NULL, NULL);
        goto out;
    }

    if (filename) {
        in = tool_open(filename, fmt, image_opts, NULL, force_share ? VD_OPEN_FORCE_SHARE : 0,
                       false);
        if (!in) {
            goto out;
        }
        if (snapshot) {
            /* "snapshot.id=ID,snapshot.name=NAME", or an id or a name */
            const char *sid = NULL, *sname = NULL;
            vd_opts *so = NULL;
            if (!strncmp(snapshot, "snapshot.", 9)) {
                so = vd_opts_new();
                if (!so || vd_opts_parse(so, snapshot, NULL) < 0) {
                    tool_error_lib("Failed in parsing snapshot param '%s'", snapshot);
                    vd_opts_free(so);
                    goto out;
                }
                sid = vd_opts_get(so, "snapshot.id");
                sname = vd_opts_get(so, "snapshot.name");
                snap = vd_snapshot_open(in, sname, sid);
            } else {
                snap = vd_snapshot_open(in, NULL, snapshot);
                if (!snap) {
                    snap = vd_snapshot_open(in, snapshot, NULL);
                }
            }
            vd_opts_free(so);
            if (!snap) {
                tool_error_lib("Failed to load snapshot");
                goto out;
            }
        }
    }

    if (!vd_driver_type(out_fmt)) {
        tool_error("Unknown file format '%s'", out_fmt);
        goto out;
    }
    opts = vd_opts_new();
    if (!opts) {
        tool_error("Out of memory");
        goto out;
    }
    if (options && vd_opts_parse(opts, options, NULL) < 0) {
        tool_error_lib("Invalid options for file format '%s'", out_fmt);
        goto out;
    }
    /* the options a new image of out_fmt in a plain file could take */
    const vd_opt_desc *table = vd_driver_create_opts(out_fmt, "measure.img");
    if (!table) {
        tool_error_lib("Format driver '%s' does not support image creation", out_fmt);
        goto out;
    }
    for (size_t i = 0; i < vd_opts_count(opts); i++) {
        const char *key = vd_opts_key(opts, i);
        bool known = false;
        for (const vd_opt_desc *d = table; d->name && !known; d++) {
            known = !strcmp(d->name, key);
        }
        if (!known) {
            tool_error("Invalid options for file format '%s': Invalid parameter '%s'", out_fmt,
                       key);
            goto out;
        }
    }
    if (have_size) {
        char num[32];
        snprintf(num, sizeof(num), "%" PRIu64, img_size);
        vd_opts_set(opts, "size", num);
    }

    vd_image *src = snap ? snap : in;
    vd_measure_result mr = {0};
    if (vd_measure_get(out_fmt, opts, src, &mr) < 0) {
        tool_error_last();
        goto out;
    }
    /* QEMU reports a bitmaps size when the output format stores them and
     * the source can have them: the driver says so */
    uint64_t required = mr.required, fully = mr.fully_allocated, bitmaps = mr.bitmaps;
    bool with_bitmaps = mr.has_bitmaps;
    if (ofmt == IMG_OUTPUT_HUMAN) {
        printf("required size: %" PRIu64 "\n", required);
        printf("fully allocated size: %" PRIu64 "\n", fully);
        if (with_bitmaps) {
            printf("bitmaps size: %" PRIu64 "\n", bitmaps);
        }
    } else {
        struct json_object *o = json_object_new_object();
        qjson_add_int(o, "required", (int64_t)required);
        qjson_add_int(o, "fully-allocated", (int64_t)fully);
        if (with_bitmaps) {
            qjson_add_int(o, "bitmaps", (int64_t)bitmaps);
        }
        qjson_print(stdout, o);
        json_object_put(o);
    }
    ret = 0;
out:
    vd_opts_free(opts);
    if (snap && snap != in) {
        vd_close(snap);
    }
    if (in) {
        vd_close(in);
    }
    free(options);
    return ret;
}
