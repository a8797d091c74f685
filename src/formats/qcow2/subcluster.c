/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 extended L2 entries (extended_l2=on): 128-bit L2 entries whose
 * second word tells, for each of the 32 subclusters of a cluster, whether
 * it is allocated (bits 0-31: data at its place in the host cluster) or
 * reads as zeroes (bits 32-63); neither means "not in this layer" (the
 * backing file, or zeroes).  Reads, writes, zero writes, discards, block
 * status, zeroing and preallocation of such images live here; cluster.c
 * hands them over at the top of each entry point.
 *
 * Specification: QEMU's docs/interop/qcow2.txt, "Extended L2 Entries".
 * As QEMU 7.2: clusters of at least 16 KiB; a write allocates a whole host
 * cluster but only marks (and copies on write) the subclusters it touches,
 * so untouched ones keep reading from the backing file; zero writes set
 * zero bits per subcluster; discards work on whole clusters; metadata
 * preallocation maps clusters with no subcluster allocated (reads still go
 * to the backing file).
 *
 * Simpler than cluster.c: one cluster at a time, data I/O of allocating
 * writes under the metadata lock (correct, not as parallel).  Compressed
 * clusters are read (and rewritten as normal clusters when partly
 * overwritten); compressed writes are refused (ENOTSUP).
 */
#include <stdlib.h>

#include "qcow2.h"

#define SC_COUNT 32u
#define SC_ALL_ALLOC 0x00000000ffffffffull
#define SC_ALL_ZERO 0xffffffff00000000ull

typedef enum sc_type {
    SC_UNALLOC_PLAIN,
    SC_ZERO_PLAIN,
    SC_UNALLOC_ALLOC,
    SC_ZERO_ALLOC,
    SC_NORMAL,
    SC_COMPRESSED,
    SC_INVALID,
} sc_type;

static uint64_t sc_alloc_bit(uint32_t i)
{
    return 1ull << i;
}

static uint64_t sc_zero_bit(uint32_t i)
{
    return 1ull << (i + 32);
}

/* Bits first..last (inclusive) of the alloc half, shifted by `shift`. */
static uint64_t sc_range(uint32_t first, uint32_t last, unsigned shift)
{
    uint64_t n = (uint64_t)last - first + 1;
    uint64_t m = (n >= 32 ? 0xffffffffull : ((1ull << n) - 1)) << first;
    return m << shift;
}

static bool cluster_has_host(const qcow2_state *s, uint64_t e)
{
    return qcow2_get_cluster_type(s, e) == QCOW2_CLUSTER_NORMAL;
}

static sc_type sc_get_type(const qcow2_state *s, uint64_t e, uint64_t b, uint32_t i)
{
    if (e & QCOW_OFLAG_COMPRESSED) {
        return SC_COMPRESSED;
    }
    if (cluster_has_host(s, e)) {
        if ((b >> 32) & b) {
            return SC_INVALID;
        }
        if (b & sc_zero_bit(i)) {
            return SC_ZERO_ALLOC;
        }
        return (b & sc_alloc_bit(i)) ? SC_NORMAL : SC_UNALLOC_ALLOC;
    }
    if (b & SC_ALL_ALLOC) {
        return SC_INVALID;
    }
    return (b & sc_zero_bit(i)) ? SC_ZERO_PLAIN : SC_UNALLOC_PLAIN;
}

/* The entry and bitmap for the guest cluster at offset (0, 0 when no L2
 * table).  Lock held. */
