/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The "raw" format: the image is the bytes of its file child, optionally a
 * window [offset, offset + size) of it.  Follows QEMU 7.2's raw format
 * driver semantics:
 *  - options "offset" (any byte value up to the file's length) and "size"
 *    (a multiple of 512 that must fit in the file after offset);
 *  - every request passes to the file shifted by offset; with a size, a
 *    request past the window fails (ENOSPC for writes, EINVAL for reads);
 *  - a raw format that was *probed* (no format given) restricts writes to
 *    the first 512 bytes: a write whose first sector would make the image
 *    probe as another format fails with EPERM, so that a guest cannot turn
 *    a raw image into, say, a qcow2 image naming a host file as backing.
 *    Probed images use a 512-byte request alignment so that the core's
 *    read-modify-write always hands this driver whole first sectors.
 *  - block status is the file's (VD_BLOCK_RECURSE);
 *  - a size-limited window cannot be resized.
 * Not supported: QEMU's ioctl/eject/SCSI generic pass-through.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "internal.h"

#define RAW_SECTOR 512u

typedef struct raw_state {
    uint64_t offset;
    /* Current size of the window; read and written atomically because
     * get_length refreshes it while other threads do I/O. */
    uint64_t size;
    bool has_size;
    uint64_t file_len; /* the file's length when last asked (atomic) */
} raw_state;

static const vd_opt_desc raw_open_opts[] = {
    {"offset", VD_OPT_SIZE, "offset in the file where the image starts", "0"},
    {"size", VD_OPT_SIZE, "virtual disk size (a multiple of 512)", NULL},
    {NULL, 0, NULL, NULL},
};

static const vd_opt_desc raw_create_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {NULL, 0, NULL, NULL},
};

static int raw_probe(const uint8_t *buf, size_t len, const char *filename)
{
    /* The smallest positive score: raw wins only when nothing else does. */
    (void)buf;
    (void)len;
    (void)filename;
    return 1;
}

static uint64_t raw_size(raw_state *s)
{
    return __atomic_load_n(&s->size, __ATOMIC_RELAXED);
}

/*
 * Shift a request into the file.  With a size limit the request must lie
 * inside the window so that nothing leaks past it.
 */
static int raw_adjust_offset(vd_node *bs, uint64_t *offset, uint64_t len, bool is_write)
{
    raw_state *s = bs->opaque;
    uint64_t out;

    if (s->has_size) {
        uint64_t size = raw_size(s);
        if (*offset > size || len > size - *offset) {
            return is_write ? -ENOSPC : -EINVAL;
        }
    }
    if (vd_add_overflow(*offset, s->offset, &out) || out > (uint64_t)INT64_MAX) {
        return -EINVAL;
    }
    *offset = out;
    return 0;
}

static int raw_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    raw_state *s = bs->opaque;
    uint64_t offset, size = 0;
    bool has_size = vd_opts_get(opts, "size") != NULL;

    if (!bs->file) {
        return vd_error_set(errp, EINVAL, "The raw format needs a file to read from");
    }
    if (vd_opts_get_size(opts, "offset", 0, &offset, errp) < 0 ||
        vd_opts_get_size(opts, "size", 0, &size, errp) < 0) {
        return -EINVAL;
    }

    int64_t real_size = vd_node_get_length(bs->file);
    if (real_size < 0) {
        return vd_error_setg_errno(errp, (int)real_size, "Could not get the size of '%s'",
                                   bs->filename);
    }
    /* QEMU sees the file in whole sectors: the offset/size checks too */
    uint64_t file_len = (uint64_t)real_size;
    real_size = (int64_t)(vd_div_round_up(file_len, RAW_SECTOR) * RAW_SECTOR);
    if (offset > (uint64_t)real_size) {
        return vd_error_set(errp, EINVAL,
                            "Offset (%" PRIu64 ") cannot be greater than size of the "
                            "containing file '%s' (%" PRId64 ")",
                            offset, bs->filename, real_size);
    }
    if (has_size && (uint64_t)real_size - offset < size) {
        return vd_error_set(errp, EINVAL,
                            "The sum of offset (%" PRIu64 ") and size (%" PRIu64 ") has "
                            "to be smaller or equal to the actual size of the containing "
                            "file '%s' (%" PRId64 ")",
                            offset, size, bs->filename, real_size);
    }
    /* A size that is not a whole number of sectors would be rounded up by
     * sector-based users and leak bytes from beyond the window. */
    if (has_size && !vd_is_aligned(size, RAW_SECTOR)) {
        return vd_error_set(errp, EINVAL, "Specified size is not multiple of %u", RAW_SECTOR);
    }

    s->offset = offset;
    s->file_len = file_len;
    s->has_size = has_size;
    s->size = has_size ? size : (uint64_t)real_size - offset;

    bs->request_alignment = bs->file->request_alignment ? bs->file->request_alignment : 1;
    if (bs->probed_raw && bs->request_alignment < RAW_SECTOR) {
        bs->request_alignment = RAW_SECTOR;
    }
    bs->max_transfer = bs->file->max_transfer;
    bs->pwrite_zeroes_alignment = bs->file->pwrite_zeroes_alignment;
    bs->has_zero_init = bs->file->has_zero_init;
    bs->supports_fua = bs->file->supports_fua;
    return 0;
}

static int raw_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    return vd_create_file(filename, opts, errp);
}

