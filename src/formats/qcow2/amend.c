/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 amend: change options of an existing image in QEMU 7.2's order
 * (upgrade first, refcount width, data file settings, backing file, lazy
 * refcounts, size, downgrade last):
 *  - compat=1.1 (upgrade: a header rewrite) and compat=0.10 (downgrade:
 *    zero clusters of every L2 table, active and snapshots', become
 *    unallocated or explicit zero data; lazy refcounts and clean dirty
 *    state first; refused for 64-bit VM state or snapshots of another size,
 *    data files, zstd images with compressed clusters, other widths than 16);
 *  - refcount_bits: a complete new refcount table and blocks of the new
 *    width, written past the end of the used area, switched to with one
 *    header write, then the old structures freed;
 *  - lazy_refcounts on/off, size, backing_file/backing_fmt, data_file
 *    (repointing an existing external data file) and data_file_raw=off.
 *
 * Differences from qemu-img 7.2, on purpose: amending backing_file or
 * backing_fmt to other values rewrites the reference (as `rebase -u`; 7.2
 * refuses it); a downgrade removes persistent bitmaps and frees their
 * clusters (7.2 leaves them behind as leaked, inconsistent bitmaps).
 *
 * Specification: QEMU's docs/interop/qcow2.txt.
 */
#include <stdio.h>
#include <stdlib.h>

#include "qcow2.h"

typedef struct amend_progress {
    vd_progress_fn *fn;
    void *opaque;
    int total; /* operations that report progress */
    int current;
} amend_progress;

static void progress(amend_progress *p, uint64_t done, uint64_t total)
{
    if (!p->fn || p->total <= 0) {
        return;
    }
    double frac = total ? (double)done / (double)total : 1.0;
    p->fn(p->opaque, 100.0 * ((double)p->current + frac) / (double)p->total);
}

/* ------------------------------------------------------ refcount width */

/*
 * Replace the refcount structures by ones of width 2^order.  The new
 * blocks and table go to one area starting at the first unused cluster
 * past the used ones, sized so that they describe themselves.  Lock held.
 */
