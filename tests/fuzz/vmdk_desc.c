/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The vmdk text descriptor on hostile input.  The input is written as a
 * descriptor file into a private directory that also holds a small flat
 * extent "f.raw" and a small sparse extent "s.vmdk", so extent lines that
 * name them open real extents (sizes, offsets, kinds, repetitions); the
 * image is then read, mapped, described and checked as image.c does.
 * Other names fail to open, and json:/protocol names must be refused.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "image.h"
#include "vdisk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[] = "/tmp/vdisk-fuzz-vmdk-XXXXXX";
static char path[64];

/* f.raw: 64 KiB of a pattern; s.vmdk: a 1 MiB sparse extent with data. */
static int setup(void)
{
    if (!mkdtemp(dir)) {
        return -1;
    }
    char p[96];
    snprintf(p, sizeof(p), "%s/f.raw", dir);
    FILE *f = fopen(p, "wb");
    if (!f) {
        return -1;
    }
    for (int i = 0; i < 65536; i++) {
        fputc(i * 7 & 0xff, f);
    }
    fclose(f);
    snprintf(p, sizeof(p), "%s/s.vmdk", dir);
    vd_opts *o = vd_opts_new();
    if (!o || vd_opts_set(o, "size", "1M") < 0 || vd_create(p, "vmdk", o) < 0) {
        vd_opts_free(o);
        return -1;
    }
    vd_opts_free(o);
    vd_image *img = vd_open(p, "vmdk", NULL, VD_OPEN_RDWR);
    if (!img) {
        return -1;
    }
    uint8_t buf[4096];
    memset(buf, 0x5a, sizeof(buf));
    vd_pwrite(img, buf, sizeof(buf), 65536, 0);
    vd_close(img);
    snprintf(path, sizeof(path), "%s/d.vmdk", dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        if (setup() < 0) {
            perror("vmdk_desc fuzz setup");
            abort();
        }
        ready = 1;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        abort();
    }
    if (size) {
        fwrite(data, 1, size, f);
    }
    fclose(f);
    /* the same walk as the image targets, on a file in our directory */
    vd_fuzz_image_path(path, "vmdk");
    return 0;
}
