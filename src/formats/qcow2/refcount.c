/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 host cluster management: the refcount table and refcount blocks of
 * any width (1..64 bits), cluster and byte allocation, freeing, growth of
 * the refcount table, and the metadata overlap checks that stop a write
 * from landing on metadata.
 *
 * Crash safety: a new refcount block is written (and flushed) before the
 * refcount table points to it; a new refcount table and its blocks are
 * written and flushed before the header points to them; refcount increases
 * reach the disk before the L2 entries that use them (cache dependency set
 * by the callers), decreases after (set here).
 */
#include <stdlib.h>

#include "qcow2.h"

/* ------------------------------------------------------- entry accessors */

uint64_t qcow2_rc_get(const qcow2_state *s, const void *block, uint64_t index)
{
    const uint8_t *b = block;
    switch (s->refcount_order) {
    case 0:
    case 1:
    case 2: {
        uint32_t bits = s->refcount_bits;
        uint64_t bit = index * bits;
        return (b[bit / 8] >> (bit % 8)) & ((1u << bits) - 1);
    }
    case 3:
        return b[index];
    case 4:
        return vd_ld_be16(b + index * 2);
    case 5:
        return vd_ld_be32(b + index * 4);
    default:
        return vd_ld_be64(b + index * 8);
    }
}

void qcow2_rc_set(const qcow2_state *s, void *block, uint64_t index, uint64_t value)
{
    uint8_t *b = block;
    switch (s->refcount_order) {
    case 0:
    case 1:
    case 2: {
        uint32_t bits = s->refcount_bits;
        uint64_t bit = index * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << (bit % 8));
        b[bit / 8] = (uint8_t)((b[bit / 8] & ~mask) | ((value << (bit % 8)) & mask));
        break;
    }
    case 3:
        b[index] = (uint8_t)value;
        break;
    case 4:
        vd_st_be16(b + index * 2, (uint16_t)value);
        break;
    case 5:
        vd_st_be32(b + index * 4, (uint32_t)value);
        break;
    default:
        vd_st_be64(b + index * 8, value);
        break;
    }
}

/* ----------------------------------------------------------------- init */

int qcow2_refcount_init(qcow2_state *s, vd_error **errp)
{
    uint64_t bytes = (uint64_t)s->refcount_table_clusters << s->cluster_bits;
    s->refcount_table_size = bytes / 8;
    s->refcount_table = calloc(s->refcount_table_size ? s->refcount_table_size : 1, 8);
    if (!s->refcount_table) {
        return vd_error_set(errp, ENOMEM, "Could not allocate the refcount table");
    }
    if (bytes) {
        QCOW2_EVENT(s, REFTABLE_LOAD);
        int ret = vd_node_pread(s->bs->file, s->refcount_table_offset, bytes,
                                s->refcount_table, 0);
        if (ret < 0) {
            return vd_error_setg_errno(errp, -ret, "Could not read the refcount table");
        }
    }
    s->max_refcount_table_index = 0;
    for (uint64_t i = 0; i < s->refcount_table_size; i++) {
        s->refcount_table[i] = vd_ld_be64(&s->refcount_table[i]);
        if (s->refcount_table[i]) {
            s->max_refcount_table_index = i;
        }
    }
    return 0;
}

/* -------------------------------------------------------------- lookup */

static uint64_t rb_entries(const qcow2_state *s)
{
    return 1ull << s->refcount_block_bits;
}

/* Pin the refcount block for table index ti; *block NULL when none. */
static int get_refblock(qcow2_state *s, uint64_t ti, void **block)
{
    *block = NULL;
    if (ti >= s->refcount_table_size) {
        return 0;
    }
    uint64_t off = s->refcount_table[ti] & REFT_OFFSET_MASK;
    if (!off) {
        return 0;
    }
    if (qcow2_offset_into_cluster(s, off)) {
        qcow2_signal_corruption(s, true,
                                "Refblock offset %#llx unaligned (reftable index: %#llx)",
                                (unsigned long long)off, (unsigned long long)ti);
        return -EIO;
    }
    QCOW2_EVENT(s, REFBLOCK_LOAD);
    return vd_cache_get(s->refcount_cache, off, block);
}

int qcow2_get_refcount(qcow2_state *s, uint64_t cluster_index, uint64_t *refcount)
{
    void *block;
    int ret = get_refblock(s, cluster_index >> s->refcount_block_bits, &block);
    if (ret < 0) {
        return ret;
    }
    if (!block) {
        *refcount = 0;
        return 0;
    }
    *refcount = qcow2_rc_get(s, block, cluster_index & (rb_entries(s) - 1));
    vd_cache_put(s->refcount_cache, &block);
    return 0;
}

