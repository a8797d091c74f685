/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 consistency check and repair, with qemu-img's semantics: every
 * reference (header, L1/L2 tables and data of the active state and of
 * snapshots, snapshot table, refcount table and blocks, bitmap directory,
 * bitmap tables and data) is counted in memory and compared with the
 * stored refcounts.  Leaks (stored > counted) and corruptions (stored <
 * counted) are repaired on request; a reference to a cluster whose stored
 * refcount is 0, or a broken refcount block, makes the repair rebuild the
 * whole refcount structure at the end of the file.  The OFLAG_COPIED bits
 * are checked (and fixed) last.  Also used to repair an image left dirty
 * by lazy refcounts, before its first write.
 */
#include <stdlib.h>

#include "qcow2.h"

typedef struct check_ctx {
    qcow2_state *s;
    vd_check_res *res;
    unsigned fix;
    uint8_t *rc;      /* computed refcounts, s->refcount_bits wide */
    uint64_t nb;      /* clusters covered by rc */
    uint64_t cap;     /* clusters rc has room for */
    int64_t file_len;
    bool rebuild;
} check_ctx;

static uint64_t rc_bytes(const qcow2_state *s, uint64_t clusters)
{
    return (clusters * s->refcount_bits + 7) / 8;
}

static int ctx_reserve(check_ctx *c, uint64_t clusters)
{
    if (clusters <= c->cap) {
        if (clusters > c->nb) {
            c->nb = clusters;
        }
        return 0;
    }
    uint64_t ncap = VD_MAX(clusters, c->cap + c->cap / 2);
    uint64_t old = rc_bytes(c->s, c->cap), nbytes = rc_bytes(c->s, ncap);
    uint8_t *n = realloc(c->rc, nbytes ? nbytes : 1);
    if (!n) {
        return -ENOMEM;
    }
    memset(n + old, 0, nbytes - old);
    c->rc = n;
    c->cap = ncap;
    c->nb = clusters;
    return 0;
}

static uint64_t ctx_get(const check_ctx *c, uint64_t i)
{
    return i < c->nb ? qcow2_rc_get(c->s, c->rc, i) : 0;
}

/* Count n references to every cluster touching [offset, offset+size): the
 * counts (corruptions included) of n separate visits, as QEMU makes. */
static int inc_refs_n(check_ctx *c, uint64_t offset, uint64_t size, uint64_t n)
{
    qcow2_state *s = c->s;
    if (size == 0 || n == 0) {
        return 0;
    }
    uint64_t end;
    if (vd_add_overflow(offset, size, &end) ||
        (end > (uint64_t)c->file_len && end - (uint64_t)c->file_len >= s->cluster_size)) {
        for (uint64_t k = 0; k < n; k++) {
            vd_check_line("ERROR: counting reference for region exceeding the end of the file by "
                          "one cluster or more: offset 0x%llx size 0x%llx",
                          (unsigned long long)offset, (unsigned long long)size);
        }
        c->res->corruptions += n;
        return 0;
    }
    uint64_t first = offset >> s->cluster_bits;
    uint64_t last = (end - 1) >> s->cluster_bits;
    int ret = ctx_reserve(c, VD_MAX(c->nb, last + 1));
    if (ret < 0) {
        return ret;
    }
    for (uint64_t i = first; i <= last; i++) {
        uint64_t v = qcow2_rc_get(s, c->rc, i);
        uint64_t room = s->refcount_max - v;
        if (n > room) {
            for (uint64_t k = 0; k < n - room; k++) {
                vd_check_line("ERROR: overflow cluster offset=0x%llx",
                              (unsigned long long)(i << s->cluster_bits));
                vd_check_line("Use %s amend to increase the refcount entry width or "
                              "%s convert to create a clean copy if the image cannot be "
                              "opened for writing",
                              vd_image_tool_name(), vd_image_tool_name());
            }
            c->res->corruptions += n - room;
        }
        qcow2_rc_set(s, c->rc, i, v + VD_MIN(n, room));
    }
    return 0;
}

static int inc_refs(check_ctx *c, uint64_t offset, uint64_t size)
{
    return inc_refs_n(c, offset, size, 1);
}

static int write_l2_entry_direct(qcow2_state *s, uint64_t l2_offset, uint32_t index,
                                 uint64_t entry)
{
    uint64_t *slice;
    int ret = qcow2_get_l2_slice(s, l2_offset, index, &slice);
    if (ret < 0) {
        return ret;
    }
    qcow2_l2_entry_set(s, slice, index % s->l2_slice_entries, entry);
    vd_cache_mark_dirty(s->l2_cache, slice);
    vd_cache_put(s->l2_cache, (void **)&slice);
    return 0;
}

