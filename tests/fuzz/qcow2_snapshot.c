/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 internal snapshots on hostile bytes: the read-only harness
 * (open, read, info with the snapshot table, check), every listed
 * snapshot loaded read-only and read, then on a writable copy: create,
 * apply, delete and a check of what that left.
 */
#include "image.h"
#include "qcow2adv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void read_snapshots(const uint8_t *data, size_t size, const vd_snapshot_info *l,
                           size_t n)
{
    static uint8_t buf[65536];
    for (size_t i = 0; i < n && i < 4; i++) {
        int fd = fuzz_memfd(data, size);
        vd_image *img = fuzz_open_fd(fd, VD_OPEN_FORCE_SHARE);
        if (img && vd_snapshot_open(img, NULL, l[i].id)) {
            int64_t len = vd_get_length(img);
            if (len > 0) {
                vd_pread(img, buf, len < (int64_t)sizeof(buf) ? (size_t)len : sizeof(buf), 0);
            }
        }
        if (img) {
            vd_close(img);
        }
        close(fd);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vd_fuzz_image(data, size, "qcow2");

    int fd;
    vd_image *img = fuzz_open_rw_copy(data, size, &fd);
    if (img) {
        vd_snapshot_info *l = NULL;
        size_t n = 0;
        if (vd_snapshot_list(img, &l, &n) == 0) {
            read_snapshots(data, size, l, n);
            vd_snapshot_create(img, "fuzz");
            if (n) {
                char id[80];
                snprintf(id, sizeof(id), "id=%s", l[0].id);
                vd_snapshot_apply(img, id);
                vd_snapshot_delete(img, id);
            }
            vd_snapshot_apply(img, "fuzz");
            vd_snapshot_delete(img, "fuzz");
            vd_snapshot_list_free(l, n);
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