static int change_refcount_order(qcow2_state *s, uint32_t order, amend_progress *p,
                                 vd_error **errp)
{
    uint64_t cs = s->cluster_size;
    uint64_t new_bits = 1ull << order;
    uint64_t new_max = new_bits == 64 ? UINT64_MAX : (1ull << new_bits) - 1;
    uint64_t per_block = cs * 8 / new_bits;
    int ret;

    ret = vd_cache_flush(s->l2_cache);
    if (ret == 0) {
        ret = vd_cache_flush(s->refcount_cache);
    }
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Could not flush metadata");
    }
    int64_t flen = vd_node_get_length(s->bs->file);
    if (flen < 0) {
        return vd_error_setg_errno(errp, (int)-flen, "Could not get the image file size");
    }
    int64_t last = qcow2_get_last_cluster(s, flen);
    if (last < 0 && last != -1) {
        return vd_error_setg_errno(errp, (int)-last, "Could not read refcounts");
    }
    uint64_t used = (uint64_t)(last + 1);

    /* every cluster's refcount must fit the new width */
    for (uint64_t c = 0; c < used; c++) {
        uint64_t rc;
        ret = qcow2_get_refcount(s, c, &rc);
        if (ret < 0) {
            return vd_error_setg_errno(errp, -ret, "Could not read refcounts");
        }
        if (rc > new_max) {
            return vd_error_set(errp, EINVAL,
                                "Cannot decrease refcount entry width to %llu bits: Cluster "
                                "at offset %#llx has a refcount of %llu",
                                (unsigned long long)new_bits,
                                (unsigned long long)(c * cs), (unsigned long long)rc);
        }
    }

    /* layout: [used) data, then nb_blocks refblocks, then the table */
    uint64_t nb_blocks = 1, tclusters = 1;
    for (int iter = 0; iter < 64; iter++) {
        uint64_t total = used + nb_blocks + tclusters;
        uint64_t nb = vd_div_round_up(total, per_block);
        uint64_t tc = vd_div_round_up(nb * 8, cs);
        if (nb == nb_blocks && tc == tclusters) {
            break;
        }
        nb_blocks = nb;
        tclusters = tc;
    }
    if (tclusters * cs > QCOW2_MAX_REFTABLE_BYTES) {
        return vd_error_set(errp, EFBIG, "The new refcount table would be too large");
    }
    uint64_t area = used;
    uint64_t table_entries = tclusters * cs / 8;
    uint64_t *table = vd_calloc(table_entries, 8);
    uint8_t *block = vd_aligned_alloc(4096, cs);
    if (!table || !block) {
        free(table);
        free(block);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    qcow2_state ns; /* the new width, for the entry accessors */
    memset(&ns, 0, sizeof(ns));
    ns.refcount_order = order;
    ns.refcount_bits = (uint32_t)new_bits;

    uint64_t end = area + nb_blocks + tclusters;
    for (uint64_t b = 0; b < nb_blocks; b++) {
        memset(block, 0, cs);
        for (uint64_t i = 0; i < per_block; i++) {
            uint64_t c = b * per_block + i;
            uint64_t rc = 0;
            if (c < used) {
                ret = qcow2_get_refcount(s, c, &rc);
                if (ret < 0) {
                    goto fail;
                }
            } else if (c < end) {
                rc = 1; /* the new structures themselves */
            } else {
                break;
            }
            qcow2_rc_set(&ns, block, i, rc);
        }
        uint64_t off = (area + b) * cs;
        ret = qcow2_pre_write_overlap_check(s, 0, off, cs);
        if (ret == 0) {
            ret = vd_node_pwrite(s->bs->file, off, cs, block, 0);
        }
        if (ret < 0) {
            goto fail;
        }
        vd_st_be64(&table[b], off);
        progress(p, b + 1, nb_blocks);
    }
    uint64_t toff = (area + nb_blocks) * cs;
    ret = qcow2_pre_write_overlap_check(s, 0, toff, tclusters * cs);
    if (ret == 0) {
        ret = vd_node_pwrite(s->bs->file, toff, tclusters * cs, table, 0);
    }
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        goto fail;
    }

    /* switch: one header write names the new table and the new width */
    uint64_t *old_table = s->refcount_table;
    uint64_t old_size = s->refcount_table_size;
    uint64_t old_off = s->refcount_table_offset;
    uint32_t old_clusters = s->refcount_table_clusters;
    uint32_t old_order = s->refcount_order;
    for (uint64_t i = 0; i < table_entries; i++) {
        table[i] = vd_ld_be64(&table[i]);
    }
    s->refcount_table = table;
    s->refcount_table_size = table_entries;
    s->refcount_table_offset = toff;
    s->refcount_table_clusters = (uint32_t)tclusters;
    s->refcount_order = order;
    s->refcount_bits = (uint32_t)new_bits;
    s->refcount_max = new_max;
    s->refcount_block_bits = s->cluster_bits + 3 - order;
    s->max_refcount_table_index = nb_blocks ? nb_blocks - 1 : 0;
    vd_cache_drop_all(s->refcount_cache);
    ret = qcow2_update_header(s);
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        /* the old header may still be what is on disk: go back to it */
        s->refcount_table = old_table;
        s->refcount_table_size = old_size;
        s->refcount_table_offset = old_off;
        s->refcount_table_clusters = old_clusters;
        s->refcount_order = old_order;
        s->refcount_bits = 1u << old_order;
        s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
        s->refcount_block_bits = s->cluster_bits + 3 - old_order;
        s->max_refcount_table_index = 0;
        for (uint64_t i = 0; i < old_size; i++) {
            if (old_table[i]) {
                s->max_refcount_table_index = i;
            }
        }
        vd_cache_drop_all(s->refcount_cache);
        free(block);
        return vd_error_setg_errno(errp, -ret, "Failed to update the image header");
    }
    s->free_cluster_index = 0;
    /* the old structures are garbage now, counted once in the new ones */
    for (uint64_t i = 0; i < old_size; i++) {
        uint64_t rb = old_table[i] & REFT_OFFSET_MASK;
        if (rb && !qcow2_offset_into_cluster(s, rb)) {
            qcow2_free_clusters(s, rb, cs, QCOW2_DISCARD_OTHER);
        }
    }
    qcow2_free_clusters(s, old_off, (uint64_t)old_clusters * cs, QCOW2_DISCARD_OTHER);
    free(old_table);
    free(block);
    ret = vd_cache_flush(s->refcount_cache);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Could not free the old refcount structures");
    }
    return 0;