/* ----------------------------------------------------- overlap checks */

static bool ranges_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

unsigned qcow2_check_metadata_overlap(qcow2_state *s, unsigned ign, uint64_t offset,
                                      uint64_t size)
{
    unsigned chk = s->overlap_check & ~ign;
    unsigned hit = 0;
    uint64_t cs = s->cluster_size;

    if (!size || !chk) {
        return 0;
    }
    if ((chk & QCOW2_OL_MAIN_HEADER) && offset < cs) {
        hit |= QCOW2_OL_MAIN_HEADER;
    }
    if ((chk & QCOW2_OL_ACTIVE_L1) && s->l1_size &&
        ranges_overlap(offset, size, s->l1_table_offset, (uint64_t)s->l1_size * 8)) {
        hit |= QCOW2_OL_ACTIVE_L1;
    }
    if ((chk & QCOW2_OL_REFCOUNT_TABLE) && s->refcount_table_clusters &&
        ranges_overlap(offset, size, s->refcount_table_offset,
                       (uint64_t)s->refcount_table_clusters << s->cluster_bits)) {
        hit |= QCOW2_OL_REFCOUNT_TABLE;
    }
    if ((chk & QCOW2_OL_SNAPSHOT_TABLE) && s->snapshots_size &&
        ranges_overlap(offset, size, s->snapshots_offset, s->snapshots_size)) {
        hit |= QCOW2_OL_SNAPSHOT_TABLE;
    }
    if ((chk & QCOW2_OL_INACTIVE_L1) && s->snapshots) {
        for (uint32_t i = 0; i < s->nb_snapshots; i++) {
            if (s->snapshots[i].l1_size &&
                ranges_overlap(offset, size, s->snapshots[i].l1_offset,
                               (uint64_t)s->snapshots[i].l1_size * 8)) {
                hit |= QCOW2_OL_INACTIVE_L1;
                break;
            }
        }
    }
    if ((chk & QCOW2_OL_BITMAP_DIRECTORY) && s->bitmaps_loaded && s->bitmap_directory_size &&
        ranges_overlap(offset, size, s->bitmap_directory_offset, s->bitmap_directory_size)) {
        hit |= QCOW2_OL_BITMAP_DIRECTORY;
    }
    uint64_t first = qcow2_start_of_cluster(s, offset);
    uint64_t last = qcow2_start_of_cluster(s, offset + size - 1);
    if ((chk & QCOW2_OL_ACTIVE_L2) && s->l1_table) {
        for (uint32_t i = 0; i < s->l1_size; i++) {
            uint64_t l2 = s->l1_table[i] & L1E_OFFSET_MASK;
            if (l2 && l2 >= first && l2 <= last) {
                hit |= QCOW2_OL_ACTIVE_L2;
                break;
            }
        }
    }
    if ((chk & QCOW2_OL_REFCOUNT_BLOCK) && s->refcount_table) {
        for (uint64_t i = 0; i <= s->max_refcount_table_index && i < s->refcount_table_size;
             i++) {
            uint64_t rb = s->refcount_table[i] & REFT_OFFSET_MASK;
            if (rb && rb >= first && rb <= last) {
                hit |= QCOW2_OL_REFCOUNT_BLOCK;
                break;
            }
        }
    }
    return hit;
}

static const char *overlap_name(unsigned hit)
{
    static const char *const names[] = {
        "qcow2_header", "active L1 table", "active L2 table", "refcount table",
        "refcount block", "snapshot table", "inactive L1 table", "inactive L2 table",
        "bitmap directory",
    };
    for (unsigned i = 0; i < VD_ARRAY_SIZE(names); i++) {
        if (hit & (1u << i)) {
            return names[i];
        }
    }
    return "metadata";
}

int qcow2_pre_write_overlap_check(qcow2_state *s, unsigned ign, uint64_t offset,
                                  uint64_t size)
{
    unsigned hit = qcow2_check_metadata_overlap(s, ign, offset, size);
    if (!hit) {
        return 0;
    }
    qcow2_signal_corruption(s, true,
                            "Preventing invalid write on metadata (overlaps with %s)",
                            overlap_name(hit));
    return -EIO;
}