static int sc_get_entry(qcow2_state *s, uint64_t offset, uint64_t *e, uint64_t *b)
{
    uint32_t l1i = qcow2_l1_index(s, offset);
    *e = *b = 0;
    if (l1i >= s->l1_size) {
        return 0;
    }
    uint64_t l2 = s->l1_table[l1i] & L1E_OFFSET_MASK;
    if (!l2) {
        return 0;
    }
    if (qcow2_offset_into_cluster(s, l2)) {
        qcow2_signal_corruption(s, true, "L2 table offset %#llx unaligned",
                                (unsigned long long)l2);
        return -EIO;
    }
    uint64_t *slice;
    uint32_t l2i = qcow2_l2_index(s, offset);
    int ret = qcow2_get_l2_slice(s, l2, l2i, &slice);
    if (ret < 0) {
        return ret;
    }
    uint32_t j = l2i % s->l2_slice_entries;
    *e = vd_ld_be64(&slice[2 * j]);
    *b = vd_ld_be64(&slice[2 * j + 1]);
    vd_cache_put(s->l2_cache, (void **)&slice);
    if ((*e & L2E_OFFSET_MASK) && qcow2_offset_into_cluster(s, *e & L2E_OFFSET_MASK) &&
        !(*e & QCOW_OFLAG_COMPRESSED)) {
        qcow2_signal_corruption(s, true, "Cluster allocation offset unaligned");
        return -EIO;
    }
    return 0;
}

/*
 * Mapping of guest [offset, offset + *bytes) (*bytes shortened to what
 * shares the answer, within one cluster).  Lock held.
 */
static int sc_lookup(qcow2_state *s, uint64_t offset, uint64_t *bytes, sc_type *type,
                     uint64_t *host, uint64_t *entry)
{
    uint64_t e, b;
    int ret = sc_get_entry(s, offset, &e, &b);
    if (ret < 0) {
        return ret;
    }
    uint64_t oic = qcow2_offset_into_cluster(s, offset);
    uint32_t i = (uint32_t)(oic >> s->sc_bits);
    sc_type t = sc_get_type(s, e, b, i);
    uint32_t k = i + 1;
    if (t != SC_COMPRESSED) {
        while (k < SC_COUNT && sc_get_type(s, e, b, k) == t) {
            k++;
        }
    } else {
        k = SC_COUNT;
    }
    uint64_t avail = ((uint64_t)k << s->sc_bits) - oic;
    if (*bytes > avail) {
        *bytes = avail;
    }
    *type = t;
    *entry = e;
    *host = (e & L2E_OFFSET_MASK) + oic;
    return 0;
}

/* The content the guest sees now in [from, to) of the cluster at cstart,
 * given its entry, into buf + from.  Lock held (backing reads are fine). */
static int sc_read_old(qcow2_state *s, uint64_t cstart, uint64_t e, uint64_t b, uint8_t *buf,
                       uint64_t from, uint64_t to)
{
    int ret = 0;
    if (from >= to) {
        return 0;
    }
    if (e & QCOW_OFLAG_COMPRESSED) {
        uint8_t *tmp = malloc(s->cluster_size);
        if (!tmp) {
            return -ENOMEM;
        }
        ret = qcow2_read_compressed(s, e, tmp);
        if (ret == 0) {
            memcpy(buf + from, tmp + from, to - from);
        }
        free(tmp);
        return ret;
    }
    while (from < to) {
        uint32_t i = (uint32_t)(from >> s->sc_bits);
        uint64_t end = VD_MIN(to, (uint64_t)(i + 1) << s->sc_bits);
        switch (sc_get_type(s, e, b, i)) {
        case SC_NORMAL:
            ret = vd_node_pread(s->data, (e & L2E_OFFSET_MASK) + from, end - from, buf + from, 0);
            break;
        case SC_UNALLOC_PLAIN:
        case SC_UNALLOC_ALLOC:
            if (s->bs->backing) {
                ret = vd_node_read_backing(s->bs, cstart + from, end - from, buf + from);
            } else {
                memset(buf + from, 0, end - from);
            }
            break;
        case SC_ZERO_PLAIN:
        case SC_ZERO_ALLOC:
            memset(buf + from, 0, end - from);
            break;
        default:
            qcow2_signal_corruption(s, true, "Invalid subcluster bitmap");
            return -EIO;
        }
        if (ret < 0) {
            return ret;
        }
        from = end;
    }
    return 0;
}

/* ---------------------------------------------------------------- reads */

