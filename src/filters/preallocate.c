/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The "preallocate" filter (QEMU 7.2's block/preallocate.c semantics):
 * sits above a protocol node; whenever a write reaches past the end of
 * the file, it first extends the file with a fast zero write of
 * prealloc-size bytes past the write's end, rounded up to prealloc-align,
 * so that a growing image (qcow2 allocating clusters) extends its file in
 * big steps instead of one cluster at a time.  The filter remembers where
 * the data really ends and truncates the file back to it on close (and
 * when asked to resize), so the preallocation never becomes visible.
 *
 * Options: prealloc-align (default 1M, a multiple of 512 and of the file's
 * request alignment), prealloc-size (default 128M).
 *
 * Three cached positions, all < 0 while unknown:
 *   data_end   - end of the data written through the filter (the length it
 *                reports); at least the file's length when it was opened;
 *   zero_start - start of the preallocated tail known to read as zeroes;
 *   file_end   - the file's real length (saves a length query per write).
 * They are only kept while the filter may write and resize its file (a
 * writable node); a read-only filter passes everything through.
 * A mutex keeps them consistent between threads; the preallocating zero
 * write runs under it so that no two threads extend the file at once.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "internal.h"

#define PREALLOC_SECTOR 512u

typedef struct prealloc_state {
    uint64_t prealloc_align;
    uint64_t prealloc_size;
    bool active; /* the node may write and resize its file */
    pthread_mutex_t lock;
    int64_t data_end;
    int64_t zero_start;
    int64_t file_end;
} prealloc_state;

static const vd_opt_desc preallocate_open_opts[] = {
    {"prealloc-align", VD_OPT_SIZE,
     "on preallocation, align file length to this number, default 1M", "1M"},
    {"prealloc-size", VD_OPT_SIZE, "how much to preallocate, default 128M", "128M"},
    {NULL, 0, NULL, NULL},
};

static int preallocate_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    prealloc_state *s = bs->opaque;
    uint32_t file_align;

    if (!bs->file) {
        return vd_error_set(errp, EINVAL, "The preallocate filter needs a file child");
    }
    if (vd_opts_get_size(opts, "prealloc-align", 1u << 20, &s->prealloc_align, errp) < 0 ||
        vd_opts_get_size(opts, "prealloc-size", 128u << 20, &s->prealloc_size, errp) < 0) {
        return -EINVAL;
    }
    file_align = bs->file->request_alignment ? bs->file->request_alignment : 1;
    if (!vd_is_aligned(s->prealloc_align, PREALLOC_SECTOR)) {
        return vd_error_set(errp, EINVAL,
                            "prealloc-align parameter of preallocate filter is not "
                            "aligned to %u",
                            PREALLOC_SECTOR);
    }
    if (s->prealloc_align % file_align) {
        return vd_error_set(errp, EINVAL,
                            "prealloc-align parameter of preallocate filter is not "
                            "aligned to underlying node request alignment (%" PRIu32 ")",
                            file_align);
    }
    /* Bound the arithmetic below: a file end plus prealloc-size, rounded
     * up, must stay a valid int64. */
    if (s->prealloc_size > (uint64_t)INT64_MAX / 2 ||
        s->prealloc_align > (uint64_t)INT64_MAX / 4) {
        return vd_error_set(errp, EINVAL,
                            "prealloc-size or prealloc-align of preallocate filter is "
                            "too large");
    }
    /* prealloc-align 0 means "the file's alignment" (QEMU takes the larger) */
    if (s->prealloc_align < file_align) {
        s->prealloc_align = file_align;
    }

    pthread_mutex_init(&s->lock, NULL);
    s->data_end = s->zero_start = s->file_end = -EINVAL;
    s->active = !bs->read_only && !bs->file->read_only;
    if (s->active) {
        int64_t len = vd_node_get_length(bs->file);
        if (len < 0) {
            pthread_mutex_destroy(&s->lock);
            return vd_error_setg_errno(errp, (int)len, "Could not get the length of '%s'",
                                       bs->file->filename);
        }
        s->data_end = s->zero_start = s->file_end = len;
    }

    bs->request_alignment = file_align;
    bs->max_transfer = bs->file->max_transfer;
    bs->pwrite_zeroes_alignment = bs->file->pwrite_zeroes_alignment;
    bs->has_zero_init = bs->file->has_zero_init;
    bs->supports_fua = bs->file->supports_fua;
    return 0;
}