int qcow2_cache_check_l2(void *opaque, uint64_t offset, uint64_t len)
{
    return qcow2_pre_write_overlap_check(opaque, QCOW2_OL_ACTIVE_L2, offset, len);
}

int qcow2_cache_check_refblock(void *opaque, uint64_t offset, uint64_t len)
{
    return qcow2_pre_write_overlap_check(opaque, QCOW2_OL_REFCOUNT_BLOCK, offset, len);
}

/* ------------------------------------------------------- table writes */

static int write_reftable_entry(qcow2_state *s, uint64_t ti)
{
    uint8_t buf[8];
    uint64_t off = s->refcount_table_offset + ti * 8;
    int ret = qcow2_pre_write_overlap_check(s, QCOW2_OL_REFCOUNT_TABLE, off, 8);
    if (ret < 0) {
        return ret;
    }
    vd_st_be64(buf, s->refcount_table[ti]);
    QCOW2_EVENT(s, REFTABLE_UPDATE);
    return vd_node_pwrite(s->bs->file, off, 8, buf, 0);
}

/* ------------------------------------------------------ free scanning */

/*
 * First index of n contiguous free clusters at or after the allocation
 * hint.  Clusters no refcount block covers are free.
 */
static void discq_flush(qcow2_state *s);

static int find_free(qcow2_state *s, uint64_t n, uint64_t *out)
{
    /* a cluster freed by the running request may be handed out again:
     * punch the queued ranges before anyone writes there */
    discq_flush(s);
    uint64_t i = s->free_cluster_index;
    uint64_t start = i, run = 0;
    uint64_t limit = 1ull << (63 - s->cluster_bits);
    bool seen_free = false;

    while (run < n) {
        if (i >= limit) {
            return -EFBIG;
        }
        uint64_t ti = i >> s->refcount_block_bits;
        uint64_t in_block = i & (rb_entries(s) - 1);
        uint64_t avail = rb_entries(s) - in_block;
        void *block;
        int ret = get_refblock(s, ti, &block);
        if (ret < 0) {
            return ret;
        }
        if (!block) {
            if (!seen_free) {
                seen_free = true;
                s->free_cluster_index = i;
            }
            uint64_t take = VD_MIN(avail, n - run);
            run += take;
            i += take;
            continue;
        }
        for (uint64_t k = 0; k < avail && run < n; k++, i++) {
            if (qcow2_rc_get(s, block, in_block + k) == 0) {
                if (!seen_free) {
                    seen_free = true;
                    s->free_cluster_index = i;
                }
                run++;
            } else {
                run = 0;
                start = i + 1;
            }
        }
        vd_cache_put(s->refcount_cache, &block);
    }
    *out = start;
    return 0;
}

static int grow_reftable(qcow2_state *s, uint64_t min_entries);

/*
 * Make a refcount block for table index ti (< refcount_table_size).  Like
 * QEMU, the block takes the first free cluster; when that cluster is not
 * in the block's own range, the block that covers it is made first (it
 * then describes itself, being the next free cluster).
 */
static int alloc_refblock(qcow2_state *s, uint64_t ti, int depth)
{
    int ret;
    uint64_t b;

    if (depth > 8) {
        return -EIO;
    }
    ret = find_free(s, 1, &b);
    if (ret < 0) {
        return ret;
    }
    if (b == 0) {
        qcow2_signal_corruption(s, true,
                                "Preventing invalid allocation of refcount block at offset 0");
        return -EIO;
    }
    uint64_t bti = b >> s->refcount_block_bits;
    uint64_t boff = b << s->cluster_bits;
    if (bti >= s->refcount_table_size) {
        return grow_reftable(s, VD_MAX(ti, bti) + 1);
    }
    if (b >= s->free_cluster_index) {
        s->free_cluster_index = b + 1; /* reserved for the block */
    }
    if (bti != ti && !(s->refcount_table[bti] & REFT_OFFSET_MASK)) {
        ret = alloc_refblock(s, bti, depth + 1);
        if (ret < 0) {
            return ret;
        }
        if (!(s->refcount_table[bti] & REFT_OFFSET_MASK)) {
            return -EAGAIN; /* the table grew instead: the caller retries */
        }
    }
    ret = qcow2_pre_write_overlap_check(s, 0, boff, s->cluster_size);
    if (ret < 0) {
        return ret;
    }
    void *block;
    ret = vd_cache_get_empty(s->refcount_cache, boff, &block);
    if (ret < 0) {
        return ret;
    }
    memset(block, 0, s->cluster_size);
    if (bti == ti) {
        /* self-describing: the block counts its own cluster */
        qcow2_rc_set(s, block, b & (rb_entries(s) - 1), 1);
    }
    QCOW2_EVENT(s, REFBLOCK_ALLOC_WRITE);
    ret = vd_node_pwrite(s->bs->file, boff, s->cluster_size, block, 0);
    vd_cache_put(s->refcount_cache, &block);
    if (ret < 0) {
        vd_cache_discard(s->refcount_cache, boff);
        return ret;
    }
    if (bti != ti) {
        ret = qcow2_update_refcount(s, boff, s->cluster_size, 1, QCOW2_DISCARD_NEVER);
        if (ret < 0) {
            return ret;
        }
        ret = vd_cache_flush(s->refcount_cache);
    } else {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        return ret;
    }
    s->refcount_table[ti] = boff;
    if (ti > s->max_refcount_table_index) {
        s->max_refcount_table_index = ti;
    }
    QCOW2_EVENT(s, REFBLOCK_ALLOC_HOOKUP);
    ret = write_reftable_entry(s, ti);
    if (ret < 0) {
        s->refcount_table[ti] = 0;
        return ret;
    }
    return 0;
}

