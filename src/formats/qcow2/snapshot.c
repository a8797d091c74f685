/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 internal snapshots: the snapshot table (with the extra data QEMU
 * writes: 64-bit VM state size, disk size, icount; unknown extra data is
 * preserved), create, apply (goto), delete and temporary read-only loading
 * for `convert -l`.
 *
 * Specification: QEMU's docs/interop/qcow2.txt, "Snapshots".
 *
 * Refcounts: a snapshot holds one reference to its L1 table clusters and,
 * through its L1 table, one reference to every L2 table it reaches and one
 * more to every data cluster each of those reaches (so a data cluster's
 * refcount is the number of L1 tables that lead to it).  OFLAG_COPIED is
 * set exactly on entries whose target has refcount 1.
 *
 * Crash safety follows QEMU: a new snapshot's L1 copy and the refcount
 * increments reach the disk before the snapshot table that names it; on
 * delete the table is rewritten first and the refcounts dropped after (a
 * crash leaks clusters, never frees a referenced one).
 *
 * Not supported: snapshots of images with an external data file (refused,
 * as the specification requires); VM state (vdisk never writes one, but
 * existing VM state sizes are kept).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "qcow2.h"

/* QEMU's QCOW_MAX_SNAPSHOTS_SIZE: the whole table stays under 64 MiB. */
#define SNAPSHOT_TABLE_MAX (1024ull * QCOW2_MAX_SNAPSHOTS)
/* What QEMU writes: vm_state_size_large, disk_size, icount. */
#define SNAPSHOT_EXTRA_KNOWN 24u
/* QEMUSnapshotInfo.name is 256 bytes: qemu-img keeps the first 255. */
#define SNAPSHOT_NAME_MAX 255u

/* ------------------------------------------------------------- lookup */

static int find_by_id(const qcow2_state *s, const char *id)
{
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        if (!strcmp(s->snapshots[i].id, id)) {
            return (int)i;
        }
    }
    return -1;
}

static int find_by_name(const qcow2_state *s, const char *name)
{
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        if (!strcmp(s->snapshots[i].name, name)) {
            return (int)i;
        }
    }
    return -1;
}

/* As QEMU's find_snapshot_by_id_or_name: an id first, then a name. */
static int find_by_id_or_name(const qcow2_state *s, const char *what)
{
    int i = find_by_id(s, what);
    return i >= 0 ? i : find_by_name(s, what);
}

/* Both given: both must match; one given: that one. */
static int find_by_id_and_name(const qcow2_state *s, const char *id, const char *name)
{
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        if ((!id || !strcmp(s->snapshots[i].id, id)) &&
            (!name || !strcmp(s->snapshots[i].name, name))) {
            return (int)i;
        }
    }
    return -1;
}

/* ---------------------------------------------------------- refcounts */

static int update_one(qcow2_state *s, uint64_t offset, uint64_t len, int addend)
{
    if (!addend) {
        return 0;
    }
    return qcow2_update_refcount(s, offset, len, addend, QCOW2_DISCARD_SNAPSHOT);
}

/* Walk one L2 table: refcounts of what it references and its COPIED bits. */
static int update_l2(qcow2_state *s, uint64_t l2_offset, int addend)
{
    uint32_t per_slice = s->l2_slice_entries;
    for (uint32_t first = 0; first < s->l2_size; first += per_slice) {
        uint64_t *slice;
        int ret = qcow2_get_l2_slice(s, l2_offset, first, &slice);
        if (ret < 0) {
            return ret;
        }
        for (uint32_t j = 0; j < per_slice; j++) {
            uint64_t old = qcow2_l2_entry(s, slice, j);
            uint64_t entry = old & ~QCOW_OFLAG_COPIED;
            uint64_t rc = 0;
            switch (qcow2_get_cluster_type(s, entry)) {
            case QCOW2_CLUSTER_COMPRESSED: {
                uint64_t coff, csize;
                qcow2_parse_compressed(s, entry, &coff, &csize);
                ret = update_one(s, coff, csize, addend);
                rc = 2; /* compressed clusters never carry COPIED */
                entry = old;
                break;
            }
            case QCOW2_CLUSTER_NORMAL:
            case QCOW2_CLUSTER_ZERO_ALLOC: {
                uint64_t off = entry & L2E_OFFSET_MASK;
                if (qcow2_offset_into_cluster(s, off)) {
                    qcow2_signal_corruption(s, true,
                                            "Cluster allocation offset %#llx unaligned",
                                            (unsigned long long)off);
                    ret = -EIO;
                    break;
                }
                ret = update_one(s, off, s->cluster_size, addend);
                if (ret == 0) {
                    ret = qcow2_get_refcount(s, off >> s->cluster_bits, &rc);
                }
                break;
            }
            default:
                break;
            }
            if (ret < 0) {
                vd_cache_put(s->l2_cache, (void **)&slice);
                return ret;
            }
            if (rc == 1) {
                entry |= QCOW_OFLAG_COPIED;
            }
            if (entry != old) {
                if (addend > 0) {
                    ret = vd_cache_set_dependency(s->l2_cache, s->refcount_cache);
                    if (ret < 0) {
                        vd_cache_put(s->l2_cache, (void **)&slice);
                        return ret;
                    }
                }
                qcow2_l2_entry_set(s, slice, j, entry);
                vd_cache_mark_dirty(s->l2_cache, slice);
            }
        }
        vd_cache_put(s->l2_cache, (void **)&slice);
    }
    return 0;
}