/*
 * Count the references of one L2 table, reached mult times (from the
 * active L1 table: once, and repairs allowed; from snapshots: once per
 * snapshot L1 entry pointing at it, the table read only once).
 */
static int check_l2(check_ctx *c, uint64_t l2_offset, bool active, uint8_t *table,
                    uint64_t mult)
{
    qcow2_state *s = c->s;
    vd_check_res *res = c->res;
    uint64_t next_contiguous = 0;
    int ret = vd_node_pread(s->bs->file, l2_offset, s->cluster_size, table, 0);
    if (ret < 0) {
        res->check_errors += mult;
        return 0; /* keep checking the rest */
    }
    for (uint32_t i = 0; i < s->l2_size; i++) {
        uint64_t e = vd_ld_be64(table + (uint64_t)i * qcow2_l2_entry_size(s));
        /* subcluster allocation bitmap (extended L2 only) */
        uint64_t b = s->extended_l2 ? vd_ld_be64(table + (uint64_t)i * 16 + 8) : 0;
        qcow2_cluster_type t = qcow2_get_cluster_type(s, e);
        if (t != QCOW2_CLUSTER_COMPRESSED && (e & L2E_STD_RESERVED_MASK)) {
            for (uint64_t m = 0; m < mult; m++) {
                vd_check_line("ERROR found l2 entry with reserved bits set: %llx",
                              (unsigned long long)e);
            }
            res->corruptions += mult;
        }
        switch (t) {
        case QCOW2_CLUSTER_COMPRESSED: {
            if (e & QCOW_OFLAG_COPIED) {
                for (uint64_t m = 0; m < mult; m++) {
                    vd_check_line("ERROR: coffset=0x%llx: copied flag must never be set for "
                                  "compressed clusters",
                                  (unsigned long long)(e & s->cluster_offset_mask));
                }
                /* copied flag must never be set for compressed clusters */
                if ((c->fix & VD_CHECK_FIX_ERRORS) && active &&
                    write_l2_entry_direct(s, l2_offset, i, e & ~QCOW_OFLAG_COPIED) == 0) {
                    res->corruptions_fixed++;
                } else {
                    res->corruptions += mult;
                }
                e &= ~QCOW_OFLAG_COPIED;
            }
            if (qcow2_has_data_file(s) || b) {
                for (uint64_t m = 0; m < mult; m++) {
                    vd_check_line("ERROR compressed cluster %u with %s, entry=0x%llx", i,
                                  qcow2_has_data_file(s) ? "data file"
                                                         : "non-zero subcluster allocation bitmap",
                                  (unsigned long long)e);
                }
                res->corruptions += mult;
                break;
            }
            if (active) {
                res->allocated_clusters++;
                res->compressed_clusters++;
                res->fragmented_clusters++;
            }
            uint64_t coff, csize;
            qcow2_parse_compressed(s, e, &coff, &csize);
            ret = inc_refs_n(c, coff, csize, mult);
            if (ret < 0) {
                return ret;
            }
            break;
        }
        case QCOW2_CLUSTER_ZERO_ALLOC:
        case QCOW2_CLUSTER_NORMAL: {
            uint64_t off = e & L2E_OFFSET_MASK;
            if ((b >> 32) & b) {
                for (uint64_t m = 0; m < mult; m++) {
                    vd_check_line("ERROR offset=%llx: Allocated cluster has corrupted "
                                  "subcluster allocation bitmap", (unsigned long long)off);
                }
                res->corruptions += mult;
            }
            if (qcow2_offset_into_cluster(s, off)) {
                bool has_data = s->extended_l2 ? (b & 0xffffffffull) != 0
                                               : t == QCOW2_CLUSTER_NORMAL;
                bool repair = !has_data && (c->fix & VD_CHECK_FIX_ERRORS) && active;
                for (uint64_t m = 0; m < mult; m++) {
                    if (has_data) {
                        vd_check_line("ERROR offset=%llx: Data cluster is not properly "
                                      "aligned; L2 entry corrupted.", (unsigned long long)off);
                    } else {
                        vd_check_line("%s offset=%llx: Preallocated cluster is not properly "
                                      "aligned; L2 entry corrupted.",
                                      c->fix & VD_CHECK_FIX_ERRORS ? "Repairing" : "ERROR",
                                      (unsigned long long)off);
                    }
                }
                res->corruptions += mult;
                /* a preallocated zero cluster: drop the bad offset */
                if (repair && write_l2_entry_direct(s, l2_offset, i, QCOW_OFLAG_ZERO) == 0) {
                    res->corruptions--;
                    res->corruptions_fixed++;
                    continue;
                }
            }
            if (active) {
                res->allocated_clusters++;
                if (next_contiguous && off != next_contiguous) {
                    res->fragmented_clusters++;
                }
                next_contiguous = off + s->cluster_size;
            }
            /* external data file clusters have no refcounts (datafile.c) */
            ret = qcow2_has_data_file(s) ? 0 : inc_refs_n(c, off, s->cluster_size, mult);
            if (ret < 0) {
                return ret;
            }
            break;
        }
        case QCOW2_CLUSTER_UNALLOCATED:
            if (b & 0xffffffffull) {
                for (uint64_t m = 0; m < mult; m++) {
                    vd_check_line("ERROR: Unallocated cluster has non-zero subcluster "
                                  "allocation map");
                }
                res->corruptions += mult;
            }
            break;
        default:
            break;
        }
    }
    return 0;
}