fail:
    free(table);
    free(block);
    return vd_error_setg_errno(errp, -ret, "Could not write the new refcount structures");
}

/* -------------------------------------------------------------- downgrade */

/* Turn the zero entries of one L2 table into v2 entries. */
static int expand_l2(qcow2_state *s, uint64_t l2_offset)
{
    uint64_t cs = s->cluster_size;
    uint64_t l2_rc;
    int ret = qcow2_get_refcount(s, l2_offset >> s->cluster_bits, &l2_rc);
    if (ret < 0) {
        return ret;
    }
    if (l2_rc == 0) {
        return -EIO; /* a referenced table without refcount: corrupt */
    }
    bool backing = s->backing_file != NULL;
    for (uint32_t first = 0; first < s->l2_size; first += s->l2_slice_entries) {
        uint64_t *slice;
        ret = qcow2_get_l2_slice(s, l2_offset, first, &slice);
        if (ret < 0) {
            return ret;
        }
        for (uint32_t j = 0; j < s->l2_slice_entries && ret == 0; j++) {
            uint64_t e = vd_ld_be64(&slice[j]);
            qcow2_cluster_type t = qcow2_get_cluster_type(s, e);
            if (t != QCOW2_CLUSTER_ZERO_PLAIN && t != QCOW2_CLUSTER_ZERO_ALLOC) {
                continue;
            }
            if (t == QCOW2_CLUSTER_ZERO_PLAIN && !backing) {
                /* reads as zeroes when unallocated, too */
                vd_st_be64(&slice[j], 0);
                vd_cache_mark_dirty(s->l2_cache, slice);
                continue;
            }
            uint64_t off = e & L2E_OFFSET_MASK, rc = 0;
            if (t == QCOW2_CLUSTER_ZERO_ALLOC) {
                if (qcow2_offset_into_cluster(s, off)) {
                    ret = -EIO;
                    break;
                }
                ret = qcow2_get_refcount(s, off >> s->cluster_bits, &rc);
                if (ret < 0) {
                    break;
                }
            }
            uint64_t host = off, old = 0;
            if (t == QCOW2_CLUSTER_ZERO_PLAIN || rc != l2_rc) {
                /* a cluster of its own: another table may use the old one
                 * as data (a zero write kept the allocation) */
                int64_t a = qcow2_alloc_clusters(s, 1);
                if (a < 0) {
                    ret = (int)a;
                    break;
                }
                host = (uint64_t)a;
                if (l2_rc > 1) {
                    ret = qcow2_update_refcount(s, host, cs, (int64_t)(l2_rc - 1),
                                                QCOW2_DISCARD_NEVER);
                    if (ret < 0) {
                        break;
                    }
                }
                old = off;
            }
            ret = qcow2_pre_write_overlap_check(s, 0, host, cs);
            if (ret == 0) {
                ret = vd_node_pwrite_zeroes(s->bs->file, host, cs, 0);
            }
            if (ret < 0) {
                break;
            }
            ret = vd_cache_set_dependency(s->l2_cache, s->refcount_cache);
            if (ret < 0) {
                break;
            }
            uint64_t hrc;
            ret = qcow2_get_refcount(s, host >> s->cluster_bits, &hrc);
            if (ret < 0) {
                break;
            }
            vd_st_be64(&slice[j], host | (hrc == 1 ? QCOW_OFLAG_COPIED : 0));
            vd_cache_mark_dirty(s->l2_cache, slice);
            if (old) {
                ret = qcow2_update_refcount(s, old, cs, -(int64_t)l2_rc, QCOW2_DISCARD_OTHER);
            }
        }
        vd_cache_put(s->l2_cache, (void **)&slice);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int expand_l1(qcow2_state *s, const uint64_t *l1, uint32_t n, uint64_t *done,
                     uint64_t total, amend_progress *p)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
        if (l2) {
            if (qcow2_offset_into_cluster(s, l2)) {
                return -EIO;
            }
            int ret = expand_l2(s, l2);
            if (ret < 0) {
                return ret;
            }
        }
        progress(p, ++*done, total);
    }
    return 0;
}