int qcow2_sc_pread(qcow2_state *s, uint64_t offset, uint64_t len, uint8_t *p)
{
    uint8_t *cbuf = NULL;
    int ret = 0;
    while (len && ret == 0) {
        uint64_t bytes = len, host, e;
        sc_type t;
        pthread_mutex_lock(&s->lock);
        ret = s->broken ? -EIO : sc_lookup(s, offset, &bytes, &t, &host, &e);
        pthread_mutex_unlock(&s->lock);
        if (ret < 0) {
            break;
        }
        switch (t) {
        case SC_UNALLOC_PLAIN:
        case SC_UNALLOC_ALLOC:
            if (s->bs->backing) {
                ret = vd_node_read_backing(s->bs, offset, bytes, p);
            } else {
                memset(p, 0, bytes);
            }
            break;
        case SC_ZERO_PLAIN:
        case SC_ZERO_ALLOC:
            memset(p, 0, bytes);
            break;
        case SC_NORMAL:
            vd_node_event(s->data, VD_EV_READ_AIO);
            ret = vd_node_pread(s->data, host, bytes, p, 0);
            break;
        case SC_COMPRESSED:
            if (!cbuf && !(cbuf = malloc(s->cluster_size))) {
                ret = -ENOMEM;
                break;
            }
            ret = qcow2_read_compressed(s, e, cbuf);
            if (ret == 0) {
                memcpy(p, cbuf + qcow2_offset_into_cluster(s, offset), bytes);
            }
            break;
        default:
            pthread_mutex_lock(&s->lock);
            qcow2_signal_corruption(s, true, "Invalid subcluster bitmap");
            pthread_mutex_unlock(&s->lock);
            ret = -EIO;
            break;
        }
        offset += bytes;
        p += bytes;
        len -= bytes;
    }
    free(cbuf);
    return ret;
}

/* --------------------------------------------------------------- writes */

/* Store entry and bitmap of the guest cluster at cstart.  Lock held. */
static int sc_set_entry(qcow2_state *s, uint64_t cstart, uint64_t e, uint64_t b, bool dep)
{
    uint64_t *slice;
    uint32_t idx;
    int ret = qcow2_get_l2_for_write(s, cstart, &slice, &idx);
    if (ret < 0) {
        return ret;
    }
    if (dep && !s->use_lazy_refcounts) {
        ret = vd_cache_set_dependency(s->l2_cache, s->refcount_cache);
    }
    if (ret == 0) {
        vd_st_be64(&slice[2 * idx], e);
        vd_st_be64(&slice[2 * idx + 1], b);
        vd_cache_mark_dirty(s->l2_cache, slice);
        s->data_unflushed = true; /* the data goes to disk before this entry */
    }
    vd_cache_put(s->l2_cache, (void **)&slice);
    return ret;
}