/*
 * L2 tables reached from snapshot L1 tables, each with the number of L1
 * entries pointing at it: a table shared by many snapshots is then read
 * once, not once per snapshot.  Kept sorted and merged as it grows, so its
 * size follows the number of distinct tables (bounded by the file size).
 */
typedef struct l2_ref {
    uint64_t offset;
    uint64_t n;
} l2_ref;

typedef struct l2_refs {
    l2_ref *v;
    size_t len, cap, merged; /* v[0..merged) sorted and distinct */
} l2_refs;

static int cmp_l2_ref(const void *a, const void *b)
{
    const l2_ref *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static void l2_refs_merge(l2_refs *r)
{
    if (r->len == r->merged) {
        return;
    }
    qsort(r->v, r->len, sizeof(*r->v), cmp_l2_ref);
    size_t o = 0;
    for (size_t i = 0; i < r->len; i++) {
        if (o && r->v[o - 1].offset == r->v[i].offset) {
            r->v[o - 1].n += r->v[i].n;
        } else {
            r->v[o++] = r->v[i];
        }
    }
    r->len = r->merged = o;
}

static int l2_refs_add(l2_refs *r, uint64_t offset)
{
    if (r->len == r->cap) {
        l2_refs_merge(r);
        if (r->len * 2 >= r->cap) { /* less than half freed: grow */
            size_t ncap = r->cap ? r->cap * 2 : 1024;
            l2_ref *n = vd_calloc(ncap, sizeof(*n));
            if (!n) {
                return -ENOMEM;
            }
            if (r->len) {
                memcpy(n, r->v, r->len * sizeof(*n));
            }
            free(r->v);
            r->v = n;
            r->cap = ncap;
        }
    }
    r->v[r->len++] = (l2_ref){offset, 1};
    return 0;
}

/*
 * Count an L1 table and the L2 tables it points to.  The active one (refs
 * NULL) has its L2 tables checked at once; a snapshot's are collected in
 * refs and checked once each by check_snapshot_l2.
 */
static int check_l1(check_ctx *c, uint64_t l1_offset, uint32_t l1_size, l2_refs *refs)
{
    qcow2_state *s = c->s;
    bool active = refs == NULL;
    uint64_t bytes = (uint64_t)l1_size * 8;
    int ret = inc_refs(c, l1_offset, bytes);
    if (ret < 0 || !l1_size) {
        return ret;
    }
    uint64_t *l1 = vd_malloc(bytes);
    uint8_t *table = active ? malloc(s->cluster_size) : NULL;
    if (!l1 || (active && !table)) {
        free(l1);
        free(table);
        return -ENOMEM;
    }
    if (active) {
        memcpy(l1, s->l1_table, bytes);
    } else {
        ret = vd_node_pread(s->bs->file, l1_offset, bytes, l1, 0);
        if (ret < 0) {
            c->res->check_errors++;
            free(l1);
            return 0;
        }
        for (uint32_t i = 0; i < l1_size; i++) {
            l1[i] = vd_ld_be64(&l1[i]);
        }
    }
    for (uint32_t i = 0; i < l1_size && ret == 0; i++) {
        uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
        if (!l1[i]) {
            continue;
        }
        if (l1[i] & L1E_RESERVED_MASK) {
            vd_check_line("ERROR found L1 entry with reserved bits set: %llx",
                          (unsigned long long)l1[i]);
            c->res->corruptions++;
        }
        ret = inc_refs(c, l2, s->cluster_size);
        if (ret < 0) {
            break;
        }
        if (qcow2_offset_into_cluster(s, l2)) {
            vd_check_line("ERROR l2_offset=%llx: Table is not cluster aligned; L1 entry corrupted",
                          (unsigned long long)l2);
            c->res->corruptions++; /* and read from there anyway, as QEMU does */
        }
        ret = active ? check_l2(c, l2, true, table, 1) : l2_refs_add(refs, l2);
    }
    free(l1);
    free(table);
    return ret;
}

static int check_snapshot_l2(check_ctx *c, l2_refs *refs)
{
    l2_refs_merge(refs);
    if (!refs->len) {
        return 0;
    }
    uint8_t *table = malloc(c->s->cluster_size);
    if (!table) {
        return -ENOMEM;
    }
    int ret = 0;
    for (size_t i = 0; i < refs->len && ret == 0; i++) {
        ret = check_l2(c, refs->v[i].offset, false, table, refs->v[i].n);
    }
    free(table);
    return ret;
}

static int check_bitmaps(check_ctx *c)
{
    qcow2_state *s = c->s;
    if (!s->bitmaps_loaded || !s->bitmaps) {
        return 0;
    }
    int ret = inc_refs(c, s->bitmap_directory_offset, s->bitmap_directory_size);
    for (uint32_t i = 0; ret == 0 && i < s->nb_bitmaps; i++) {
        const qcow2_bitmap *b = &s->bitmaps[i];
        uint64_t bytes = (uint64_t)b->table_size * 8;
        if (!b->table_size) {
            continue;
        }
        if (bytes > QCOW2_MAX_L1_BYTES || qcow2_offset_into_cluster(s, b->table_offset)) {
            c->res->corruptions++;
            continue;
        }
        ret = inc_refs(c, b->table_offset, bytes);
        if (ret < 0) {
            break;
        }
        uint64_t *t = vd_malloc(bytes);
        if (!t) {
            return -ENOMEM;
        }
        if (vd_node_pread(s->bs->file, b->table_offset, bytes, t, 0) < 0) {
            c->res->check_errors++;
            free(t);
            continue;
        }
        for (uint32_t k = 0; k < b->table_size && ret == 0; k++) {
            uint64_t off = vd_ld_be64(&t[k]) & 0x00fffffffffffe00ull;
            if (off) {
                ret = inc_refs(c, off, s->cluster_size);
            }
        }
        free(t);
    }
    return ret;
}

static int calculate_refcounts(check_ctx *c)
{
    qcow2_state *s = c->s;
    int ret = inc_refs(c, 0, s->cluster_size);
    uint64_t crypto_off, crypto_len;
    if (ret == 0 && qcow2_crypto_hdr_range(s, &crypto_off, &crypto_len)) {
        ret = inc_refs(c, crypto_off, crypto_len); /* the LUKS header (crypto.c) */
    }
    if (ret == 0) {
        ret = check_l1(c, s->l1_table_offset, s->l1_size, NULL);
    }
    l2_refs refs = {0};
    for (uint32_t i = 0; ret == 0 && s->snapshots && i < s->nb_snapshots; i++) {
        const qcow2_snapshot *sn = &s->snapshots[i];
        if ((uint64_t)sn->l1_size > QCOW2_MAX_L1_BYTES / 8) {
            c->res->corruptions++; /* snapshot l1_size is invalid */
            continue;
        }
        if (qcow2_offset_into_cluster(s, sn->l1_offset)) {
            c->res->corruptions++; /* snapshot L1 table not cluster aligned */
            continue;
        }
        ret = check_l1(c, sn->l1_offset, sn->l1_size, &refs);
    }
    if (ret == 0) {
        ret = check_snapshot_l2(c, &refs);
    }
    free(refs.v);
    if (ret == 0) {
        ret = inc_refs(c, s->snapshots_offset, s->snapshots_size);
    }
    if (ret == 0) {
        ret = inc_refs(c, s->refcount_table_offset,
                       (uint64_t)s->refcount_table_clusters << s->cluster_bits);
    }
    if (ret == 0) {
        ret = check_bitmaps(c);
    }
    /* the refcount blocks themselves */
    uint64_t file_clusters = qcow2_size_to_clusters(s, (uint64_t)c->file_len);
    for (uint64_t i = 0; ret == 0 && i < s->refcount_table_size; i++) {
        uint64_t off = s->refcount_table[i] & REFT_OFFSET_MASK;
        uint64_t cl = off >> s->cluster_bits;
        if (qcow2_offset_into_cluster(s, off)) {
            c->res->corruptions++; /* refcount block not cluster aligned */
            c->rebuild = true;
            continue;
        }
        if (off && cl >= file_clusters) {
            c->res->corruptions++; /* refcount block outside the image */
            c->rebuild = true;
            continue;
        }
        if (off) {
            ret = inc_refs(c, off, s->cluster_size);
            if (ret == 0 && ctx_get(c, cl) != 1) {
                c->res->corruptions++;
                c->rebuild = true;
            }
        }
    }
    return ret;
}

static void compare_refcounts(check_ctx *c, unsigned fix, int64_t *highest)
{
    qcow2_state *s = c->s;
    vd_check_res *res = c->res;
    for (uint64_t i = 0; i < c->nb; i++) {
        uint64_t rc1, rc2 = ctx_get(c, i);
        if (qcow2_get_refcount(s, i, &rc1) < 0) {
            res->check_errors++;
            continue;
        }
        if (rc1 > 0 || rc2 > 0) {
            *highest = (int64_t)i;
        }
        if (rc1 == rc2) {
            continue;
        }
        int *fixed = NULL;
        if (rc1 == 0) {
            c->rebuild = true;
        } else if (rc1 > rc2 && (fix & VD_CHECK_FIX_LEAKS)) {
            fixed = &res->leaks_fixed;
        } else if (rc1 < rc2 && (fix & VD_CHECK_FIX_ERRORS)) {
            fixed = &res->corruptions_fixed;
        }
        /* QEMU's words for each mismatch (qemu-img check prints them) */
        vd_check_line("%s cluster %llu refcount=%llu reference=%llu",
                      fixed ? "Repairing" : rc1 < rc2 ? "ERROR" : "Leaked", (unsigned long long)i,
                      (unsigned long long)rc1, (unsigned long long)rc2);
        if (fixed) {
            int64_t diff = rc2 > rc1 ? (int64_t)(rc2 - rc1) : -(int64_t)(rc1 - rc2);
            if (qcow2_update_refcount(s, i << s->cluster_bits, 1, diff,
                                      QCOW2_DISCARD_ALWAYS) == 0) {
                (*fixed)++;
                continue;
            }
        }
        if (rc1 < rc2) {
            res->corruptions++;
        } else {
            res->leaks++;
        }
    }
}

/*
 * Write refcount blocks and a refcount table of width w (w->refcount_order,
 * refcount_bits, refcount_block_bits) from the counts in *counts (nb
 * clusters, packed in w's width), in a new area at cluster `start` or
 * later, and switch the header to them (one sector write: table offset,
 * size and refcount order together).  *counts grows to include the new
 * area.  Then s uses the new structures.
 */
static int install_refcounts(qcow2_state *s, const qcow2_state *w, uint8_t **counts,
                             uint64_t *nb, uint64_t start)
{
    uint64_t per_block = 1ull << w->refcount_block_bits;
    uint64_t per_table_cluster = s->cluster_size / 8;
    uint64_t m = 0, nb_blocks = 0, entries = 0, tc = 0;
    int ret;

    if (start < *nb) {
        start = *nb;
    }
    for (int iter = 0;; iter++) {
        if (iter > 64) {
            return -EIO;
        }
        uint64_t total = start + m;
        uint64_t last_ti = (total - 1) / per_block;
        nb_blocks = 0;
        for (uint64_t ti = 0; ti <= last_ti; ti++) {
            bool used = ti * per_block + per_block > start && m > 0;
            for (uint64_t k = ti * per_block; !used && k < VD_MIN(*nb, (ti + 1) * per_block);
                 k++) {
                used = qcow2_rc_get(w, *counts, k) != 0;
            }
            nb_blocks += used;
        }
        entries = vd_div_round_up(last_ti + 1, per_table_cluster) * per_table_cluster;
        tc = entries / per_table_cluster;
        if (entries * 8 > QCOW2_MAX_REFTABLE_BYTES) {
            return -EFBIG;
        }
        if (nb_blocks + tc == m) {
            break;
        }
        m = nb_blocks + tc;
    }
    /* the counts of the new area itself */
    uint64_t old_bytes = (*nb * w->refcount_bits + 7) / 8;
    uint64_t new_bytes = ((start + m) * w->refcount_bits + 7) / 8;
    uint8_t *n = realloc(*counts, new_bytes ? new_bytes : 1);
    if (!n) {
        return -ENOMEM;
    }
    memset(n + old_bytes, 0, new_bytes - old_bytes);
    *counts = n;
    *nb = start + m;
    for (uint64_t k = start; k < start + m; k++) {
        qcow2_rc_set(w, *counts, k, 1);
    }
    uint64_t *table = calloc(entries, 8);
    uint8_t *block = malloc(s->cluster_size);
    if (!table || !block) {
        free(table);
        free(block);
        return -ENOMEM;
    }
    uint64_t next = start;
    for (uint64_t ti = 0; ti * per_block < *nb; ti++) {
        bool used = false;
        memset(block, 0, s->cluster_size);
        for (uint64_t k = 0; k < per_block && ti * per_block + k < *nb; k++) {
            uint64_t v = qcow2_rc_get(w, *counts, ti * per_block + k);
            if (v) {
                used = true;
                qcow2_rc_set(w, block, k, v);
            }
        }
        if (!used) {
            continue;
        }
        uint64_t off = next++ << s->cluster_bits;
        table[ti] = off;
        ret = vd_node_pwrite(s->bs->file, off, s->cluster_size, block, 0);
        if (ret < 0) {
            goto out;
        }
    }
    uint64_t table_off = next << s->cluster_bits;
    for (uint64_t i = 0; i < entries; i++) {
        vd_st_be64(&table[i], table[i]);
    }
    ret = vd_node_pwrite(s->bs->file, table_off, tc << s->cluster_bits, table, 0);
    for (uint64_t i = 0; i < entries; i++) {
        table[i] = vd_ld_be64(&table[i]);
    }
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        goto out;
    }
    /* header bytes 48..99 in one write: table offset, size and width */
    uint8_t hdr[52];
    vd_st_be64(hdr, table_off);
    vd_st_be32(hdr + 8, (uint32_t)tc);
    vd_st_be32(hdr + 12, s->nb_snapshots);
    vd_st_be64(hdr + 16, s->snapshots_offset);
    vd_st_be64(hdr + 24, s->incompatible_features);
    vd_st_be64(hdr + 32, s->compatible_features);
    vd_st_be64(hdr + 40, s->autoclear_features);
    vd_st_be32(hdr + 48, w->refcount_order);
    ret = vd_node_pwrite(s->bs->file, 48, s->version >= 3 ? 52 : 12, hdr, 0);
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        goto out;
    }
    vd_cache_drop_all(s->refcount_cache);
    s->refcount_table_offset = table_off;
    s->refcount_table_clusters = (uint32_t)tc;
    s->refcount_order = w->refcount_order;
    s->refcount_bits = w->refcount_bits;
    s->refcount_max = w->refcount_max;
    s->refcount_block_bits = w->refcount_block_bits;
    free(s->refcount_table);
    s->refcount_table = table;
    s->refcount_table_size = entries;
    s->max_refcount_table_index = 0;
    for (uint64_t i = 0; i < entries; i++) {
        if (table[i]) {
            s->max_refcount_table_index = i;
        }
    }
    table = NULL;
    s->free_cluster_index = 0;
    ret = 0;