static int expand_zero_clusters(qcow2_state *s, amend_progress *p)
{
    uint64_t total = s->l1_size, done = 0;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        total += s->snapshots[i].l1_size;
    }
    int ret = expand_l1(s, s->l1_table, s->l1_size, &done, total, p);
    for (uint32_t i = 0; ret == 0 && i < s->nb_snapshots; i++) {
        const qcow2_snapshot *sn = &s->snapshots[i];
        uint64_t bytes = (uint64_t)sn->l1_size * 8;
        if (sn->l1_size > QCOW2_MAX_L1_BYTES / 8 || qcow2_offset_into_cluster(s, sn->l1_offset)) {
            return -EINVAL;
        }
        uint64_t *l1 = vd_malloc(bytes ? bytes : 8);
        if (!l1) {
            return -ENOMEM;
        }
        ret = bytes ? vd_node_pread(s->bs->file, sn->l1_offset, bytes, l1, 0) : 0;
        for (uint32_t k = 0; ret == 0 && k < sn->l1_size; k++) {
            l1[k] = vd_ld_be64(&l1[k]);
        }
        if (ret == 0) {
            ret = expand_l1(s, l1, sn->l1_size, &done, total, p);
        }
        free(l1);
    }
    if (ret == 0) {
        ret = vd_cache_flush(s->l2_cache);
    }
    if (ret == 0) {
        ret = vd_cache_flush(s->refcount_cache);
    }
    return ret;
}

static int has_compressed_clusters(qcow2_state *s, bool *found)
{
    *found = false;
    for (uint32_t i = 0; i < s->l1_size && !*found; i++) {
        uint64_t l2 = s->l1_table[i] & L1E_OFFSET_MASK;
        if (!l2) {
            continue;
        }
        for (uint32_t first = 0; first < s->l2_size && !*found; first += s->l2_slice_entries) {
            uint64_t *slice;
            int ret = qcow2_get_l2_slice(s, l2, first, &slice);
            if (ret < 0) {
                return ret;
            }
            for (uint32_t j = 0; j < s->l2_slice_entries; j++) {
                if (qcow2_get_cluster_type(s, qcow2_l2_entry(s, slice, j)) ==
                    QCOW2_CLUSTER_COMPRESSED) {
                    *found = true;
                    break;
                }
            }
            vd_cache_put(s->l2_cache, (void **)&slice);
        }
    }
    return 0;
}

