/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The request path.  Every read, write, zero write, discard and flush of
 * every node enters here, so that drivers only ever see valid requests:
 *  - overflow and range checks (check_request: the one place requests are
 *    held to the node's length, for the public API and internal callers
 *    alike), write permission;
 *  - reads past the end of a growable format child return zeroes;
 *  - splitting to the node's max_transfer;
 *  - alignment to request_alignment (reads through a bounce buffer, writes
 *    by read-modify-write of the head and tail blocks), with overlapping
 *    requests serialised around each read-modify-write so that two
 *    unaligned writes into one block cannot lose each other's bytes;
 *  - detect-zeroes, the zero-write fallback, FUA emulation by flush.
 */
#include <stdlib.h>

#include "internal.h"

/* Fallback zero writes and bounce buffers are made in chunks of this size. */
#define IO_CHUNK (1u << 20)

struct vd_req {
    uint64_t start, end; /* aligned byte range the request touches */
    bool serialising;    /* a read-modify-write: excludes overlapping requests */
    vd_req *next;
};

/* ---------------------------------------------------------------- events */

#define VD_EVENT_NAME_(id, name) [VD_EV_##id] = name,
const char *const vd_event_names[VD_EV__MAX] = {VD_EVENT_LIST(VD_EVENT_NAME_)};
#undef VD_EVENT_NAME_

/* pwritev, pwritev_zero and pwritev_done go to the node written only, as
 * QEMU's bdrv_debug_event(bs) does: a format's request and the one it
 * sends to its blkdebug child must not both count.  The read-modify-write
 * events walk down: vdisk pads a request at the top node with the
 * alignment (raw over blkdebug,align=N), QEMU at blkdebug itself. */
static void node_event_here(vd_node *bs, vd_event ev)
{
    if (bs->drv->debug_event) {
        bs->drv->debug_event(bs, ev);
    }
}

void vd_node_event(vd_node *bs, vd_event ev)
{
    while (bs && !bs->drv->debug_event) {
        bs = bs->file;
    }
    if (bs) {
        bs->drv->debug_event(bs, ev);
    }
}

/* --------------------------------------------------------- serialisation */

static bool tracking_needed(const vd_node *bs)
{
    return bs->request_alignment > 1;
}

static bool req_conflicts(const vd_node *bs, const vd_req *me)
{
    for (const vd_req *r = bs->reqs; r; r = r->next) {
        if (r->start < me->end && me->start < r->end && (r->serialising || me->serialising)) {
            return true;
        }
    }
    return false;
}

static void req_begin(vd_node *bs, vd_req *req, uint64_t offset, uint64_t len, bool serialising)
{
    uint64_t a = bs->request_alignment;
    req->start = vd_align_down(offset, a);
    req->end = offset + len;
    if (!vd_is_aligned(req->end, a) && vd_align_up_overflow(req->end, a, &req->end)) {
        req->end = UINT64_MAX;
    }
    req->serialising = serialising;
    pthread_mutex_lock(&bs->req_lock);
    while (req_conflicts(bs, req)) {
        pthread_cond_wait(&bs->req_cond, &bs->req_lock);
    }
    req->next = bs->reqs;
    bs->reqs = req;
    pthread_mutex_unlock(&bs->req_lock);
}

static void req_end(vd_node *bs, vd_req *req)
{
    pthread_mutex_lock(&bs->req_lock);
    for (vd_req **p = &bs->reqs; *p; p = &(*p)->next) {
        if (*p == req) {
            *p = req->next;
            break;
        }
    }
    pthread_cond_broadcast(&bs->req_cond);
    pthread_mutex_unlock(&bs->req_lock);
}

/* ------------------------------------------------------------ raw driver I/O */

static uint64_t max_chunk(const vd_node *bs)
{
    uint64_t m = bs->max_transfer ? bs->max_transfer : ((uint64_t)1 << 62);
    uint64_t a = bs->request_alignment;
    if (m >= a) {
        m = vd_align_down(m, a);
    }
    return m ? m : a;
}