static int write_l1(qcow2_state *s, uint64_t offset, const uint64_t *l1, uint32_t n,
                    unsigned ign)
{
    uint64_t bytes = (uint64_t)n * 8;
    if (!n) {
        return 0;
    }
    uint64_t *be = vd_malloc(bytes);
    if (!be) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        vd_st_be64(&be[i], l1[i]);
    }
    int ret = qcow2_pre_write_overlap_check(s, ign, offset, bytes);
    if (ret == 0) {
        ret = vd_node_pwrite(s->bs->file, offset, bytes, be, 0);
    }
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    free(be);
    return ret;
}

/* Read an L1 table (host order) after checking its bounds. */
static int read_l1(qcow2_state *s, uint64_t offset, uint32_t n, uint64_t **out)
{
    uint64_t end;
    *out = NULL;
    if (n > QCOW2_MAX_L1_BYTES / 8 || qcow2_offset_into_cluster(s, offset) ||
        vd_add_overflow(offset, (uint64_t)n * 8, &end) || end > (uint64_t)INT64_MAX) {
        return -EINVAL;
    }
    uint64_t *l1 = vd_calloc(n ? n : 1, 8);
    if (!l1) {
        return -ENOMEM;
    }
    if (n) {
        int ret = vd_node_pread(s->bs->file, offset, (uint64_t)n * 8, l1, 0);
        if (ret < 0) {
            free(l1);
            return ret;
        }
    }
    for (uint32_t i = 0; i < n; i++) {
        l1[i] = vd_ld_be64(&l1[i]);
    }
    *out = l1;
    return 0;
}

/* True (0) when one more reference to everything the L1 table reaches
 * stays within refcount_max; -ERANGE otherwise.  Nothing is changed, so a
 * snapshot that cannot be made leaves the image as it was. */
static int check_increment(qcow2_state *s, const uint64_t *l1, uint32_t n)
{
    /* a reference past the end of the file is corruption: refusing it
     * keeps a hostile table from growing the file to its offsets */
    int64_t flen = vd_node_get_length(s->bs->file);
    if (flen < 0) {
        return (int)flen;
    }
    uint64_t limit = (uint64_t)flen + s->cluster_size - 1;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t l2 = l1[i] & L1E_OFFSET_MASK, rc;
        if (!l2 || qcow2_offset_into_cluster(s, l2)) {
            continue;
        }
        if (l2 >= limit) {
            return -EUCLEAN;
        }
        int ret = qcow2_get_refcount(s, l2 >> s->cluster_bits, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc >= s->refcount_max) {
            return -ERANGE;
        }
        for (uint32_t first = 0; first < s->l2_size; first += s->l2_slice_entries) {
            uint64_t *slice;
            ret = qcow2_get_l2_slice(s, l2, first, &slice);
            if (ret < 0) {
                return ret;
            }
            for (uint32_t j = 0; j < s->l2_slice_entries && ret == 0; j++) {
                uint64_t e = qcow2_l2_entry(s, slice, j), off, len;
                switch (qcow2_get_cluster_type(s, e)) {
                case QCOW2_CLUSTER_COMPRESSED:
                    qcow2_parse_compressed(s, e, &off, &len);
                    break;
                case QCOW2_CLUSTER_NORMAL:
                case QCOW2_CLUSTER_ZERO_ALLOC:
                    off = e & L2E_OFFSET_MASK;
                    len = 1;
                    break;
                default:
                    continue;
                }
                if (off + len > limit) {
                    ret = -EUCLEAN;
                }
                for (uint64_t c = off >> s->cluster_bits;
                     ret == 0 && c <= (off + len - 1) >> s->cluster_bits; c++) {
                    ret = qcow2_get_refcount(s, c, &rc);
                    if (ret == 0 && rc >= s->refcount_max) {
                        ret = -ERANGE;
                    }
                }
            }
            vd_cache_put(s->l2_cache, (void **)&slice);
            if (ret < 0) {
                return ret;
            }
        }
    }
    return 0;
}

