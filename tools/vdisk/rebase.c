/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk rebase: point an image at a new backing file.  The safe mode copies
 * into the image every range it does not define itself where the old and
 * the new backing file differ, so its content never changes; -u only
 * rewrites the reference (qemu-img rebase).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "img.h"

#define IO_BUF_SIZE (2u * 1024 * 1024)
#define SECTOR 512u

/*
 * Length of the run at the start of a/b (in 512-byte steps) over which the
 * buffers either all differ or all match; returns true when they differ.
 */
static bool compare_run(const uint8_t *a, const uint8_t *b, size_t len, size_t *pnum)
{
    size_t i = len < SECTOR ? len : SECTOR;
    bool differ = memcmp(a, b, i) != 0;
    while (i < len) {
        size_t step = len - i < SECTOR ? len - i : SECTOR;
        if ((memcmp(a + i, b + i, step) != 0) != differ) {
            break;
        }
        i += step;
    }
    *pnum = i;
    return differ;
}

/* Depth of the layer of chain (0 = chain itself) that is `target`, or -1. */
static int chain_depth(vd_image *chain, vd_image *target)
{
    int d = 0;
    for (vd_image *l = chain; l; l = vd_image_backing(l), d++) {
        if (l == target) {
            return d;
        }
    }
    return -1;
}

/* The layer of img's backing chain (below img) that is the file `path`. */
static vd_image *find_in_chain(vd_image *img, const char *path)
{
    for (vd_image *l = vd_image_backing(img); l; l = vd_image_backing(l)) {
        if (img_same_file(vd_image_filename(l), path)) {
            return l;
        }
    }
    return NULL;
}

/* Write [off, off+len) of the image with the content buf (the old view). */
static int write_old(vd_image *img, const uint8_t *buf, bool is_zero, uint64_t off, size_t len,
                     bool compress, uint32_t cluster, const uint8_t *chunk, uint64_t chunk_off,
                     size_t chunk_len, int64_t size)
{
    if (is_zero) {
        return vd_pwrite_zeroes(img, off, len, 0);
    }
    if (compress && cluster) {
        /* Compressed writes are whole clusters: widen to the clusters
         * around the range when the chunk holds all of them. */
        uint64_t cs = off - off % cluster;
        uint64_t ce = off + len;
        ce = ce % cluster ? ce + cluster - ce % cluster : ce;
        if (ce > (uint64_t)size) {
            ce = (uint64_t)size;
        }
        if (cs >= chunk_off && ce <= chunk_off + chunk_len) {
            if (vd_pwrite_compressed(img, chunk + (cs - chunk_off), ce - cs, cs) == 0) {
                return 0;
            }
            if (vd_get_errno() != ENOTSUP) {
                return -1;
            }
        }
    }
    return vd_pwrite(img, buf, len, off, 0);
}