/* Driver read of an aligned range, split to max_transfer. */
static int drv_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    uint64_t chunk = max_chunk(bs);
    uint8_t *p = buf;
    while (len) {
        uint64_t n = VD_MIN(len, chunk);
        int ret = bs->drv->pread(bs, offset, n, p, flags);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        p += n;
        len -= n;
    }
    return 0;
}

static int drv_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                      unsigned flags)
{
    uint64_t chunk = max_chunk(bs);
    const uint8_t *p = buf;
    unsigned dflags = bs->supports_fua ? flags : flags & ~VD_REQ_FUA;
    while (len) {
        uint64_t n = VD_MIN(len, chunk);
        int ret = bs->drv->pwrite(bs, offset, n, p, dflags);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        p += n;
        len -= n;
    }
    return 0;
}

/* Read with only the memory alignment to care about (offset/len aligned). */
static int aligned_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    uint32_t a = bs->request_alignment;
    if (a <= 1 || vd_is_aligned((uintptr_t)buf, a)) {
        return drv_pread(bs, offset, len, buf, flags);
    }
    uint64_t chunk = VD_MAX(vd_align_down(IO_CHUNK, a), a);
    uint8_t *bounce = vd_aligned_alloc(a, VD_MIN(chunk, len));
    if (!bounce) {
        return -ENOMEM;
    }
    int ret = 0;
    for (uint64_t done = 0; done < len && ret == 0; done += chunk) {
        uint64_t n = VD_MIN(chunk, len - done);
        ret = drv_pread(bs, offset + done, n, bounce, flags);
        if (ret == 0) {
            memcpy((uint8_t *)buf + done, bounce, n);
        }
    }
    free(bounce);
    return ret;
}

static int aligned_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                          unsigned flags)
{
    uint32_t a = bs->request_alignment;
    if (a <= 1 || vd_is_aligned((uintptr_t)buf, a)) {
        return drv_pwrite(bs, offset, len, buf, flags);
    }
    uint64_t chunk = VD_MAX(vd_align_down(IO_CHUNK, a), a);
    uint8_t *bounce = vd_aligned_alloc(a, VD_MIN(chunk, len));
    if (!bounce) {
        return -ENOMEM;
    }
    int ret = 0;
    for (uint64_t done = 0; done < len && ret == 0; done += chunk) {
        uint64_t n = VD_MIN(chunk, len - done);
        memcpy(bounce, (const uint8_t *)buf + done, n);
        ret = drv_pwrite(bs, offset + done, n, bounce, flags);
    }
    free(bounce);
    return ret;
}

/* -------------------------------------------------------------------- read */

static bool is_format_like(const vd_node *bs)
{
    return bs->drv->kind != VD_DRV_PROTOCOL;
}

/* A file child (a format's protocol, data file, filter): the format above
 * may write past its end to grow it, and reads past its end are defined. */
static bool may_grow(const vd_node *bs)
{
    return (bs->flags & VD_NODE_PROTOCOL) != 0;
}

/*
 * The range guarantee of internal.h, for every request of every caller
 * (the public API, formats on their children, the NBD server through the
 * API): no overflow, nothing past INT64_MAX, and nothing past the end of
 * a node that cannot grow (an image's top node, a backing node): those
 * fail with -ERANGE, which api.c turns into its "out of range" message.
 */
static int check_request(vd_node *bs, uint64_t offset, uint64_t len, bool strict)
{
    uint64_t end;
    if (vd_add_overflow(offset, len, &end) || end > (uint64_t)INT64_MAX) {
        return -EINVAL;
    }
    if (strict && !may_grow(bs)) {
        int64_t size = vd_node_get_length(bs);
        if (size < 0) {
            return (int)size;
        }
        if (end > (uint64_t)size) {
            return -ERANGE;
        }
    }
    return 0;
}

