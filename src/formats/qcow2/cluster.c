/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 guest cluster mapping: L1/L2 lookup, reads, allocating writes with
 * copy-on-write of partial clusters (from the backing chain, zero, shared
 * or compressed clusters), zero clusters, discard, block status, L1 growth
 * and shrinking, and preallocation.
 *
 * Allocating writes: under the lock the L2 table is made writable, host
 * clusters are allocated and the guest range is registered in flight; the
 * data (with its COW head and tail) is written without the lock; then the
 * L2 entries are set under the lock.  Anything that changes L2 entries
 * waits for in-flight ranges it overlaps.
 */
#include <stdlib.h>

#include "format-io.h"
#include "qcow2.h"

/* Entry i of a slice, host order. */
static inline uint64_t l2e_get(const uint64_t *slice, uint32_t i)
{
    return vd_ld_be64(&slice[i]);
}

static inline void l2e_set(uint64_t *slice, uint32_t i, uint64_t v)
{
    vd_st_be64(&slice[i], v);
}

/* ------------------------------------------------------------ in flight */

void qcow2_wait_inflight(qcow2_state *s, uint64_t start, uint64_t end)
{
    for (;;) {
        bool busy = false;
        for (qcow2_inflight *f = s->inflight; f; f = f->next) {
            if (f->start < end && start < f->end) {
                busy = true;
                break;
            }
        }
        if (!busy) {
            return;
        }
        pthread_cond_wait(&s->inflight_cond, &s->lock);
    }
}

void qcow2_inflight_add(qcow2_state *s, qcow2_inflight *f, uint64_t start, uint64_t end)
{
    f->start = start;
    f->end = end;
    f->next = s->inflight;
    s->inflight = f;
}

void qcow2_inflight_remove(qcow2_state *s, qcow2_inflight *f)
{
    for (qcow2_inflight **p = &s->inflight; *p; p = &(*p)->next) {
        if (*p == f) {
            *p = f->next;
            break;
        }
    }
    pthread_cond_broadcast(&s->inflight_cond);
}

/* ---------------------------------------------------------------- lookup */

int qcow2_get_l2_slice(qcow2_state *s, uint64_t l2_offset, uint32_t l2_index,
                       uint64_t **slice)
{
    uint64_t off = l2_offset + (uint64_t)(l2_index / s->l2_slice_entries) * s->l2_slice_size;
    return vd_cache_get(s->l2_cache, off, (void **)slice);
}

/* L2 table offset for an L1 index (0 when none). */
static int l2_offset_of(qcow2_state *s, uint32_t l1_index, uint64_t *l2_offset)
{
    *l2_offset = 0;
    if (l1_index >= s->l1_size) {
        return 0;
    }
    uint64_t off = s->l1_table[l1_index] & L1E_OFFSET_MASK;
    if (off && qcow2_offset_into_cluster(s, off)) {
        qcow2_signal_corruption(s, true, "L2 table offset %#llx unaligned (L1 index: %#x)",
                                (unsigned long long)off, l1_index);
        return -EIO;
    }
    *l2_offset = off;
    return 0;
}

int qcow2_get_host_offset(qcow2_state *s, uint64_t offset, uint64_t *bytes, uint64_t *host,
                          qcow2_cluster_type *type)
{
    uint64_t cs = s->cluster_size;
    uint64_t oic = qcow2_offset_into_cluster(s, offset);
    uint32_t l1_index = qcow2_l1_index(s, offset);
    uint32_t l2_index = qcow2_l2_index(s, offset);
    uint32_t in_slice = l2_index % s->l2_slice_entries;
    uint64_t avail = (uint64_t)(s->l2_slice_entries - in_slice) * cs - oic;
    uint64_t l2_offset;
    int ret;

    *host = 0;
    if (*bytes > avail) {
        *bytes = avail;
    }
    ret = l2_offset_of(s, l1_index, &l2_offset);
    if (ret < 0) {
        return ret;
    }
    if (!l2_offset) {
        *type = QCOW2_CLUSTER_UNALLOCATED;
        return 0;
    }
    uint64_t *slice;
    ret = qcow2_get_l2_slice(s, l2_offset, l2_index, &slice);
    if (ret < 0) {
        return ret;
    }
    uint64_t nb = vd_div_round_up(oic + *bytes, cs);
    uint64_t entry = l2e_get(slice, in_slice);
    qcow2_cluster_type t = qcow2_get_cluster_type(s, entry);
    uint64_t n = 1;

    if ((t == QCOW2_CLUSTER_ZERO_PLAIN || t == QCOW2_CLUSTER_ZERO_ALLOC) && s->version < 3) {
        vd_cache_put(s->l2_cache, (void **)&slice);
        qcow2_signal_corruption(s, true,
                                "Zero cluster entry found in pre-v3 image (L2 offset: %#llx, "
                                "L2 index: %#x)",
                                (unsigned long long)l2_offset, l2_index);
        return -EIO;
    }
    switch (t) {
    case QCOW2_CLUSTER_COMPRESSED:
        *host = entry;
        break;
    case QCOW2_CLUSTER_UNALLOCATED:
    case QCOW2_CLUSTER_ZERO_PLAIN:
        while (n < nb && qcow2_get_cluster_type(s, l2e_get(slice, in_slice + (uint32_t)n)) == t) {
            n++;
        }
        break;
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC: {
        uint64_t h = entry & L2E_OFFSET_MASK;
        if (qcow2_offset_into_cluster(s, h)) {
            vd_cache_put(s->l2_cache, (void **)&slice);
            qcow2_signal_corruption(s, true,
                                    "Cluster allocation offset %#llx unaligned (L2 offset: "
                                    "%#llx, L2 index: %#x)",
                                    (unsigned long long)h, (unsigned long long)l2_offset,
                                    l2_index);
            return -EIO;
        }
        while (n < nb) {
            uint64_t e = l2e_get(slice, in_slice + (uint32_t)n);
            if (qcow2_get_cluster_type(s, e) != t || (e & L2E_OFFSET_MASK) != h + n * cs) {
                break;
            }
            n++;
        }
        *host = h + oic;
        break;
    }
    }
    vd_cache_put(s->l2_cache, (void **)&slice);
    *type = t;
    if (*bytes > n * cs - oic) {
        *bytes = n * cs - oic;
    }
    return 0;
}