/*
 * Replace the refcount table with a bigger one of at least min_entries.
 * The new table and the refcount blocks for its own clusters go into one
 * free area which they describe themselves.
 */
static int grow_reftable(qcow2_state *s, uint64_t min_entries)
{
    uint64_t per_cluster = s->cluster_size / 8;
    uint64_t want = VD_MAX(min_entries, s->refcount_table_size + s->refcount_table_size / 2);
    uint64_t entries, m = 2, start = 0, nb_new = 0, tc = 0;
    int ret;

    QCOW2_EVENT(s, REFTABLE_GROW);
    entries = vd_div_round_up(VD_MAX(want, 1), per_cluster) * per_cluster;
    for (int iter = 0;; iter++) {
        if (iter > 64) {
            return -EIO;
        }
        if (entries * 8 > QCOW2_MAX_REFTABLE_BYTES) {
            return -EFBIG;
        }
        tc = entries / per_cluster;
        ret = find_free(s, m, &start);
        if (ret < 0) {
            return ret;
        }
        uint64_t last_ti = (start + m - 1) >> s->refcount_block_bits;
        if (last_ti >= entries) {
            entries = vd_div_round_up(last_ti + 1, per_cluster) * per_cluster;
            continue;
        }
        nb_new = 0;
        for (uint64_t ti = start >> s->refcount_block_bits; ti <= last_ti; ti++) {
            if (ti >= s->refcount_table_size || !(s->refcount_table[ti] & REFT_OFFSET_MASK)) {
                nb_new++;
            }
        }
        uint64_t need = nb_new + tc;
        if (need == m) {
            break;
        }
        m = need;
    }

    uint64_t *new_table = calloc(entries, 8);
    uint8_t *blocks = calloc(nb_new ? nb_new : 1, s->cluster_size);
    uint64_t *block_ti = calloc(nb_new ? nb_new : 1, sizeof(uint64_t));
    if (!new_table || !blocks || !block_ti) {
        ret = -ENOMEM;
        goto out;
    }
    memcpy(new_table, s->refcount_table, s->refcount_table_size * 8);
    uint64_t k = 0;
    uint64_t first_ti = start >> s->refcount_block_bits;
    uint64_t last_ti = (start + m - 1) >> s->refcount_block_bits;
    for (uint64_t ti = first_ti; ti <= last_ti; ti++) {
        if (ti >= s->refcount_table_size || !(s->refcount_table[ti] & REFT_OFFSET_MASK)) {
            block_ti[k] = ti;
            new_table[ti] = (start + k) << s->cluster_bits;
            k++;
        }
    }
    /* refcounts of the area: in the new blocks, or in existing ones */
    for (uint64_t c = start; c < start + m; c++) {
        uint64_t ti = c >> s->refcount_block_bits;
        bool in_new = false;
        for (uint64_t j = 0; j < nb_new; j++) {
            if (block_ti[j] == ti) {
                qcow2_rc_set(s, blocks + j * s->cluster_size, c & (rb_entries(s) - 1), 1);
                in_new = true;
                break;
            }
        }
        if (!in_new) {
            ret = qcow2_update_refcount(s, c << s->cluster_bits, s->cluster_size, 1,
                                        QCOW2_DISCARD_NEVER);
            if (ret < 0) {
                goto out;
            }
        }
    }
    uint64_t area = start << s->cluster_bits;
    ret = qcow2_pre_write_overlap_check(s, 0, area, m << s->cluster_bits);
    if (ret < 0) {
        goto out;
    }
    if (nb_new) {
        QCOW2_EVENT(s, REFBLOCK_ALLOC_WRITE_BLOCKS);
        ret = vd_node_pwrite(s->bs->file, area, nb_new << s->cluster_bits, blocks, 0);
        if (ret < 0) {
            goto out;
        }
    }
    uint64_t table_off = (start + nb_new) << s->cluster_bits;
    for (uint64_t i = 0; i < entries; i++) {
        vd_st_be64(&new_table[i], new_table[i]);
    }
    QCOW2_EVENT(s, REFBLOCK_ALLOC_WRITE_TABLE);
    ret = vd_node_pwrite(s->bs->file, table_off, tc << s->cluster_bits, new_table, 0);
    for (uint64_t i = 0; i < entries; i++) {
        new_table[i] = vd_ld_be64(&new_table[i]);
    }
    if (ret < 0) {
        goto out;
    }
    ret = vd_cache_flush(s->refcount_cache);
    if (ret < 0) {
        goto out;
    }

    uint64_t old_off = s->refcount_table_offset;
    uint32_t old_clusters = s->refcount_table_clusters;
    uint64_t *old_table = s->refcount_table;
    uint64_t old_size = s->refcount_table_size;
    s->refcount_table_offset = table_off;
    s->refcount_table_clusters = (uint32_t)tc;
    QCOW2_EVENT(s, REFBLOCK_ALLOC_SWITCH_TABLE);
    ret = qcow2_write_reftable_fields(s);
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        s->refcount_table_offset = old_off;
        s->refcount_table_clusters = old_clusters;
        goto out;
    }
    s->refcount_table = new_table;
    s->refcount_table_size = entries;
    new_table = NULL;
    free(old_table);
    for (uint64_t i = 0; i < entries; i++) {
        if (s->refcount_table[i]) {
            s->max_refcount_table_index = i;
        }
    }
    (void)old_size;
    if (start + m > s->free_cluster_index) {
        s->free_cluster_index = start + m;
    }
    qcow2_free_clusters(s, old_off, (uint64_t)old_clusters << s->cluster_bits,
                        QCOW2_DISCARD_OTHER);
    ret = 0;