static int node_pread_inner(vd_node *bs, uint64_t offset, uint64_t len, void *buf,
                            unsigned flags)
{
    uint32_t a = bs->request_alignment;
    if (a <= 1 || (vd_is_aligned(offset, a) && vd_is_aligned(len, a))) {
        return aligned_pread(bs, offset, len, buf, flags);
    }
    /* unaligned: read the covering aligned range through a bounce buffer,
     * chunk by chunk to keep memory bounded */
    uint64_t start = vd_align_down(offset, a);
    uint64_t end = offset + len;
    uint64_t aend;
    if (vd_align_up_overflow(end, a, &aend)) {
        return -EINVAL;
    }
    uint64_t chunk = VD_MAX(vd_align_down(IO_CHUNK, a), a);
    uint8_t *bounce = vd_aligned_alloc(a, VD_MIN(chunk, aend - start));
    if (!bounce) {
        return -ENOMEM;
    }
    int ret = 0;
    for (uint64_t pos = start; pos < aend && ret == 0; pos += chunk) {
        uint64_t n = VD_MIN(chunk, aend - pos);
        ret = drv_pread(bs, pos, n, bounce, flags);
        if (ret == 0) {
            uint64_t s = VD_MAX(pos, offset), e = VD_MIN(pos + n, end);
            memcpy((uint8_t *)buf + (s - offset), bounce + (s - pos), e - s);
        }
    }
    free(bounce);
    return ret;
}

int vd_node_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    int ret = check_request(bs, offset, len, (flags & VD_REQ_STRICT_RANGE) != 0);
    flags &= ~VD_REQ_STRICT_RANGE;
    if (ret < 0 || len == 0) {
        return ret;
    }
    if (!bs->drv->pread) {
        return -ENOTSUP;
    }
    if (is_format_like(bs)) {
        /* reads past the end of a format read zeroes */
        int64_t size = vd_node_get_length(bs);
        if (size < 0) {
            return (int)size;
        }
        if (offset >= (uint64_t)size) {
            memset(buf, 0, len);
            return 0;
        }
        if (offset + len > (uint64_t)size) {
            uint64_t keep = (uint64_t)size - offset;
            memset((uint8_t *)buf + keep, 0, len - keep);
            len = keep;
        }
    }
    if (!tracking_needed(bs)) {
        return node_pread_inner(bs, offset, len, buf, flags);
    }
    vd_req req;
    req_begin(bs, &req, offset, len, false);
    ret = node_pread_inner(bs, offset, len, buf, flags);
    req_end(bs, &req);
    return ret;
}

/* ------------------------------------------------------------------- write */

/* Read-modify-write of one aligned block [blk, blk+a) with data at off. */
static int rmw_block(vd_node *bs, uint64_t blk, uint64_t off, uint64_t len, const void *data,
                     unsigned flags)
{
    uint32_t a = bs->request_alignment;
    uint8_t *b = vd_aligned_alloc(a, a);
    if (!b) {
        return -ENOMEM;
    }
    int ret = drv_pread(bs, blk, a, b, 0);
    if (ret == 0) {
        if (data) {
            memcpy(b + (off - blk), data, len);
        } else {
            memset(b + (off - blk), 0, len);
        }
        ret = drv_pwrite(bs, blk, a, b, flags);
    }
    free(b);
    return ret;
}

static int zero_fallback(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    uint32_t a = bs->request_alignment > 0 ? bs->request_alignment : 1;
    uint64_t chunk = VD_MAX(vd_align_down(VD_MIN(IO_CHUNK, max_chunk(bs)), a), a);
    uint8_t *zero = vd_aligned_alloc(a < 4096 ? 4096 : a, VD_MIN(chunk, len));
    if (!zero) {
        return -ENOMEM;
    }
    memset(zero, 0, VD_MIN(chunk, len));
    int ret = 0;
    while (len && ret == 0) {
        uint64_t n = VD_MIN(len, chunk);
        ret = drv_pwrite(bs, offset, n, zero, flags & VD_REQ_FUA);
        offset += n;
        len -= n;
    }
    free(zero);
    return ret;
}