/* ------------------------------------------------------------------ read */

int qcow2_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    qcow2_state *s = bs->opaque;
    if (s->extended_l2) {
        return qcow2_sc_pread(s, offset, len, buf); /* subcluster.c */
    }
    uint8_t *p = buf;
    uint8_t *cbuf = NULL;
    int ret = 0;
    (void)flags;

    while (len) {
        uint64_t bytes = len, host;
        qcow2_cluster_type type;
        qcow2_inflight hold;
        pthread_mutex_lock(&s->lock);
        ret = s->broken ? -EIO : qcow2_get_host_offset(s, offset, &bytes, &host, &type);
        if (ret == 0 && type == QCOW2_CLUSTER_NORMAL) {
            qcow2_hold(s, &hold, host, host + bytes);
        } else if (ret == 0 && type == QCOW2_CLUSTER_COMPRESSED) {
            uint64_t coff, clen;
            qcow2_parse_compressed(s, host, &coff, &clen);
            qcow2_hold(s, &hold, coff, coff + clen);
        }
        pthread_mutex_unlock(&s->lock);
        if (ret < 0) {
            break;
        }
        switch (type) {
        case QCOW2_CLUSTER_UNALLOCATED:
            if (bs->backing) {
                QCOW2_EVENT(s, READ_BACKING_AIO);
                ret = vd_node_read_backing(bs, offset, bytes, p);
            } else {
                memset(p, 0, bytes);
            }
            break;
        case QCOW2_CLUSTER_ZERO_PLAIN:
        case QCOW2_CLUSTER_ZERO_ALLOC:
            memset(p, 0, bytes);
            break;
        case QCOW2_CLUSTER_COMPRESSED:
            if (!cbuf) {
                cbuf = malloc(s->cluster_size);
                if (!cbuf) {
                    ret = -ENOMEM;
                    break;
                }
            }
            ret = qcow2_read_compressed(s, host, cbuf);
            if (ret == 0) {
                memcpy(p, cbuf + qcow2_offset_into_cluster(s, offset), bytes);
            }
            break;
        case QCOW2_CLUSTER_NORMAL:
            vd_node_event(s->data, VD_EV_READ_AIO);
            ret = vd_node_pread(s->data, host, bytes, p, 0);
            break;
        }
        if (type == QCOW2_CLUSTER_NORMAL || type == QCOW2_CLUSTER_COMPRESSED) {
            pthread_mutex_lock(&s->lock);
            qcow2_hold_release(s, &hold);
            pthread_mutex_unlock(&s->lock);
        }
        if (ret < 0) {
            break;
        }
        offset += bytes;
        p += bytes;
        len -= bytes;
    }
    free(cbuf);
    return ret;
}

/* ------------------------------------------------------------------- L1 */

int qcow2_write_l1_entry(qcow2_state *s, uint32_t index)
{
    uint32_t start = index & ~63u;
    uint32_t n = VD_MIN(64u, s->l1_size - start);
    uint64_t buf[64];
    for (uint32_t i = 0; i < n; i++) {
        vd_st_be64(&buf[i], s->l1_table[start + i]);
    }
    uint64_t off = s->l1_table_offset + (uint64_t)start * 8;
    int ret = qcow2_pre_write_overlap_check(s, QCOW2_OL_ACTIVE_L1, off, (uint64_t)n * 8);
    if (ret < 0) {
        return ret;
    }
    QCOW2_EVENT(s, L1_UPDATE);
    ret = vd_node_pwrite(s->bs->file, off, (uint64_t)n * 8, buf, 0);
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    return ret;
}

int qcow2_grow_l1_table(qcow2_state *s, uint64_t min_size, bool exact)
{
    int ret;
    if (min_size <= s->l1_size) {
        return 0;
    }
    if (min_size > QCOW2_MAX_L1_BYTES / 8) {
        return -EFBIG;
    }
    uint64_t new_size = min_size;
    if (!exact) {
        new_size = VD_MAX(min_size, (uint64_t)s->l1_size + s->l1_size / 2 + 1);
        if (new_size > QCOW2_MAX_L1_BYTES / 8) {
            new_size = QCOW2_MAX_L1_BYTES / 8;
        }
    }
    uint64_t bytes = new_size * 8;
    uint64_t *t = calloc(new_size, 8);
    if (!t) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < s->l1_size; i++) {
        vd_st_be64(&t[i], s->l1_table[i]);
    }
    QCOW2_EVENT(s, L1_GROW_ALLOC_TABLE);
    int64_t off = qcow2_alloc_clusters(s, qcow2_size_to_clusters(s, bytes));
    if (off < 0) {
        free(t);
        return (int)off;
    }
    ret = vd_cache_flush(s->refcount_cache);
    if (ret == 0) {
        ret = qcow2_pre_write_overlap_check(s, 0, (uint64_t)off, bytes);
    }
    if (ret == 0) {
        QCOW2_EVENT(s, L1_GROW_WRITE_TABLE);
        ret = vd_node_pwrite(s->bs->file, (uint64_t)off, bytes, t, 0);
    }
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        free(t);
        qcow2_free_clusters(s, (uint64_t)off, bytes, QCOW2_DISCARD_OTHER);
        return ret;
    }
    uint64_t old_off = s->l1_table_offset;
    uint32_t old_size = s->l1_size;
    s->l1_table_offset = (uint64_t)off;
    s->l1_size = (uint32_t)new_size;
    QCOW2_EVENT(s, L1_GROW_ACTIVATE_TABLE);
    ret = qcow2_write_l1_fields(s);
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        s->l1_table_offset = old_off;
        s->l1_size = old_size;
        free(t);
        qcow2_free_clusters(s, (uint64_t)off, bytes, QCOW2_DISCARD_OTHER);
        return ret;
    }
    for (uint64_t i = 0; i < new_size; i++) {
        t[i] = vd_ld_be64(&t[i]);
    }
    free(s->l1_table);
    s->l1_table = t;
    if (old_size) {
        qcow2_free_clusters(s, old_off, (uint64_t)old_size * 8, QCOW2_DISCARD_OTHER);
    }
    return 0;
}