/* Drop the preallocated tail (lock held). */
static int preallocate_truncate_to_data_end(vd_node *bs, vd_error **errp)
{
    prealloc_state *s = bs->opaque;

    if (s->file_end < 0) {
        s->file_end = vd_node_get_length(bs->file);
        if (s->file_end < 0) {
            return vd_error_setg_errno(errp, (int)s->file_end, "Failed to get file length");
        }
    }
    if (s->data_end < s->file_end) {
        int ret =
            vd_node_truncate(bs->file, (uint64_t)s->data_end, true, VD_PREALLOC_OFF, errp);
        if (ret < 0) {
            vd_error_prepend(errp, "Failed to drop preallocation");
            s->file_end = ret;
            return ret;
        }
        s->file_end = s->data_end;
    }
    return 0;
}

static void preallocate_close(vd_node *bs)
{
    prealloc_state *s = bs->opaque;

    pthread_mutex_lock(&s->lock);
    if (s->active && s->data_end >= 0) {
        vd_error *err = NULL;
        /* a close cannot fail; the file merely keeps some zeroes */
        (void)preallocate_truncate_to_data_end(bs, &err);
        vd_error_free(err);
    }
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_destroy(&s->lock);
}

static uint64_t prealloc_align_up(uint64_t v, uint64_t align)
{
    /* align is not necessarily a power of two (any multiple of 512) */
    return vd_div_round_up(v, align) * align;
}

/*
 * Called before every write of [offset, offset+len).  Extends the file
 * when the write goes past its end.  Returns true when want_merge_zero
 * was set and the range is known to read as zeroes now (a zero write can
 * then be skipped).
 */
static bool preallocate_handle_write(vd_node *bs, uint64_t offset, uint64_t len,
                                     bool want_merge_zero)
{
    prealloc_state *s = bs->opaque;
    uint64_t file_align = bs->file->request_alignment ? bs->file->request_alignment : 1;
    int64_t end = (int64_t)(offset + len); /* the core checked the range */
    bool merged = false;

    if (!s->active) {
        return false;
    }
    pthread_mutex_lock(&s->lock);
    if (s->data_end < 0) {
        s->data_end = vd_node_get_length(bs->file);
        if (s->data_end < 0) {
            goto out;
        }
        if (s->file_end < 0) {
            s->file_end = s->data_end;
        }
    }
    if (end <= s->data_end) {
        goto out;
    }

    s->data_end = end;
    if (s->zero_start < 0 || !want_merge_zero) {
        s->zero_start = end;
    }
    if (s->file_end < 0) {
        s->file_end = vd_node_get_length(bs->file);
        if (s->file_end < 0) {
            goto out;
        }
    }
    if (end <= s->file_end) {
        /* inside what an earlier preallocation made */
        merged = want_merge_zero && (int64_t)offset >= s->zero_start;
        goto out;
    }

    uint64_t start_from =
        want_merge_zero ? VD_MIN(offset, (uint64_t)s->file_end) : (uint64_t)s->file_end;
    uint64_t prealloc_start = prealloc_align_up(start_from, file_align);
    uint64_t prealloc_end = prealloc_align_up(
        VD_MAX(prealloc_start, (uint64_t)end) + s->prealloc_size, s->prealloc_align);
    want_merge_zero = want_merge_zero && prealloc_start <= offset;

    /* Only a fast zero write is worth it: a slow one would write the
     * whole preallocation with data. */
    int ret = vd_node_pwrite_zeroes(bs->file, prealloc_start, prealloc_end - prealloc_start,
                                    VD_REQ_NO_FALLBACK);
    if (ret < 0) {
        s->file_end = ret;
        goto out;
    }
    s->file_end = (int64_t)prealloc_end;
    merged = want_merge_zero;
out:
    pthread_mutex_unlock(&s->lock);
    return merged;
}