/* Write [offset, offset+len) inside one cluster.  Lock held. */
static int sc_write_cluster(qcow2_state *s, uint64_t offset, uint64_t len, const uint8_t *data)
{
    uint64_t cs = s->cluster_size, scs = 1ull << s->sc_bits;
    uint64_t cstart = qcow2_start_of_cluster(s, offset), oic = offset - cstart;
    uint32_t first = (uint32_t)(oic >> s->sc_bits);
    uint32_t last = (uint32_t)((oic + len - 1) >> s->sc_bits);
    uint64_t span_start = (uint64_t)first * scs, span_end = (uint64_t)(last + 1) * scs;
    uint64_t e, b;
    uint8_t *buf = NULL;
    int ret = sc_get_entry(s, cstart, &e, &b);
    if (ret < 0) {
        return ret;
    }
    if (!(e & QCOW_OFLAG_COMPRESSED) && cluster_has_host(s, e) && (b >> 32) & b) {
        qcow2_signal_corruption(s, true, "Invalid subcluster bitmap");
        return -EIO;
    }
    bool inplace = cluster_has_host(s, e) && (e & QCOW_OFLAG_COPIED);
    buf = vd_aligned_alloc(4096, cs);
    if (!buf) {
        return -ENOMEM;
    }
    if (inplace) {
        uint64_t host = e & L2E_OFFSET_MASK;
        /* the partial subclusters at both ends keep what the guest saw */
        ret = sc_read_old(s, cstart, e, b, buf, span_start, oic);
        if (ret == 0) {
            ret = sc_read_old(s, cstart, e, b, buf, oic + len, span_end);
        }
        if (ret == 0) {
            memcpy(buf + oic, data, len);
            ret = qcow2_has_data_file(s) ? 0
                  : qcow2_pre_write_overlap_check(s, 0, host + span_start,
                                                  span_end - span_start);
        }
        if (ret == 0) {
            vd_node_event(s->data, VD_EV_WRITE_AIO);
            ret = vd_node_pwrite(s->data, host + span_start, span_end - span_start,
                                 buf + span_start, 0);
        }
        uint64_t nb = (b | sc_range(first, last, 0)) & ~sc_range(first, last, 32);
        if (ret == 0 && nb != b) {
            ret = sc_set_entry(s, cstart, e, nb, false);
        }
        free(buf);
        return ret;
    }

    /* a new host cluster: touched subclusters written, the others keep
     * their state (data copied, zero bits, or nothing: backing) */
    uint64_t nb = 0;
    memset(buf, 0, cs);
    for (uint32_t i = 0; i < SC_COUNT && ret == 0; i++) {
        uint64_t s0 = (uint64_t)i * scs, s1 = s0 + scs;
        sc_type t = sc_get_type(s, e, b, i);
        if (i >= first && i <= last) {
            nb |= sc_alloc_bit(i);
            ret = sc_read_old(s, cstart, e, b, buf, s0, VD_MAX(s0, VD_MIN(s1, oic)));
            if (ret == 0) {
                ret = sc_read_old(s, cstart, e, b, buf, VD_MIN(s1, VD_MAX(s0, oic + len)), s1);
            }
        } else if (t == SC_NORMAL || t == SC_COMPRESSED) {
            nb |= sc_alloc_bit(i);
            ret = sc_read_old(s, cstart, e, b, buf, s0, s1);
        } else if (t == SC_ZERO_ALLOC || t == SC_ZERO_PLAIN) {
            nb |= sc_zero_bit(i);
        }
    }
    if (ret < 0) {
        free(buf);
        return ret;
    }
    memcpy(buf + oic, data, len);
    /* the L2 table first (allocated or copied for writing), then the data
     * cluster: QEMU's order, so a request over two clusters places them
     * side by side after the new table, as QEMU does */
    {
        uint64_t *slice;
        uint32_t idx;
        ret = qcow2_get_l2_for_write(s, cstart, &slice, &idx);
        if (ret < 0) {
            free(buf);
            return ret;
        }
        vd_cache_put(s->l2_cache, (void **)&slice);
    }
    uint64_t host;
    bool ext = qcow2_has_data_file(s);
    if (ext) {
        host = cstart;
    } else {
        int64_t a = qcow2_alloc_clusters(s, 1);
        if (a < 0) {
            free(buf);
            return (int)a;
        }
        host = (uint64_t)a;
        ret = qcow2_pre_write_overlap_check(s, 0, host, cs);
    }
    if (ret == 0) {
        vd_node_event(s->data, VD_EV_WRITE_AIO);
        ret = vd_node_pwrite(s->data, host, cs, buf, 0);
    }
    free(buf);
    if (ret == 0) {
        ret = sc_set_entry(s, cstart, host | QCOW_OFLAG_COPIED, nb, true);
    }
    if (ret < 0) {
        if (!ext) {
            qcow2_free_clusters(s, host, cs, QCOW2_DISCARD_NEVER);
        }
        return ret;
    }
    if (cluster_has_host(s, e) || (e & QCOW_OFLAG_COMPRESSED)) {
        qcow2_free_any_cluster(s, e, QCOW2_DISCARD_NEVER);
    }
    return 0;
}