/* Aligned zero write: the driver's, or the fallback. */
static int aligned_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    if (!bs->discard_unmap) {
        flags &= ~VD_REQ_MAY_UNMAP;
    }
    int ret = -ENOTSUP;
    if (bs->drv->pwrite_zeroes) {
        uint64_t chunk = max_chunk(bs);
        unsigned dflags = bs->supports_fua ? flags : flags & ~VD_REQ_FUA;
        ret = 0;
        while (len && ret == 0) {
            uint64_t n = VD_MIN(len, chunk);
            ret = bs->drv->pwrite_zeroes(bs, offset, n, dflags);
            if (ret == 0) {
                offset += n;
                len -= n;
            }
        }
        if (ret == 0) {
            return 0;
        }
    }
    if (ret != -ENOTSUP || (flags & VD_REQ_NO_FALLBACK)) {
        return ret;
    }
    return zero_fallback(bs, offset, len, flags);
}

/* data NULL means zeroes. */
static int node_write_inner(vd_node *bs, uint64_t offset, uint64_t len, const void *data,
                            unsigned flags)
{
    uint32_t a = bs->request_alignment;
    const uint8_t *p = data;
    int ret;

    if (a > 1) {
        uint64_t head = offset & (a - 1);
        if (head) {
            uint64_t blk = offset - head;
            uint64_t n = VD_MIN(len, a - head);
            vd_node_event(bs, VD_EV_PWRITEV_RMW_HEAD);
            ret = rmw_block(bs, blk, offset, n, p, flags);
            if (ret < 0) {
                return ret;
            }
            vd_node_event(bs, VD_EV_PWRITEV_RMW_AFTER_HEAD);
            offset += n;
            len -= n;
            if (p) {
                p += n;
            }
        }
        uint64_t tail = len & (a - 1);
        uint64_t mid = len - tail;
        if (mid) {
            ret = p ? aligned_pwrite(bs, offset, mid, p, flags)
                    : aligned_pwrite_zeroes(bs, offset, mid, flags);
            if (ret < 0) {
                return ret;
            }
            offset += mid;
            if (p) {
                p += mid;
            }
        }
        if (tail) {
            vd_node_event(bs, VD_EV_PWRITEV_RMW_TAIL);
            ret = rmw_block(bs, offset, offset, tail, p, flags);
            if (ret == 0) {
                vd_node_event(bs, VD_EV_PWRITEV_RMW_AFTER_TAIL);
            }
            return ret;
        }
        return 0;
    }
    return p ? drv_pwrite(bs, offset, len, p, flags)
             : aligned_pwrite_zeroes(bs, offset, len, flags);
}

/* 1: nothing to do (len 0), 0: go on, else -errno. */
static int write_prepare(vd_node *bs, uint64_t offset, uint64_t len)
{
    int ret = check_request(bs, offset, len, true);
    if (ret < 0) {
        return ret;
    }
    if (len == 0) {
        return 1;
    }
    return bs->read_only ? -EPERM : 0;
}

static int node_write(vd_node *bs, uint64_t offset, uint64_t len, const void *data,
                      unsigned flags)
{
    int ret;
    /* QEMU announces these on the node written, before and after the write */
    node_event_here(bs, data ? VD_EV_PWRITEV : VD_EV_PWRITEV_ZERO);
    if (!tracking_needed(bs)) {
        ret = node_write_inner(bs, offset, len, data, flags);
    } else {
        uint32_t a = bs->request_alignment;
        bool unaligned = !vd_is_aligned(offset, a) || !vd_is_aligned(len, a);
        vd_req req;
        req_begin(bs, &req, offset, len, unaligned);
        ret = node_write_inner(bs, offset, len, data, flags);
        req_end(bs, &req);
    }
    if (ret == 0 && (flags & VD_REQ_FUA) && !bs->supports_fua) {
        ret = vd_node_flush(bs);
    }
    node_event_here(bs, VD_EV_PWRITEV_DONE);
    __atomic_add_fetch(&bs->write_gen, 1, __ATOMIC_SEQ_CST);
    return ret;
}