out:
    free(new_table);
    free(blocks);
    free(block_ti);
    return ret;
}

/* Make sure refcount blocks cover clusters [c, c+n) (reserved already). */
static int ensure_refblocks(qcow2_state *s, uint64_t c, uint64_t n)
{
    uint64_t first = c >> s->refcount_block_bits;
    uint64_t last = (c + n - 1) >> s->refcount_block_bits;
    for (uint64_t ti = first; ti <= last; ti++) {
        for (int tries = 0; ti >= s->refcount_table_size ||
                            !(s->refcount_table[ti] & REFT_OFFSET_MASK);
             tries++) {
            int ret;
            if (tries > 16) {
                return -EIO;
            }
            if (ti >= s->refcount_table_size) {
                ret = grow_reftable(s, last + 1);
            } else {
                ret = alloc_refblock(s, ti, 0);
            }
            if (ret < 0 && ret != -EAGAIN) {
                return ret;
            }
        }
    }
    return 0;
}

/* --------------------------------------------------------- refcounts */

static void drop_cached_tables(qcow2_state *s, uint64_t cluster_offset)
{
    vd_cache_discard(s->refcount_cache, cluster_offset);
    for (uint64_t o = 0; o < s->cluster_size; o += s->l2_slice_size) {
        vd_cache_discard(s->l2_cache, cluster_offset + o);
    }
}

typedef struct discard_batch {
    uint64_t start, end;
} discard_batch;

