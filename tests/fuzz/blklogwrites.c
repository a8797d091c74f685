/* SPDX-License-Identifier: BSD-3-Clause */
/* blklogwrites with log-append on a hostile log: the super block and the
 * entry walk that finds the end of the log, then one logged write. */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vdisk.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int log = memfd_create("vdisk-fuzz-log", MFD_CLOEXEC);
    int img = memfd_create("vdisk-fuzz-img", MFD_CLOEXEC);
    if (log < 0 || img < 0 || write(log, data, size) != (ssize_t)size ||
        ftruncate(img, 1 << 16) < 0) {
        perror("memfd");
        return 0;
    }
    char opts[256];
    snprintf(opts, sizeof(opts),
             "driver=raw,file.driver=blklogwrites,file.file.filename=/proc/self/fd/%d,"
             "file.log.filename=/proc/self/fd/%d,file.log-append=on",
             img, log);
    vd_opts *o = vd_opts_new();
    if (o && vd_opts_parse(o, opts, NULL) == 0) {
        vd_image *im = vd_open(NULL, NULL, o, VD_OPEN_RDWR);
        if (im) {
            static const uint8_t buf[4096];
            (void)vd_pwrite(im, buf, sizeof(buf), 4096, 0);
            vd_close(im);
        }
    }
    vd_opts_free(o);
    close(log);
    close(img);
    return 0;
}
