/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk commit: copy what an image (and the layers between it and the base)
 * defines into its backing file, then empty the image unless -d or -b was
 * given (qemu-img commit).
 *
 * The base is opened read-write on its own, and the image is opened again
 * read-only (sharing) to read from: only ranges that layers above the base
 * define are read, asked layer by layer, so the base's metadata, which is
 * being rewritten meanwhile, is never consulted through the reader.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmds.h"
#include "img.h"

#define COMMIT_BUF_SIZE (2u * 1024 * 1024)

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleep as long as needed to keep `done` bytes since `start` under rate/s. */
static void rate_limit(uint64_t rate, uint64_t done, double start)
{
    if (!rate) {
        return;
    }
    double ahead = (double)done / (double)rate - (now_sec() - start);
    if (ahead > 0) {
        struct timespec ts = {(time_t)ahead, (long)((ahead - (double)(time_t)ahead) * 1e9)};
        nanosleep(&ts, NULL);
    }
}

/*
 * Which layer above the base defines [offset, offset+*n): its depth (and
 * flags), or -1 when none does; *n shrinks to a run with one answer.
 */
static int defining_layer(vd_image *top, int base_depth, uint64_t offset, uint64_t *n,
                          unsigned *flags)
{
    vd_image *l = top;
    for (int d = 0; d < base_depth && l; d++, l = vd_image_backing(l)) {
        vd_extent ext;
        if (vd_block_status(l, offset, *n, false, &ext) < 0) {
            return -2;
        }
        if (ext.length && ext.length < *n) {
            *n = ext.length;
        }
        if (ext.flags & VD_BS_ALLOCATED) {
            *flags = ext.flags;
            return d;
        }
    }
    return -1;
}