static int refcount_error(qcow2_state *s, int ret, vd_error **errp)
{
    if (ret == -EUCLEAN) {
        return vd_error_set(errp, EUCLEAN, "Could not update refcounts: a table references "
                            "clusters past the end of '%s' (the image is corrupt; run check)",
                            s->bs->filename);
    }
    if (ret == -ERANGE) {
        return vd_error_set(errp, ERANGE, "Could not update refcounts: a cluster would exceed "
                            "the maximum refcount of %llu (refcount_bits=%u)",
                            (unsigned long long)s->refcount_max, s->refcount_bits);
    }
    return vd_error_setg_errno(errp, -ret, "Could not update refcounts");
}

int qcow2_update_snapshot_refcount(qcow2_state *s, uint64_t l1_offset, uint32_t l1_size,
                                   int addend)
{
    bool active = l1_offset == s->l1_table_offset;
    uint64_t *l1;
    bool modified = false;
    int ret = 0;

    if (active) {
        l1 = s->l1_table;
        l1_size = s->l1_size;
    } else {
        ret = read_l1(s, l1_offset, l1_size, &l1);
        if (ret < 0) {
            return ret;
        }
    }
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t l2 = l1[i] & L1E_OFFSET_MASK;
        if (!l2) {
            continue;
        }
        if (qcow2_offset_into_cluster(s, l2)) {
            qcow2_signal_corruption(s, true, "L2 table offset %#llx unaligned (L1 index: %#x)",
                                    (unsigned long long)l2, i);
            ret = -EIO;
            break;
        }
        ret = update_l2(s, l2, addend);
        if (ret == 0) {
            ret = update_one(s, l2, s->cluster_size, addend);
        }
        uint64_t rc = 0;
        if (ret == 0) {
            ret = qcow2_get_refcount(s, l2 >> s->cluster_bits, &rc);
        }
        if (ret < 0) {
            break;
        }
        uint64_t nw = l2 | (rc == 1 ? QCOW_OFLAG_COPIED : 0);
        if (nw != l1[i]) {
            l1[i] = nw;
            modified = true;
        }
    }
    if (ret == 0) {
        ret = vd_cache_flush(s->l2_cache);
    }
    if (ret == 0) {
        ret = vd_cache_flush(s->refcount_cache);
    }
    /* a table about to be freed (addend < 0) is not worth rewriting */
    if (ret == 0 && addend >= 0 && modified) {
        ret = write_l1(s, l1_offset, l1, l1_size,
                       active ? QCOW2_OL_ACTIVE_L1 : QCOW2_OL_INACTIVE_L1);
    }
    if (!active) {
        free(l1);
    }
    return ret;
}

/* ------------------------------------------------------ table writing */

static uint64_t entry_size(const qcow2_snapshot *sn)
{
    uint32_t extra = VD_MAX(sn->extra_data_size, SNAPSHOT_EXTRA_KNOWN);
    return 40 + (uint64_t)extra + strlen(sn->id) + strlen(sn->name);
}

