/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * bochs: Bochs "growing" disk images (a redolog), as Bochs's bximage writes
 * them (iodev/hdimage/hdimage.h, "Redolog"/"Growing", header versions 1.0
 * and 2.0) and QEMU 7.2 reads them: a 512-byte little-endian header, a
 * catalog of 32-bit extent indexes (0xffffffff: not allocated), and for each
 * allocated extent a sector bitmap followed by the extent's sectors.  A
 * sector whose bitmap bit is clear reads as zeroes.
 *
 * Read-only.  Not supported: the "Undoable" and "Volatile" redolog subtypes
 * and flat/sparse/vmware bochs images (bximage's other modes; a flat image
 * is raw), writing of any kind.
 *
 * Hostile input: extent sizes below 512 or above 8 MiB and not a multiple
 * of 512, bitmaps too small for the extent or above 64 KiB, catalogs of more than 4 Mi
 * entries (16 MiB) or too small for the disk size, a catalog running past
 * the end of the file and catalog entries whose extent lies past the end of
 * the file are refused at open.
 */
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"

#define BOCHS_MAGIC "Bochs Virtual HD Image"
#define BOCHS_TYPE "Redolog"
#define BOCHS_SUBTYPE "Growing"
#define BOCHS_V1 0x00010000u
#define BOCHS_V2 0x00020000u
#define BOCHS_HEADER 512u
#define BOCHS_UNALLOCATED 0xffffffffu
#define BOCHS_MAX_CATALOG (4u << 20) /* entries; QEMU's limit */
#define BOCHS_MAX_EXTENT (8u << 20)
/* bytes; 8 MiB extents need 2 KiB, bximage writes exactly what is needed */
#define BOCHS_MAX_BITMAP (64u << 10)

enum {
    BOCHS_H_MAGIC = 0,
    BOCHS_H_TYPE = 32,
    BOCHS_H_SUBTYPE = 48,
    BOCHS_H_VERSION = 64,
    BOCHS_H_HEADER = 68,
    BOCHS_H_CATALOG = 72,
    BOCHS_H_BITMAP = 76,
    BOCHS_H_EXTENT = 80,
    /* v2: timestamp at 84, disk at 88; v1: disk at 84 */
    BOCHS_H_DISK_V1 = 84,
    BOCHS_H_DISK_V2 = 88,
};

typedef struct bochs_state {
    uint32_t *catalog;
    uint32_t catalog_size;
    uint64_t data_offset;
    uint64_t bitmap_bytes; /* bitmap_blocks * 512 */
    uint64_t extent_size;
    uint64_t extent_stride; /* bitmap + extent, bytes */
    uint64_t disk_size;
    uint32_t version;
} bochs_state;

/* A NUL-terminated name in a fixed-size header field equals want. */
static bool bochs_field_is(const uint8_t *field, size_t size, const char *want)
{
    size_t n = strlen(want);
    return n < size && !memcmp(field, want, n) && field[n] == 0;
}

static int bochs_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len < BOCHS_HEADER) {
        return 0;
    }
    uint32_t v = vd_ld_le32(buf + BOCHS_H_VERSION);
    if (bochs_field_is(buf + BOCHS_H_MAGIC, 32, BOCHS_MAGIC) &&
        bochs_field_is(buf + BOCHS_H_TYPE, 16, BOCHS_TYPE) &&
        bochs_field_is(buf + BOCHS_H_SUBTYPE, 16, BOCHS_SUBTYPE) &&
        (v == BOCHS_V1 || v == BOCHS_V2)) {
        return 100;
    }
    return 0;
}

static void bochs_close(vd_node *bs)
{
    bochs_state *s = bs->opaque;
    free(s->catalog);
    s->catalog = NULL;
}