out:
    free(table);
    free(block);
    return ret;
}

static int rebuild_refcounts(check_ctx *c)
{
    uint64_t nb = c->nb;
    int ret = install_refcounts(c->s, c->s, &c->rc, &nb, c->nb);
    if (ret == 0) {
        c->nb = c->cap = nb;
    }
    return ret;
}

static int check_oflag_copied(check_ctx *c)
{
    qcow2_state *s = c->s;
    vd_check_res *res = c->res;
    bool fix = (c->fix & VD_CHECK_FIX_ERRORS) != 0;
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t l1e = s->l1_table[i];
        uint64_t l2 = l1e & L1E_OFFSET_MASK;
        uint64_t rc;
        if (!l2 || qcow2_offset_into_cluster(s, l2)) {
            continue;
        }
        int ret = qcow2_get_refcount(s, l2 >> s->cluster_bits, &rc);
        if (ret < 0) {
            res->check_errors++;
            continue;
        }
        if ((rc == 1) != ((l1e & QCOW_OFLAG_COPIED) != 0)) {
            vd_check_line("%s OFLAG_COPIED L2 cluster: l1_index=%u l1_entry=%llx refcount=%llu",
                          fix ? "Repairing" : "ERROR", i, (unsigned long long)l1e,
                          (unsigned long long)rc);
            if (fix) {
                s->l1_table[i] = rc == 1 ? l1e | QCOW_OFLAG_COPIED : l1e & ~QCOW_OFLAG_COPIED;
                if (qcow2_write_l1_entry(s, i) == 0) {
                    res->corruptions_fixed++;
                } else {
                    s->l1_table[i] = l1e;
                    res->check_errors++;
                }
            } else {
                res->corruptions++;
            }
        }
        for (uint32_t j = 0; j < s->l2_size; j += s->l2_slice_entries) {
            uint64_t *slice;
            ret = qcow2_get_l2_slice(s, l2, j, &slice);
            if (ret < 0) {
                res->check_errors++;
                break;
            }
            for (uint32_t k = 0; k < s->l2_slice_entries; k++) {
                uint64_t e = qcow2_l2_entry(s, slice, k);
                qcow2_cluster_type t = qcow2_get_cluster_type(s, e);
                if (t != QCOW2_CLUSTER_NORMAL && t != QCOW2_CLUSTER_ZERO_ALLOC) {
                    continue;
                }
                uint64_t off = e & L2E_OFFSET_MASK;
                if (qcow2_has_data_file(s)) {
                    rc = 1; /* external data: always owned by this table */
                } else if (qcow2_offset_into_cluster(s, off) ||
                           qcow2_get_refcount(s, off >> s->cluster_bits, &rc) < 0) {
                    continue;
                }
                if ((rc == 1) != ((e & QCOW_OFLAG_COPIED) != 0)) {
                    vd_check_line("%s OFLAG_COPIED data cluster: l2_entry=%llx refcount=%llu",
                                  fix ? "Repairing" : "ERROR", (unsigned long long)e,
                                  (unsigned long long)rc);
                    if (fix) {
                        e = rc == 1 ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED;
                        qcow2_l2_entry_set(s, slice, k, e);
                        vd_cache_mark_dirty(s->l2_cache, slice);
                        res->corruptions_fixed++;
                    } else {
                        res->corruptions++;
                    }
                }
            }
            vd_cache_put(s->l2_cache, (void **)&slice);
        }
    }
    return 0;
}