int qcow2_write_snapshots(qcow2_state *s)
{
    uint64_t size = 0;
    int ret;

    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        size = (size + 7) & ~7ull;
        size += entry_size(&s->snapshots[i]);
        if (size > SNAPSHOT_TABLE_MAX) {
            return -EFBIG;
        }
    }
    uint64_t new_off = 0;
    uint8_t *buf = NULL;
    if (size) {
        buf = calloc(1, size);
        if (!buf) {
            return -ENOMEM;
        }
        uint64_t pos = 0;
        for (uint32_t i = 0; i < s->nb_snapshots; i++) {
            const qcow2_snapshot *sn = &s->snapshots[i];
            uint32_t extra = VD_MAX(sn->extra_data_size, SNAPSHOT_EXTRA_KNOWN);
            size_t idl = strlen(sn->id), nl = strlen(sn->name);
            uint8_t *h = buf + ((pos + 7) & ~7ull);
            vd_st_be64(h, sn->l1_offset);
            vd_st_be32(h + 8, sn->l1_size);
            vd_st_be16(h + 12, (uint16_t)idl);
            vd_st_be16(h + 14, (uint16_t)nl);
            vd_st_be32(h + 16, sn->date_sec);
            vd_st_be32(h + 20, sn->date_nsec);
            vd_st_be64(h + 24, sn->vm_clock_nsec);
            /* older readers see a too-large VM state as none (QEMU's rule) */
            vd_st_be32(h + 32, sn->vm_state_size <= UINT32_MAX ? (uint32_t)sn->vm_state_size
                                                              : 0);
            vd_st_be32(h + 36, extra);
            vd_st_be64(h + 40, sn->vm_state_size);
            vd_st_be64(h + 48, sn->disk_size);
            vd_st_be64(h + 56, sn->icount);
            if (extra > SNAPSHOT_EXTRA_KNOWN && sn->unknown_extra) {
                memcpy(h + 40 + SNAPSHOT_EXTRA_KNOWN, sn->unknown_extra,
                       extra - SNAPSHOT_EXTRA_KNOWN);
            }
            memcpy(h + 40 + extra, sn->id, idl);
            memcpy(h + 40 + extra + idl, sn->name, nl);
            pos = (uint64_t)(h - buf) + entry_size(sn);
        }
        int64_t off = qcow2_alloc_clusters(s, qcow2_size_to_clusters(s, size));
        if (off < 0) {
            free(buf);
            return (int)off;
        }
        new_off = (uint64_t)off;
        /* the new clusters' refcounts before anything points at them */
        ret = vd_cache_flush(s->l2_cache);
        if (ret == 0) {
            ret = vd_cache_flush(s->refcount_cache);
        }
        if (ret == 0) {
            ret = qcow2_pre_write_overlap_check(s, 0, new_off, size);
        }
        if (ret == 0) {
            ret = vd_node_pwrite(s->bs->file, new_off, size, buf, 0);
        }
        if (ret == 0) {
            ret = vd_node_flush(s->bs->file);
        }
        free(buf);
        if (ret < 0) {
            qcow2_free_clusters(s, new_off, size, QCOW2_DISCARD_NEVER);
            return ret;
        }
    } else {
        ret = vd_cache_flush(s->l2_cache);
        if (ret == 0) {
            ret = vd_cache_flush(s->refcount_cache);
        }
        if (ret < 0) {
            return ret;
        }
    }
    uint8_t hdr[12];
    vd_st_be32(hdr, s->nb_snapshots);
    vd_st_be64(hdr + 4, new_off);
    ret = vd_node_pwrite(s->bs->file, 60, sizeof(hdr), hdr, 0);
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        if (size) {
            qcow2_free_clusters(s, new_off, size, QCOW2_DISCARD_NEVER);
        }
        return ret;
    }
    uint64_t old_off = s->snapshots_offset, old_size = s->snapshots_size;
    s->snapshots_offset = new_off;
    s->snapshots_size = size;
    if (old_size) {
        qcow2_free_clusters(s, old_off, old_size, QCOW2_DISCARD_SNAPSHOT);
    }
    return 0;
}

/* --------------------------------------------------------- operations */

/* Enter a whole-image metadata operation: lock, no request in flight. */
static int begin(qcow2_state *s, const char *what, vd_error **errp)
{
    pthread_mutex_lock(&s->lock);
    if (s->bs->read_only) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, EROFS, "'%s' is opened read-only: cannot %s",
                            s->bs->filename, what);
    }
    int ret = qcow2_begin_metadata_change(s);
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        if (ret == -EIO) {
            return vd_error_set(errp, EIO, "Image '%s' is corrupt; cannot %s",
                                s->bs->filename, what);
        }
        return vd_error_setg_errno(errp, -ret, "Cannot %s in '%s'", what, s->bs->filename);
    }
    qcow2_wait_inflight(s, 0, UINT64_MAX);
    return 0;
}

