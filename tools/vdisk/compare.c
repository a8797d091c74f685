/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk compare: whether two images have the same content, as qemu-img
 * compare: exit 0 identical, 1 different, 2 open error, 3 block status
 * error, 4 read error.  Areas both images report as zero are never read;
 * with different sizes the extra part of the longer one must read as
 * zeroes (-s: a size or allocation difference is a mismatch).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmds.h"
#include "img.h"
#include "tool.h"

#define CMP_SECTOR ((uint64_t)512)
#define CMP_BUF_SIZE ((uint64_t)2 << 20)

/* Index of the first sector of buf holding a non-zero byte, or -1. */
static int64_t compare_find_nonzero(const uint8_t *buf, uint64_t n)
{
    uint64_t end = n - n % CMP_SECTOR;
    uint64_t i;
    for (i = 0; i < end; i += CMP_SECTOR) {
        if (!tool_is_zero(buf + i, CMP_SECTOR)) {
            return (int64_t)i;
        }
    }
    if (i < n && !tool_is_zero(buf + i, n - end)) {
        return (int64_t)i;
    }
    return -1;
}

/*
 * Whether the first sector differs; *pnum: how many bytes (whole sectors)
 * from the start share that answer.
 */
static bool compare_buffers(const uint8_t *a, const uint8_t *b, uint64_t bytes, uint64_t *pnum)
{
    uint64_t i = bytes < CMP_SECTOR ? bytes : CMP_SECTOR;
    bool res = memcmp(a, b, i) != 0;
    while (i < bytes) {
        uint64_t len = bytes - i < CMP_SECTOR ? bytes - i : CMP_SECTOR;
        if ((memcmp(a + i, b + i, len) != 0) != res) {
            break;
        }
        i += len;
    }
    *pnum = i;
    return res;
}

/* 0 when [offset, offset+bytes) of img reads as zeroes, else 1 (mismatch
 * printed) or 4 (read error). */
static int compare_check_empty(vd_image *img, uint64_t offset, uint64_t bytes,
                               const char *filename, uint8_t *buf, bool quiet)
{
    if (vd_pread(img, buf, bytes, offset) < 0) {
        /* QEMU's words: the errno's text only (iotest 074) */
        tool_error("Error while reading offset %" PRIu64 " of %s: %s", offset, filename,
                   strerror(vd_get_errno()));
        return 4;
    }
    int64_t idx = compare_find_nonzero(buf, bytes);
    if (idx >= 0) {
        if (!quiet) {
            printf("Content mismatch at offset %" PRIu64 "!\n", offset + (uint64_t)idx);
        }
        return 1;
    }
    return 0;
}

static void compare_progress(uint64_t done, uint64_t base)
{
    tool_progress_update(base ? 100.0 * (double)done / (double)base : 100.0);
}