static int sc_begin(qcow2_state *s, uint64_t start, uint64_t end)
{
    pthread_mutex_lock(&s->lock);
    int ret = s->broken || s->corrupt_ro ? -EIO : qcow2_begin_metadata_change(s);
    if (ret == 0) {
        qcow2_wait_inflight(s, start, end);
    }
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
    }
    return ret;
}

int qcow2_sc_pwrite(qcow2_state *s, uint64_t offset, uint64_t len, const uint8_t *data)
{
    uint64_t cs = s->cluster_size;
    while (len) {
        uint64_t n = VD_MIN(len, cs - qcow2_offset_into_cluster(s, offset));
        uint64_t cstart = qcow2_start_of_cluster(s, offset);
        int ret = sc_begin(s, cstart, cstart + cs);
        if (ret < 0) {
            return ret;
        }
        ret = sc_write_cluster(s, offset, n, data);
        pthread_mutex_unlock(&s->lock);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        data += n;
        len -= n;
    }
    return 0;
}

/* ------------------------------------------------------ zero / discard */

/* Whole subclusters [offset, offset+bytes) of one cluster read as zeroes;
 * unmap (whole clusters only) drops the host cluster.  Lock held. */
static int sc_zero_cluster(qcow2_state *s, uint64_t offset, uint64_t bytes, bool unmap)
{
    uint64_t cstart = qcow2_start_of_cluster(s, offset), oic = offset - cstart;
    uint32_t first = (uint32_t)(oic >> s->sc_bits);
    uint32_t last = (uint32_t)((oic + bytes - 1) >> s->sc_bits);
    bool whole = first == 0 && last == SC_COUNT - 1;
    uint64_t e, b;
    int ret = sc_get_entry(s, cstart, &e, &b);
    if (ret < 0) {
        return ret;
    }
    if (e & QCOW_OFLAG_COMPRESSED) {
        if (!whole) {
            return -ENOTSUP; /* the caller writes zero bytes instead */
        }
        unmap = true; /* a compressed cluster cannot keep zero bits */
    }
    if (whole && unmap) {
        if (e == 0 && b == SC_ALL_ZERO) {
            return 0;
        }
        ret = sc_set_entry(s, cstart, 0, SC_ALL_ZERO, false);
        if (ret == 0 && (cluster_has_host(s, e) || (e & QCOW_OFLAG_COMPRESSED))) {
            qcow2_free_any_cluster(s, e, QCOW2_DISCARD_REQUEST);
        }
        return ret;
    }
    uint64_t nb = (b | sc_range(first, last, 32)) & ~sc_range(first, last, 0);
    if (!cluster_has_host(s, e)) {
        nb &= SC_ALL_ZERO;
    }
    return nb == b ? 0 : sc_set_entry(s, cstart, e, nb, false);
}

int qcow2_sc_zeroize(qcow2_state *s, uint64_t offset, uint64_t bytes, unsigned flags)
{
    uint64_t cs = s->cluster_size;
    uint64_t end = offset + bytes;
    if (qcow2_data_file_is_raw(s) && offset < s->size) {
        int ret = vd_node_pwrite_zeroes(s->data, offset, VD_MIN(bytes, s->size - offset), 0);
        if (ret < 0) {
            return ret;
        }
    }
    while (offset < end) {
        uint64_t n = VD_MIN(end - offset, cs - qcow2_offset_into_cluster(s, offset));
        int ret = sc_zero_cluster(s, offset, n, (flags & VD_REQ_MAY_UNMAP) != 0);
        if (ret < 0) {
            return ret;
        }
        offset += n;
    }
    return 0;
}