static char *new_snapshot_id(const qcow2_state *s)
{
    unsigned long max = 0;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        unsigned long v = strtoul(s->snapshots[i].id, NULL, 10);
        if (v > max) {
            max = v;
        }
    }
    return vd_asprintf("%lu", max + 1);
}

int qcow2_snapshot_create(vd_node *bs, const char *name, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    qcow2_snapshot sn;
    int ret;

    if (s->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) {
        return vd_error_set(errp, ENOTSUP,
                            "internal snapshots are not supported with an external data file");
    }
    ret = begin(s, "create a snapshot", errp);
    if (ret < 0) {
        return ret;
    }
    if (s->nb_snapshots >= QCOW2_MAX_SNAPSHOTS) {
        ret = vd_error_set(errp, EFBIG, "Too many snapshots (at most %u)",
                           QCOW2_MAX_SNAPSHOTS);
        goto out;
    }
    memset(&sn, 0, sizeof(sn));
    sn.id = new_snapshot_id(s);
    sn.name = strndup(name, SNAPSHOT_NAME_MAX);
    if (!sn.id || !sn.name) {
        ret = vd_error_set(errp, ENOMEM, "out of memory");
        goto out_sn;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    sn.date_sec = (uint32_t)ts.tv_sec;
    sn.date_nsec = (uint32_t)(ts.tv_nsec / 1000 * 1000); /* QEMU keeps microseconds */
    sn.vm_clock_nsec = 0;
    sn.vm_state_size = 0;
    sn.icount = 0; /* what qemu-img records */
    sn.disk_size = s->size;
    sn.extra_data_size = SNAPSHOT_EXTRA_KNOWN;
    sn.l1_size = s->l1_size;
    ret = check_increment(s, s->l1_table, s->l1_size);
    if (ret < 0) {
        refcount_error(s, ret, errp);
        goto out_sn;
    }

    /* the L1 copy, then the references it adds, then the table */
    if (s->l1_size) {
        int64_t off = qcow2_alloc_clusters(s, qcow2_size_to_clusters(s, (uint64_t)s->l1_size * 8));
        if (off < 0) {
            ret = vd_error_setg_errno(errp, (int)-off, "Could not allocate the snapshot L1 table");
            goto out_sn;
        }
        sn.l1_offset = (uint64_t)off;
        ret = vd_cache_flush(s->refcount_cache);
        if (ret == 0) {
            ret = write_l1(s, sn.l1_offset, s->l1_table, s->l1_size, 0);
        }
        if (ret < 0) {
            qcow2_free_clusters(s, sn.l1_offset, (uint64_t)s->l1_size * 8, QCOW2_DISCARD_NEVER);
            vd_error_setg_errno(errp, -ret, "Could not write the snapshot L1 table");
            goto out_sn;
        }
    }
    ret = qcow2_update_snapshot_refcount(s, s->l1_table_offset, s->l1_size, 1);
    if (ret < 0) {
        refcount_error(s, ret, errp);
        goto out_sn; /* clusters leak; check -r leaks repairs */
    }
    qcow2_snapshot *list = realloc(s->snapshots, (s->nb_snapshots + 1) * sizeof(*list));
    if (!list) {
        ret = vd_error_set(errp, ENOMEM, "out of memory");
        goto out_sn;
    }
    s->snapshots = list;
    list[s->nb_snapshots] = sn;
    s->nb_snapshots++;
    ret = qcow2_write_snapshots(s);
    if (ret < 0) {
        s->nb_snapshots--;
        vd_error_setg_errno(errp, -ret, "Could not write the snapshot table");
        goto out_sn;
    }
    ret = 0;
    goto out;

out_sn:
    free(sn.id);
    free(sn.name);
out:
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* Replace the active L1 table's content by snapshot i's (lock held). */
static int goto_snapshot(qcow2_state *s, const qcow2_snapshot *sn, vd_error **errp)
{
    uint64_t *sn_l1 = NULL;
    int ret = read_l1(s, sn->l1_offset, sn->l1_size, &sn_l1);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Snapshot L1 table is invalid");
    }
    ret = qcow2_grow_l1_table(s, sn->l1_size, true);
    if (ret < 0) {
        free(sn_l1);
        return vd_error_setg_errno(errp, -ret, "Could not grow the L1 table");
    }
    uint32_t cur = s->l1_size;
    uint64_t *new_l1 = vd_calloc(cur ? cur : 1, 8);
    if (!new_l1) {
        free(sn_l1);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    memcpy(new_l1, sn_l1, (size_t)sn->l1_size * 8);
    ret = check_increment(s, sn_l1, sn->l1_size);
    free(sn_l1);
    if (ret < 0) {
        free(new_l1);
        return refcount_error(s, ret, errp);
    }

    /* references of the snapshot's clusters first, the old state's after
     * the new table is on disk */
    ret = qcow2_update_snapshot_refcount(s, sn->l1_offset, sn->l1_size, 1);
    if (ret < 0) {
        free(new_l1);
        return refcount_error(s, ret, errp);
    }
    ret = write_l1(s, s->l1_table_offset, new_l1, cur, QCOW2_OL_ACTIVE_L1);
    if (ret < 0) {
        free(new_l1);
        return vd_error_setg_errno(errp, -ret, "Could not write the L1 table");
    }
    ret = qcow2_update_snapshot_refcount(s, s->l1_table_offset, s->l1_size, -1);
    /* the in-memory table follows the disk whatever happened */
    memcpy(s->l1_table, new_l1, (size_t)cur * 8);
    free(new_l1);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Could not update refcounts");
    }
    ret = qcow2_update_snapshot_refcount(s, s->l1_table_offset, s->l1_size, 0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Could not update COPIED flags");
    }
    return 0;
}

int qcow2_snapshot_apply(vd_node *bs, const char *name_or_id, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    int ret = begin(s, "apply a snapshot", errp);
    if (ret < 0) {
        return ret;
    }
    if (s->nb_bitmaps) {
        /* their content would not match the reverted data (QEMU's rule) */
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, EBUSY, "Device has active dirty bitmaps");
    }
    int i = find_by_id_or_name(s, name_or_id);
    if (i < 0 && !strncmp(name_or_id, "id=", 3)) {
        i = find_by_id(s, name_or_id + 3);
    }
    if (i < 0) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, ENOENT, "Failed to load snapshot: no snapshot with ID or "
                            "name '%s'", name_or_id);
    }
    /* a table that cannot be applied is refused before the resize */
    uint64_t *sn_l1 = NULL;
    ret = read_l1(s, s->snapshots[i].l1_offset, s->snapshots[i].l1_size, &sn_l1);
    if (ret == 0) {
        ret = check_increment(s, sn_l1, s->snapshots[i].l1_size);
        free(sn_l1);
        if (ret < 0) {
            pthread_mutex_unlock(&s->lock);
            refcount_error(s, ret, errp);
            vd_error_prepend(errp, "Failed to load snapshot: ");
            return ret;
        }
    } else {
        pthread_mutex_unlock(&s->lock);
        return vd_error_setg_errno(errp, -ret, "Failed to load snapshot: Snapshot L1 table "
                                   "is invalid");
    }
    uint64_t disk_size = s->snapshots[i].disk_size;
    char *id = vd_strdup(s->snapshots[i].id);
    if (!id) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    if (disk_size != s->size) {
        /* the virtual size comes back with the snapshot */
        pthread_mutex_unlock(&s->lock);
        if (s->version < 3) {
            free(id);
            return vd_error_set(errp, ENOTSUP, "Failed to load snapshot: Can't resize a v2 "
                                "image which has snapshots");
        }
        ret = qcow2_truncate(bs, disk_size, false, VD_PREALLOC_OFF, errp);
        if (ret < 0) {
            free(id);
            vd_error_prepend(errp, "Failed to load snapshot: ");
            return ret;
        }
        ret = begin(s, "apply a snapshot", errp);
        if (ret < 0) {
            free(id);
            return ret;
        }
        i = find_by_id(s, id);
        if (i < 0) {
            free(id);
            pthread_mutex_unlock(&s->lock);
            return vd_error_set(errp, ENOENT, "Failed to load snapshot: snapshot vanished");
        }
    }
    free(id);
    ret = goto_snapshot(s, &s->snapshots[i], errp);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_snapshot_delete(vd_node *bs, const char *name_or_id, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    int ret = begin(s, "delete a snapshot", errp);
    if (ret < 0) {
        return ret;
    }
    /* qemu-img snapshot -d takes a name (QEMU 7.2 looks up names only);
     * "id=N" is ours, for scripts that want an id */
    int i = find_by_name(s, name_or_id);
    if (i < 0 && !strncmp(name_or_id, "id=", 3)) {
        i = find_by_id(s, name_or_id + 3);
    }
    if (i < 0) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, ENOENT, "snapshot not found");
    }
    qcow2_snapshot sn = s->snapshots[i];
    uint64_t end;
    if (sn.l1_size > QCOW2_MAX_L1_BYTES / 8 || qcow2_offset_into_cluster(s, sn.l1_offset) ||
        vd_add_overflow(sn.l1_offset, (uint64_t)sn.l1_size * 8, &end) ||
        end > (uint64_t)INT64_MAX) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, EINVAL, "Snapshot L1 table offset invalid");
    }
    memmove(&s->snapshots[i], &s->snapshots[i + 1],
            (s->nb_snapshots - (uint32_t)i - 1) * sizeof(sn));
    s->nb_snapshots--;
    ret = qcow2_write_snapshots(s);
    if (ret < 0) {
        /* the old table is still the one on disk */
        memmove(&s->snapshots[i + 1], &s->snapshots[i],
                (s->nb_snapshots - (uint32_t)i) * sizeof(sn));
        s->snapshots[i] = sn;
        s->nb_snapshots++;
        pthread_mutex_unlock(&s->lock);
        return vd_error_setg_errno(errp, -ret, "Failed to remove snapshot from snapshot list");
    }
    free(sn.id);
    free(sn.name);
    free(sn.unknown_extra);
    if (s->nb_snapshots == 0) {
        free(s->snapshots);
        s->snapshots = NULL;
    }
    /* from here a failure leaks clusters only */
    ret = qcow2_update_snapshot_refcount(s, sn.l1_offset, sn.l1_size, -1);
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_setg_errno(errp, -ret, "Failed to free the cluster and L1 table");
    }
    if (sn.l1_size) {
        qcow2_free_clusters(s, sn.l1_offset, (uint64_t)sn.l1_size * 8, QCOW2_DISCARD_SNAPSHOT);
    }
    ret = qcow2_update_snapshot_refcount(s, s->l1_table_offset, s->l1_size, 0);
    if (ret == 0) {
        ret = vd_cache_flush(s->refcount_cache);
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Failed to update snapshot status in disk");
    }
    return 0;
}

