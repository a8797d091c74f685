/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The "copy-on-read" filter (QEMU 7.2's block/copy-on-read.c with the copy
 * its block layer does for BDRV_REQ_COPY_ON_READ): sits above a format
 * node; a read of a range the format node does not allocate itself (data of
 * its backing chain, or unallocated) is read in whole clusters of that node
 * and written into it, zeroes as a zero write, so that the next read finds
 * the data in the top image.  Writes, discards and everything else pass
 * through.  A read-only filter only reads.
 *
 * vdisk-io -C (qemu-io's copy-on-read) opens the image under this filter.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define COR_MAX_BOUNCE (16u << 20) /* QEMU's MAX_BOUNCE_BUFFER */

static const vd_opt_desc cor_open_opts[] = {
    {"bottom", VD_OPT_STRING, "accepted for compatibility: the node to stop copying at",
     NULL},
    {NULL, 0, NULL, NULL},
};

static int cor_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    (void)opts;
    if (!bs->file) {
        return vd_error_set(errp, EINVAL, "The copy-on-read filter needs a file child");
    }
    if (vd_opts_get(opts, "bottom")) {
        return vd_error_set(errp, ENOTSUP, "The copy-on-read filter's 'bottom' option is "
                            "not supported");
    }
    bs->request_alignment = bs->file->request_alignment;
    return 0;
}

/* The child's allocation unit (its subcluster or cluster, else the request) */
static uint64_t cor_unit(vd_node *child)
{
    uint32_t cs = child->drv->cluster_size ? child->drv->cluster_size(child) : 0;
    return cs ? cs : 0;
}

/* Copy [start, end) (unit-aligned, within the image) into the child and
 * put the part of it that [offset, offset+len) covers into buf. */
static int cor_copy(vd_node *child, uint64_t start, uint64_t end, uint64_t offset,
                    uint64_t len, uint8_t *buf)
{
    uint64_t max = COR_MAX_BOUNCE;
    uint8_t *bounce = vd_malloc(VD_MIN(end - start, max));
    if (!bounce) {
        return -ENOMEM;
    }
    int ret = 0;
    for (uint64_t pos = start; pos < end && ret == 0;) {
        uint64_t n = VD_MIN(end - pos, max);
        ret = vd_node_pread(child, pos, n, bounce, 0);
        if (ret == 0) {
            if (vd_buffer_is_zero(bounce, n)) {
                ret = vd_node_pwrite_zeroes(child, pos, n, 0);
            } else {
                ret = vd_node_pwrite(child, pos, n, bounce, 0);
            }
        }
        if (ret == 0) {
            uint64_t a = VD_MAX(pos, offset), b = VD_MIN(pos + n, offset + len);
            if (a < b) {
                memcpy(buf + (a - offset), bounce + (a - pos), b - a);
            }
        }
        pos += n;
    }
    free(bounce);
    return ret;
}

static int cor_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    vd_node *child = bs->file;
    if (bs->read_only || child->read_only) {
        return vd_node_pread(child, offset, len, buf, flags);
    }
    int64_t size = vd_node_get_length(child);
    if (size < 0) {
        return (int)size;
    }
    uint8_t *p = buf;
    uint64_t end = offset + len;
    if (end > (uint64_t)size) {
        uint64_t from = VD_MAX(offset, (uint64_t)size);
        memset(p + (from - offset), 0, end - from);
        end = from;
    }
    /* as QEMU: the request rounded to the child's clusters, walked by
     * allocation; a run of what the child does not hold (at most one
     * bounce buffer) is copied as one piece */
    uint64_t unit = cor_unit(child);
    uint64_t pos = unit ? vd_align_down(offset, unit) : offset;
    uint64_t rend = unit ? VD_MIN(vd_div_round_up(end, unit) * unit, (uint64_t)size) : end;
    while (pos < rend) {
        uint64_t pnum = 0, map = 0;
        vd_node *file = NULL;
        int st = vd_node_block_status(child, false, pos, rend - pos, &pnum, &map, &file);
        if (st < 0) {
            return st;
        }
        if (pnum == 0 || pnum > rend - pos) {
            pnum = rend - pos;
        }
        int ret = 0;
        if (st & VD_BLOCK_ALLOCATED) {
            uint64_t a = VD_MAX(pos, offset), b = VD_MIN(pos + pnum, end);
            if (a < b) {
                ret = vd_node_pread(child, a, b - a, p + (a - offset), flags);
            }
        } else {
            uint64_t run = pnum;
            while (pos + run < rend && run < COR_MAX_BOUNCE) {
                uint64_t n = 0;
                st = vd_node_block_status(child, false, pos + run, rend - pos - run, &n, &map,
                                          &file);
                if (st < 0) {
                    return st;
                }
                if ((st & VD_BLOCK_ALLOCATED) || n == 0) {
                    break;
                }
                run += VD_MIN(n, rend - pos - run);
            }
            pnum = VD_MIN(run, (uint64_t)COR_MAX_BOUNCE);
            ret = cor_copy(child, pos, pos + pnum, offset, end - offset, p);
        }
        if (ret < 0) {
            return ret;
        }
        pos += pnum;
    }
    return 0;
}

static int cor_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                      unsigned flags)
{
    return vd_node_pwrite(bs->file, offset, len, buf, flags);
}

static int cor_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    return vd_node_pwrite_zeroes(bs->file, offset, len, flags);
}

static int cor_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    return vd_node_discard(bs->file, offset, len);
}

static int cor_flush(vd_node *bs)
{
    (void)bs; /* nothing cached; the core flushes the child next */
    return 0;
}

static int64_t cor_get_length(vd_node *bs)
{
    return vd_node_get_length(bs->file);
}

const vd_driver vd_drv_copy_on_read = {
    .name = "copy-on-read",
    .kind = VD_DRV_FILTER,
    .open_opts = cor_open_opts,
    .is_filter = true,
    .open = cor_open,
    .get_length = cor_get_length,
    .pread = cor_pread,
    .pwrite = cor_pwrite,
    .pwrite_zeroes = cor_pwrite_zeroes,
    .discard = cor_discard,
    .flush = cor_flush,
};