int qcow2_sc_pwrite_zeroes(qcow2_state *s, uint64_t offset, uint64_t len, unsigned flags)
{
    uint64_t scs = 1ull << s->sc_bits, cs = s->cluster_size;
    uint64_t end = offset + len;
    uint64_t astart, aend = vd_align_down(end, scs);
    if (end == s->size && vd_align_up_overflow(end, scs, &aend)) {
        return -EINVAL;
    }
    if (vd_align_up_overflow(offset, scs, &astart)) {
        return -EINVAL;
    }
    if (astart >= aend) {
        astart = aend = end;
    }
    uint8_t *z = NULL;
    int ret = 0;
    /* partial subclusters: zero bytes */
    if (offset < VD_MIN(astart, end) || aend < end) {
        if (flags & VD_REQ_NO_FALLBACK) {
            return -ENOTSUP;
        }
        /* without a whole subcluster inside, the range spans at most two
         * partial ones: up to 2 * scs bytes */
        z = calloc(2, scs);
        if (!z) {
            return -ENOMEM;
        }
    }
    if (offset < VD_MIN(astart, end)) {
        ret = qcow2_sc_pwrite(s, offset, VD_MIN(astart, end) - offset, z);
    }
    for (uint64_t o = astart; ret == 0 && o < aend;) {
        uint64_t n = VD_MIN(aend - o, cs - qcow2_offset_into_cluster(s, o));
        uint64_t cstart = qcow2_start_of_cluster(s, o);
        ret = sc_begin(s, cstart, cstart + cs);
        if (ret < 0) {
            break;
        }
        if (qcow2_data_file_is_raw(s)) {
            ret = vd_node_pwrite_zeroes(s->data, o, VD_MIN(n, s->size - o), 0);
        }
        if (ret == 0) {
            ret = sc_zero_cluster(s, o, n, (flags & VD_REQ_MAY_UNMAP) != 0);
        }
        pthread_mutex_unlock(&s->lock);
        if (ret == -ENOTSUP) {
            /* part of a compressed cluster */
            uint8_t *zz = calloc(1, n);
            ret = zz ? qcow2_sc_pwrite(s, o, n, zz) : -ENOMEM;
            free(zz);
        }
        o += n;
    }
    if (ret == 0 && aend < end && aend >= astart) {
        ret = qcow2_sc_pwrite(s, VD_MAX(aend, offset), end - VD_MAX(aend, offset), z);
    }
    free(z);
    return ret;
}

int qcow2_sc_cluster_discard(qcow2_state *s, uint64_t offset, uint64_t bytes,
                             qcow2_discard_type type, bool full_discard)
{
    uint64_t cs = s->cluster_size;
    uint64_t end = offset + bytes;
    bool has_backing = s->backing_file != NULL;
    for (uint64_t o = offset; o < end; o += cs) {
        uint64_t e, b;
        int ret = sc_get_entry(s, o, &e, &b);
        if (ret < 0) {
            return ret;
        }
        bool allocated = cluster_has_host(s, e) || (e & QCOW_OFLAG_COMPRESSED);
        uint64_t nb = b;
        if (full_discard) {
            nb = 0;
        } else if (has_backing || allocated) {
            nb = SC_ALL_ZERO;
        }
        if (!allocated && e == 0 && nb == b) {
            continue;
        }
        ret = sc_set_entry(s, o, 0, nb, false);
        if (ret < 0) {
            return ret;
        }
        if (allocated) {
            qcow2_free_any_cluster(s, e, type);
        }
    }
    return 0;
}