static int range_cmp(const void *a, const void *b)
{
    const struct qcow2_range *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* pass the queued discards down, merged, in ascending order */
static void discq_flush(qcow2_state *s)
{
    size_t n = s->discq_n;
    if (n == 0) {
        return;
    }
    s->discq_n = 0;
    qsort(s->discq, n, sizeof(s->discq[0]), range_cmp);
    uint64_t start = s->discq[0].start, end = s->discq[0].end;
    for (size_t i = 1; i <= n; i++) {
        if (i < n && s->discq[i].start <= end) {
            end = VD_MAX(end, s->discq[i].end);
            continue;
        }
        (void)vd_node_discard(s->bs->file, start, end - start);
        if (i < n) {
            start = s->discq[i].start;
            end = s->discq[i].end;
        }
    }
}

static void discq_add(qcow2_state *s, uint64_t start, uint64_t end)
{
    /* frees mostly come in host order: try the newest ranges first */
    for (size_t i = s->discq_n, k = 0; i-- > 0 && k < 8; k++) {
        struct qcow2_range *r = &s->discq[i];
        if (r->end == start) {
            r->end = end;
            return;
        }
        if (r->start == end) {
            r->start = start;
            return;
        }
    }
    if (s->discq_n == s->discq_cap) {
        size_t cap = s->discq_cap ? s->discq_cap * 2 : 64;
        struct qcow2_range *q = cap <= 65536 ? realloc(s->discq, cap * sizeof(*q)) : NULL;
        if (!q) {
            /* full (or no memory): pass the queue down now */
            discq_flush(s);
            if (s->discq_cap == 0) {
                (void)vd_node_discard(s->bs->file, start, end - start);
                return;
            }
        } else {
            s->discq = q;
            s->discq_cap = cap;
        }
    }
    s->discq[s->discq_n++] = (struct qcow2_range){start, end};
}

void qcow2_discard_queue_begin(qcow2_state *s)
{
    s->discq_depth++;
}

void qcow2_discard_queue_end(qcow2_state *s)
{
    if (s->discq_depth > 0 && --s->discq_depth == 0) {
        discq_flush(s);
    }
}

static void discard_flush(qcow2_state *s, discard_batch *d)
{
    if (d->end > d->start) {
        if (s->discq_depth > 0) {
            discq_add(s, d->start, d->end);
        } else {
            (void)vd_node_discard(s->bs->file, d->start, d->end - d->start);
        }
    }
    d->start = d->end = 0;
}

static void discard_add(qcow2_state *s, discard_batch *d, uint64_t off, uint64_t len)
{
    if (d->end == off && d->end > d->start) {
        d->end += len;
        return;
    }
    discard_flush(s, d);
    d->start = off;
    d->end = off + len;
}

int qcow2_update_refcount(qcow2_state *s, uint64_t offset, uint64_t len, int64_t addend,
                          qcow2_discard_type type)
{
    discard_batch d = {0, 0};
    int ret = 0;
    uint64_t done = 0, first, last;

    if (len == 0 || addend == 0) {
        return 0;
    }
    if (offset + len < offset) {
        return -EINVAL;
    }
    if (addend < 0) {
        ret = vd_cache_set_dependency(s->refcount_cache, s->l2_cache);
        if (ret < 0) {
            return ret;
        }
    }
    first = qcow2_start_of_cluster(s, offset);
    last = qcow2_start_of_cluster(s, offset + len - 1);
    uint64_t prev_ti = UINT64_MAX;
    for (uint64_t co = first; co <= last; co += s->cluster_size) {
        uint64_t ci = co >> s->cluster_bits;
        uint64_t ti = ci >> s->refcount_block_bits;
        void *block;

        if (ti != prev_ti) {
            /* QEMU announces it for each refblock update_refcount looks up,
             * whether or not one has to be allocated */
            QCOW2_EVENT(s, REFBLOCK_ALLOC);
            prev_ti = ti;
        }

        if (addend > 0 && (ti >= s->refcount_table_size ||
                           !(s->refcount_table[ti] & REFT_OFFSET_MASK))) {
            if (ci >= s->free_cluster_index) {
                s->free_cluster_index = ci + 1; /* not for the new block */
            }
            ret = ensure_refblocks(s, ci, 1);
            if (ret < 0) {
                goto fail;
            }
        }
        ret = get_refblock(s, ti, &block);
        if (ret < 0) {
            goto fail;
        }
        if (!block) {
            ret = -EINVAL; /* decrementing a refcount that is 0 */
            goto fail;
        }
        uint64_t idx = ci & (rb_entries(s) - 1);
        uint64_t rc = qcow2_rc_get(s, block, idx);
        if ((addend < 0 && rc < (uint64_t)-addend) ||
            (addend > 0 && (uint64_t)addend > s->refcount_max - rc)) {
            vd_cache_put(s->refcount_cache, &block);
            ret = -EINVAL;
            goto fail;
        }
        rc += (uint64_t)addend;
        QCOW2_EVENT(s, REFBLOCK_UPDATE);
        qcow2_rc_set(s, block, idx, rc);
        vd_cache_mark_dirty(s->refcount_cache, block);
        vd_cache_put(s->refcount_cache, &block);
        done = co - first + s->cluster_size;
        if (rc == 0) {
            if (ci < s->free_cluster_index) {
                s->free_cluster_index = ci;
            }
            drop_cached_tables(s, co);
            if (s->discard_passthrough[type]) {
                discard_add(s, &d, co, s->cluster_size);
            }
        }
    }
    discard_flush(s, &d);
    return 0;

fail:
    discard_flush(s, &d);
    if (done) {
        /* undo what was applied so the counts stay consistent */
        (void)qcow2_update_refcount(s, first, done, -addend, QCOW2_DISCARD_NEVER);
    }
    return ret;
}

int64_t qcow2_alloc_clusters(qcow2_state *s, uint64_t n)
{
    uint64_t c;
    int ret;

    if (n == 0) {
        return -EINVAL;
    }
    QCOW2_EVENT(s, CLUSTER_ALLOC);
    ret = find_free(s, n, &c);
    if (ret < 0) {
        return ret;
    }
    if (c + n > (QCOW_MAX_CLUSTER_OFFSET >> s->cluster_bits) + 1) {
        return -EFBIG;
    }
    /* reserve the range first: refcount blocks it needs go after it */
    if (c + n > s->free_cluster_index) {
        s->free_cluster_index = c + n;
    }
    ret = ensure_refblocks(s, c, n);
    if (ret == 0) {
        ret = qcow2_update_refcount(s, c << s->cluster_bits, n << s->cluster_bits, 1,
                                    QCOW2_DISCARD_NEVER);
    }
    if (ret < 0) {
        if (c < s->free_cluster_index) {
            s->free_cluster_index = c;
        }
        return ret;
    }
    return (int64_t)(c << s->cluster_bits);
}

int64_t qcow2_alloc_bytes(qcow2_state *s, uint32_t size)
{
    uint64_t off = s->free_byte_offset;
    uint64_t cs = s->cluster_size;
    int ret;

    if (size == 0 || size > cs) {
        return -EINVAL;
    }
    QCOW2_EVENT(s, CLUSTER_ALLOC_BYTES);
    if (off) {
        uint64_t rc;
        ret = qcow2_get_refcount(s, off >> s->cluster_bits, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc == 0 || rc >= s->refcount_max) {
            off = 0; /* the cluster went away or cannot take more users */
        }
    }
    uint64_t free_in_cluster = off ? cs - qcow2_offset_into_cluster(s, off) : 0;
    if (!off || free_in_cluster < size) {
        int64_t nc = qcow2_alloc_clusters(s, 1);
        if (nc < 0) {
            return nc;
        }
        if (off && (uint64_t)nc == qcow2_start_of_cluster(s, off) + cs) {
            /* contiguous: the data may span into the new cluster, which
             * already holds the one reference this allocation needs */
            uint64_t res = off;
            s->free_byte_offset = off + size;
            if (qcow2_offset_into_cluster(s, s->free_byte_offset) == 0) {
                s->free_byte_offset = 0;
            }
            /* the old cluster gets one more user */
            ret = qcow2_update_refcount(s, off, 1, 1, QCOW2_DISCARD_NEVER);
            if (ret < 0) {
                qcow2_free_clusters(s, (uint64_t)nc, cs, QCOW2_DISCARD_NEVER);
                return ret;
            }
            return (int64_t)res;
        }
        off = (uint64_t)nc;
        s->free_byte_offset = off + size;
        if (qcow2_offset_into_cluster(s, s->free_byte_offset) == 0) {
            s->free_byte_offset = 0;
        }
        return (int64_t)off;
    }
    ret = qcow2_update_refcount(s, off, size, 1, QCOW2_DISCARD_NEVER);
    if (ret < 0) {
        return ret;
    }
    s->free_byte_offset = off + size;
    if (qcow2_offset_into_cluster(s, s->free_byte_offset) == 0) {
        s->free_byte_offset = 0;
    }
    return (int64_t)off;
}

static bool held(const qcow2_state *s, uint64_t offset, uint64_t len)
{
    for (const qcow2_inflight *h = s->held; h; h = h->next) {
        if (h->start < offset + len && offset < h->end) {
            return true;
        }
    }
    return false;
}

void qcow2_hold(qcow2_state *s, qcow2_inflight *h, uint64_t start, uint64_t end)
{
    h->start = start;
    h->end = end;
    h->next = s->held;
    s->held = h;
}

void qcow2_hold_release(qcow2_state *s, qcow2_inflight *h)
{
    for (qcow2_inflight **p = &s->held; *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            break;
        }
    }
    for (qcow2_deferred_free **p = &s->deferred; *p;) {
        qcow2_deferred_free *d = *p;
        if (held(s, d->offset, d->len)) {
            p = &d->next;
            continue;
        }
        *p = d->next;
        (void)qcow2_update_refcount(s, d->offset, d->len, -1, (qcow2_discard_type)d->type);
        free(d);
    }
}