int qcow2_shrink_l1_table(qcow2_state *s, uint64_t new_size)
{
    if (new_size >= s->l1_size) {
        return 0;
    }
    int ret = vd_cache_flush(s->l2_cache);
    if (ret < 0) {
        return ret;
    }
    uint64_t off = s->l1_table_offset + new_size * 8;
    uint64_t bytes = ((uint64_t)s->l1_size - new_size) * 8;
    ret = qcow2_pre_write_overlap_check(s, QCOW2_OL_ACTIVE_L1, off, bytes);
    if (ret == 0) {
        QCOW2_EVENT(s, L1_SHRINK_WRITE_TABLE);
        ret = vd_node_pwrite_zeroes(s->bs->file, off, bytes, 0);
    }
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        return ret;
    }
    QCOW2_EVENT(s, L1_SHRINK_FREE_L2_CLUSTERS);
    for (uint64_t i = new_size; i < s->l1_size; i++) {
        uint64_t l2 = s->l1_table[i] & L1E_OFFSET_MASK;
        s->l1_table[i] = 0;
        if (l2 && !qcow2_offset_into_cluster(s, l2)) {
            qcow2_free_clusters(s, l2, s->cluster_size, QCOW2_DISCARD_ALWAYS);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ L2 */

int qcow2_get_l2_for_write(qcow2_state *s, uint64_t offset, uint64_t **slice, uint32_t *index)
{
    uint32_t l1_index = qcow2_l1_index(s, offset);
    uint32_t l2_index = qcow2_l2_index(s, offset);
    int ret;

    if (l1_index >= s->l1_size) {
        ret = qcow2_grow_l1_table(s, (uint64_t)l1_index + 1, false);
        if (ret < 0) {
            return ret;
        }
    }
    uint64_t l1e = s->l1_table[l1_index];
    uint64_t old = l1e & L1E_OFFSET_MASK;
    if (old && qcow2_offset_into_cluster(s, old)) {
        qcow2_signal_corruption(s, true, "L2 table offset %#llx unaligned (L1 index: %#x)",
                                (unsigned long long)old, l1_index);
        return -EIO;
    }
    *index = l2_index % s->l2_slice_entries;
    if (old && (l1e & QCOW_OFLAG_COPIED)) {
        return qcow2_get_l2_slice(s, old, l2_index, slice);
    }

    /* a new table: empty, or a private copy of a shared one */
    int64_t n = qcow2_alloc_clusters(s, 1);
    if (n < 0) {
        return (int)n;
    }
    if (n == 0) {
        /* the refcounts say the header's cluster is free (QEMU's words) */
        qcow2_signal_corruption(s, true, "Preventing invalid allocation of L2 table at offset 0");
        return -EIO;
    }
    uint64_t new_off = (uint64_t)n;
    ret = vd_cache_flush(s->refcount_cache);
    if (ret < 0) {
        goto fail;
    }
    for (uint64_t o = 0; o < s->cluster_size; o += s->l2_slice_size) {
        uint64_t *ns, *os;
        ret = vd_cache_get_empty(s->l2_cache, new_off + o, (void **)&ns);
        if (ret < 0) {
            goto fail;
        }
        if (old) {
            QCOW2_EVENT(s, L2_ALLOC_COW_READ);
            ret = vd_cache_get(s->l2_cache, old + o, (void **)&os);
            if (ret < 0) {
                vd_cache_put(s->l2_cache, (void **)&ns);
                vd_cache_discard(s->l2_cache, new_off + o);
                goto fail;
            }
            memcpy(ns, os, s->l2_slice_size);
            vd_cache_put(s->l2_cache, (void **)&os);
        } else {
            memset(ns, 0, s->l2_slice_size);
        }
        vd_cache_mark_dirty(s->l2_cache, ns);
        vd_cache_put(s->l2_cache, (void **)&ns);
    }
    QCOW2_EVENT(s, L2_ALLOC_WRITE);
    ret = vd_cache_flush(s->l2_cache);
    if (ret < 0) {
        goto fail;
    }
    s->l1_table[l1_index] = new_off | QCOW_OFLAG_COPIED;
    ret = qcow2_write_l1_entry(s, l1_index);
    if (ret < 0) {
        s->l1_table[l1_index] = l1e;
        goto fail;
    }
    if (old) {
        /* the shared table loses one user; L1 is on disk already */
        vd_cache_set_flush_before(s->refcount_cache);
        qcow2_free_clusters(s, old, s->cluster_size, QCOW2_DISCARD_OTHER);
    }
    return qcow2_get_l2_slice(s, new_off, l2_index, slice);

fail:
    for (uint64_t o = 0; o < s->cluster_size; o += s->l2_slice_size) {
        vd_cache_discard(s->l2_cache, new_off + o);
    }
    qcow2_free_clusters(s, new_off, s->cluster_size, QCOW2_DISCARD_NEVER);
    return ret;
}

/* ----------------------------------------------------------------- write */

enum { RUN_INPLACE, RUN_REUSE, RUN_ALLOC };

static int run_class(const qcow2_state *s, uint64_t entry)
{
    qcow2_cluster_type t = qcow2_get_cluster_type(s, entry);
    if (entry & QCOW_OFLAG_COPIED) {
        if (t == QCOW2_CLUSTER_NORMAL) {
            return RUN_INPLACE;
        }
        if (t == QCOW2_CLUSTER_ZERO_ALLOC) {
            return RUN_REUSE;
        }
    }
    return RUN_ALLOC;
}

/* The clusters of one allocating run (vd_fmt_cow_write's opaque). */
typedef struct cow_run {
    qcow2_state *s;
    uint64_t cstart;     /* guest offset of the first cluster */
    const uint64_t *old; /* their L2 entries before the write */
    int cls;             /* RUN_ALLOC or RUN_REUSE */
} cow_run;

/* vd_fmt_cow_write's read_old: old content of part [from, to) of the guest
 * cluster at goff. */
static int cow_read(void *opaque, uint64_t goff, uint64_t from, uint64_t to, uint8_t *cluster)
{
    cow_run *r = opaque;
    qcow2_state *s = r->s;
    uint64_t old = r->old[(goff - r->cstart) >> s->cluster_bits];
    if (r->cls == RUN_REUSE) {
        memset(cluster + from, 0, to - from);
        return 0;
    }
    switch (qcow2_get_cluster_type(s, old)) {
    case QCOW2_CLUSTER_UNALLOCATED:
        if (s->bs->backing) {
            QCOW2_EVENT(s, COW_READ);
            return vd_node_read_backing(s->bs, goff + from, to - from, cluster + from);
        }
        memset(cluster + from, 0, to - from);
        return 0;
    case QCOW2_CLUSTER_ZERO_PLAIN:
    case QCOW2_CLUSTER_ZERO_ALLOC:
        memset(cluster + from, 0, to - from);
        return 0;
    case QCOW2_CLUSTER_COMPRESSED: {
        uint8_t *tmp = malloc(s->cluster_size);
        if (!tmp) {
            return -ENOMEM;
        }
        int ret = qcow2_read_compressed(s, old, tmp);
        if (ret == 0) {
            memcpy(cluster + from, tmp + from, to - from);
        }
        free(tmp);
        return ret;
    }
    case QCOW2_CLUSTER_NORMAL:
        QCOW2_EVENT(s, COW_READ);
        return vd_node_pread(s->data, (old & L2E_OFFSET_MASK) + from, to - from,
                             cluster + from, 0);
    }
    return -EIO;
}

/* Max clusters one allocating run handles (bounds the old-entry array). */
#define MAX_RUN_CLUSTERS 8192u

/*
 * Write the start of [offset, offset+len): one run of clusters of the same
 * class within one L2 slice.  *done is what was written.
 */
/*
 * QEMU's is_unallocated for a COW area: [off, off+len) of the guest is
 * unallocated in this image (its old L2 entry, in *old) and in every layer
 * of the backing chain, by block status without zero probing.  Zero
 * clusters count as allocated, as in QEMU.  Errors answer false.
 */
static bool cow_unallocated(qcow2_state *s, uint64_t old, uint64_t off, uint64_t len)
{
    if (len == 0) {
        return true;
    }
    if (qcow2_get_cluster_type(s, old) != QCOW2_CLUSTER_UNALLOCATED) {
        return false;
    }
    while (len > 0) {
        uint64_t l = len;
        for (vd_node *n = s->bs->backing; n; n = n->backing) {
            int64_t blen = vd_node_get_length(n);
            if (blen < 0 || off >= (uint64_t)blen) {
                return false; /* QEMU: zeroes past a short layer count as allocated */
            }
            l = VD_MIN(l, (uint64_t)blen - off);
            uint64_t pnum = 0, map = 0;
            vd_node *file = NULL;
            int ret = vd_node_block_status(n, false, off, l, &pnum, &map, &file);
            if (ret < 0 || (ret & VD_BLOCK_ALLOCATED) || pnum == 0) {
                return false;
            }
            l = VD_MIN(l, pnum);
        }
        off += l;
        len -= l;
    }
    return true;
}

/*
 * QEMU's handle_alloc_space: when the COW head and tail of a new
 * allocation read as zeroes because nothing below defines them, the whole
 * run is zeroed by the data file (fallocate, no fallback to writing zero
 * buffers) and only the data is written.  1 when done, 0 when the caller
 * must copy on write as usual, or -errno.
 */
static int write_alloc_space(qcow2_state *s, const uint64_t *old, uint64_t cstart, uint64_t n,
                             uint64_t host, uint64_t offset, uint64_t bytes, const void *data)
{
    uint64_t cs = s->cluster_size;
    uint64_t head = offset - cstart;
    uint64_t end = cstart + n * cs;
    uint64_t tail = end - (offset + bytes);
    if ((!head && !tail) || s->crypto) {
        return 0; /* encrypted: the COW areas hold encrypted zeroes */
    }
    if (!cow_unallocated(s, old[0], cstart, head) ||
        !cow_unallocated(s, old[n - 1], offset + bytes, tail)) {
        return 0;
    }
    QCOW2_EVENT(s, CLUSTER_ALLOC_SPACE);
    int ret = vd_node_pwrite_zeroes(s->data, host, n * cs, VD_REQ_NO_FALLBACK);
    if (ret == -ENOTSUP || ret == -EAGAIN) {
        return 0;
    }
    if (ret < 0) {
        return ret;
    }
    vd_node_event(s->data, VD_EV_WRITE_AIO);
    ret = vd_node_pwrite(s->data, host + head, bytes, data, 0);
    return ret < 0 ? ret : 1;
}

static int write_run(qcow2_state *s, uint64_t offset, uint64_t len, const uint8_t *data,
                     uint64_t *done)
{
    uint64_t cs = s->cluster_size;
    uint64_t oic = qcow2_offset_into_cluster(s, offset);
    uint64_t cstart = offset - oic;
    uint64_t req_end;
    uint64_t *old = NULL;
    int ret;

    if (vd_align_up_overflow(offset + len, cs, &req_end)) {
        return -EINVAL;
    }
    pthread_mutex_lock(&s->lock);
    if (s->broken || s->corrupt_ro) {
        pthread_mutex_unlock(&s->lock);
        return -EIO;
    }
    if (s->needs_repair) {
        /* repair a dirty image before looking at its tables */
        ret = qcow2_begin_metadata_change(s);
        if (ret < 0) {
            pthread_mutex_unlock(&s->lock);
            return ret;
        }
    }
    qcow2_wait_inflight(s, cstart, req_end);

    uint32_t l1_index = qcow2_l1_index(s, offset);
    uint32_t l2_index = qcow2_l2_index(s, offset);
    uint32_t in_slice = l2_index % s->l2_slice_entries;
    uint64_t nb = VD_MIN((req_end - cstart) >> s->cluster_bits,
                         (uint64_t)(s->l2_slice_entries - in_slice));
    nb = VD_MIN(nb, (uint64_t)MAX_RUN_CLUSTERS);
    uint64_t l2_offset;
    ret = l2_offset_of(s, l1_index, &l2_offset);
    if (ret < 0) {
        goto out_unlock;
    }
    old = calloc(nb, sizeof(*old));
    if (!old) {
        ret = -ENOMEM;
        goto out_unlock;
    }
    if (l2_offset) {
        uint64_t *slice;
        ret = qcow2_get_l2_slice(s, l2_offset, l2_index, &slice);
        if (ret < 0) {
            goto out_unlock;
        }
        for (uint64_t i = 0; i < nb; i++) {
            old[i] = l2e_get(slice, in_slice + (uint32_t)i);
        }
        vd_cache_put(s->l2_cache, (void **)&slice);
    }
    int cls = run_class(s, old[0]);
    uint64_t n = 1;
    uint64_t host0 = old[0] & L2E_OFFSET_MASK;
    if ((qcow2_get_cluster_type(s, old[0]) == QCOW2_CLUSTER_NORMAL ||
         qcow2_get_cluster_type(s, old[0]) == QCOW2_CLUSTER_ZERO_ALLOC) &&
        qcow2_offset_into_cluster(s, host0)) {
        qcow2_signal_corruption(s, true, "Cluster allocation offset %#llx unaligned",
                                (unsigned long long)host0);
        ret = -EIO;
        goto out_unlock;
    }
    while (n < nb && run_class(s, old[n]) == cls &&
           (cls == RUN_ALLOC || (old[n] & L2E_OFFSET_MASK) == host0 + n * cs)) {
        n++;
    }
    uint64_t bytes = VD_MIN(len, n * cs - oic);
    *done = bytes;

    if (cls == RUN_INPLACE) {
        ret = qcow2_has_data_file(s) ? 0 : qcow2_pre_write_overlap_check(s, 0, host0 + oic, bytes);
        qcow2_inflight hold;
        if (ret == 0) {
            qcow2_hold(s, &hold, host0 + oic, host0 + oic + bytes);
        }
        pthread_mutex_unlock(&s->lock);
        free(old);
        if (ret < 0) {
            return ret;
        }
        ret = vd_node_pwrite(s->data, host0 + oic, bytes, data, 0);
        pthread_mutex_lock(&s->lock);
        qcow2_hold_release(s, &hold);
        pthread_mutex_unlock(&s->lock);
        return ret;
    }

    /* allocation (or reuse of a preallocated zero cluster) */
    ret = qcow2_begin_metadata_change(s);
    if (ret < 0) {
        goto out_unlock;
    }
    uint64_t *slice;
    uint32_t idx;
    ret = qcow2_get_l2_for_write(s, cstart, &slice, &idx);
    if (ret < 0) {
        goto out_unlock;
    }
    vd_cache_put(s->l2_cache, (void **)&slice);
    uint64_t host;
    /* an external data file: host offset = guest offset, no refcounts */
    bool ext_data = qcow2_has_data_file(s);
    if (cls == RUN_ALLOC && ext_data) {
        host = cstart;
    } else if (cls == RUN_ALLOC) {
        int64_t a = qcow2_alloc_clusters(s, n);
        if (a < 0) {
            ret = (int)a;
            goto out_unlock;
        }
        host = (uint64_t)a;
    } else {
        host = host0;
    }
    ret = ext_data ? 0 : qcow2_pre_write_overlap_check(s, 0, host, n * cs);
    if (ret < 0) {
        if (cls == RUN_ALLOC) {
            qcow2_free_clusters(s, host, n * cs, QCOW2_DISCARD_NEVER);
        }
        goto out_unlock;
    }
    qcow2_inflight f;
    qcow2_inflight_add(s, &f, cstart, cstart + n * cs);
    pthread_mutex_unlock(&s->lock);

    /* data with its COW head (first cluster) and tail (last cluster) */
    ret = cls == RUN_ALLOC ? write_alloc_space(s, old, cstart, n, host, offset, bytes, data) : 0;
    if (ret == 0) {
        cow_run run = {s, cstart, old, cls};
        ret = vd_fmt_cow_write(s->data, host, cs, offset, bytes, data, cow_read, &run);
    } else if (ret > 0) {
        ret = 0;
    }

    pthread_mutex_lock(&s->lock);
    if (ret == 0 && s->broken) {
        ret = -EIO;
    }
    if (ret == 0) {
        ret = qcow2_get_l2_for_write(s, cstart, &slice, &idx);
    }
    if (ret == 0) {
        if (!s->use_lazy_refcounts) {
            ret = vd_cache_set_dependency(s->l2_cache, s->refcount_cache);
        }
        for (uint64_t i = 0; ret == 0 && i < n; i++) {
            l2e_set(slice, idx + (uint32_t)i, (host + i * cs) | QCOW_OFLAG_COPIED);
        }
        if (ret == 0) {
            vd_cache_mark_dirty(s->l2_cache, slice);
            s->data_unflushed = true; /* synced before this slice is written */
        }
        vd_cache_put(s->l2_cache, (void **)&slice);
    }
    if (ret == 0 && cls == RUN_ALLOC) {
        for (uint64_t i = 0; i < n; i++) {
            qcow2_free_any_cluster(s, old[i], QCOW2_DISCARD_NEVER);
        }
    } else if (ret < 0 && cls == RUN_ALLOC && !ext_data) {
        qcow2_free_clusters(s, host, n * cs, QCOW2_DISCARD_NEVER);
    }
    qcow2_inflight_remove(s, &f);

out_unlock:
    pthread_mutex_unlock(&s->lock);
    free(old);
    return ret;
}

int qcow2_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf, unsigned flags)
{
    qcow2_state *s = bs->opaque;
    int bm_ret = qcow2_bitmaps_dirty(s, offset, len); /* bitmap.c */
    if (bm_ret < 0) {
        return bm_ret;
    }
    if (s->extended_l2) {
        return qcow2_sc_pwrite(s, offset, len, buf); /* subcluster.c */
    }
    const uint8_t *p = buf;
    (void)flags;
    while (len) {
        uint64_t done = 0;
        int ret = write_run(s, offset, len, p, &done);
        if (ret < 0) {
            return ret;
        }
        offset += done;
        p += done;
        len -= done;
    }
    return 0;
}

/* ------------------------------------------------------- zero / discard */

static int cluster_zeroize(qcow2_state *s, uint64_t offset, uint64_t bytes, unsigned flags)
{
    if (s->extended_l2) {
        return qcow2_sc_zeroize(s, offset, bytes, flags); /* subcluster.c */
    }
    uint64_t cs = s->cluster_size;
    if (s->version < 3) {
        return -ENOTSUP;
    }
    if (qcow2_data_file_is_raw(s) && offset < s->size) {
        /* a raw data file stays a valid raw image (datafile.c) */
        int zret = vd_node_pwrite_zeroes(s->data, offset, VD_MIN(bytes, s->size - offset), 0);
        if (zret < 0) {
            return zret;
        }
    }
    uint64_t end = offset + bytes;
    while (offset < end) {
        uint64_t *slice;
        uint32_t idx;
        int ret = qcow2_get_l2_for_write(s, offset, &slice, &idx);
        if (ret < 0) {
            return ret;
        }
        uint64_t n = VD_MIN(vd_div_round_up(end - offset, cs),
                            (uint64_t)(s->l2_slice_entries - idx));
        for (uint64_t i = 0; i < n; i++) {
            uint64_t old = l2e_get(slice, idx + (uint32_t)i);
            qcow2_cluster_type t = qcow2_get_cluster_type(s, old);
            bool unmap = t == QCOW2_CLUSTER_COMPRESSED ||
                         ((flags & VD_REQ_MAY_UNMAP) &&
                          (t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC));
            uint64_t nw = (unmap ? 0 : old) | QCOW_OFLAG_ZERO;
            if (nw == old) {
                continue;
            }
            vd_cache_mark_dirty(s->l2_cache, slice);
            l2e_set(slice, idx + (uint32_t)i, nw);
            if (unmap) {
                qcow2_free_any_cluster(s, old, QCOW2_DISCARD_REQUEST);
            }
        }
        vd_cache_put(s->l2_cache, (void **)&slice);
        offset += n * cs;
    }
    return 0;
}

static int cluster_discard(qcow2_state *s, uint64_t offset, uint64_t bytes,
                           qcow2_discard_type type, bool full_discard)
{
    if (s->extended_l2) {
        return qcow2_sc_cluster_discard(s, offset, bytes, type, full_discard); /* subcluster.c */
    }
    uint64_t cs = s->cluster_size;
    uint64_t end = offset + bytes;
    bool has_backing = s->backing_file != NULL;
    while (offset < end) {
        uint32_t l1_index = qcow2_l1_index(s, offset);
        uint64_t l2_span = (uint64_t)s->l2_size * cs;
        uint64_t l2_offset;
        int ret = l2_offset_of(s, l1_index, &l2_offset);
        if (ret < 0) {
            return ret;
        }
        if (!l2_offset && (full_discard || !has_backing)) {
            /* nothing allocated, nothing to mark */
            uint64_t next = (offset / l2_span + 1) * l2_span;
            offset = next;
            continue;
        }
        uint64_t *slice;
        uint32_t idx;
        ret = qcow2_get_l2_for_write(s, offset, &slice, &idx);
        if (ret < 0) {
            return ret;
        }
        uint64_t n = VD_MIN(vd_div_round_up(end - offset, cs),
                            (uint64_t)(s->l2_slice_entries - idx));
        for (uint64_t i = 0; i < n; i++) {
            uint64_t old = l2e_get(slice, idx + (uint32_t)i);
            qcow2_cluster_type t = qcow2_get_cluster_type(s, old);
            bool allocated = t == QCOW2_CLUSTER_NORMAL || t == QCOW2_CLUSTER_ZERO_ALLOC ||
                             t == QCOW2_CLUSTER_COMPRESSED;
            uint64_t nw = old;
            if (full_discard) {
                nw = 0;
            } else if (has_backing || allocated) {
                nw = s->version >= 3 ? QCOW_OFLAG_ZERO : 0;
            }
            if (nw == old) {
                continue;
            }
            vd_cache_mark_dirty(s->l2_cache, slice);
            l2e_set(slice, idx + (uint32_t)i, nw);
            qcow2_free_any_cluster(s, old, type);
        }
        vd_cache_put(s->l2_cache, (void **)&slice);
        offset += n * cs;
    }
    return 0;
}

/* the freed clusters of one request are punched merged at its end */
int qcow2_cluster_zeroize(qcow2_state *s, uint64_t offset, uint64_t bytes, unsigned flags)
{
    qcow2_discard_queue_begin(s);
    int ret = cluster_zeroize(s, offset, bytes, flags);
    qcow2_discard_queue_end(s);
    return ret;
}

int qcow2_cluster_discard(qcow2_state *s, uint64_t offset, uint64_t bytes,
                          qcow2_discard_type type, bool full_discard)
{
    qcow2_discard_queue_begin(s);
    int ret = cluster_discard(s, offset, bytes, type, full_discard);
    qcow2_discard_queue_end(s);
    return ret;
}

/* Zero [offset, offset+len) inside one cluster by writing zero bytes. */
static int write_zero_bytes(qcow2_state *s, uint64_t offset, uint64_t len)
{
    uint8_t *z = calloc(1, len);
    if (!z) {
        return -ENOMEM;
    }
    int ret = qcow2_pwrite(s->bs, offset, len, z, 0);
    free(z);
    return ret;
}

/*
 * QEMU's is_zero for the backing chain of bs: whether [off, off+len) reads as
 * zeroes by block status (a data cluster full of zero bytes does not count).
 */
static int backing_is_zero(vd_node *bs, uint64_t off, uint64_t len, bool *zero)
{
    *zero = true;
    while (len > 0 && *zero) {
        uint64_t o = off, l = len, pnum = len;
        for (vd_node *n = bs->backing; n; n = n->backing) {
            int64_t blen = vd_node_get_length(n);
            if (blen < 0) {
                return (int)blen;
            }
            if (o >= (uint64_t)blen) {
                break; /* past its end: zeroes */
            }
            l = VD_MIN(l, (uint64_t)blen - o);
            uint64_t map = 0;
            vd_node *file = NULL;
            int ret = vd_node_block_status(n, true, o, l, &pnum, &map, &file);
            if (ret < 0) {
                return ret;
            }
            if (ret & VD_BLOCK_ALLOCATED) {
                *zero = (ret & VD_BLOCK_ZERO) != 0;
                break;
            }
            l = pnum; /* not here: the next layer decides over pnum */
        }
        pnum = VD_MIN(pnum, l);
        if (pnum == 0) {
            return -EIO;
        }
        off += pnum;
        len -= pnum;
    }
    return 0;
}

/*
 * Zero [ps, pe), inside one cluster, as QEMU does: a cluster that holds no
 * data and whose other bytes read as zeroes (through the backing chain)
 * becomes a zero cluster as a whole; a zero cluster stays; otherwise zero
 * bytes are written (allocating the cluster).
 */
static int zero_partial(qcow2_state *s, uint64_t ps, uint64_t pe, unsigned flags)
{
    uint64_t cs = s->cluster_size;
    uint64_t cstart = qcow2_start_of_cluster(s, ps);
    uint64_t cend = VD_MIN(cstart + cs, s->size);
    bool whole = false, done = false;

    pthread_mutex_lock(&s->lock);
    int ret = s->broken || s->corrupt_ro ? -EIO : 0;
    qcow2_cluster_type t = QCOW2_CLUSTER_NORMAL;
    if (ret == 0) {
        /* An allocating write to this cluster may be between its data
         * write and its L2 update: look only once it is done, and keep the
         * lock until the cluster is zeroized, or its data would be lost. */
        qcow2_wait_inflight(s, cstart, cstart + cs);
        uint64_t bytes = cs, host;
        ret = qcow2_get_host_offset(s, cstart, &bytes, &host, &t);
    }
    if (ret == 0 && (t == QCOW2_CLUSTER_ZERO_PLAIN || t == QCOW2_CLUSTER_ZERO_ALLOC)) {
        done = true;
    } else if (ret == 0 && t == QCOW2_CLUSTER_UNALLOCATED) {
        if (!s->bs->backing) {
            /* reads as zeroes already; v3 marks it as QEMU does */
            whole = !s->backing_file && s->version >= 3;
            done = !s->backing_file && s->version < 3;
        } else if (s->version >= 3) {
            bool head_zero = true, tail_zero = true;
            ret = backing_is_zero(s->bs, cstart, ps - cstart, &head_zero);
            if (ret == 0 && pe < cend) {
                ret = backing_is_zero(s->bs, pe, cend - pe, &tail_zero);
            }
            whole = head_zero && tail_zero;
        }
    }
    if (ret == 0 && whole) {
        ret = qcow2_begin_metadata_change(s);
        if (ret == 0) {
            qcow2_wait_inflight(s, cstart, cstart + cs);
            ret = qcow2_cluster_zeroize(s, cstart, cs, flags);
        }
        done = true;
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0 || done) {
        return ret;
    }
    if (flags & VD_REQ_NO_FALLBACK) {
        return -ENOTSUP;
    }
    return write_zero_bytes(s, ps, pe - ps);
}

int qcow2_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    qcow2_state *s = bs->opaque;
    int bm_ret = qcow2_bitmaps_dirty(s, offset, len); /* bitmap.c */
    if (bm_ret < 0) {
        return bm_ret;
    }
    if (s->extended_l2) {
        return qcow2_sc_pwrite_zeroes(s, offset, len, flags); /* subcluster.c */
    }
    uint64_t cs = s->cluster_size;
    uint64_t end = offset + len;
    uint64_t astart, aend;
    int ret;

    if (vd_align_up_overflow(offset, cs, &astart)) {
        return -EINVAL;
    }
    aend = vd_align_down(end, cs);
    if (end == s->size) {
        /* the partial cluster at the end of the image counts as whole */
        if (vd_align_up_overflow(end, cs, &aend)) {
            return -EINVAL;
        }
    }
    bool v2_unmap = s->version < 3 && (flags & VD_REQ_MAY_UNMAP) && !s->backing_file;
    if (s->version < 3 && !v2_unmap) {
        return -ENOTSUP;
    }

    if (aend < astart) {
        /* inside one cluster, touching neither of its ends */
        return zero_partial(s, offset, end, flags);
    }
    if (offset < astart) {
        ret = zero_partial(s, offset, astart, flags);
        if (ret < 0) {
            return ret;
        }
    }
    if (aend > astart) {
        pthread_mutex_lock(&s->lock);
        ret = s->broken || s->corrupt_ro ? -EIO : qcow2_begin_metadata_change(s);
        if (ret == 0) {
            qcow2_wait_inflight(s, astart, aend);
            if (v2_unmap) {
                ret = qcow2_cluster_discard(s, astart, aend - astart, QCOW2_DISCARD_REQUEST,
                                            false);
            } else {
                ret = qcow2_cluster_zeroize(s, astart, aend - astart, flags);
            }
        }
        pthread_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
    }
    if (aend < end) {
        ret = zero_partial(s, aend, end, flags);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

int qcow2_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    qcow2_state *s = bs->opaque;
    /* Without zero clusters (compat=0.10) a discarded cluster would show
     * the backing file's data: as QEMU, discard then does nothing. */
    if (s->version < 3 && bs->backing) {
        return 0;
    }
    int bm_ret = qcow2_bitmaps_dirty(s, offset, len); /* bitmap.c */
    if (bm_ret < 0) {
        return bm_ret;
    }
    if (s->extended_l2) {
        return qcow2_sc_discard(s, offset, len); /* subcluster.c */
    }
    uint64_t cs = s->cluster_size;
    uint64_t start, end = vd_align_down(offset + len, cs);
    if (offset + len >= s->size) {
        if (vd_align_up_overflow(s->size, cs, &end)) {
            return -EINVAL;
        }
    }
    if (vd_align_up_overflow(offset, cs, &start) || start >= end) {
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    int ret = qcow2_begin_metadata_change(s);
    if (ret == 0) {
        qcow2_wait_inflight(s, start, end);
        ret = qcow2_cluster_discard(s, start, end - start, QCOW2_DISCARD_REQUEST, false);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* --------------------------------------------------------- block status */

/*
 * Whether the image looks metadata-preallocated: many more clusters have a
 * refcount than the host file really stores (QEMU's heuristic, with its
 * threshold).  Then allocated clusters may be host holes, and block status
 * asks the file for zeroes.  Called with s->lock held; computed once.
 */
static bool qcow2_detect_metadata_prealloc(vd_node *bs, qcow2_state *s)
{
    if (s->metadata_prealloc_checked) {
        return s->metadata_prealloc;
    }
    s->metadata_prealloc_checked = true;
    vd_node *f = bs->file;
    int64_t flen = vd_node_get_length(f);
    int64_t alloc = f->drv->get_allocated_size ? f->drv->get_allocated_size(f) : -ENOTSUP;
    if (flen < 0 || alloc < 0) {
        return false;
    }
    uint64_t real = (uint64_t)alloc / s->cluster_size;
    uint64_t threshold = VD_MAX(real * 10 / 9, real + 2);
    uint64_t end = vd_div_round_up((uint64_t)flen, s->cluster_size), count = 0;
    for (uint64_t i = 0; i < end && count < threshold; i++) {
        uint64_t rc = 0;
        if (qcow2_get_refcount(s, i, &rc) < 0) {
            return false;
        }
        count += rc != 0;
    }
    s->metadata_prealloc = count >= threshold;
    return s->metadata_prealloc;
}

int qcow2_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                       uint64_t *pnum, uint64_t *map, vd_node **file)
{
    qcow2_state *s = bs->opaque;
    if (s->extended_l2) {
        return qcow2_sc_block_status(s, offset, len, pnum, map, file); /* subcluster.c */
    }
    uint64_t bytes = len, host;
    qcow2_cluster_type t;

    pthread_mutex_lock(&s->lock);
    int ret = s->broken ? -EIO : qcow2_get_host_offset(s, offset, &bytes, &host, &t);
    bool prealloc = ret >= 0 && want_zero && t == QCOW2_CLUSTER_NORMAL && s->data == bs->file &&
                    qcow2_detect_metadata_prealloc(bs, s);
    pthread_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }
    *pnum = bytes;
    int status = 0;
    switch (t) {
    case QCOW2_CLUSTER_NORMAL:
        status = VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
        *map = host;
        *file = s->data;
        break;
    case QCOW2_CLUSTER_ZERO_ALLOC:
        status = VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID;
        *map = host;
        *file = s->data;
        break;
    case QCOW2_CLUSTER_ZERO_PLAIN:
        status = VD_BLOCK_ZERO;
        break;
    case QCOW2_CLUSTER_COMPRESSED:
        status = VD_BLOCK_DATA | VD_BLOCK_COMPRESSED;
        break;
    case QCOW2_CLUSTER_UNALLOCATED:
        break;
    }
    if (status & (VD_BLOCK_DATA | VD_BLOCK_ZERO)) {
        status |= VD_BLOCK_ALLOCATED;
    }
    if (prealloc) {
        status |= VD_BLOCK_PROBE_ZERO;
    }
    return status;
}

/* ------------------------------------------------------- preallocation */

int qcow2_preallocate(qcow2_state *s, uint64_t offset, uint64_t bytes, vd_prealloc mode,
                      vd_error **errp)
{
    if (s->extended_l2) {
        return qcow2_sc_preallocate(s, offset, bytes, mode, errp); /* subcluster.c */
    }
    uint64_t cs = s->cluster_size;
    uint64_t start = qcow2_start_of_cluster(s, offset);
    uint64_t end;
    int ret;

    if (vd_align_up_overflow(offset + bytes, cs, &end)) {
        return vd_error_set(errp, EFBIG, "Image too large to preallocate");
    }
    /* For falloc/full, all L2 tables first so that the data clusters form
     * one area at the end that the file preallocation covers; metadata
     * preallocation interleaves tables and data as QEMU does. */
    uint64_t l2_span = (uint64_t)s->l2_size * cs;
    for (uint64_t g = start; g < end && mode != VD_PREALLOC_METADATA;
         g = (g / l2_span + 1) * l2_span) {
        uint64_t *slice;
        uint32_t idx;
        ret = qcow2_get_l2_for_write(s, g, &slice, &idx);
        if (ret < 0) {
            return vd_error_setg_errno(errp, -ret, "Could not preallocate metadata");
        }
        vd_cache_put(s->l2_cache, (void **)&slice);
    }
    uint64_t data_end = 0;
    for (uint64_t g = start; g < end;) {
        uint64_t *slice;
        uint32_t idx;
        ret = qcow2_get_l2_for_write(s, g, &slice, &idx);
        if (ret < 0) {
            return vd_error_setg_errno(errp, -ret, "Could not preallocate metadata");
        }
        uint64_t n = VD_MIN((end - g) / cs, (uint64_t)(s->l2_slice_entries - idx));
        uint64_t need = 0;
        for (uint64_t i = 0; i < n; i++) {
            qcow2_cluster_type t = qcow2_get_cluster_type(s, l2e_get(slice, idx + (uint32_t)i));
            if (t == QCOW2_CLUSTER_UNALLOCATED || t == QCOW2_CLUSTER_ZERO_PLAIN) {
                need++;
            }
        }
        if (need) {
            bool ext_data = qcow2_has_data_file(s); /* host = guest offset */
            int64_t h = ext_data ? 0 : qcow2_alloc_clusters(s, need);
            if (h < 0) {
                vd_cache_put(s->l2_cache, (void **)&slice);
                return vd_error_setg_errno(errp, (int)-h, "Could not preallocate data");
            }
            ret = vd_cache_set_dependency(s->l2_cache, s->refcount_cache);
            if (ret < 0) {
                vd_cache_put(s->l2_cache, (void **)&slice);
                return vd_error_setg_errno(errp, -ret, "Could not preallocate data");
            }
            uint64_t k = 0;
            for (uint64_t i = 0; i < n; i++) {
                uint64_t e = l2e_get(slice, idx + (uint32_t)i);
                qcow2_cluster_type t = qcow2_get_cluster_type(s, e);
                if (t == QCOW2_CLUSTER_UNALLOCATED || t == QCOW2_CLUSTER_ZERO_PLAIN) {
                    uint64_t host = ext_data ? g + i * cs : (uint64_t)h + k * cs;
                    l2e_set(slice, idx + (uint32_t)i, host | QCOW_OFLAG_COPIED);
                    k++;
                }
            }
            vd_cache_mark_dirty(s->l2_cache, slice);
            data_end = VD_MAX(data_end, ext_data ? VD_MIN(g + n * cs, s->size)
                                                 : (uint64_t)h + need * cs);
        }
        vd_cache_put(s->l2_cache, (void **)&slice);
        g += n * cs;
    }
    ret = vd_cache_flush(s->l2_cache);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Could not write preallocated metadata");
    }
    int64_t flen = vd_node_get_length(s->data);
    if (flen >= 0 && data_end > (uint64_t)flen) {
        ret = vd_node_truncate(s->data, data_end, false,
                               mode == VD_PREALLOC_METADATA ? VD_PREALLOC_OFF : mode, errp);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}
