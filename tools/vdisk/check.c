/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk check: consistency check (and repair) of image metadata, with
 * qemu-img check's output and exit codes: 0 clean, 1 check not completed,
 * 2 corruptions, 3 leaks only, 63 format has no check.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "img.h"
#include "qjson.h"

static void check_json(const vd_check_result *r, const char *filename, const char *format,
                       bool quiet)
{
    struct json_object *o = json_object_new_object();
    /* ImageCheck's member order; counters only when non-zero, as QEMU */
    qjson_add_str(o, "filename", filename);
    qjson_add_str(o, "format", format);
    qjson_add_int(o, "check-errors", r->check_errors);
    if (r->image_end_offset) {
        qjson_add_int(o, "image-end-offset", r->image_end_offset);
    }
    if (r->corruptions) {
        qjson_add_int(o, "corruptions", r->corruptions);
    }
    if (r->leaks) {
        qjson_add_int(o, "leaks", r->leaks);
    }
    if (r->corruptions_fixed) {
        qjson_add_int(o, "corruptions-fixed", r->corruptions_fixed);
    }
    if (r->leaks_fixed) {
        qjson_add_int(o, "leaks-fixed", r->leaks_fixed);
    }
    if (r->total_clusters) {
        qjson_add_int(o, "total-clusters", (int64_t)r->total_clusters);
    }
    if (r->allocated_clusters) {
        qjson_add_int(o, "allocated-clusters", (int64_t)r->allocated_clusters);
    }
    if (r->fragmented_clusters) {
        qjson_add_int(o, "fragmented-clusters", (int64_t)r->fragmented_clusters);
    }
    if (r->compressed_clusters) {
        qjson_add_int(o, "compressed-clusters", (int64_t)r->compressed_clusters);
    }
    if (!quiet) {
        qjson_print(stdout, o);
    }
    json_object_put(o);
}

static void check_human(const vd_check_result *r, bool quiet)
{
    if (quiet) {
        return;
    }
    if (!(r->corruptions || r->leaks || r->check_errors)) {
        printf("No errors were found on the image.\n");
    } else {
        if (r->corruptions) {
            printf("\n%d errors were found on the image.\n"
                   "Data may be corrupted, or further writes to the image may corrupt it.\n",
                   r->corruptions);
        }
        if (r->leaks) {
            printf("\n%d leaked clusters were found on the image.\n"
                   "This means waste of disk space, but no harm to data.\n",
                   r->leaks);
        }
        if (r->check_errors) {
            printf("\n%d internal errors have occurred during the check.\n", r->check_errors);
        }
    }
    if (r->total_clusters != 0 && r->allocated_clusters != 0) {
        printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% "
               "compressed clusters\n",
               r->allocated_clusters, r->total_clusters,
               r->allocated_clusters * 100.0 / r->total_clusters,
               r->fragmented_clusters * 100.0 / r->allocated_clusters,
               r->compressed_clusters * 100.0 / r->allocated_clusters);
    }
    if (r->image_end_offset) {
        printf("Image end offset: %" PRId64 "\n", r->image_end_offset);
    }
}

/* qemu-img check prints each problem on stderr as it is found. */
static void report_line(void *opaque, const char *line)
{
    (void)opaque;
    fprintf(stderr, "%s\n", line);
}

int cmd_check(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {"repair", required_argument, NULL, 'r'},
        {"output", required_argument, NULL, OPT_OUTPUT},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    const char *fmt = NULL, *output = NULL, *cache = NULL;
    bool quiet = false, image_opts = false, force_share = false;
    unsigned fix = 0;
    unsigned flags = 0;
    int c;

    img_common co = {0};
    while ((c = getopt_long(argc, argv, ":hf:r:T:qU", longopts, NULL)) != -1) {
        switch (img_common_option(&co, "check", c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            return 0;
        case IMG_OPT_FAIL:
            return 1;
        }
        switch (c) {
        case 'r':
            flags |= VD_OPEN_RDWR;
            if (!strcmp(optarg, "leaks")) {
                fix = VD_CHECK_FIX_LEAKS;
            } else if (!strcmp(optarg, "all")) {
                fix = VD_CHECK_FIX_LEAKS | VD_CHECK_FIX_ERRORS;
            } else {
                return img_usage_error(
                    "Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
            }
            break;
        default:
            return img_bad_option(c, argv);
        }
    }
    if (co.fmt) {
        fmt = co.fmt;
    }
    if (co.src_cache) {
        cache = co.src_cache;
    }
    quiet = co.quiet;
    force_share = co.force_share;
    if (co.output) {
        output = co.output;
    }
    image_opts = co.image_opts;
    if (optind != argc - 1) {
        return img_usage_error("Expecting one image file name");
    }
    const char *filename = argv[optind];
    enum img_output ofmt = IMG_OUTPUT_HUMAN;
    if (output && !img_parse_output(output, &ofmt)) {
        return 1;
    }
    vd_opts *extra = vd_opts_new();
    if (!extra) {
        tool_error("Out of memory");
        return 1;
    }
    if (cache && !tool_parse_cache(cache, extra, NULL)) {
        vd_opts_free(extra);
        return 1;
    }
    if (force_share) {
        if (flags & VD_OPEN_RDWR) {
            tool_error("force-share=on can only be used with read-only images");
            vd_opts_free(extra);
            return 1;
        }
        flags |= VD_OPEN_FORCE_SHARE;
    }
    /* see the damage before anything repairs it */
    flags |= VD_OPEN_CHECK;
    vd_image *img = tool_open(filename, fmt, image_opts, vd_opts_count(extra) ? extra : NULL,
                              flags, quiet);
    vd_opts_free(extra);
    if (!img) {
        return 1;
    }

    int ret;
    vd_check_result res;
    if (vd_check_reported(img, fix, &res, report_line, NULL) < 0) {
        if (vd_get_errno() == ENOTSUP) {
            tool_error("This image format does not support checks");
            ret = 63;
        } else {
            tool_error_lib("Check failed");
            ret = 1;
        }
        goto out;
    }

    if (res.corruptions_fixed || res.leaks_fixed) {
        int corruptions_fixed = res.corruptions_fixed, leaks_fixed = res.leaks_fixed;
        if (ofmt == IMG_OUTPUT_HUMAN && !quiet) {
            printf("The following inconsistencies were found and repaired:\n\n"
                   "    %d leaked clusters\n"
                   "    %d corruptions\n\n"
                   "Double checking the fixed image now...\n",
                   leaks_fixed, corruptions_fixed);
        }
        /* What remains after the repair is what the exit code reports. */
        if (vd_check_reported(img, 0, &res, report_line, NULL) < 0) {
            tool_error_lib("Check failed");
            ret = 1;
            goto out;
        }
        res.corruptions_fixed = corruptions_fixed;
        res.leaks_fixed = leaks_fixed;
    }

    const char *format = vd_image_format(img);
    if (ofmt == IMG_OUTPUT_JSON) {
        check_json(&res, filename, format ? format : "", quiet);
    } else {
        check_human(&res, quiet);
    }

    if (res.check_errors) {
        tool_error("Check failed");
        ret = 1;
    } else if (res.corruptions) {
        ret = 2;
    } else if (res.leaks) {
        ret = 3;
    } else {
        ret = 0;
    }
out:
    vd_close(img);
    return ret;
}