int qcow2_check_locked(qcow2_state *s, vd_check_res *res, unsigned fix, vd_error **errp)
{
    check_ctx c;
    int64_t highest = -1;
    int ret;

    memset(&c, 0, sizeof(c));
    c.s = s;
    c.res = res;
    c.fix = fix;
    memset(res, 0, sizeof(*res));

    /* the stored tables are read from the file: write back what we cache */
    ret = vd_cache_write(s->l2_cache);
    if (ret == 0) {
        ret = vd_cache_write(s->refcount_cache);
    }
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Could not write back metadata");
    }
    c.file_len = vd_node_get_length(s->bs->file);
    if (c.file_len < 0) {
        return vd_error_setg_errno(errp, (int)-c.file_len, "Could not get the file size");
    }
    /* v3 snapshot entries need the 64-bit VM state and disk size (QEMU
     * reports these first, rewrites the table after the refcount check) */
    uint32_t incomplete = 0;
    for (uint32_t i = 0; s->version >= 3 && s->snapshots && i < s->nb_snapshots; i++) {
        if (s->snapshots[i].extra_data_size < 16) {
            incomplete++;
            vd_check_line("%s snapshot table entry %u is incomplete",
                          (fix & VD_CHECK_FIX_ERRORS) ? "Repairing" : "ERROR", i);
        }
    }
    uint64_t nb_clusters = qcow2_size_to_clusters(s, (uint64_t)c.file_len);
    if (nb_clusters > INT32_MAX) {
        return vd_error_set(errp, EFBIG, "Image file is too large to check");
    }
    res->total_clusters = qcow2_size_to_clusters(s, s->size);
    ret = ctx_reserve(&c, nb_clusters);
    if (ret == 0) {
        ret = calculate_refcounts(&c);
    }
    if (ret < 0) {
        free(c.rc);
        return vd_error_setg_errno(errp, -ret, "Could not count references");
    }
    vd_check_res pre = *res;
    compare_refcounts(&c, 0, &highest);

    if (c.rebuild && (fix & VD_CHECK_FIX_ERRORS)) {
        vd_check_res old = *res;
        int fresh_leaks = 0;
        vd_check_line("Rebuilding refcount structure");
        ret = rebuild_refcounts(&c);
        if (ret < 0) {
            res->check_errors++;
            free(c.rc);
            return vd_error_setg_errno(errp, -ret, "Could not rebuild the refcount structure");
        }
        res->corruptions = 0;
        res->leaks = 0;
        /* the old structures are leaked now: count again */
        c.rebuild = false;
        memset(c.rc, 0, rc_bytes(s, c.cap));
        c.nb = 0;
        c.file_len = vd_node_get_length(s->bs->file);
        if (c.file_len < 0) {
            free(c.rc);
            return vd_error_setg_errno(errp, (int)-c.file_len, "Could not get the file size");
        }
        ret = ctx_reserve(&c, qcow2_size_to_clusters(s, (uint64_t)c.file_len));
        if (ret == 0) {
            ret = calculate_refcounts(&c);
        }
        if (ret < 0) {
            free(c.rc);
            return vd_error_setg_errno(errp, -ret, "Could not count references");
        }
        if (fix & VD_CHECK_FIX_LEAKS) {
            vd_check_res saved = *res;
            memset(res, 0, sizeof(*res));
            compare_refcounts(&c, VD_CHECK_FIX_LEAKS, &highest);
            fresh_leaks = res->leaks;
            *res = saved;
        }
        if (res->corruptions < old.corruptions) {
            res->corruptions_fixed += old.corruptions - res->corruptions;
        }
        if (res->leaks < old.leaks) {
            res->leaks_fixed += old.leaks - res->leaks;
        }
        res->leaks += fresh_leaks;
    } else if (fix) {
        if (c.rebuild) {
            res->check_errors++;
            free(c.rc);
            /* QEMU's line, then its error: the bare errno text */
            vd_check_line("ERROR need to rebuild refcount structures");
            return vd_error_set(errp, EIO, "%s", strerror(EIO));
        }
        if (res->leaks || res->corruptions) {
            *res = pre;
            compare_refcounts(&c, fix, &highest);
        }
    }
    free(c.rc);

    if (incomplete && (fix & VD_CHECK_FIX_ERRORS)) {
        ret = qcow2_write_snapshots(s);
        if (ret < 0) {
            res->check_errors++;
            vd_check_line("ERROR failed to update snapshot table: %s", strerror(-ret));
            return vd_error_setg_errno(errp, -ret, "Could not update the snapshot table");
        }
        for (uint32_t i = 0; i < s->nb_snapshots; i++) {
            s->snapshots[i].extra_data_size =
                VD_MAX(s->snapshots[i].extra_data_size, 24u);
        }
        res->corruptions_fixed += incomplete;
    } else {
        res->corruptions += incomplete;
    }

    check_oflag_copied(&c);
    res->image_end_offset = (highest + 1) * (int64_t)s->cluster_size;

    ret = vd_cache_write(s->l2_cache);
    if (ret == 0) {
        ret = vd_cache_write(s->refcount_cache);
    }
    if (ret == 0 && fix) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Could not write repaired metadata");
    }
    if (fix && res->check_errors == 0 && res->corruptions == 0) {
        /* consistent again: clear the dirty and corrupt bits */
        s->needs_repair = false;
        if (s->incompatible_features & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT)) {
            s->incompatible_features &= ~(QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT);
            uint8_t b[8];
            vd_st_be64(b, s->incompatible_features);
            ret = vd_node_pwrite(s->bs->file, 72, 8, b, 0);
            if (ret == 0) {
                ret = vd_node_flush(s->bs->file);
            }
            if (ret < 0) {
                return vd_error_setg_errno(errp, -ret, "Could not update the qcow2 header");
            }
            s->dirty_lazy = false;
        }
        s->corrupt_ro = false;
    }
    return 0;
}

int qcow2_check(vd_node *bs, vd_check_res *res, unsigned fix, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    pthread_mutex_lock(&s->lock);
    qcow2_wait_inflight(s, 0, UINT64_MAX);
    if (s->broken && fix) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, EIO, "Image '%s' was marked unusable after a corruption",
                            bs->filename);
    }
    if (fix) {
        s->needs_repair = false;
    }
    int ret = qcow2_check_locked(s, res, fix, errp);
    pthread_mutex_unlock(&s->lock);
    return ret;
}