static int64_t raw_get_length(vd_node *bs)
{
    raw_state *s = bs->opaque;
    int64_t len = vd_node_get_length(bs->file);
    uint64_t size;

    if (len < 0) {
        return len;
    }
    __atomic_store_n(&s->file_len, (uint64_t)len, __ATOMIC_RELAXED);
    /* QEMU counts every node's size in whole sectors, the file's too */
    len = (int64_t)(vd_div_round_up((uint64_t)len, RAW_SECTOR) * RAW_SECTOR);
    /* The file may have changed under us (another writer, a resize):
     * follow it, but never let a fixed window grow. */
    if ((uint64_t)len < s->offset) {
        size = 0;
    } else if (s->has_size) {
        size = VD_MIN(raw_size(s), (uint64_t)len - s->offset);
    } else {
        size = (uint64_t)len - s->offset;
    }
    __atomic_store_n(&s->size, size, __ATOMIC_RELAXED);
    /* QEMU counts node sizes in whole sectors: a 1000-byte raw file is a
     * 1 KiB disk whose last 24 bytes read as zeroes (a write there extends
     * the file). */
    return (int64_t)(vd_div_round_up(size, RAW_SECTOR) * RAW_SECTOR);
}

static int raw_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    raw_state *s = bs->opaque;
    int ret = raw_adjust_offset(bs, &offset, len, false);
    if (ret < 0) {
        return ret;
    }
    /* the tail of a partial last sector lies past the file: zeroes */
    uint64_t file_end = __atomic_load_n(&s->file_len, __ATOMIC_RELAXED);
    if (offset + len > file_end) {
        uint64_t keep = offset < file_end ? file_end - offset : 0;
        memset((uint8_t *)buf + keep, 0, len - keep);
        if (!keep) {
            return 0;
        }
        len = keep;
    }
    return vd_node_pread(bs->file, offset, len, buf, flags);
}

static int raw_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                      unsigned flags)
{
    if (bs->probed_raw && offset < RAW_SECTOR) {
        /* The core aligned the request to 512 bytes for probed images. */
        if (offset != 0 || len < RAW_SECTOR) {
            return -EINVAL;
        }
        /* what it would now be probed as; no file name: only the content
         * may decide, as in QEMU */
        const vd_driver *now = vd_probe_buffer(buf, RAW_SECTOR, "");
        if (now != bs->drv) {
            return -EPERM;
        }
    }
    int ret = raw_adjust_offset(bs, &offset, len, true);
    if (ret < 0) {
        return ret;
    }
    return vd_node_pwrite(bs->file, offset, len, buf, flags);
}

static int raw_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    /* zeroes always probe as raw: no first-sector check needed */
    int ret = raw_adjust_offset(bs, &offset, len, true);
    if (ret < 0) {
        return ret;
    }
    return vd_node_pwrite_zeroes(bs->file, offset, len, flags);
}

static int raw_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    int ret = raw_adjust_offset(bs, &offset, len, true);
    if (ret < 0) {
        return ret;
    }
    return vd_node_discard(bs->file, offset, len);
}

static int raw_flush(vd_node *bs)
{
    /* nothing cached here; the core flushes the file child next */
    (void)bs;
    return 0;
}

static int raw_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                            uint64_t *pnum, uint64_t *map, vd_node **file)
{
    raw_state *s = bs->opaque;
    (void)want_zero;
    *pnum = len;
    *map = offset + s->offset;
    *file = bs->file;
    return VD_BLOCK_RECURSE | VD_BLOCK_OFFSET_VALID;
}

static int raw_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                        vd_error **errp)
{
    raw_state *s = bs->opaque;
    uint64_t file_size;

    if (s->has_size) {
        return vd_error_set(errp, ENOTSUP, "Cannot resize fixed-size raw disks");
    }
    if (vd_add_overflow(size, s->offset, &file_size) || file_size > (uint64_t)INT64_MAX) {
        return vd_error_set(errp, EINVAL, "Disk size too large for the chosen offset");
    }
    int ret = vd_node_truncate(bs->file, file_size, exact, prealloc, errp);
    if (ret < 0) {
        return ret;
    }
    __atomic_store_n(&s->size, size, __ATOMIC_RELAXED);
    return 0;
}

static int raw_get_info(vd_node *bs, vd_info *info, vd_error **errp)
{
    /* raw has no format-specific information */
    (void)bs;
    (void)info;
    (void)errp;
    return 0;
}

static int raw_measure(const vd_opts *opts, vd_node *src, uint64_t size, vd_measure_info *out,
                       vd_error **errp)
{
    uint64_t required;
    (void)opts;

    if (src) {
        int64_t len = vd_node_get_length(src);
        if (len < 0) {
            return vd_error_setg_errno(errp, (int)len, "Unable to get image size");
        }
        required = (uint64_t)len;
    } else if (vd_align_up_overflow(size, RAW_SECTOR, &required)) {
        return vd_error_set(errp, EFBIG, "Image size is too large");
    }
    /* every byte of a raw image is stored, allocated or not */
    out->required = required;
    out->fully_allocated = required;
    out->bitmaps = 0;
    return 0;
}

const vd_driver vd_drv_raw = {
    .name = "raw",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(raw_state),
    .create_opts = raw_create_opts,
    .open_opts = raw_open_opts,
    .probe = raw_probe,
    .open = raw_open,
    .create = raw_create,
    .get_length = raw_get_length,
    .pread = raw_pread,
    .pwrite = raw_pwrite,
    .pwrite_zeroes = raw_pwrite_zeroes,
    .discard = raw_discard,
    .flush = raw_flush,
    .block_status = raw_block_status,
    .truncate = raw_truncate,
    .get_info = raw_get_info,
    .measure = raw_measure,
    .flags = VD_DRV_RAW_FORMAT,
};