void qcow2_free_clusters(qcow2_state *s, uint64_t offset, uint64_t len,
                         qcow2_discard_type type)
{
    if (held(s, offset, len)) {
        qcow2_deferred_free *d = malloc(sizeof(*d));
        if (d) {
            *d = (qcow2_deferred_free){offset, len, (int)type, s->deferred};
            s->deferred = d;
        }
        /* without memory the clusters leak: safe, check -r repairs it */
        return;
    }
    /* a failure only leaks the clusters, which check -r leaks repairs */
    QCOW2_EVENT(s, CLUSTER_FREE);
    (void)qcow2_update_refcount(s, offset, len, -1, type);
}

void qcow2_free_any_cluster(qcow2_state *s, uint64_t l2_entry, qcow2_discard_type type)
{
    switch (qcow2_get_cluster_type(s, l2_entry)) {
    case QCOW2_CLUSTER_COMPRESSED: {
        uint64_t coffset, csize;
        qcow2_parse_compressed(s, l2_entry, &coffset, &csize);
        qcow2_free_clusters(s, coffset, csize, type);
        break;
    }
    case QCOW2_CLUSTER_NORMAL:
    case QCOW2_CLUSTER_ZERO_ALLOC: {
        uint64_t off = l2_entry & L2E_OFFSET_MASK;
        if (qcow2_offset_into_cluster(s, off)) {
            qcow2_signal_corruption(s, false, "Cannot free unaligned cluster %#llx",
                                    (unsigned long long)off);
        } else if (qcow2_has_data_file(s)) {
            /* external data (datafile.c): no refcounts, maybe a discard */
            if (s->discard_passthrough[type]) {
                (void)vd_node_discard(s->data, off, s->cluster_size);
            }
        } else {
            qcow2_free_clusters(s, off, s->cluster_size, type);
        }
        break;
    }
    default:
        break;
    }
}