int cmd_commit(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {NULL, 0, NULL, 0},
    };
    const char *fmt = NULL, *cache = NULL, *base = NULL;
    bool drop = false, progress = false, quiet = false, image_opts = false;
    uint64_t rate = 0;
    int c, ret = 1;
    vd_image *img = NULL, *base_rw = NULL, *reader = NULL;
    vd_opts *extra = NULL;
    char *base_name = NULL, *base_fmt = NULL;
    bool probed = false;
    uint8_t *buf = NULL;

    img_common co = {0};
    while ((c = getopt_long(argc, argv, ":f:ht:b:dpqr:", longopts, NULL)) != -1) {
        switch (img_common_option(&co, "commit", c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            return 0;
        case IMG_OPT_FAIL:
            return 1;
        }
        switch (c) {
        case 't':
            cache = optarg;
            break;
        case 'b':
            base = optarg;
            /* committing into a deeper image leaves the top as it is */
            drop = true;
            break;
        case 'd':
            drop = true;
            break;
        case 'p':
            progress = true;
            break;
        case 'r':
            if (!tool_parse_size("rate limit", optarg, &rate)) {
                return 1;
            }
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
    if (quiet) {
        progress = false;
    }
    if (optind != argc - 1) {
        return img_usage_error("Expecting one image file name");
    }
    const char *filename = argv[optind];
    extra = vd_opts_new();
    if (!extra) {
        tool_error("Out of memory");
        return 1;
    }
    bool writethrough = false;
    if (cache && !tool_parse_cache(cache, extra, &writethrough)) {
        goto out;
    }
    vd_opts *eo = vd_opts_count(extra) ? extra : NULL;

    /* First open: check we may write the image, and find the base. */
    img = tool_open(filename, fmt, image_opts, eo, VD_OPEN_RDWR, quiet);
    if (!img) {
        goto out;
    }
    tool_progress_init(progress);
    int base_depth = 0;
    vd_image *b = NULL;
    if (base) {
        int d = 1;
        for (vd_image *l = vd_image_backing(img); l; l = vd_image_backing(l), d++) {
            if (img_same_file(vd_image_filename(l), base)) {
                b = l;
                base_depth = d;
                break;
            }
        }
        if (!b) {
            tool_error("Did not find '%s' in the backing chain of '%s'", base, filename);
            goto out;
        }
    } else {
        b = vd_image_backing(img);
        base_depth = 1;
        if (!b) {
            tool_error("Image does not have a backing file");
            goto out;
        }
    }
    base_name = strdup(vd_image_filename(b));
    /* a base probed as raw is probed again: its first block stays
     * protected against writes that would make it probe as a format */
    probed = vd_image_probed_raw(b);
    base_fmt = strdup(vd_image_format(b));
    if (!base_name || !base_fmt) {
        tool_error("Out of memory");
        goto out;
    }
    /* The image's own open keeps the base read-only and locked against
     * writers: let go of it before taking the base for writing. */
    vd_close(img);
    img = NULL;

    base_rw = vd_open(base_name, probed ? NULL : base_fmt, eo, VD_OPEN_RDWR | VD_OPEN_RESIZE);
    if (!base_rw) {
        tool_error_lib("Could not open base image '%s' for writing", base_name);
        goto out;
    }
    reader = tool_open(filename, fmt, image_opts, eo, VD_OPEN_FORCE_SHARE, true);
    if (!reader) {
        goto out;
    }

    int64_t size = vd_get_length(reader);
    int64_t base_len = vd_get_length(base_rw);
    if (size < 0 || base_len < 0) {
        tool_error_lib("Could not get the size of '%s'", size < 0 ? filename : base_name);
        goto out;
    }
    if (base_len < size && vd_truncate(base_rw, (uint64_t)size, false, VD_PREALLOC_OFF) < 0) {
        tool_error_lib("Top image %s is larger than base image %s, and resize of base image "
                   "failed",
                   filename, base_name);
        goto out;
    }

    buf = malloc(COMMIT_BUF_SIZE);
    if (!buf) {
        tool_error("Out of memory");
        goto out;
    }
    double start = now_sec();
    uint64_t done = 0, n;
    for (uint64_t offset = 0; offset < (uint64_t)size; offset += n) {
        n = (uint64_t)size - offset < COMMIT_BUF_SIZE ? (uint64_t)size - offset
                                                      : COMMIT_BUF_SIZE;
        unsigned flags = 0;
        int d = defining_layer(reader, base_depth, offset, &n, &flags);
        if (d == -2) {
            tool_error_lib("Could not read the allocation of '%s'", filename);
            goto out;
        }
        if (d >= 0) {
            int r;
            if (flags & VD_BS_ZERO) {
                r = vd_pwrite_zeroes(base_rw, offset, n, VD_REQ_MAY_UNMAP);
            } else {
                r = vd_pread(reader, buf, n, offset);
                if (r < 0) {
                    tool_error_lib("Could not read '%s'", filename);
                    goto out;
                }
                r = vd_pwrite(base_rw, buf, n, offset, 0);
            }
            if (r < 0 || (writethrough && vd_flush(base_rw) < 0)) {
                /* QEMU's commit job reports the error code only */
                tool_error("Block job failed: %s", strerror(vd_get_errno() ? vd_get_errno() : EIO));
                goto out;
            }
            done += n;
            rate_limit(rate, done, start);
        }
        tool_progress_update((double)(offset + n) * 100.0 / (double)size);
    }
    if (vd_flush(base_rw) < 0) {
        tool_error_lib("Could not flush base image '%s'", base_name);
        goto out;
    }
    vd_close(reader);
    reader = NULL;
    vd_close(base_rw);
    base_rw = NULL;

    if (!drop) {
        /* Everything now reads the same from the base: drop the top's data. */
        img = tool_open(filename, fmt, image_opts, eo, VD_OPEN_RDWR | VD_OPEN_NO_BACKING, true);
        if (!img) {
            goto out;
        }
        if (vd_make_empty(img) < 0 && vd_get_errno() != ENOTSUP) {
            tool_error_last(); /* "Failed to empty NAME: ..." as qemu-img */
            goto out;
        }
        if (vd_flush(img) < 0) {
            tool_error_lib("Could not flush '%s'", filename);
            goto out;
        }
    }
    tool_progress_update(100.0);
    tool_progress_end();
    if (!quiet) {
        printf("Image committed.\n");
    }
    ret = 0;
out:
    if (ret) {
        tool_progress_end();
    }
    free(buf);
    if (reader) {
        vd_close(reader);
    }
    if (base_rw) {
        vd_close(base_rw);
    }
    if (img) {
        vd_close(img);
    }
    free(base_name);
    free(base_fmt);
    vd_opts_free(extra);
    return ret;
}
