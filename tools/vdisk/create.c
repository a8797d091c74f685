/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk create: make a new image, checking options and the backing file
 * the way qemu-img create does before anything is written.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "img.h"

static const vd_opt_desc *find_desc(const vd_opt_desc *table, const char *name)
{
    for (const vd_opt_desc *d = table; d && d->name; d++) {
        if (!strcmp(d->name, name)) {
            return d;
        }
    }
    return NULL;
}

/* qemu-img's "Formatting" line: every option set or with a default, in the
 * order the driver declares them. */
static void print_formatting(const char *filename, const char *fmt, const vd_opt_desc *table,
                             const vd_opts *opts)
{
    printf("Formatting '%s', fmt=%s", filename, fmt);
    for (const vd_opt_desc *d = table; d && d->name; d++) {
        const char *set = vd_opts_get(opts, d->name);
        const char *value = set ? set : d->def_value;
        if (!value) {
            continue;
        }
        printf(" %s=", d->name);
        uint64_t num;
        if (d->type == VD_OPT_STRING) {
            /* commas are doubled so the line parses back as an option list */
            for (const char *p = value; *p; p++) {
                putchar(*p);
                if (*p == ',') {
                    putchar(',');
                }
            }
        } else if (set && d->type == VD_OPT_SIZE && vd_parse_size(value, &num) == 0) {
            printf("%" PRIu64, num);
        } else if (set && d->type == VD_OPT_NUMBER) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(value, &end, 0);
            if (!errno && !*end && value[0] != '-') {
                printf("%llu", n);
            } else {
                fputs(value, stdout);
            }
        } else {
            fputs(value, stdout);
        }
    }
    printf("\n");
    fflush(stdout);
}