int qcow2_sc_discard(qcow2_state *s, uint64_t offset, uint64_t len)
{
    uint64_t cs = s->cluster_size;
    uint64_t start, end = vd_align_down(offset + len, cs);
    if (offset + len >= s->size && vd_align_up_overflow(s->size, cs, &end)) {
        return -EINVAL;
    }
    if (vd_align_up_overflow(offset, cs, &start) || start >= end) {
        return 0;
    }
    int ret = sc_begin(s, start, end);
    if (ret < 0) {
        return ret;
    }
    ret = qcow2_sc_cluster_discard(s, start, end - start, QCOW2_DISCARD_REQUEST, false);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* ---------------------------------------------------------- block status */

int qcow2_sc_block_status(qcow2_state *s, uint64_t offset, uint64_t len, uint64_t *pnum,
                          uint64_t *map, vd_node **file)
{
    uint64_t bytes = len, host, e;
    sc_type t;
    pthread_mutex_lock(&s->lock);
    int ret = s->broken ? -EIO : sc_lookup(s, offset, &bytes, &t, &host, &e);
    pthread_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }
    *pnum = bytes;
    switch (t) {
    case SC_NORMAL:
        *map = host;
        *file = s->data;
        return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID | VD_BLOCK_ALLOCATED;
    case SC_ZERO_ALLOC:
        *map = host;
        *file = s->data;
        return VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID | VD_BLOCK_ALLOCATED;
    case SC_ZERO_PLAIN:
        return VD_BLOCK_ZERO | VD_BLOCK_ALLOCATED;
    case SC_COMPRESSED:
        return VD_BLOCK_DATA | VD_BLOCK_COMPRESSED | VD_BLOCK_ALLOCATED;
    case SC_UNALLOC_ALLOC:
        /* reserved host space, content from below (QEMU shows the offset) */
        *map = host;
        *file = s->data;
        return VD_BLOCK_OFFSET_VALID;
    case SC_UNALLOC_PLAIN:
        return 0;
    default:
        return -EIO;
    }
}

/* --------------------------------------------------------- preallocation */

int qcow2_sc_preallocate(qcow2_state *s, uint64_t offset, uint64_t bytes, vd_prealloc mode,
                         vd_error **errp)
{
    uint64_t cs = s->cluster_size;
    uint64_t start = qcow2_start_of_cluster(s, offset), end, data_end = 0;
    if (vd_align_up_overflow(offset + bytes, cs, &end)) {
        return vd_error_set(errp, EFBIG, "Image too large to preallocate");
    }
    bool ext = qcow2_has_data_file(s);
    /* all L2 tables first, so the data clusters form one area (QEMU's
     * layout) */
    uint64_t l2_span = (uint64_t)s->l2_size * cs;
    for (uint64_t g = start; g < end; g = (g / l2_span + 1) * l2_span) {
        uint64_t *slice;
        uint32_t idx;
        int ret = qcow2_get_l2_for_write(s, g, &slice, &idx);
        if (ret < 0) {
            return vd_error_setg_errno(errp, -ret, "Could not preallocate metadata");
        }
        vd_cache_put(s->l2_cache, (void **)&slice);
    }
    for (uint64_t g = start; g < end; g += cs) {
        uint64_t e, b;
        int ret = sc_get_entry(s, g, &e, &b);
        if (ret < 0) {
            return vd_error_setg_errno(errp, -ret, "Could not preallocate metadata");
        }
        if (cluster_has_host(s, e) || (e & QCOW_OFLAG_COMPRESSED)) {
            continue;
        }
        uint64_t host = g;
        if (!ext) {
            int64_t a = qcow2_alloc_clusters(s, 1);
            if (a < 0) {
                return vd_error_setg_errno(errp, (int)-a, "Could not preallocate data");
            }
            host = (uint64_t)a;
        }
        /* mapped, nothing allocated: reads still come from below */
        ret = sc_set_entry(s, g, host | QCOW_OFLAG_COPIED, b & SC_ALL_ZERO, true);
        if (ret < 0) {
            return vd_error_setg_errno(errp, -ret, "Could not preallocate metadata");
        }
        data_end = VD_MAX(data_end, ext ? VD_MIN(host + cs, s->size) : host + cs);
    }
    int ret = vd_cache_flush(s->l2_cache);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Could not write preallocated metadata");
    }
    int64_t flen = vd_node_get_length(s->data);
    if (flen >= 0 && data_end > (uint64_t)flen) {
        return vd_node_truncate(s->data, data_end, false,
                                mode == VD_PREALLOC_METADATA ? VD_PREALLOC_OFF : mode, errp);
    }
    return 0;
}