int64_t qcow2_get_last_cluster(qcow2_state *s, int64_t size)
{
    int64_t i;
    for (i = (int64_t)qcow2_size_to_clusters(s, (uint64_t)size) - 1; i >= 0; i--) {
        uint64_t rc;
        int ret = qcow2_get_refcount(s, (uint64_t)i, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc > 0) {
            break;
        }
    }
    return i;
}

int qcow2_shrink_reftable(qcow2_state *s)
{
    bool changed = false;
    for (uint64_t ti = 0; ti < s->refcount_table_size; ti++) {
        uint64_t off = s->refcount_table[ti] & REFT_OFFSET_MASK;
        void *block;
        if (!off || qcow2_offset_into_cluster(s, off)) {
            continue;
        }
        int ret = vd_cache_get(s->refcount_cache, off, &block);
        if (ret < 0) {
            return ret;
        }
        uint64_t self = off >> s->cluster_bits;
        bool self_here = (self >> s->refcount_block_bits) == ti;
        bool unused = true;
        for (uint64_t i = 0; i < rb_entries(s) && unused; i++) {
            uint64_t rc = qcow2_rc_get(s, block, i);
            if (self_here && i == (self & (rb_entries(s) - 1))) {
                unused = rc == 1;
            } else if (rc) {
                unused = false;
            }
        }
        vd_cache_put(s->refcount_cache, &block);
        if (!unused || !self_here) {
            continue;
        }
        s->refcount_table[ti] = 0;
        ret = write_reftable_entry(s, ti);
        if (ret < 0) {
            s->refcount_table[ti] = off;
            return ret;
        }
        vd_cache_discard(s->refcount_cache, off);
        if (self < s->free_cluster_index) {
            s->free_cluster_index = self;
        }
        changed = true;
    }
    if (changed) {
        return vd_node_flush(s->bs->file);
    }
    return 0;
}
