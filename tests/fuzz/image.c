/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The shared image fuzzing harness (see image.h).  It goes through the
 * public API, as the tools do, so every layer a crafted image can reach
 * (probe, format open, request path, block status, info, check) is
 * exercised.  The image lives in a memfd: no file system state leaks
 * between inputs, and "/proc/self/fd/N" is an ordinary path for the file
 * protocol.  VD_OPEN_NO_BACKING keeps backing file names found in the
 * image from being opened.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "image.h"
#include "vdisk.h"

#define CHUNK (1u << 20)
#define PAGE 4096u

/* Whether the page at p (len bytes, at most PAGE) is all zeroes; a
 * memcmp, not a loop, which coverage would trace byte by byte. */
static bool page_is_zero(const uint8_t *p, size_t len)
{
    static const uint8_t zero[PAGE];
    return memcmp(p, zero, len) == 0;
}

int vd_fuzz_memfd(const uint8_t *data, size_t size)
{
    int fd = memfd_create("vdisk-fuzz", MFD_CLOEXEC);
    if (fd < 0) {
        /* The harness cannot work at all: say so loudly, once. */
        perror("memfd_create");
        abort();
    }
    /* sparse: pages of zeroes stay holes, which read the same and cost
     * neither the copy nor the memory (targets that spread a small input
     * over megabytes are mostly zeroes) */
    if (ftruncate(fd, (off_t)size) < 0) {
        perror("ftruncate of memfd");
        abort();
    }
    size_t done = 0;
    while (done < size) {
        size_t n = size - done < PAGE ? size - done : PAGE;
        if (page_is_zero(data + done, n)) {
            done += n;
            continue;
        }
        /* the run of non-zero pages that starts here */
        while (done + n < size) {
            size_t m = size - done - n < PAGE ? size - done - n : PAGE;
            if (page_is_zero(data + done + n, m)) {
                break;
            }
            n += m;
        }
        while (n) {
            ssize_t w = pwrite(fd, data + done, n, (off_t)done);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w <= 0) {
                perror("write to memfd");
                abort();
            }
            done += (size_t)w;
            n -= (size_t)w;
        }
    }
    return fd;
}

/* Read [offset, offset+len) in chunks, within *budget. */
static void read_range(vd_image *img, uint8_t *buf, uint64_t offset, uint64_t len,
                       uint64_t *budget)
{
    while (len && *budget) {
        size_t n = CHUNK;
        if (n > len) {
            n = (size_t)len;
        }
        if (n > *budget) {
            n = (size_t)*budget;
        }
        if (vd_pread(img, buf, n, offset) < 0) {
            return;
        }
        offset += n;
        len -= n;
        *budget -= n;
    }
}

static void walk(vd_image *img, uint64_t length, uint8_t *buf)
{
    uint64_t budget = VD_FUZZ_READ_BUDGET;
    uint64_t offset = 0;
    for (int i = 0; offset < length && i < VD_FUZZ_MAX_EXTENTS && budget; i++) {
        vd_extent ext;
        memset(&ext, 0, sizeof(ext));
        uint64_t n;
        bool data = true;
        if (vd_block_status(img, offset, length - offset, false, &ext) == 0) {
            if (ext.length == 0 || ext.length > length - offset) {
                /* the API promises 0 < length <= what was asked */
                fprintf(stderr, "block status at %llu returned length %llu\n",
                        (unsigned long long)offset, (unsigned long long)ext.length);
                abort();
            }
            n = ext.length;
            data = (ext.flags & VD_BS_DATA) != 0;
        } else {
            n = length - offset < CHUNK ? length - offset : CHUNK;
        }
        /* data fully; holes and zeroes just enough to cross the zero path */
        read_range(img, buf, offset, data ? n : (n < 4096 ? n : 4096), &budget);
        offset += n;
    }

    /* unaligned reads go through the read-modify-write path */
    if (length > 1001) {
        vd_pread(img, buf, 1000, 1);
        vd_pread(img, buf, 777, length - 778);
    }

    /* the whole-chain view, as qemu-img map asks it */
    offset = 0;
    for (int i = 0; offset < length && i < 256; i++) {
        vd_extent ext;
        if (vd_block_status(img, offset, length - offset, true, &ext) < 0 || ext.length == 0) {
            break;
        }
        offset += ext.length;
    }
}

int vd_fuzz_image(const uint8_t *data, size_t size, const char *format)
{
    int fd = vd_fuzz_memfd(data, size);
    char name[64];
    snprintf(name, sizeof(name), "/proc/self/fd/%d", fd);
    vd_fuzz_image_path(name, format);
    close(fd);
    return 0;
}

void vd_fuzz_image_path(const char *name, const char *format)
{
    vd_image *img = vd_open(name, format, NULL, VD_OPEN_NO_BACKING | VD_OPEN_FORCE_SHARE);
    if (img) {
        int64_t length = vd_get_length(img);
        uint8_t *buf = malloc(CHUNK);
        if (length > 0 && buf) {
            walk(img, (uint64_t)length, buf);
        }
        free(buf);

        vd_info *info = NULL;
        if (vd_get_info(img, &info) == 0) {
            vd_info_free(info);
        }
        vd_snapshot_info *snaps = NULL;
        size_t nsnaps = 0;
        if (vd_snapshot_list(img, &snaps, &nsnaps) == 0) {
            vd_snapshot_list_free(snaps, nsnaps);
        }
        vd_check_result res;
        memset(&res, 0, sizeof(res));
        vd_check(img, 0, &res);
        vd_close(img);
    }
}