static int preallocate_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf,
                             unsigned flags)
{
    return vd_node_pread(bs->file, offset, len, buf, flags);
}

static int preallocate_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                              unsigned flags)
{
    preallocate_handle_write(bs, offset, len, false);
    return vd_node_pwrite(bs->file, offset, len, buf, flags);
}

static int preallocate_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    /* a plain zero write may be folded into the preallocation */
    bool want_merge_zero = (flags & ~VD_REQ_NO_FALLBACK) == 0;
    if (preallocate_handle_write(bs, offset, len, want_merge_zero)) {
        return 0;
    }
    return vd_node_pwrite_zeroes(bs->file, offset, len, flags);
}

static int preallocate_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    return vd_node_discard(bs->file, offset, len);
}

static int preallocate_flush(vd_node *bs)
{
    /* nothing cached; the core flushes the file child next */
    (void)bs;
    return 0;
}

static int64_t preallocate_get_length(vd_node *bs)
{
    prealloc_state *s = bs->opaque;
    int64_t ret;

    if (!s->active) {
        return vd_node_get_length(bs->file);
    }
    pthread_mutex_lock(&s->lock);
    if (s->data_end >= 0) {
        ret = s->data_end;
    } else {
        ret = vd_node_get_length(bs->file);
        s->file_end = s->zero_start = s->data_end = ret;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int preallocate_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                                vd_error **errp)
{
    prealloc_state *s = bs->opaque;
    int ret;

    if (!s->active) {
        return vd_node_truncate(bs->file, size, exact, prealloc, errp);
    }
    pthread_mutex_lock(&s->lock);
    if (s->data_end >= 0 && (int64_t)size > s->data_end) {
        if (s->file_end < 0) {
            s->file_end = vd_node_get_length(bs->file);
            if (s->file_end < 0) {
                ret = vd_error_setg_errno(errp, (int)s->file_end, "failed to get file length");
                goto out;
            }
        }
        if (prealloc == VD_PREALLOC_FALLOC) {
            /* What the filter preallocated becomes the user's falloc
             * preallocation; only the part past it is still missing. */
            if ((int64_t)size <= s->file_end) {
                s->data_end = (int64_t)size;
                ret = 0;
                goto out;
            }
        } else if (s->file_end > s->data_end) {
            /* Drop the filter's preallocation first: "off" should keep the
             * file small, "full" should really write the whole region, and
             * a shrink below file_end would be refused by falloc modes. */
            ret =
                vd_node_truncate(bs->file, (uint64_t)s->data_end, true, VD_PREALLOC_OFF, errp);
            if (ret < 0) {
                s->file_end = ret;
                vd_error_prepend(errp, "preallocate-filter: failed to drop write-zero "
                                       "preallocation");
                goto out;
            }
            s->file_end = s->data_end;
        }
        s->data_end = (int64_t)size;
    }

    ret = vd_node_truncate(bs->file, size, exact, prealloc, errp);
    if (ret < 0) {
        s->file_end = s->zero_start = s->data_end = ret;
        goto out;
    }
    s->file_end = s->zero_start = s->data_end = (int64_t)size;
out:
    pthread_mutex_unlock(&s->lock);
    return ret;
}

const vd_driver vd_drv_preallocate = {
    .name = "preallocate",
    .kind = VD_DRV_FILTER,
    .state_size = sizeof(prealloc_state),
    .open_opts = preallocate_open_opts,
    .is_filter = true,
    .open = preallocate_open,
    .close = preallocate_close,
    .get_length = preallocate_get_length,
    .pread = preallocate_pread,
    .pwrite = preallocate_pwrite,
    .pwrite_zeroes = preallocate_pwrite_zeroes,
    .discard = preallocate_discard,
    .flush = preallocate_flush,
    .truncate = preallocate_truncate,
};