static int bochs_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    bochs_state *s = bs->opaque;
    uint8_t h[BOCHS_HEADER];
    int ret;
    (void)opts;

    if (!bs->read_only) {
        return vd_error_set(errp, EROFS,
                            "The bochs format is read-only: open the image read-only");
    }
    int64_t file_len = vd_node_get_length(bs->file);
    if (file_len < 0) {
        return vd_error_setg_errno(errp, (int)file_len, "Could not get the file size");
    }
    if (file_len < BOCHS_HEADER) {
        return vd_error_set(errp, EINVAL, "File too small for a bochs header");
    }
    ret = vd_node_pread(bs->file, 0, sizeof(h), h, 0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not read the bochs header");
    }
    s->version = vd_ld_le32(h + BOCHS_H_VERSION);
    if (!bochs_field_is(h + BOCHS_H_MAGIC, 32, BOCHS_MAGIC) ||
        !bochs_field_is(h + BOCHS_H_TYPE, 16, BOCHS_TYPE) ||
        !bochs_field_is(h + BOCHS_H_SUBTYPE, 16, BOCHS_SUBTYPE)) {
        return vd_error_set(errp, EINVAL, "Image not in Bochs format");
    }
    if (s->version != BOCHS_V1 && s->version != BOCHS_V2) {
        return vd_error_set(errp, ENOTSUP, "Unsupported Bochs image version %u.%u",
                            s->version >> 16, s->version & 0xffff);
    }
    s->disk_size =
        vd_ld_le64(h + (s->version == BOCHS_V1 ? BOCHS_H_DISK_V1 : BOCHS_H_DISK_V2));
    /* QEMU counts whole sectors */
    s->disk_size = vd_align_down(s->disk_size, 512);
    if (s->disk_size > INT64_MAX) {
        return vd_error_set(errp, EINVAL, "Bochs disk size %llu is too large",
                            (unsigned long long)s->disk_size);
    }
    uint32_t header_size = vd_ld_le32(h + BOCHS_H_HEADER);
    uint32_t catalog = vd_ld_le32(h + BOCHS_H_CATALOG);
    uint32_t bitmap = vd_ld_le32(h + BOCHS_H_BITMAP);
    uint32_t extent = vd_ld_le32(h + BOCHS_H_EXTENT);

    /* QEMU's messages and order (iotest 078 compares them) */
    if (catalog > BOCHS_MAX_CATALOG) {
        return vd_error_set(errp, EFBIG, "Catalog size is too large");
    }
    if (extent < 512) {
        return vd_error_set(errp, EINVAL, "Extent size must be at least 512");
    }
    if (!vd_is_pow2(extent)) {
        return vd_error_set(errp, EINVAL, "Extent size %u is not a power of two", extent);
    }
    if (extent > BOCHS_MAX_EXTENT) {
        return vd_error_set(errp, EFBIG, "Extent size %u is too large", extent);
    }
    if (bitmap == 0 || (uint64_t)bitmap * 8 < extent / 512 || bitmap > BOCHS_MAX_BITMAP) {
        return vd_error_set(errp, EINVAL,
                            "Bitmap size %u does not fit extents of %u bytes", bitmap,
                            extent);
    }
    if (vd_div_round_up(s->disk_size, extent) > catalog) {
        return vd_error_set(errp, EINVAL, "Catalog size is too small for this disk size");
    }
    uint64_t catalog_end = (uint64_t)header_size + (uint64_t)catalog * 4;
    if (catalog_end > (uint64_t)file_len) {
        return vd_error_set(errp, EINVAL,
                            "Bochs catalog (%u entries at %u) extends past the end of the "
                            "file; the image is truncated",
                            catalog, header_size);
    }
    s->catalog_size = catalog;
    s->extent_size = extent;
    s->bitmap_bytes = vd_div_round_up(bitmap, 512) * 512;
    s->extent_stride = s->bitmap_bytes + vd_div_round_up(extent, 512) * 512;
    s->data_offset = catalog_end;

    s->catalog = vd_malloc((size_t)catalog * 4 + 4);
    if (!s->catalog) {
        return vd_error_set(errp, ENOMEM, "Could not allocate the bochs catalog");
    }
    if (catalog) {
        ret = vd_node_pread(bs->file, header_size, (uint64_t)catalog * 4, s->catalog, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not read the bochs catalog");
            goto fail;
        }
    }
    for (uint32_t i = 0; i < catalog; i++) {
        s->catalog[i] = vd_ld_le32(&s->catalog[i]);
        uint32_t e = s->catalog[i];
        if (e == BOCHS_UNALLOCATED) {
            continue;
        }
        /* at most 2^32 * (8 MiB + 2 KiB): no overflow */
        uint64_t start = s->data_offset + (uint64_t)e * s->extent_stride;
        if (start >= (uint64_t)file_len) {
            ret = vd_error_set(errp, EINVAL,
                               "Bochs catalog entry %u points to extent %u, past the end of "
                               "the file",
                               i, e);
            goto fail;
        }
    }
    bs->request_alignment = 512;
    return 0;

fail:
    bochs_close(bs);
    return ret;
}

static int64_t bochs_get_length(vd_node *bs)
{
    bochs_state *s = bs->opaque;
    return (int64_t)s->disk_size;
}

static int bochs_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    bochs_state *s = bs->opaque;
    uint8_t *p = buf;
    uint8_t *bitmap = NULL;
    uint32_t bitmap_extent = BOCHS_UNALLOCATED;
    int ret = 0;
    (void)flags;

    while (len > 0) {
        uint64_t idx = offset / s->extent_size;
        uint64_t in_extent = offset % s->extent_size;
        uint64_t n = VD_MIN(len, s->extent_size - in_extent);
        uint32_t e = idx < s->catalog_size ? s->catalog[idx] : BOCHS_UNALLOCATED;
        if (e == BOCHS_UNALLOCATED) {
            memset(p, 0, n);
        } else {
            uint64_t base = s->data_offset + (uint64_t)e * s->extent_stride;
            if (!bitmap) {
                bitmap = vd_malloc(s->bitmap_bytes);
                if (!bitmap) {
                    return -ENOMEM;
                }
            }
            if (bitmap_extent != e) {
                ret = vd_node_pread(bs->file, base, s->bitmap_bytes, bitmap, 0);
                if (ret < 0) {
                    break;
                }
                bitmap_extent = e;
            }
            /* runs of sectors with the same bitmap bit in one request */
            uint64_t done = 0;
            while (done < n) {
                uint64_t sector = (in_extent + done) / 512;
                bool set = (bitmap[sector / 8] >> (sector % 8)) & 1;
                uint64_t run = 512;
                while (done + run < n) {
                    uint64_t s2 = sector + run / 512;
                    if (((bitmap[s2 / 8] >> (s2 % 8)) & 1) != set) {
                        break;
                    }
                    run += 512;
                }
                run = VD_MIN(run, n - done);
                if (set) {
                    ret = vd_node_pread(bs->file, base + s->bitmap_bytes + in_extent + done,
                                        run, p + done, 0);
                    if (ret < 0) {
                        goto out;
                    }
                } else {
                    memset(p + done, 0, run);
                }
                done += run;
            }
        }
        offset += n;
        len -= n;
        p += n;
    }
out:
    free(bitmap);
    return ret;
}

const vd_driver vd_drv_bochs = {
    .name = "bochs",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(bochs_state),
    .probe = bochs_probe,
    .open = bochs_open,
    .close = bochs_close,
    .get_length = bochs_get_length,
    .pread = bochs_pread,
};
