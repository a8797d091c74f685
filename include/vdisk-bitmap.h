/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libvdisk: listing the persistent dirty bitmaps of an image (for
 * `vdisk convert --bitmaps`, which copies each one with vd_bitmap_add()
 * and vd_bitmap_merge() from <vdisk.h>).  Same conventions as vdisk.h:
 * -1 and a per-thread message on failure.
 */
#ifndef VDISK_BITMAP_H
#define VDISK_BITMAP_H

#include "vdisk.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

typedef struct vd_bitmap_info {
    char *name;
    uint32_t granularity; /* bytes per bit */
    bool enabled;         /* records new writes ("auto") */
    bool in_use;          /* inconsistent: left in use by a program that
                             did not close the image; not usable */
} vd_bitmap_info;

/*
 * The persistent bitmaps of img, in the image's order.  A format without
 * persistent bitmaps has none (0 entries, success).
 */
int vd_bitmap_list(vd_image *img, vd_bitmap_info **list, size_t *count);
void vd_bitmap_list_free(vd_bitmap_info *list, size_t count);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* VDISK_BITMAP_H */