int vd_node_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf, unsigned flags)
{
    int ret = write_prepare(bs, offset, len);
    if (ret != 0) {
        return ret < 0 ? ret : 0;
    }
    if (!bs->drv->pwrite) {
        return -ENOTSUP;
    }
    if (bs->detect_zeroes != VD_DETECT_ZEROES_OFF && vd_buffer_is_zero(buf, len)) {
        unsigned zflags = flags;
        if (bs->detect_zeroes == VD_DETECT_ZEROES_UNMAP) {
            zflags |= VD_REQ_MAY_UNMAP;
        }
        return node_write(bs, offset, len, NULL, zflags);
    }
    return node_write(bs, offset, len, buf, flags);
}

int vd_node_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    int ret = write_prepare(bs, offset, len);
    if (ret != 0) {
        return ret < 0 ? ret : 0;
    }
    if (!bs->drv->pwrite_zeroes && !bs->drv->pwrite) {
        return -ENOTSUP;
    }
    if ((flags & VD_REQ_NO_FALLBACK) && !bs->drv->pwrite_zeroes) {
        return -ENOTSUP;
    }
    return node_write(bs, offset, len, NULL, flags);
}

int vd_node_pwrite_compressed(vd_node *bs, uint64_t offset, uint64_t len, const void *buf)
{
    int ret = write_prepare(bs, offset, len);
    if (ret < 0) {
        return ret;
    }
    if (bs->read_only) {
        return -EPERM;
    }
    if (!bs->drv->pwrite_compressed) {
        return -ENOTSUP;
    }
    return bs->drv->pwrite_compressed(bs, offset, len, buf);
}

int vd_node_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    int ret = write_prepare(bs, offset, len);
    if (ret != 0) {
        return ret < 0 ? ret : 0;
    }
    if (!bs->discard_unmap || !bs->drv->discard) {
        return 0; /* discard is advisory */
    }
    /* only whole aligned blocks can be discarded */
    uint32_t a = bs->request_alignment;
    uint64_t start, end = vd_align_down(offset + len, a);
    if (vd_align_up_overflow(offset, a, &start) || start >= end) {
        return 0;
    }
    uint64_t chunk = max_chunk(bs);
    vd_req req;
    if (tracking_needed(bs)) {
        req_begin(bs, &req, start, end - start, false);
    }
    ret = 0;
    for (uint64_t pos = start; pos < end && ret == 0; pos += chunk) {
        ret = bs->drv->discard(bs, pos, VD_MIN(chunk, end - pos));
    }
    if (tracking_needed(bs)) {
        req_end(bs, &req);
    }
    __atomic_add_fetch(&bs->write_gen, 1, __ATOMIC_SEQ_CST);
    return ret == -ENOTSUP ? 0 : ret;
}

int vd_node_flush(vd_node *bs)
{
    int ret = 0;
    if (bs->read_only) {
        return 0;
    }
    /* the driver writes back what it caches, then its children reach disk */
    uint64_t gen = __atomic_load_n(&bs->write_gen, __ATOMIC_SEQ_CST);
    /* As QEMU: a protocol node (file, blkdebug, nbd) nothing was written to
     * since its last flush is not flushed again; its children still are.
     * Formats are always asked: their caches change without writes. */
    bool skip = bs->drv->kind == VD_DRV_PROTOCOL &&
                gen == __atomic_load_n(&bs->flushed_gen, __ATOMIC_SEQ_CST);
    if (bs->file) {
        vd_node_event(bs->file, VD_EV_FLUSH_TO_OS);
    }
    if (bs->drv->flush && !skip) {
        ret = bs->drv->flush(bs);
    }
    if (ret == 0 && bs->file) {
        if (!skip) {
            vd_node_event(bs->file, VD_EV_FLUSH_TO_DISK);
        }
        ret = vd_node_flush(bs->file);
    }
    if (ret == 0 && bs->data_file) {
        ret = vd_node_flush(bs->data_file);
    }
    if (ret == 0) {
        __atomic_store_n(&bs->flushed_gen, gen, __ATOMIC_SEQ_CST);
    }
    return ret;
}

int64_t vd_node_get_length(vd_node *bs)
{
    if (bs->drv->get_length) {
        return bs->drv->get_length(bs);
    }
    if (bs->file) {
        return vd_node_get_length(bs->file);
    }
    return -ENOTSUP;
}