int cmd_rebase(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    const char *fmt = NULL, *out_baseimg = NULL, *out_basefmt = NULL;
    const char *cache = NULL, *src_cache = NULL;
    bool unsafe = false, progress = false, quiet = false, image_opts = false;
    bool force_share = false, compress = false;
    int c, ret = 1;
    vd_image *img = NULL, *new_backing = NULL;
    vd_opts *extra = NULL, *src_extra = NULL;
    uint8_t *buf_old = NULL, *buf_new = NULL;
    char *out_real_path = NULL;

    img_common co = {0};
    while ((c = getopt_long(argc, argv, ":hf:F:b:upt:T:qUc", longopts, NULL)) != -1) {
        switch (img_common_option(&co, "rebase", c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            return 0;
        case IMG_OPT_FAIL:
            return 1;
        }
        switch (c) {
        case 'F':
            out_basefmt = optarg;
            break;
        case 'b':
            out_baseimg = optarg;
            break;
        case 'u':
            unsafe = true;
            break;
        case 'p':
            progress = true;
            break;
        case 't':
            cache = optarg;
            break;
        case 'c':
            compress = true;
            break;
        default:
            return img_bad_option(c, argv);
        }
    }
    if (co.fmt) {
        fmt = co.fmt;
    }
    if (co.src_cache) {
        src_cache = co.src_cache;
    }
    quiet = co.quiet;
    force_share = co.force_share;
    image_opts = co.image_opts;
    if (quiet) {
        progress = false;
    }
    if (optind != argc - 1) {
        return img_usage_error("Expecting one image file name");
    }
    if (!unsafe && !out_baseimg) {
        return img_usage_error("Must specify backing file (-b) or use unsafe mode (-u)");
    }
    const char *filename = argv[optind];

    extra = vd_opts_new();
    src_extra = vd_opts_new();
    if (!extra || !src_extra) {
        tool_error("Out of memory");
        goto out;
    }
    bool writethrough = false;
    if (cache && !tool_parse_cache(cache, extra, &writethrough)) {
        goto out;
    }
    if (src_cache && !tool_parse_cache(src_cache, src_extra, NULL)) {
        goto out;
    }
    if (out_basefmt && !vd_driver_type(out_basefmt)) {
        tool_error("Invalid format name: '%s'", out_basefmt);
        goto out;
    }
    /* A new backing file needs its format recorded (qemu-img refuses to
     * write a reference that would have to be probed); say so before any
     * data is copied. */
    if (out_baseimg && *out_baseimg && !out_basefmt) {
        tool_error("Could not change the backing file to '%s': backing format must be "
                   "specified",
                   out_baseimg);
        goto out;
    }

    tool_progress_init(progress);
    unsigned flags = VD_OPEN_RDWR | (unsafe ? VD_OPEN_NO_BACKING : 0);
    img = tool_open(filename, fmt, image_opts, vd_opts_count(extra) ? extra : NULL, flags,
                    quiet);
    if (!img) {
        goto out;
    }

    vd_image *old_backing = NULL, *prefix = NULL;
    if (!unsafe) {
        old_backing = vd_image_backing(img);
        if (*out_baseimg) {
            const char *overlay = vd_image_filename(img);
            out_real_path = img_backing_path(overlay ? overlay : filename, out_baseimg);
            if (!out_real_path) {
                tool_error("Out of memory");
                goto out;
            }
            /* Rebasing onto an image further down the chain reuses it. */
            prefix = find_in_chain(img, out_real_path);
            if (!prefix) {
                unsigned bflags = force_share ? VD_OPEN_FORCE_SHARE : 0;
                vd_opts *o = vd_opts_count(src_extra) ? src_extra : NULL;
                new_backing = vd_open(out_real_path, out_basefmt, o, bflags);
                if (!new_backing) {
                    const char *msg = vd_get_error();
                    tool_error("Could not open new backing file '%s': %s", out_baseimg,
                               *msg ? msg : "unknown error");
                    goto out;
                }
            }
        }
    }

    if (!unsafe) {
        vd_image *new_view = prefix ? prefix : new_backing;
        int64_t size = vd_get_length(img);
        int64_t old_size = 0, new_size = 0;
        if (size < 0) {
            tool_error_lib("Could not get size of '%s'", filename);
            goto out;
        }
        if (old_backing) {
            old_size = vd_get_length(old_backing);
            if (old_size < 0) {
                tool_error_lib("Could not get size of the old backing file of '%s'", filename);
                goto out;
            }
        }
        if (new_view) {
            new_size = vd_get_length(new_view);
            if (new_size < 0) {
                tool_error_lib("Could not get size of '%s'", out_baseimg);
                goto out;
            }
        }
        /* depth of prefix below the old backing file, for "changed since" */
        int prefix_depth = prefix ? chain_depth(old_backing, prefix) : -1;
        uint32_t cluster = compress ? vd_image_cluster_size(img) : 0;

        buf_old = malloc(IO_BUF_SIZE);
        buf_new = malloc(IO_BUF_SIZE);
        if (!buf_old || !buf_new) {
            tool_error("Out of memory");
            goto out;
        }
        uint64_t n;
        for (uint64_t offset = 0; offset < (uint64_t)size; offset += n) {
            n = (uint64_t)size - offset < IO_BUF_SIZE ? (uint64_t)size - offset : IO_BUF_SIZE;
            tool_progress_update((double)offset * 100.0 / (double)size);

            /* Ranges the image defines itself keep their content. */
            vd_extent ext;
            if (vd_block_status(img, offset, n, false, &ext) < 0) {
                tool_error_lib("error while reading image metadata");
                goto out;
            }
            n = ext.length ? ext.length : n;
            if (ext.flags & VD_BS_ALLOCATED) {
                continue;
            }
            if (prefix) {
                /* Unchanged since the new backing file: nothing to do. */
                if (prefix_depth < 0 || !old_backing) {
                    tool_error("Could not find '%s' in the backing chain of '%s'", out_baseimg,
                               filename);
                    goto out;
                }
                /* Beyond the end of the old backing file the image read
                 * zeroes: those must be written explicitly (as QEMU). */
                if (offset < (uint64_t)old_size) {
                    if (offset + n > (uint64_t)old_size) {
                        n = (uint64_t)old_size - offset;
                    }
                    if (vd_block_status(old_backing, offset, n, true, &ext) < 0) {
                        tool_error_lib("error while reading image metadata");
                        goto out;
                    }
                    n = ext.length ? ext.length : n;
                    if (!(ext.flags & VD_BS_ALLOCATED) || ext.depth >= prefix_depth) {
                        continue;
                    }
                }
            }

            bool old_is_zero = false;
            if (offset >= (uint64_t)old_size || !old_backing) {
                memset(buf_old, 0, n);
                old_is_zero = true;
            } else {
                if (offset + n > (uint64_t)old_size) {
                    n = (uint64_t)old_size - offset;
                }
                if (vd_pread(old_backing, buf_old, n, offset) < 0) {
                    tool_error_lib("error while reading from old backing file");
                    goto out;
                }
            }
            if (!new_view || offset >= (uint64_t)new_size) {
                memset(buf_new, 0, n);
            } else {
                if (offset + n > (uint64_t)new_size) {
                    n = (uint64_t)new_size - offset;
                }
                if (vd_pread(new_view, buf_new, n, offset) < 0) {
                    tool_error_lib("error while reading from new backing file");
                    goto out;
                }
            }

            /* Where the two differ, the old content goes into the image. */
            size_t written = 0;
            while (written < n) {
                size_t pnum;
                if (compare_run(buf_old + written, buf_new + written, n - written, &pnum)) {
                    if (write_old(img, buf_old + written, old_is_zero, offset + written, pnum,
                                  compress, cluster, buf_old, offset, n, size) < 0) {
                        tool_error_lib("Error while writing to COW image");
                        goto out;
                    }
                    if (writethrough && vd_flush(img) < 0) {
                        tool_error_lib("Error while writing to COW image");
                        goto out;
                    }
                }
                written += pnum;
            }
        }
    }

    if (out_baseimg && *out_baseimg) {
        if (vd_change_backing_file(img, out_baseimg, out_basefmt) < 0) {
            if (vd_get_errno() == ENOSPC) {
                tool_error("Could not change the backing file to '%s': No space left in the "
                           "file header",
                           out_baseimg);
            } else {
                tool_error_lib("Could not change the backing file to '%s'", out_baseimg);
            }
            goto out;
        }
    } else if (vd_change_backing_file(img, NULL, NULL) < 0) {
        tool_error_lib("Could not remove the backing file of '%s'", filename);
        goto out;
    }
    if (vd_flush(img) < 0) {
        tool_error_lib("Could not flush '%s'", filename);
        goto out;
    }
    tool_progress_update(100.0);
    ret = 0;
out:
    tool_progress_end();
    free(buf_old);
    free(buf_new);
    free(out_real_path);
    if (new_backing) {
        vd_close(new_backing);
    }
    if (img) {
        vd_close(img);
    }
    vd_opts_free(extra);
    vd_opts_free(src_extra);
    return ret;
}