int qcow2_snapshot_load_tmp(vd_node *bs, const char *name, const char *id, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    if (!bs->read_only) {
        return vd_error_set(errp, EINVAL, "a snapshot can only be loaded into a read-only image");
    }
    pthread_mutex_lock(&s->lock);
    int i;
    if (name && !id) {
        /* qemu-img convert -l NAME: an id first, then a name */
        i = find_by_id_and_name(s, name, NULL);
        if (i < 0) {
            i = find_by_id_and_name(s, NULL, name);
        }
    } else {
        i = find_by_id_and_name(s, id, name);
    }
    if (i < 0) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, ENOENT, "Can't find snapshot");
    }
    const qcow2_snapshot *sn = &s->snapshots[i];
    uint64_t *l1 = NULL;
    int ret = read_l1(s, sn->l1_offset, sn->l1_size, &l1);
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_setg_errno(errp, -ret, "Snapshot L1 table is invalid");
    }
    /* the snapshot's L1 table must cover its disk size */
    uint64_t saved = s->size;
    s->size = sn->disk_size;
    uint64_t need = qcow2_size_to_l1(s, sn->disk_size);
    if (sn->disk_size > (uint64_t)INT64_MAX || need > sn->l1_size) {
        s->size = saved;
        free(l1);
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, EINVAL, "Snapshot L1 table too short for its disk size");
    }
    free(s->l1_table);
    s->l1_table = l1;
    s->l1_size = sn->l1_size;
    s->l1_table_offset = sn->l1_offset;
    pthread_mutex_unlock(&s->lock);
    return 0;
}