int cmd_compare(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, 0, 'h'},
        {"object", required_argument, 0, OPT_OBJECT},
        {"image-opts", no_argument, 0, OPT_IMAGE_OPTS},
        {"force-share", no_argument, 0, 'U'},
        {0, 0, 0, 0},
    };
    const char *fmt1 = NULL, *fmt2 = NULL, *cache = "writeback";
    bool progress = false, quiet = false, strict = false, image_opts = false;
    bool force_share = false;
    vd_image *img1 = NULL, *img2 = NULL;
    uint8_t *buf1 = NULL, *buf2 = NULL;
    vd_opts *opts = NULL;
    int ret;

    optind = 0;
    opterr = 0;
    img_common co = {0};
    for (;;) {
        int c = getopt_long(argc, argv, ":hf:F:T:pqsU", long_options, NULL);
        if (c == -1) {
            break;
        }
        switch (img_common_option(&co, NULL, c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_FAIL:
            return 2;
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
            printf("usage: %s compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] "
                   "[-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2\n",
                   tool_progname());
            return 0;
        case 'F':
            fmt2 = optarg;
            break;
        case 'p':
            progress = true;
            break;
        case 's':
            strict = true;
            break;
        }
    }
    if (co.fmt) {
        fmt1 = co.fmt;
    }
    if (co.src_cache) {
        cache = co.src_cache;
    }
    quiet = co.quiet;
    force_share = co.force_share;
    image_opts = co.image_opts;

    if (quiet) {
        progress = false;
    }
    if (optind != argc - 2) {
        tool_error("Expecting two image file names\nTry '%s --help' for more information",
                   tool_progname());
        return 1;
    }
    const char *filename1 = argv[optind];
    const char *filename2 = argv[optind + 1];

    tool_progress_init(progress);

    opts = vd_opts_new();
    if (!opts) {
        tool_error("Out of memory");
        ret = 2;
        goto out;
    }
    if (!tool_parse_cache(cache, opts, NULL)) {
        ret = 2;
        goto out;
    }
    unsigned flags = force_share ? VD_OPEN_FORCE_SHARE : 0;
    img1 = tool_open(filename1, fmt1, image_opts, opts, flags, quiet);
    if (!img1) {
        ret = 2;
        goto out;
    }
    img2 = tool_open(filename2, fmt2, image_opts, opts, flags, quiet);
    if (!img2) {
        ret = 2;
        goto out;
    }

    if (posix_memalign((void **)&buf1, 4096, CMP_BUF_SIZE) ||
        posix_memalign((void **)&buf2, 4096, CMP_BUF_SIZE)) {
        tool_error("Out of memory");
        ret = 4;
        goto out;
    }

    int64_t size1 = vd_get_length(img1);
    if (size1 < 0) {
        tool_error("Can't get size of %s: %s", filename1, strerror(vd_get_errno()));
        ret = 4;
        goto out;
    }
    int64_t size2 = vd_get_length(img2);
    if (size2 < 0) {
        tool_error("Can't get size of %s: %s", filename2, strerror(vd_get_errno()));
        ret = 4;
        goto out;
    }
    uint64_t total1 = (uint64_t)size1, total2 = (uint64_t)size2;
    uint64_t total = total1 < total2 ? total1 : total2;
    uint64_t progress_base = total1 > total2 ? total1 : total2;
    uint64_t offset = 0;

    if (strict && total1 != total2) {
        if (!quiet) {
            printf("Strict mode: Image size mismatch!\n");
        }
        ret = 1;
        goto out;
    }

    while (offset < total) {
        vd_extent e1, e2;
        if (vd_block_status(img1, offset, total1 - offset, true, &e1) < 0) {
            tool_error("Sector allocation test failed for %s", filename1);
            ret = 3;
            goto out;
        }
        if (vd_block_status(img2, offset, total2 - offset, true, &e2) < 0) {
            tool_error("Sector allocation test failed for %s", filename2);
            ret = 3;
            goto out;
        }
        /* the flags qemu compares in strict mode (not the newer COMPRESSED) */
        const unsigned mask = VD_BS_DATA | VD_BS_ZERO | VD_BS_OFFSET_VALID | VD_BS_ALLOCATED;
        unsigned st1 = e1.flags & mask, st2 = e2.flags & mask;
        bool alloc1 = st1 & VD_BS_ALLOCATED, alloc2 = st2 & VD_BS_ALLOCATED;
        uint64_t chunk = e1.length < e2.length ? e1.length : e2.length;
        if (chunk > total - offset) {
            chunk = total - offset;
        }

        if (strict && st1 != st2) {
            if (!quiet) {
                printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n", offset);
            }
            ret = 1;
            goto out;
        }
        if ((st1 & VD_BS_ZERO) && (st2 & VD_BS_ZERO)) {
            /* both read as zeroes: nothing to read */
        } else if (alloc1 == alloc2) {
            if (alloc1) {
                if (chunk > CMP_BUF_SIZE) {
                    chunk = CMP_BUF_SIZE;
                }
                if (vd_pread(img1, buf1, chunk, offset) < 0) {
                    tool_error("Error while reading offset %" PRIu64 " of %s: %s", offset,
                               filename1, strerror(vd_get_errno()));
                    ret = 4;
                    goto out;
                }
                if (vd_pread(img2, buf2, chunk, offset) < 0) {
                    tool_error("Error while reading offset %" PRIu64 " of %s: %s", offset,
                               filename2, strerror(vd_get_errno()));
                    ret = 4;
                    goto out;
                }
                uint64_t pnum;
                bool differ = compare_buffers(buf1, buf2, chunk, &pnum);
                if (differ || pnum != chunk) {
                    if (!quiet) {
                        printf("Content mismatch at offset %" PRIu64 "!\n",
                               offset + (differ ? 0 : pnum));
                    }
                    ret = 1;
                    goto out;
                }
            }
        } else {
            if (chunk > CMP_BUF_SIZE) {
                chunk = CMP_BUF_SIZE;
            }
            ret = alloc1 ? compare_check_empty(img1, offset, chunk, filename1, buf1, quiet)
                         : compare_check_empty(img2, offset, chunk, filename2, buf1, quiet);
            if (ret) {
                goto out;
            }
        }
        offset += chunk;
        compare_progress(offset, progress_base);
    }

    if (total1 != total2) {
        vd_image *over = total1 > total2 ? img1 : img2;
        const char *over_name = total1 > total2 ? filename1 : filename2;
        if (!quiet) {
            printf("Warning: Image size mismatch!\n");
        }
        while (offset < progress_base) {
            vd_extent e;
            if (vd_block_status(over, offset, progress_base - offset, true, &e) < 0) {
                tool_error("Sector allocation test failed for %s", over_name);
                ret = 3;
                goto out;
            }
            uint64_t chunk = e.length;
            if ((e.flags & VD_BS_ALLOCATED) && !(e.flags & VD_BS_ZERO)) {
                if (chunk > CMP_BUF_SIZE) {
                    chunk = CMP_BUF_SIZE;
                }
                ret = compare_check_empty(over, offset, chunk, over_name, buf1, quiet);
                if (ret) {
                    goto out;
                }
            }
            offset += chunk;
            compare_progress(offset, progress_base);
        }
    }

    if (!quiet) {
        printf("Images are identical.\n");
    }
    ret = 0;

out:
    tool_progress_end();
    free(buf1);
    free(buf2);
    if (img2) {
        vd_close(img2);
    }
    if (img1) {
        vd_close(img1);
    }
    vd_opts_free(opts);
    return ret;
}