static int downgrade(qcow2_state *s, amend_progress *p, vd_error **errp)
{
    int ret;
    if (s->refcount_order != 4) {
        return vd_error_set(errp, ENOTSUP, "compat=0.10 requires refcount_bits=16");
    }
    if (s->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
        return vd_error_set(errp, ENOTSUP, "Cannot downgrade an image with a data file");
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (s->snapshots[i].vm_state_size > UINT32_MAX || s->snapshots[i].disk_size != s->size) {
            return vd_error_set(errp, ENOTSUP, "Internal snapshots prevent downgrade of image");
        }
    }
    if (s->incompatible_features & QCOW2_INCOMPAT_DIRTY) {
        ret = qcow2_mark_clean(s);
        if (ret < 0) {
            return vd_error_setg_errno(errp, -ret, "Failed to make the image clean");
        }
    }
    uint64_t other = s->incompatible_features & ~QCOW2_INCOMPAT_COMPRESSION;
    if (other) {
        return vd_error_set(errp, ENOTSUP,
                            "Cannot downgrade an image with incompatible features %#llx set",
                            (unsigned long long)other);
    }
    if (s->compression_type != QCOW2_COMPRESSION_ZLIB) {
        bool found;
        ret = has_compressed_clusters(s, &found);
        if (ret < 0) {
            return vd_error_setg_errno(errp, -ret, "Failed to check block status");
        }
        if (found) {
            return vd_error_set(errp, ENOTSUP, "Cannot downgrade an image with zstd "
                                "compression type and existing compressed clusters");
        }
    }
    /* v2 has no autoclear bits: bitmaps would only survive as stale data */
    while (s->bm && s->nb_bitmaps) {
        char *name = vd_strdup(s->bitmaps[0].name);
        if (!name) {
            return vd_error_set(errp, ENOMEM, "out of memory");
        }
        pthread_mutex_unlock(&s->lock);
        ret = qcow2_bitmap_remove(s->bs, name, errp);
        pthread_mutex_lock(&s->lock);
        free(name);
        if (ret < 0) {
            return ret;
        }
    }
    ret = expand_zero_clusters(s, p);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Failed to turn zero into data clusters");
    }
    uint32_t old_version = s->version;
    uint64_t saved[4] = {s->incompatible_features, s->compatible_features,
                         s->autoclear_features, s->compression_type};
    s->incompatible_features = 0;
    s->compatible_features = 0;
    s->autoclear_features = 0;
    s->compression_type = QCOW2_COMPRESSION_ZLIB;
    s->use_lazy_refcounts = false;
    s->version = 2;
    ret = qcow2_update_header(s);
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        s->version = old_version;
        s->incompatible_features = saved[0];
        s->compatible_features = saved[1];
        s->autoclear_features = saved[2];
        s->compression_type = (uint8_t)saved[3];
        return vd_error_setg_errno(errp, -ret, "Failed to update the image header");
    }
    return 0;
}

/* ------------------------------------------------------------------ amend */

static const char *const amendable[] = {
    "backing_file", "backing_fmt", "compat", "data_file", "data_file_raw",
    "lazy_refcounts", "refcount_bits", "size", NULL,
};

static const char *const create_only[] = {
    "cluster_size", "preallocation", "extended_l2", "compression_type", "encryption",
    "encrypt.format", "encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode",
    "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg", "encrypt.hash-alg", "nocow",
    "extent_size_hint", NULL,
};

static bool in_list(const char *const *list, const char *k)
{
    for (; *list; list++) {
        if (!strcmp(*list, k)) {
            return true;
        }
    }
    return false;
}

static bool same_str(const char *a, const char *b)
{
    return (!a && !b) || (a && b && !strcmp(a, b));
}