int cmd_create(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPT_OBJECT},
        {NULL, 0, NULL, 0},
    };
    const char *fmt = "raw", *base_fmt = NULL, *base_filename = NULL;
    char *options = NULL;
    bool quiet = false, unsafe = false;
    int c, ret = 1;
    vd_opts *opts = NULL;

    img_common co = {0};
    while ((c = getopt_long(argc, argv, ":F:b:f:ho:qu", longopts, NULL)) != -1) {
        switch (img_common_option(&co, "create", c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            free(options);
            return 0;
        case IMG_OPT_FAIL:
            goto out;
        }
        switch (c) {
        case 'F':
            base_fmt = optarg;
            break;
        case 'b':
            base_filename = optarg;
            break;
        case 'o':
            if (!img_add_options(&options, optarg)) {
                goto out;
            }
            break;
        case 'u':
            unsafe = true;
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

    const char *filename = optind < argc ? argv[optind] : NULL;
    if (img_has_help_option(options)) {
        ret = img_print_create_opts_help(fmt, filename, NULL);
        goto out;
    }
    if (!filename) {
        free(options);
        return img_usage_error("Expecting image file name");
    }
    optind++;

    bool have_size = false;
    uint64_t img_size = 0;
    if (optind < argc) {
        if (!tool_parse_size("image size", argv[optind], &img_size)) {
            goto out;
        }
        have_size = true;
        optind++;
    }
    if (optind != argc) {
        free(options);
        return img_usage_error("Unexpected argument: %s", argv[optind]);
    }

    if (!vd_driver_type(fmt)) {
        tool_error("%s: Unknown file format '%s'", filename, fmt);
        goto out;
    }
    const vd_opt_desc *table = vd_driver_create_opts(fmt, filename);
    if (!table) {
        tool_error_lib("%s: Format driver '%s' does not support image creation", filename, fmt);
        goto out;
    }
    opts = vd_opts_new();
    if (!opts) {
        tool_error("Out of memory");
        goto out;
    }
    if (options && vd_opts_parse(opts, options, NULL) < 0) {
        tool_error_lib("%s: Invalid options '%s'", filename, options);
        goto out;
    }
    for (size_t i = 0; i < vd_opts_count(opts); i++) {
        const char *key = vd_opts_key(opts, i);
        const vd_opt_desc *d = find_desc(table, key);
        if (!d) {
            tool_error("%s: Invalid parameter '%s'", filename, key);
            goto out;
        }
        uint64_t num;
        const char *val = vd_opts_value(opts, i);
        if (d->type == VD_OPT_SIZE && vd_parse_size(val, &num) < 0) {
            tool_size_param_error(filename, key, val);
            goto out;
        }
    }

    char numbuf[32];
    if (vd_opts_get(opts, "size")) {
        if (have_size) {
            tool_error("%s: The image size must be specified only once", filename);
            goto out;
        }
        if (vd_parse_size(vd_opts_get(opts, "size"), &img_size) < 0 ||
            img_size > (uint64_t)INT64_MAX) {
            tool_error("%s: Image size must be less than 8 EiB!", filename);
            goto out;
        }
        have_size = true;
        snprintf(numbuf, sizeof(numbuf), "%" PRIu64, img_size);
        vd_opts_set(opts, "size", numbuf);
    } else if (have_size) {
        snprintf(numbuf, sizeof(numbuf), "%" PRIu64, img_size);
        vd_opts_set(opts, "size", numbuf);
    }

    if (base_filename) {
        if (!find_desc(table, "backing_file")) {
            tool_error("%s: Backing file not supported for file format '%s'", filename, fmt);
            goto out;
        }
        vd_opts_set(opts, "backing_file", base_filename);
    }
    if (base_fmt) {
        if (!find_desc(table, "backing_fmt")) {
            tool_error("%s: Backing file format not supported for file format '%s'", filename,
                       fmt);
            goto out;
        }
        vd_opts_set(opts, "backing_fmt", base_fmt);
    }

    const char *backing_file = vd_opts_get(opts, "backing_file");
    const char *backing_fmt = vd_opts_get(opts, "backing_fmt");
    if (backing_file) {
        if (!strcmp(filename, backing_file)) {
            tool_error("%s: Error: Trying to create an image with the same filename as the "
                       "backing file",
                       filename);
            goto out;
        }
        if (!backing_file[0]) {
            tool_error("%s: Expected backing file name, got empty string", filename);
            goto out;
        }
    }

    if (backing_file && !unsafe) {
        /* Open it (read-only, ignoring others' locks) to check it and,
         * when no size was given, to take its size. */
        char *full = img_backing_path(filename, backing_file);
        vd_image *b = full ? vd_open(full, backing_fmt, NULL, VD_OPEN_FORCE_SHARE) : NULL;
        free(full);
        if (!b) {
            /* QEMU's words: the error, then a hint line (iotest 111) */
            tool_error_lib("%s", filename);
            fputs("Could not open backing image.\n", stderr);
            goto out;
        }
        if (!backing_fmt) {
            tool_error("%s: Backing file specified without backing format (detected format "
                       "of '%s': %s; use -F %s)",
                       filename, backing_file, vd_image_format(b), vd_image_format(b));
            vd_close(b);
            goto out;
        }
        if (!have_size) {
            int64_t bl = vd_get_length(b);
            if (bl < 0) {
                tool_error_lib("%s: Could not get size of '%s'", filename, backing_file);
                vd_close(b);
                goto out;
            }
            img_size = (uint64_t)bl;
            have_size = true;
            snprintf(numbuf, sizeof(numbuf), "%" PRIu64, img_size);
            vd_opts_set(opts, "size", numbuf);
        }
        vd_close(b);
    } else if (backing_file && !backing_fmt) {
        tool_error("%s: Backing file specified without backing format", filename);
        goto out;
    }

    if (!have_size) {
        tool_error("%s: Image creation needs a size parameter", filename);
        goto out;
    }

    if (!quiet) {
        print_formatting(filename, fmt, table, opts);
    }
    if (vd_create(filename, fmt, opts) < 0) {
        if (vd_get_errno() == EFBIG) {
            tool_error("%s: The image size is too large for file format '%s'%s", filename, fmt,
                       find_desc(table, "cluster_size") ? " (try using a larger cluster size)"
                                                        : "");
        } else {
            tool_error_lib("%s", filename);
        }
        goto out;
    }
    ret = 0;
out:
    vd_opts_free(opts);
    free(options);
    return ret;
}
