/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Shared by the qcow2_snapshot and qcow2_bitmap fuzz targets: a private,
 * writable copy of the input in a memfd, opened read-write without
 * backing files, so that the operations that rewrite metadata (snapshot
 * create/apply/delete, bitmap changes and dirty tracking) run on hostile
 * tables too.
 */
#ifndef VD_FUZZ_QCOW2ADV_H
#define VD_FUZZ_QCOW2ADV_H

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vdisk.h"

/* A memfd holding a copy of data (the caller closes it). */
static inline int fuzz_memfd(const uint8_t *data, size_t size)
{
    int fd = memfd_create("vdisk-fuzz-rw", MFD_CLOEXEC);
    if (fd < 0) {
        perror("memfd_create");
        abort();
    }
    size_t done = 0;
    while (done < size) {
        ssize_t n = write(fd, data + done, size - done);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            perror("write to memfd");
            abort();
        }
        done += (size_t)n;
    }
    return fd;
}

static inline vd_image *fuzz_open_fd(int fd, unsigned flags)
{
    char name[64];
    snprintf(name, sizeof(name), "/proc/self/fd/%d", fd);
    return vd_open(name, "qcow2", NULL, flags | VD_OPEN_NO_BACKING);
}

/*
 * Open a writable copy of data as qcow2 (NULL when it does not open);
 * *fd must be closed after vd_close.  An image that claims an external
 * data file gets a private empty memfd as its data file: the name in the
 * header would resolve next to /proc/self/fd/N, i.e. anywhere.
 */
static inline vd_image *fuzz_open_rw_copy(const uint8_t *data, size_t size, int *fd)
{
    *fd = fuzz_memfd(data, size);
    bool data_file = size >= 80 && data[4] == 0 && data[5] == 0 && data[6] == 0 &&
                     data[7] >= 3 && (data[79] & 4);
    if (!data_file) {
        return fuzz_open_fd(*fd, VD_OPEN_RDWR | VD_OPEN_RESIZE);
    }
    int dfd = fuzz_memfd(data, 0);
    char name[64], dname[64];
    snprintf(name, sizeof(name), "/proc/self/fd/%d", *fd);
    snprintf(dname, sizeof(dname), "/proc/self/fd/%d", dfd);
    vd_opts *o = vd_opts_new();
    vd_image *img = NULL;
    if (o && vd_opts_set(o, "data-file", dname) == 0) {
        img = vd_open(name, "qcow2", o, VD_OPEN_RDWR | VD_OPEN_RESIZE | VD_OPEN_NO_BACKING);
    }
    vd_opts_free(o);
    close(dfd); /* the image keeps its own descriptor */
    return img;
}

/*
 * True when the writes made the (sparse) file huge: a hostile refcount
 * table can send allocations far past the end, and checking such a file
 * takes long without telling us anything new.
 */
static inline int fuzz_file_grew(int fd)
{
    struct stat st;
    return fstat(fd, &st) < 0 || st.st_size > (64 << 20);
}

#endif
