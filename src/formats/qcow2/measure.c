/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 measure: the file size a new qcow2 image needs, computed the way
 * qemu-img 7.2 does so that both print the same numbers.
 *
 * fully-allocated = one header cluster + L2 tables for every guest cluster
 * + an L1 table for them (rounded to whole clusters) + refcount table and
 * blocks for all of that (found as a fixed point, since refcount metadata
 * counts itself) + the data.  required = fully-allocated minus the data
 * clusters the source does not use (with preallocation falloc/full every
 * data cluster counts).  A source cluster counts when any byte of it is
 * allocated data somewhere in the source's chain and not known zero.
 */
#include <stdlib.h>

#include "qcow2.h"

extern const vd_driver vd_drv_qcow2;

int64_t qcow2_refcount_metadata_size(int64_t clusters, uint64_t cluster_size,
                                     int refcount_order, bool generous,
                                     uint64_t *refblock_count)
{
    int64_t per_table_cluster = (int64_t)cluster_size / 8;
    int64_t per_block = (int64_t)(cluster_size * 8) >> refcount_order;
    int64_t table = 0, blocks = 0, n = 0, last;

    do {
        last = n;
        blocks = (clusters + table + blocks + per_block - 1) / per_block;
        table = (blocks + per_table_cluster - 1) / per_table_cluster;
        n = clusters + blocks + table;
        if (n == last && generous) {
            clusters += (table + 1) / 2;
            n = 0; /* once more, with room to grow */
        }
    } while (n != last);
    if (refblock_count) {
        *refblock_count = (uint64_t)blocks;
    }
    return (blocks + table) * (int64_t)cluster_size;
}

int64_t qcow2_calc_prealloc_size(int64_t total_size, uint64_t cluster_size,
                                 int refcount_order, bool extended_l2)
{
    int64_t cs = (int64_t)cluster_size;
    int64_t aligned = (total_size + cs - 1) / cs * cs;
    int64_t meta = cs; /* header */
    int64_t per_l2 = cs / 8;
    int64_t l2e = extended_l2 ? 16 : 8; /* subcluster.c: 16-byte entries */

    int64_t nl2e = aligned / cs;
    nl2e = (nl2e + cs / l2e - 1) / (cs / l2e) * (cs / l2e);
    meta += nl2e * l2e;
    int64_t nl1e = nl2e * l2e / cs;
    nl1e = (nl1e + per_l2 - 1) / per_l2 * per_l2;
    meta += nl1e * 8;
    meta += qcow2_refcount_metadata_size((meta + aligned) / cs, cluster_size, refcount_order,
                                         false, NULL);
    return meta + aligned;
}

/* Block status over src's whole chain, as qemu-img measure asks it. */
static int chain_status(vd_node *bs, uint64_t offset, uint64_t len, uint64_t *pnum)
{
    for (;;) {
        uint64_t map = 0;
        vd_node *file = NULL;
        int ret = vd_node_block_status(bs, true, offset, len, pnum, &map, &file);
        if (ret < 0) {
            return ret;
        }
        if (ret & (VD_BLOCK_DATA | VD_BLOCK_ZERO)) {
            return ret | VD_BLOCK_ALLOCATED;
        }
        if (!bs->backing) {
            /* unallocated everywhere: reads as zeroes */
            return bs->drv->supports_backing ? VD_BLOCK_ZERO : ret;
        }
        int64_t blen = vd_node_get_length(bs->backing);
        if (blen < 0) {
            return (int)blen;
        }
        if (offset >= (uint64_t)blen) {
            return VD_BLOCK_ZERO;
        }
        len = VD_MIN(*pnum, (uint64_t)blen - offset);
        bs = bs->backing;
    }
}

static uint64_t bitmaps_size(vd_node *src, uint64_t cluster_size)
{
    if (!src || src->drv != &vd_drv_qcow2) {
        return 0;
    }
    qcow2_state *s = src->opaque;
    uint64_t total = 0, dir = 0;
    if (!s->bitmaps_loaded || !s->bitmaps) {
        return 0;
    }
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        const qcow2_bitmap *b = &s->bitmaps[i];
        uint64_t gran = 1ull << (b->granularity_bits & 63);
        uint64_t bits = vd_div_round_up(s->size, gran);
        uint64_t bytes = vd_div_round_up(bits, 8);
        uint64_t clusters = vd_div_round_up(bytes, cluster_size);
        total += clusters * cluster_size;
        total += vd_div_round_up(clusters * 8, cluster_size) * cluster_size;
        dir += (24 + strlen(b->name) + 7) & ~7ull;
    }
    return total + vd_div_round_up(dir, cluster_size) * cluster_size;
}

int qcow2_measure(const vd_opts *opts, vd_node *src, uint64_t size, vd_measure_info *out,
                  vd_error **errp)
{
    qcow2_create_params p;
    int ret = qcow2_parse_create_opts(opts, &p, false, errp);
    if (ret < 0) {
        return ret;
    }
    uint64_t cs = p.cluster_size;
    uint64_t virtual_size;
    if (vd_align_up_overflow(size, cs, &virtual_size)) {
        return vd_error_set(errp, EFBIG, "The image size is too large");
    }
    uint64_t l2_tables = vd_div_round_up(virtual_size / cs, cs / 8);
    if (l2_tables * 8 > QCOW2_MAX_L1_BYTES) {
        return vd_error_set(errp, EFBIG,
                            "The image size is too large (try using a larger cluster size)");
    }
    bool full = p.prealloc == VD_PREALLOC_FULL || p.prealloc == VD_PREALLOC_FALLOC;
    uint64_t required = 0;
    if (src && !full) {
        int64_t ssize = vd_node_get_length(src);
        if (ssize < 0) {
            return vd_error_setg_errno(errp, (int)-ssize, "Unable to get image virtual_size");
        }
        uint64_t pnum;
        for (uint64_t off = 0; off < (uint64_t)ssize; off += pnum) {
            int st = chain_status(src, off, (uint64_t)ssize - off, &pnum);
            if (st < 0) {
                return vd_error_setg_errno(errp, -st, "Unable to get block status");
            }
            if (pnum == 0) {
                return vd_error_set(errp, EIO, "Unable to get block status");
            }
            if (st & VD_BLOCK_ZERO) {
                continue;
            }
            if ((st & (VD_BLOCK_DATA | VD_BLOCK_ALLOCATED)) ==
                (VD_BLOCK_DATA | VD_BLOCK_ALLOCATED)) {
                uint64_t end;
                if (vd_align_up_overflow(off + pnum, cs, &end)) {
                    end = UINT64_MAX;
                }
                pnum = end - off;
                required += off % cs + pnum;
            }
        }
    }
    if (full) {
        required = virtual_size;
    }
    int64_t fa = qcow2_calc_prealloc_size((int64_t)virtual_size, cs, p.refcount_order,
                                          p.extended_l2);
    out->fully_allocated = (uint64_t)fa;
    out->required = (uint64_t)fa - virtual_size + required;
    out->bitmaps = p.version >= 3 ? bitmaps_size(src, cs) : 0;
    out->has_bitmaps = p.version >= 3 && src && vd_node_supports_bitmaps(src);
    /* the LUKS header's clusters (crypto.c) */
    uint64_t crypto_hdr;
    ret = qcow2_crypto_measure(opts, cs, &crypto_hdr, errp);
    if (ret < 0) {
        return ret;
    }
    out->fully_allocated += crypto_hdr;
    out->required += crypto_hdr;
    return 0;
}