int vd_node_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                     vd_error **errp)
{
    if (size > (uint64_t)INT64_MAX) {
        return vd_error_set(errp, EFBIG, "Image size must be less than 8 EiB");
    }
    if (bs->read_only) {
        return vd_error_set(errp, EPERM, "Image '%s' is read-only", bs->filename);
    }
    if (!bs->drv->truncate) {
        if (bs->drv->is_filter && bs->file) {
            return vd_node_truncate(bs->file, size, exact, prealloc, errp);
        }
        return vd_error_set(errp, ENOTSUP, "Image format '%s' does not support resizing",
                            bs->drv->name);
    }
    int ret = bs->drv->truncate(bs, size, exact, prealloc, errp);
    __atomic_add_fetch(&bs->write_gen, 1, __ATOMIC_SEQ_CST);
    return ret;
}

int vd_node_read_backing(vd_node *bs, uint64_t offset, uint64_t len, void *buf)
{
    if (!bs->backing) {
        memset(buf, 0, len);
        return 0;
    }
    /* vd_node_pread zero-fills past the end of a format node */
    return vd_node_pread(bs->backing, offset, len, buf, 0);
}

/* ------------------------------------------------------------ block status */

int vd_node_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                         uint64_t *pnum, uint64_t *map, vd_node **file)
{
    *map = 0;
    *file = NULL;
    if (len == 0) {
        *pnum = 0;
        return 0;
    }
    if (!bs->drv->block_status) {
        if (bs->drv->is_filter && bs->file) {
            return vd_node_block_status(bs->file, want_zero, offset, len, pnum, map, file);
        }
        *pnum = len;
        if (bs->drv->kind == VD_DRV_PROTOCOL) {
            *map = offset;
            *file = bs;
            return VD_BLOCK_DATA | VD_BLOCK_ALLOCATED | VD_BLOCK_OFFSET_VALID;
        }
        return VD_BLOCK_DATA | VD_BLOCK_ALLOCATED;
    }
    int ret = bs->drv->block_status(bs, want_zero, offset, len, pnum, map, file);
    if (ret < 0) {
        return ret;
    }
    if (*pnum == 0 || *pnum > len) {
        *pnum = len; /* a driver bug must not make callers loop forever */
    }
    if (bs->drv->kind == VD_DRV_PROTOCOL && !*file) {
        *file = bs;
    }
    if ((ret & VD_BLOCK_RECURSE) && *file && *file != bs) {
        /* the file's answer, verbatim (raw, filters) */
        vd_node *f = *file;
        uint64_t at = *map;
        ret = vd_node_block_status(f, want_zero, at, *pnum, pnum, map, file);
        if (ret >= 0 && !(ret & (VD_BLOCK_DATA | VD_BLOCK_ZERO)) &&
            f->drv->kind != VD_DRV_PROTOCOL) {
            return ret; /* unallocated in a filtered format: stays so */
        }
    } else if (want_zero && (ret & VD_BLOCK_PROBE_ZERO) && *file && *file != bs &&
               (ret & VD_BLOCK_DATA) && (ret & VD_BLOCK_OFFSET_VALID) &&
               !(ret & VD_BLOCK_ZERO)) {
        /* preallocated data stored in a hole of the protocol reads as zeroes */
        uint64_t pnum2, map2;
        vd_node *file2;
        int r2 = vd_node_block_status(*file, want_zero, *map, *pnum, &pnum2, &map2, &file2);
        if (r2 >= 0) {
            *pnum = pnum2;
            ret |= r2 & VD_BLOCK_ZERO;
        }
    }
    if (ret < 0) {
        return ret;
    }
    if (ret & VD_BLOCK_ZERO) {
        ret |= VD_BLOCK_ALLOCATED;
    }
    if (ret & VD_BLOCK_DATA) {
        ret |= VD_BLOCK_ALLOCATED;
    }
    return ret & ~(VD_BLOCK_RECURSE | VD_BLOCK_PROBE_ZERO);
}
