/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vvfat: what it takes from outside.  The input is (1) a "fat:..."
 * filename for the driver's parser, and (2) up to 24 host file names (one
 * per line, '/' and NUL left out), created in a scratch directory that is
 * then opened as a virtual FAT (hard disk, FAT12 and floppy) and read
 * through: long and short name generation, collisions, directory layout;
 * (3) the rw write-back parser: the input written over the FAT and the
 * root directory of a `fat:rw:floppy:` image of that directory, then a
 * flush (a commit may only create, change, rename and delete files and
 * directories in the scratch directory).
 */
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern const vd_driver vd_drv_vvfat;

static char scratch[64];

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    if (ftw->level > 0) {
        remove(path);
    }
    return 0;
}

/* everything below the scratch directory: a commit may make directories */
static void clear_scratch(void)
{
    nftw(scratch, remove_one, 16, FTW_DEPTH | FTW_PHYS);
}

static void remove_scratch(void)
{
    clear_scratch();
    rmdir(scratch);
}

static void read_all(const char *spec)
{
    vd_image *img = vd_open(spec, "raw", NULL, VD_OPEN_FORCE_SHARE);
    if (!img) {
        return;
    }
    static uint8_t buf[1 << 16];
    int64_t len = vd_get_length(img);
    /* the metadata and the first data clusters: boot, FATs, directories */
    for (int64_t off = 0; len > 0 && off < len && off < (1 << 20); off += sizeof(buf)) {
        size_t n = (size_t)VD_MIN((int64_t)sizeof(buf), len - off);
        if (vd_pread(img, buf, n, (uint64_t)off) < 0) {
            break;
        }
    }
    vd_close(img);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) {
        return 0;
    }
    memcpy(s, data, size);
    s[size] = '\0';

    /* (1) the filename parser */
    char *fn = vd_asprintf("fat:%s", s);
    if (fn) {
        vd_opts *o = vd_opts_new();
        vd_error *err = NULL;
        if (o) {
            vd_drv_vvfat.parse_filename(fn, o, &err);
            vd_error_free(err);
            vd_opts_free(o);
        }
        free(fn);
    }

    /* (2) host names */
    if (!scratch[0]) {
        snprintf(scratch, sizeof(scratch), "/tmp/vdisk-fuzz-vvfat.%d", (int)getpid());
        mkdir(scratch, 0700);
        atexit(remove_scratch);
    }
    clear_scratch();
    char *save = NULL;
    int n = 0;
    for (char *line = strtok_r(s, "\n", &save); line && n < 24;
         line = strtok_r(NULL, "\n", &save)) {
        for (char *p = line; *p; p++) {
            if (*p == '/') {
                *p = '_';
            }
        }
        if (!strcmp(line, ".") || !strcmp(line, "..") || strlen(line) > 255) {
            continue;
        }
        char path[400];
        snprintf(path, sizeof(path), "%s/%s", scratch, line);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            if (n % 3 == 1 && write(fd, line, strlen(line)) < 0) {
                n = n + 0; /* contents are optional */
            }
            close(fd);
            n++;
        }
    }
    char spec[128];
    static const char *const kinds[] = {"fat:", "fat:12:", "fat:floppy:"};
    for (size_t k = 0; k < VD_ARRAY_SIZE(kinds); k++) {
        snprintf(spec, sizeof(spec), "%s%s", kinds[k], scratch);
        read_all(spec);
    }
    /* (3) the write-back parser, over the input bytes */
    snprintf(spec, sizeof(spec), "fat:rw:floppy:%s", scratch);
    vd_image *img = vd_open(spec, "raw", NULL, VD_OPEN_RDWR);
    if (img) {
        /* floppy: FAT at sector 1 (2 sectors), root directory at sector 5 */
        size_t half = size / 2;
        if (half) {
            vd_pwrite(img, data, VD_MIN(half, 1024), 512, 0);
        }
        if (size - half) {
            vd_pwrite(img, data + half, VD_MIN(size - half, 16384), 5 * 512, 0);
        }
        vd_flush(img);
        vd_close(img);
    }
    clear_scratch();
    free(s);
    return 0;
}