int qcow2_amend(vd_node *bs, const vd_opts *opts, bool force, vd_progress_fn *progress_fn,
                void *opaque, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    int cr = qcow2_crypto_amend(bs, opts, force, errp); /* crypto.c: key slots */
    if (cr != 0) {
        return cr < 0 ? cr : 0;
    }

    for (size_t i = 0; i < vd_opts_count(opts); i++) {
        const char *k = vd_opts_key(opts, i);
        if (in_list(amendable, k)) {
            continue;
        }
        if (!strncmp(k, "encrypt.", 8) && !in_list(create_only, k)) {
            return vd_error_set(errp, EINVAL,
                                "Can't amend encryption options - encryption not present");
        }
        if (in_list(create_only, k)) {
            int r = vd_error_set(errp, EINVAL, "Invalid parameter '%s'", k);
            vd_error_append_hint(errp, "This option is only supported for image creation\n");
            return r;
        }
        return vd_error_set(errp, EINVAL, "Invalid parameter '%s'", k);
    }

    uint32_t new_version = s->version;
    const char *compat = vd_opts_get(opts, "compat");
    if (compat) {
        if (!strcmp(compat, "0.10") || !strcmp(compat, "v2")) {
            new_version = 2;
        } else if (!strcmp(compat, "1.1") || !strcmp(compat, "v3")) {
            new_version = 3;
        } else {
            return vd_error_set(errp, EINVAL, "Unknown compatibility level %s", compat);
        }
    }
    bool lazy = s->use_lazy_refcounts;
    if (vd_opts_get_bool(opts, "lazy_refcounts", lazy, &lazy, errp) < 0) {
        return -EINVAL;
    }
    uint64_t rb = s->refcount_bits;
    if (vd_opts_get(opts, "refcount_bits")) {
        if (vd_opts_get_u64(opts, "refcount_bits", rb, &rb, errp) < 0) {
            return -EINVAL;
        }
        if (rb == 0 || rb > 64 || !vd_is_pow2(rb)) {
            return vd_error_set(errp, EINVAL, "Refcount width must be a power of two and may "
                                "not exceed 64 bits");
        }
    }
    uint64_t new_size = 0;
    if (vd_opts_get(opts, "size") &&
        vd_opts_get_size(opts, "size", 0, &new_size, errp) < 0) {
        return -EINVAL;
    }
    bool has_data_file = (s->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
    bool raw = (s->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW) != 0;
    const char *data_file = vd_opts_get(opts, "data_file");
    if (data_file && !has_data_file) {
        return vd_error_set(errp, EINVAL, "data-file can only be set for images that use an "
                            "external data file");
    }
    bool new_raw = raw;
    if (vd_opts_get_bool(opts, "data_file_raw", raw, &new_raw, errp) < 0) {
        return -EINVAL;
    }
    if (new_raw && !raw) {
        return vd_error_set(errp, EINVAL, "data-file-raw cannot be set on existing images");
    }
    const char *backing_file = vd_opts_get(opts, "backing_file");
    const char *backing_fmt = vd_opts_get(opts, "backing_fmt");
    if (backing_file && strlen(backing_file) > QCOW2_MAX_BACKING_NAME) {
        return vd_error_set(errp, EINVAL, "Backing file name too long");
    }
    if (backing_fmt && strlen(backing_fmt) >= 16) {
        return vd_error_set(errp, EINVAL, "Backing format name too long");
    }
    if (new_version < 3 && rb != 16 && rb != s->refcount_bits) {
        return vd_error_set(errp, EINVAL, "Refcount widths other than 16 bits require "
                            "compatibility level 1.1 or above (use compat=1.1 or greater)");
    }
    if (new_version < 3 && lazy && !s->use_lazy_refcounts) {
        return vd_error_set(errp, EINVAL, "Lazy refcounts only supported with compatibility "
                            "level 1.1 and above (use compat=1.1 or greater)");
    }

    amend_progress p = {progress_fn, opaque, 0, 0};
    p.total = (new_version != s->version) + (rb != s->refcount_bits);
    int ret = 0;

    pthread_mutex_lock(&s->lock);
    ret = qcow2_begin_metadata_change(s);
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_setg_errno(errp, -ret, "Cannot amend '%s'", bs->filename);
    }
    qcow2_wait_inflight(s, 0, UINT64_MAX);

    /* upgrade first: what follows may need v3 */
    if (new_version > s->version) {
        uint32_t old = s->version;
        s->version = new_version;
        ret = qcow2_update_header(s);
        if (ret == 0) {
            ret = vd_node_flush(bs->file);
        }
        if (ret < 0) {
            s->version = old;
            vd_error_setg_errno(errp, -ret, "Failed to update the image header");
            goto out;
        }
        /* v3 snapshot entries carry the VM state size, disk size and
         * icount: a table with shorter entries is written again (QEMU) */
        bool short_extra = false;
        for (uint32_t i = 0; i < s->nb_snapshots; i++) {
            short_extra |= s->snapshots[i].extra_data_size < 24u;
        }
        if (short_extra) {
            ret = qcow2_write_snapshots(s);
            if (ret < 0) {
                vd_error_setg_errno(errp, -ret, "Failed to update the snapshot table");
                goto out;
            }
            for (uint32_t i = 0; i < s->nb_snapshots; i++) {
                s->snapshots[i].extra_data_size =
                    VD_MAX(s->snapshots[i].extra_data_size, 24u);
            }
        }
        progress(&p, 1, 1);
        p.current++;
    }
    if (rb != s->refcount_bits) {
        if (new_version < 3 && rb != 16) {
            ret = vd_error_set(errp, EINVAL, "Refcount widths other than 16 bits require "
                               "compatibility level 1.1 or above (use compat=1.1 or greater)");
            goto out;
        }
        ret = change_refcount_order(s, (uint32_t)vd_ctz64(rb), &p, errp);
        if (ret < 0) {
            goto out;
        }
        p.current++;
    }
    if (raw != new_raw || data_file) {
        if (!new_raw) {
            s->autoclear_features &= ~QCOW2_AUTOCLEAR_DATA_FILE_RAW;
        }
        if (data_file) {
            ret = qcow2_set_data_file_name(s, data_file, errp);
            if (ret < 0) {
                goto out;
            }
        }
        ret = qcow2_update_header(s);
        if (ret == 0) {
            ret = vd_node_flush(bs->file);
        }
        if (ret < 0) {
            vd_error_setg_errno(errp, -ret, "Failed to update the image header");
            goto out;
        }
    }
    if ((backing_file || backing_fmt) &&
        !(same_str(backing_file ? backing_file : s->backing_file, s->backing_file) &&
          same_str(backing_fmt ? backing_fmt : s->backing_format, s->backing_format))) {
        char *bf = vd_strdup(backing_file ? backing_file : s->backing_file);
        char *bfmt = vd_strdup(backing_fmt ? backing_fmt : s->backing_format);
        pthread_mutex_unlock(&s->lock);
        ret = bs->drv->change_backing_file(bs, bf, bfmt, errp);
        pthread_mutex_lock(&s->lock);
        free(bf);
        free(bfmt);
        if (ret < 0) {
            goto out;
        }
    }
    if (lazy != s->use_lazy_refcounts) {
        if (lazy) {
            if (s->version < 3) {
                ret = vd_error_set(errp, EINVAL, "Lazy refcounts only supported with "
                                   "compatibility level 1.1 and above (use compat=1.1 or "
                                   "greater)");
                goto out;
            }
            s->compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
            ret = qcow2_update_header(s);
            if (ret == 0) {
                ret = vd_node_flush(bs->file);
            }
            if (ret < 0) {
                s->compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
                vd_error_setg_errno(errp, -ret, "Failed to update the image header");
                goto out;
            }
            s->use_lazy_refcounts = true;
        } else {
            ret = qcow2_mark_clean(s);
            if (ret < 0) {
                vd_error_setg_errno(errp, -ret, "Failed to make the image clean");
                goto out;
            }
            s->compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
            ret = qcow2_update_header(s);
            if (ret == 0) {
                ret = vd_node_flush(bs->file);
            }
            if (ret < 0) {
                s->compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
                vd_error_setg_errno(errp, -ret, "Failed to update the image header");
                goto out;
            }
            s->use_lazy_refcounts = false;
        }
    }
    if (new_size && new_size != s->size) {
        pthread_mutex_unlock(&s->lock);
        ret = qcow2_truncate(bs, new_size, true, VD_PREALLOC_OFF, errp);
        pthread_mutex_lock(&s->lock);
        if (ret < 0) {
            goto out;
        }
    }
    /* downgrade last: the steps above may remove what v2 cannot hold */
    if (new_version < s->version) {
        ret = downgrade(s, &p, errp);
        if (ret < 0) {
            goto out;
        }
        p.current++;
    }
    ret = vd_cache_flush(s->l2_cache);
    if (ret == 0 && !(s->incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        ret = vd_cache_flush(s->refcount_cache);
    }
    if (ret < 0) {
        vd_error_setg_errno(errp, -ret, "Could not write metadata");
    }
out:
    pthread_mutex_unlock(&s->lock);
    return ret;
}
