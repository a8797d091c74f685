/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 persistent dirty bitmaps on hostile bytes: the read-only harness
 * (open with the bitmap directory, info, check), then on a writable copy:
 * every listed bitmap merged, cleared, toggled and removed, a new one
 * added, guest writes that dirty the enabled ones (loading their tables),
 * a resize, and a check of what that left.
 */
#include "image.h"
#include "qcow2adv.h"
#include "vdisk-bitmap.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t buf[65536];
    vd_fuzz_image(data, size, "qcow2");

    int fd;
    vd_image *img = fuzz_open_rw_copy(data, size, &fd);
    if (img) {
        vd_bitmap_info *l = NULL;
        size_t n = 0;
        int64_t len = vd_get_length(img);
        if (vd_bitmap_list(img, &l, &n) == 0) {
            vd_bitmap_add(img, "fuzz", 0, false);
            if (len > 0) {
                memset(buf, 0xa5, sizeof(buf));
                vd_pwrite(img, buf, len < (int64_t)sizeof(buf) ? (size_t)len : sizeof(buf), 0, 0);
                vd_pwrite_zeroes(img, (uint64_t)len / 2, 1, 0);
            }
            for (size_t i = 0; i < n && i < 8; i++) {
                vd_bitmap_merge(img, "fuzz", img, l[i].name);
                vd_bitmap_enable(img, l[i].name, !l[i].enabled);
                vd_bitmap_clear(img, l[i].name);
            }
            for (size_t i = 0; i < n && i < 8; i++) {
                vd_bitmap_remove(img, l[i].name);
            }
            vd_bitmap_list_free(l, n);
            if (len > 0 && len < (1ll << 30)) {
                vd_truncate(img, (uint64_t)len + (1u << 20), false, VD_PREALLOC_OFF);
                vd_pwrite(img, buf, 4096, (uint64_t)len, 0);
            }
        }
        vd_close(img);
        /* what the operations left, checked as a reader finds it */
        if (!fuzz_file_grew(fd) && (img = fuzz_open_fd(fd, VD_OPEN_FORCE_SHARE))) {
            vd_check_result res;
            memset(&res, 0, sizeof(res));
            vd_check(img, 0, &res);
            vd_close(img);
        }
    }
    close(fd);
    return 0;
}
