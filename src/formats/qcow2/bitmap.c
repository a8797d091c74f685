/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 persistent dirty bitmaps: the bitmaps header extension, the bitmap
 * directory, bitmap tables and data; add, remove, clear, enable, disable,
 * merge; and tracking of guest writes in enabled bitmaps.
 *
 * Specification: QEMU's docs/interop/qcow2.txt, "Bitmaps".  Limits and
 * validation follow QEMU 7.2 (granularity 2^9..2^31, names up to 1023
 * bytes, at most 65535 bitmaps, a 64 MiB directory, 512 MiB of bitmap
 * data; entries with extra data, or with flag bit 2 (extra_data_compatible,
 * reserved for QEMU), are refused as QEMU refuses them; an empty name is
 * accepted as QEMU accepts it, although the specification asks for one).
 * This file is the only parser of the directory: qcow2.c, check.c and
 * measure.c read the s->bitmaps view it keeps in step (sync_state).
 *
 * In memory a bitmap is its on-disk table plus the cluster-sized pieces
 * ("chunks") that changed, so memory follows what was written, not the
 * image size.  An enabled bitmap is marked in_use in the directory (in
 * place, with the autoclear bit cleared around the update, as QEMU does)
 * before the first write that dirties it; the new content is stored in
 * new clusters, the directory rewritten, and the old clusters freed when
 * the image is closed or a bitmap operation commits.  A crash in between
 * leaves the bitmap in_use, which readers treat as inconsistent.
 *
 * Bitmaps found in_use at open are inconsistent: listed, removable, never
 * used or changed (QEMU's rule).
 */
#include <stdio.h>
#include <stdlib.h>

#include "qcow2.h"

#define BME_MIN_GRANULARITY_BITS 9
#define BME_MAX_GRANULARITY_BITS 31
#define BME_MAX_NAME_SIZE 1023u
#define BME_MAX_TABLE_SIZE 0x8000000u
#define BME_MAX_PHYS_SIZE 0x20000000ull
/* Bit 2 (extra_data_compatible) only means something with extra data, which
 * is refused; QEMU 7.2 treats it as reserved, and so do we. */
#define BME_RESERVED_FLAGS (~(QCOW2_BME_IN_USE | QCOW2_BME_AUTO))
#define BME_TYPE_DIRTY_TRACKING 1
#define BME_TABLE_OFFSET_MASK 0x00fffffffffffe00ull
#define BME_TABLE_RESERVED_MASK 0xff000000000001feull
#define BME_TABLE_ALL_ONES 1ull

typedef struct bm {
    char *name;
    uint32_t flags; /* as in the directory on disk */
    uint8_t gran_bits;
    uint64_t table_offset; /* on disk */
    uint32_t table_size;
    bool inconsistent; /* found in_use: content untrusted, never changed */
    bool enabled;      /* tracks writes (AUTO) */
    bool in_use_marked; /* we set in_use on disk for pending changes */
    bool modified;     /* content differs from what is on disk */
    bool cleared;      /* ignore the on-disk content */
    uint64_t *old_table; /* on-disk table, loaded when needed */
    uint8_t **chunks;    /* nb_chunks pieces, NULL: as on disk */
    uint64_t nb_chunks;
    uint64_t disk_bits;  /* bits the on-disk content covers */
} bm;

struct qcow2_bitmaps {
    bm *list;
    uint32_t n;
    bool tracking; /* an enabled, consistent bitmap exists (read-write) */
    bool stored;   /* every bitmap was stored since open, none changed since */
};

/* ------------------------------------------------------------ helpers */

static uint64_t nbits_for(uint64_t size, unsigned gran_bits)
{
    return (size >> gran_bits) + ((size & ((1ull << gran_bits) - 1)) != 0);
}

static uint64_t bytes_for(uint64_t size, unsigned gran_bits)
{
    return vd_div_round_up(nbits_for(size, gran_bits), 8);
}

static uint64_t tsize_for(const qcow2_state *s, uint64_t size, unsigned gran_bits)
{
    return vd_div_round_up(bytes_for(size, gran_bits), s->cluster_size);
}

static uint64_t dir_entry_size(const char *name)
{
    return (24 + strlen(name) + 7) & ~7ull;
}

static void bm_free_content(bm *b)
{
    for (uint64_t k = 0; b->chunks && k < b->nb_chunks; k++) {
        free(b->chunks[k]);
    }
    free(b->chunks);
    b->chunks = NULL;
    b->nb_chunks = 0;
    free(b->old_table);
    b->old_table = NULL;
}

static void bm_free(bm *b)
{
    bm_free_content(b);
    free(b->name);
    b->name = NULL;
}

void qcow2_bitmaps_free(qcow2_state *s)
{
    if (!s->bm) {
        return;
    }
    for (uint32_t i = 0; i < s->bm->n; i++) {
        bm_free(&s->bm->list[i]);
    }
    free(s->bm->list);
    free(s->bm);
    s->bm = NULL;
}

static bm *find(qcow2_state *s, const char *name)
{
    for (uint32_t i = 0; s->bm && i < s->bm->n; i++) {
        if (!strcmp(s->bm->list[i].name, name)) {
            return &s->bm->list[i];
        }
    }
    return NULL;
}

static void update_tracking(qcow2_state *s)
{
    s->bm->tracking = false;
    if (s->bs->read_only) {
        return;
    }
    for (uint32_t i = 0; i < s->bm->n; i++) {
        if (s->bm->list[i].enabled && !s->bm->list[i].inconsistent) {
            s->bm->tracking = true;
        }
    }
}

/* The directory view qcow2.c uses (info, check, overlap, header). */
static int sync_state(qcow2_state *s)
{
    qcow2_bitmap *nb = NULL;
    uint32_t n = s->bm->n;
    if (n) {
        nb = calloc(n, sizeof(*nb));
        if (!nb) {
            return -ENOMEM;
        }
        for (uint32_t i = 0; i < n; i++) {
            const bm *b = &s->bm->list[i];
            nb[i].table_offset = b->table_offset;
            nb[i].table_size = b->table_size;
            nb[i].flags = b->flags;
            nb[i].granularity_bits = b->gran_bits;
            nb[i].name = vd_strdup(b->name);
            if (!nb[i].name) {
                for (uint32_t j = 0; j < i; j++) {
                    free(nb[j].name);
                }
                free(nb);
                return -ENOMEM;
            }
        }
    }
    for (uint32_t i = 0; s->bitmaps && i < s->nb_bitmaps; i++) {
        free(s->bitmaps[i].name);
    }
    free(s->bitmaps);
    s->bitmaps = nb;
    s->nb_bitmaps = n;
    s->bitmaps_loaded = n > 0;
    s->has_bitmaps_ext = n > 0;
    return 0;
}

/* --------------------------------------------------------- directory */

static int encode_dir(qcow2_state *s, uint8_t **out, uint64_t *size)
{
    uint64_t total = 0;
    for (uint32_t i = 0; i < s->bm->n; i++) {
        total += dir_entry_size(s->bm->list[i].name);
    }
    if (total > QCOW2_MAX_BITMAP_DIR_BYTES) {
        return -EFBIG;
    }
    uint8_t *d = calloc(1, total ? total : 1);
    if (!d) {
        return -ENOMEM;
    }
    uint64_t pos = 0;
    for (uint32_t i = 0; i < s->bm->n; i++) {
        const bm *b = &s->bm->list[i];
        size_t nl = strlen(b->name);
        vd_st_be64(d + pos, b->table_offset);
        vd_st_be32(d + pos + 8, b->table_size);
        vd_st_be32(d + pos + 12, b->flags);
        d[pos + 16] = BME_TYPE_DIRTY_TRACKING;
        d[pos + 17] = b->gran_bits;
        vd_st_be16(d + pos + 18, (uint16_t)nl);
        vd_st_be32(d + pos + 20, 0);
        memcpy(d + pos + 24, b->name, nl);
        pos += dir_entry_size(b->name);
    }
    *out = d;
    *size = total;
    return 0;
}

static int header_sync(qcow2_state *s)
{
    int ret = qcow2_update_header(s);
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    return ret;
}

/* Write the directory to new clusters and point the header at it. */
static int write_dir(qcow2_state *s)
{
    uint8_t *d = NULL;
    uint64_t size = 0, off = 0;
    int ret = encode_dir(s, &d, &size);
    if (ret < 0) {
        return ret;
    }
    if (size) {
        int64_t a = qcow2_alloc_clusters(s, qcow2_size_to_clusters(s, size));
        if (a < 0) {
            free(d);
            return (int)a;
        }
        off = (uint64_t)a;
        ret = vd_cache_flush(s->refcount_cache);
        if (ret == 0) {
            ret = qcow2_pre_write_overlap_check(s, 0, off, size);
        }
        if (ret == 0) {
            ret = vd_node_pwrite(s->bs->file, off, size, d, 0);
        }
        if (ret == 0) {
            ret = vd_node_flush(s->bs->file);
        }
        if (ret < 0) {
            free(d);
            qcow2_free_clusters(s, off, size, QCOW2_DISCARD_NEVER);
            return ret;
        }
    }
    free(d);
    uint64_t old_off = s->bitmap_directory_offset, old_size = s->bitmap_directory_size;
    bool had = s->has_bitmaps_ext && s->bitmaps_loaded;
    uint64_t old_autoclear = s->autoclear_features;
    ret = sync_state(s);
    if (ret < 0) {
        if (size) {
            qcow2_free_clusters(s, off, size, QCOW2_DISCARD_NEVER);
        }
        return ret;
    }
    s->bitmap_directory_offset = off;
    s->bitmap_directory_size = size;
    if (size) {
        s->autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
    } else {
        s->autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
    }
    ret = header_sync(s);
    if (ret < 0) {
        s->autoclear_features = old_autoclear;
        s->bitmap_directory_offset = old_off;
        s->bitmap_directory_size = old_size;
        return ret;
    }
    if (had && old_size) {
        qcow2_free_clusters(s, old_off, old_size, QCOW2_DISCARD_OTHER);
    }
    return 0;
}

/* Rewrite the directory where it is (same size: flags changed only). */
static int write_dir_in_place(qcow2_state *s)
{
    uint8_t *d = NULL;
    uint64_t size = 0;
    int ret = encode_dir(s, &d, &size);
    if (ret < 0) {
        return ret;
    }
    if (!size || size != s->bitmap_directory_size) {
        free(d);
        return write_dir(s);
    }
    /* readers ignore a directory without the autoclear bit: a torn
     * update is then harmless */
    s->autoclear_features &= ~QCOW2_AUTOCLEAR_BITMAPS;
    ret = header_sync(s);
    if (ret == 0) {
        ret = qcow2_pre_write_overlap_check(s, QCOW2_OL_BITMAP_DIRECTORY,
                                            s->bitmap_directory_offset, size);
    }
    if (ret == 0) {
        ret = vd_node_pwrite(s->bs->file, s->bitmap_directory_offset, size, d, 0);
    }
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    free(d);
    if (ret < 0) {
        return ret;
    }
    ret = sync_state(s);
    s->autoclear_features |= QCOW2_AUTOCLEAR_BITMAPS;
    if (ret == 0) {
        ret = header_sync(s);
    }
    return ret;
}

/* -------------------------------------------------------------- content */

static int load_old_table(qcow2_state *s, bm *b)
{
    if (b->old_table || !b->table_size || b->cleared) {
        return 0;
    }
    uint64_t bytes = (uint64_t)b->table_size * 8;
    uint64_t *t = vd_malloc(bytes);
    if (!t) {
        return -ENOMEM;
    }
    int ret = vd_node_pread(s->bs->file, b->table_offset, bytes, t, 0);
    if (ret < 0) {
        free(t);
        return ret;
    }
    for (uint32_t k = 0; k < b->table_size; k++) {
        uint64_t e = vd_ld_be64(&t[k]);
        uint64_t off = e & BME_TABLE_OFFSET_MASK;
        if ((e & BME_TABLE_RESERVED_MASK) || (off && (e & BME_TABLE_ALL_ONES)) ||
            qcow2_offset_into_cluster(s, off)) {
            free(t);
            return -EINVAL;
        }
        t[k] = e;
    }
    b->old_table = t;
    return 0;
}

static void clear_bits_from(uint8_t *chunk, uint64_t from, uint64_t nbits)
{
    for (uint64_t i = from; i < nbits && (i & 7); i++) {
        chunk[i / 8] &= (uint8_t) ~(1u << (i & 7));
    }
    uint64_t byte = vd_div_round_up(from, 8);
    if (byte < nbits / 8) {
        memset(chunk + byte, 0, nbits / 8 - byte);
    }
}

/* Content of piece k as stored on disk (zeroes where nothing is). */
static int read_disk_chunk(qcow2_state *s, bm *b, uint64_t k, uint8_t *buf)
{
    uint64_t cs = s->cluster_size;
    memset(buf, 0, cs);
    if (b->cleared || k >= b->table_size) {
        return 0;
    }
    int ret = load_old_table(s, b);
    if (ret < 0) {
        return ret;
    }
    uint64_t e = b->old_table[k];
    uint64_t off = e & BME_TABLE_OFFSET_MASK;
    if (off) {
        ret = vd_node_pread(s->bs->file, off, cs, buf, 0);
        if (ret < 0) {
            return ret;
        }
    } else if (e & BME_TABLE_ALL_ONES) {
        memset(buf, 0xff, cs);
    } else {
        return 0;
    }
    /* bits past what the disk content covers are not set */
    uint64_t first = k * cs * 8;
    if (b->disk_bits < first + cs * 8) {
        clear_bits_from(buf, b->disk_bits > first ? b->disk_bits - first : 0, cs * 8);
    }
    return 0;
}

static int ensure_chunks(qcow2_state *s, bm *b)
{
    uint64_t want = tsize_for(s, s->size, b->gran_bits);
    if (b->chunks && b->nb_chunks == want) {
        return 0;
    }
    uint8_t **c = calloc(want ? want : 1, sizeof(*c));
    if (!c) {
        return -ENOMEM;
    }
    for (uint64_t k = 0; b->chunks && k < b->nb_chunks; k++) {
        if (k < want) {
            c[k] = b->chunks[k];
        } else {
            free(b->chunks[k]);
        }
    }
    free(b->chunks);
    b->chunks = c;
    b->nb_chunks = want;
    return 0;
}

static int get_chunk(qcow2_state *s, bm *b, uint64_t k, uint8_t **out)
{
    int ret = ensure_chunks(s, b);
    if (ret < 0) {
        return ret;
    }
    if (k >= b->nb_chunks) {
        return -EINVAL;
    }
    if (!b->chunks[k]) {
        uint8_t *c = malloc(s->cluster_size);
        if (!c) {
            return -ENOMEM;
        }
        ret = read_disk_chunk(s, b, k, c);
        if (ret < 0) {
            free(c);
            return ret;
        }
        b->chunks[k] = c;
    }
    *out = b->chunks[k];
    return 0;
}

/* Set the bits of guest bytes [offset, offset+len) in b. */
static int set_range(qcow2_state *s, bm *b, uint64_t offset, uint64_t len)
{
    if (!len) {
        return 0;
    }
    uint64_t per = (uint64_t)s->cluster_size * 8;
    uint64_t first = offset >> b->gran_bits;
    uint64_t last = (offset + len - 1) >> b->gran_bits;
    uint64_t nbits = nbits_for(s->size, b->gran_bits);
    if (last >= nbits) {
        last = nbits - 1;
    }
    for (uint64_t bit = first; bit <= last;) {
        uint64_t k = bit / per;
        uint8_t *c;
        int ret = get_chunk(s, b, k, &c);
        if (ret < 0) {
            return ret;
        }
        uint64_t end = VD_MIN(last + 1, (k + 1) * per);
        uint64_t i = bit - k * per, e = end - k * per;
        for (; i < e && (i & 7); i++) {
            c[i / 8] |= (uint8_t)(1u << (i & 7));
        }
        if (e / 8 > i / 8) {
            memset(c + i / 8, 0xff, e / 8 - i / 8);
            i = e & ~7ull;
        }
        for (; i < e; i++) {
            c[i / 8] |= (uint8_t)(1u << (i & 7));
        }
        bit = end;
    }
    b->modified = true;
    return 0;
}

/* Free a stored table and the data clusters it references. */
static void free_table(qcow2_state *s, uint64_t offset, uint32_t size)
{
    if (!size) {
        return;
    }
    uint64_t bytes = (uint64_t)size * 8;
    uint64_t *t = vd_malloc(bytes);
    if (t && vd_node_pread(s->bs->file, offset, bytes, t, 0) == 0) {
        for (uint32_t k = 0; k < size; k++) {
            uint64_t e = vd_ld_be64(&t[k]);
            uint64_t off = e & BME_TABLE_OFFSET_MASK;
            if (off && !(e & BME_TABLE_RESERVED_MASK) && !qcow2_offset_into_cluster(s, off)) {
                qcow2_free_clusters(s, off, s->cluster_size, QCOW2_DISCARD_ALWAYS);
            }
        }
    }
    free(t);
    qcow2_free_clusters(s, offset, bytes, QCOW2_DISCARD_OTHER);
}

/* Write b's content to new clusters; *old_* is what to free once the new
 * directory is on disk. */
static int store_bitmap(qcow2_state *s, bm *b, uint64_t *old_off, uint32_t *old_size)
{
    uint64_t cs = s->cluster_size;
    uint64_t ts = tsize_for(s, s->size, b->gran_bits);
    uint8_t *buf = vd_aligned_alloc(4096, cs);
    uint64_t *tb = vd_calloc(ts ? ts : 1, 8);
    int ret = 0;

    *old_off = 0;
    *old_size = 0;
    if (!buf || !tb) {
        ret = -ENOMEM;
        goto fail;
    }
    for (uint64_t k = 0; k < ts; k++) {
        const uint8_t *data;
        if (b->chunks && k < b->nb_chunks && b->chunks[k]) {
            data = b->chunks[k];
        } else {
            ret = read_disk_chunk(s, b, k, buf);
            if (ret < 0) {
                goto fail;
            }
            data = buf;
        }
        if (vd_buffer_is_zero(data, cs)) {
            continue;
        }
        int64_t a = qcow2_alloc_clusters(s, 1);
        if (a < 0) {
            ret = (int)a;
            goto fail;
        }
        tb[k] = (uint64_t)a;
        ret = qcow2_pre_write_overlap_check(s, 0, (uint64_t)a, cs);
        if (ret == 0) {
            ret = vd_node_pwrite(s->bs->file, (uint64_t)a, cs, data, 0);
        }
        if (ret < 0) {
            goto fail;
        }
    }
    int64_t toff = qcow2_alloc_clusters(s, qcow2_size_to_clusters(s, ts * 8));
    if (toff < 0) {
        ret = (int)toff;
        goto fail;
    }
    for (uint64_t k = 0; k < ts; k++) {
        vd_st_be64(&tb[k], tb[k]);
    }
    ret = qcow2_pre_write_overlap_check(s, 0, (uint64_t)toff, ts * 8);
    if (ret == 0) {
        ret = vd_node_pwrite(s->bs->file, (uint64_t)toff, ts * 8, tb, 0);
    }
    if (ret < 0) {
        for (uint64_t k = 0; k < ts; k++) {
            tb[k] = vd_ld_be64(&tb[k]);
        }
        qcow2_free_clusters(s, (uint64_t)toff, ts * 8, QCOW2_DISCARD_NEVER);
        goto fail;
    }
    free(buf);
    free(tb);
    if (!b->cleared) {
        *old_off = b->table_offset;
        *old_size = b->table_size;
    }
    b->table_offset = (uint64_t)toff;
    b->table_size = (uint32_t)ts;
    bm_free_content(b);
    b->cleared = false;
    b->modified = false;
    b->disk_bits = nbits_for(s->size, b->gran_bits);
    return 0;

fail:
    for (uint64_t k = 0; tb && k < ts; k++) {
        if (tb[k]) {
            qcow2_free_clusters(s, tb[k], cs, QCOW2_DISCARD_NEVER);
        }
    }
    free(buf);
    free(tb);
    return ret;
}

/*
 * Put every pending change on disk: new content for changed bitmaps, a new
 * directory (in_use cleared for what we marked), then free what the old
 * directory referenced.  Lock held.
 */
static int commit(qcow2_state *s, uint64_t *drop_off, uint32_t *drop_size, uint32_t ndrop)
{
    qcow2_bitmaps *m = s->bm;
    uint32_t n = m->n;
    uint64_t *old_off = calloc(n + ndrop + 1, sizeof(uint64_t));
    uint32_t *old_size = calloc(n + ndrop + 1, sizeof(uint32_t));
    int ret = 0;
    if (!old_off || !old_size) {
        free(old_off);
        free(old_size);
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < ndrop; i++) {
        old_off[n + i] = drop_off[i];
        old_size[n + i] = drop_size[i];
    }
    for (uint32_t i = 0; i < n && ret == 0; i++) {
        bm *b = &m->list[i];
        if (b->inconsistent) {
            continue;
        }
        /* as QEMU's store on close: every consistent bitmap gets new
         * clusters, so that the file's layout follows QEMU's */
        ret = store_bitmap(s, b, &old_off[i], &old_size[i]);
    }
    if (ret == 0) {
        ret = vd_cache_flush(s->l2_cache);
    }
    if (ret == 0) {
        ret = vd_cache_flush(s->refcount_cache);
    }
    if (ret == 0) {
        for (uint32_t i = 0; i < n; i++) {
            bm *b = &m->list[i];
            if (!b->inconsistent) {
                b->flags = b->enabled ? QCOW2_BME_AUTO : 0;
                b->in_use_marked = false;
            }
        }
        ret = write_dir(s);
    }
    if (ret == 0) {
        for (uint32_t i = 0; i < n + ndrop; i++) {
            free_table(s, old_off[i], old_size[i]);
        }
        ret = vd_cache_flush(s->refcount_cache);
    }
    m->stored = ret == 0;
    free(old_off);
    free(old_size);
    return ret;
}

/* Mark enabled bitmaps in_use on disk before their first change. */
static int mark_in_use(qcow2_state *s)
{
    bool need = false;
    for (uint32_t i = 0; i < s->bm->n; i++) {
        bm *b = &s->bm->list[i];
        if (b->enabled && !b->inconsistent && !b->in_use_marked) {
            b->flags |= QCOW2_BME_IN_USE;
            b->in_use_marked = true;
            need = true;
        }
    }
    return need ? write_dir_in_place(s) : 0;
}

/* ----------------------------------------------------------- open/close */

/*
 * As QEMU on a read-write open: every consistent bitmap is marked in_use on
 * disk (rewritten in place) until it is stored again, so that a crash leaves
 * them inconsistent rather than silently stale.
 */
int qcow2_bitmaps_mark_open(qcow2_state *s)
{
    if (!s->bm || !s->bm->n || s->bs->read_only || s->corrupt_ro) {
        return 0;
    }
    bool need = false;
    for (uint32_t i = 0; i < s->bm->n; i++) {
        bm *b = &s->bm->list[i];
        if (!b->inconsistent && !b->in_use_marked) {
            b->flags |= QCOW2_BME_IN_USE;
            b->in_use_marked = true;
            need = true;
        }
    }
    return need ? write_dir_in_place(s) : 0;
}

static int cmp_name_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int qcow2_bitmaps_open(qcow2_state *s, vd_error **errp)
{
    qcow2_bitmaps *m = calloc(1, sizeof(*m));
    uint8_t *dir = NULL;
    int ret = 0;
    if (!m) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    s->bm = m;
    if (!s->has_bitmaps_ext || !(s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) ||
        !s->nb_bitmaps) {
        return 0;
    }
    uint64_t size = s->bitmap_directory_size, end;
    if (vd_add_overflow(s->bitmap_directory_offset, size, &end) || end > (uint64_t)INT64_MAX) {
        ret = vd_error_set(errp, EINVAL, "Broken bitmap directory");
        goto fail;
    }
    dir = malloc(size ? size : 1);
    m->list = calloc(s->nb_bitmaps, sizeof(*m->list));
    if (!dir || !m->list) {
        ret = vd_error_set(errp, ENOMEM, "Could not allocate the bitmap directory");
        goto fail;
    }
    ret = vd_node_pread(s->bs->file, s->bitmap_directory_offset, size, dir, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, -ret, "Failed to read bitmap directory");
        goto fail;
    }
    uint64_t pos = 0;
    while (pos < size) {
        if (size - pos < 24) {
            ret = vd_error_set(errp, EINVAL, "Broken bitmap directory");
            goto fail;
        }
        if (m->n >= s->nb_bitmaps) {
            ret = vd_error_set(errp, EINVAL,
                               "More bitmaps found than specified in header extension");
            goto fail;
        }
        const uint8_t *e = dir + pos;
        uint64_t toff = vd_ld_be64(e);
        uint32_t tsize = vd_ld_be32(e + 8);
        uint32_t flags = vd_ld_be32(e + 12);
        uint8_t type = e[16], gb = e[17];
        uint16_t nl = vd_ld_be16(e + 18);
        uint32_t extra = vd_ld_be32(e + 20);
        uint64_t len = (24 + (uint64_t)nl + extra + 7) & ~7ull;
        if (len > size - pos) {
            ret = vd_error_set(errp, EINVAL, "Broken bitmap directory");
            goto fail;
        }
        if (extra) {
            ret = vd_error_set(errp, ENOTSUP, "Bitmap extra data is not supported");
            goto fail;
        }
        uint64_t phys = (uint64_t)tsize * s->cluster_size;
        bool bad = !tsize || !toff || qcow2_offset_into_cluster(s, toff) ||
                   tsize > BME_MAX_TABLE_SIZE || gb > BME_MAX_GRANULARITY_BITS ||
                   gb < BME_MIN_GRANULARITY_BITS || (flags & BME_RESERVED_FLAGS) ||
                   nl > BME_MAX_NAME_SIZE || type != BME_TYPE_DIRTY_TRACKING ||
                   phys > BME_MAX_PHYS_SIZE ||
                   vd_add_overflow(toff, (uint64_t)tsize * 8, &end) || end > (uint64_t)INT64_MAX;
        if (!bad && !(flags & QCOW2_BME_IN_USE) &&
            nbits_for(s->size, gb) > phys * 8) {
            bad = true; /* the table cannot hold the bitmap */
        }
        if (bad) {
            ret = vd_error_set(errp, EINVAL, "Bitmap '%.*s' doesn't satisfy the constraints",
                               (int)nl, (const char *)e + 24);
            goto fail;
        }
        bm *b = &m->list[m->n];
        b->name = malloc((size_t)nl + 1);
        if (!b->name) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(b->name, e + 24, nl);
        b->name[nl] = 0;
        m->n++;
        if (strlen(b->name) != nl) {
            ret = vd_error_set(errp, EINVAL, "Bitmap name contains a NUL byte");
            goto fail;
        }
        b->flags = flags;
        b->gran_bits = gb;
        b->table_offset = toff;
        b->table_size = tsize;
        b->inconsistent = (flags & QCOW2_BME_IN_USE) != 0;
        b->enabled = (flags & QCOW2_BME_AUTO) != 0;
        b->disk_bits = nbits_for(s->size, gb);
        pos += len;
    }
    if (m->n != s->nb_bitmaps) {
        ret = vd_error_set(errp, EINVAL, "Less bitmaps found than specified in header extension");
        goto fail;
    }
    /* duplicate names: sorted, so 65535 bitmaps cost n log n, not n^2 */
    if (m->n > 1) {
        const char **names = malloc(m->n * sizeof(*names));
        if (!names) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
            goto fail;
        }
        for (uint32_t i = 0; i < m->n; i++) {
            names[i] = m->list[i].name;
        }
        qsort(names, m->n, sizeof(*names), cmp_name_ptr);
        for (uint32_t i = 1; i < m->n; i++) {
            if (!strcmp(names[i - 1], names[i])) {
                ret = vd_error_set(errp, EINVAL, "Bitmap already exists: %s", names[i]);
                break;
            }
        }
        free(names);
        if (ret < 0) {
            goto fail;
        }
    }
    free(dir);
    dir = NULL;
    /* the view qcow2.c, check.c and measure.c read */
    ret = sync_state(s);
    if (ret < 0) {
        ret = vd_error_set(errp, -ret, "out of memory");
        goto fail;
    }
    update_tracking(s);
    return 0;

fail:
    free(dir);
    qcow2_bitmaps_free(s);
    return ret;
}

int qcow2_bitmaps_close(qcow2_state *s)
{
    if (!s->bm || s->bs->read_only || s->broken || s->corrupt_ro) {
        return 0;
    }
    bool pending = false;
    for (uint32_t i = 0; i < s->bm->n; i++) {
        bm *b = &s->bm->list[i];
        /* as QEMU: a read-write open stores every consistent bitmap
         * again on close (new clusters; the file's layout follows),
         * once: an operation that stored them all counts */
        if (!b->inconsistent &&
            (!s->bm->stored || b->modified || b->in_use_marked ||
             b->table_size != tsize_for(s, s->size, b->gran_bits))) {
            pending = true;
        }
    }
    return pending ? commit(s, NULL, NULL, 0) : 0;
}

/* ---------------------------------------------------------- write hook */

int qcow2_bitmaps_dirty(qcow2_state *s, uint64_t offset, uint64_t len)
{
    if (!s->bm || !s->bm->tracking || !len) {
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    int ret = mark_in_use(s);
    for (uint32_t i = 0; ret == 0 && i < s->bm->n; i++) {
        bm *b = &s->bm->list[i];
        if (b->enabled && !b->inconsistent) {
            ret = set_range(s, b, offset, len);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_bitmaps_resize(qcow2_state *s, uint64_t new_size)
{
    if (!s->bm || !s->bm->n) {
        return 0;
    }
    for (uint32_t i = 0; i < s->bm->n; i++) {
        if (s->bm->list[i].inconsistent) {
            return -ENOTSUP;
        }
    }
    /* every bitmap gets a new table at the new size: in_use until then */
    bool need = false;
    for (uint32_t i = 0; i < s->bm->n; i++) {
        bm *b = &s->bm->list[i];
        uint64_t nb = nbits_for(new_size, b->gran_bits);
        if (nb < b->disk_bits) {
            b->disk_bits = nb; /* shrinking: the cut-off bits go */
        }
        uint64_t per = (uint64_t)s->cluster_size * 8;
        for (uint64_t k = 0; b->chunks && k < b->nb_chunks; k++) {
            if (b->chunks[k] && (k + 1) * per > nb) {
                clear_bits_from(b->chunks[k], nb > k * per ? nb - k * per : 0, per);
            }
        }
        if (!b->in_use_marked) {
            b->flags |= QCOW2_BME_IN_USE;
            b->in_use_marked = true;
            need = true;
        }
        b->modified = true;
    }
    return need ? write_dir_in_place(s) : 0;
}

/* ------------------------------------------------------------ actions */

static int begin(qcow2_state *s, vd_error **errp)
{
    pthread_mutex_lock(&s->lock);
    if (s->bs->read_only) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, EROFS, "'%s' is opened read-only", s->bs->filename);
    }
    int ret = qcow2_begin_metadata_change(s);
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_setg_errno(errp, -ret, "Cannot change the bitmaps of '%s'",
                                   s->bs->filename);
    }
    if (!s->bm) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, EIO, "Bitmaps of '%s' could not be loaded", s->bs->filename);
    }
    qcow2_wait_inflight(s, 0, UINT64_MAX);
    return 0;
}

static int end(qcow2_state *s, int ret, vd_error **errp)
{
    if (ret == 0) {
        ret = commit(s, NULL, NULL, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, -ret, "Could not store the bitmaps of '%s'",
                                s->bs->filename);
        }
    }
    update_tracking(s);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static bm *lookup(qcow2_state *s, const char *name, vd_error **errp)
{
    bm *b = find(s, name);
    if (!b) {
        vd_error_set(errp, ENOENT, "Dirty bitmap '%s' not found", name);
    }
    return b;
}

static int usable(const bm *b, vd_error **errp)
{
    if (b->inconsistent) {
        return vd_error_set(errp, EINVAL, "Bitmap '%s' is inconsistent and cannot be used",
                            b->name);
    }
    return 0;
}

int qcow2_bitmap_add(vd_node *bs, const char *name, uint32_t granularity, bool disabled,
                     vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    if (!*name) {
        return vd_error_set(errp, EINVAL, "Bitmap name cannot be empty");
    }
    if (granularity) {
        if (granularity < 512 || !vd_is_pow2(granularity)) {
            return vd_error_set(errp, EINVAL, "Granularity must be power of 2 and at least 512");
        }
    } else {
        granularity = VD_MIN(65536u, VD_MAX(4096u, s->cluster_size));
    }
    int ret = begin(s, errp);
    if (ret < 0) {
        return ret;
    }
    if (find(s, name)) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, EEXIST, "Bitmap already exists: %s", name);
    }
    unsigned gb = (unsigned)vd_ctz64(granularity);
    const char *why = NULL;
    uint64_t bytes = bytes_for(s->size, gb);
    uint64_t dir = 0;
    for (uint32_t i = 0; i < s->bm->n; i++) {
        dir += dir_entry_size(s->bm->list[i].name);
    }
    if (s->version < 3) {
        why = "Cannot store dirty bitmaps in qcow2 v2 files";
    } else if (gb > BME_MAX_GRANULARITY_BITS) {
        why = "Granularity exceeds maximum (2147483648 bytes)";
    } else if (bytes > BME_MAX_PHYS_SIZE ||
               bytes > (uint64_t)BME_MAX_TABLE_SIZE * s->cluster_size) {
        why = "Too much space will be occupied by the bitmap. Use larger granularity";
    } else if (strlen(name) > BME_MAX_NAME_SIZE) {
        why = "Name length exceeds maximum (1023 characters)";
    } else if (s->bm->n >= QCOW2_MAX_BITMAPS) {
        why = "Maximum number of persistent bitmaps is already reached";
    } else if (dir + dir_entry_size(name) > QCOW2_MAX_BITMAP_DIR_BYTES) {
        why = "Not enough space in the bitmap directory";
    }
    if (why) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, EINVAL, "Can't make bitmap '%s' persistent in '%s': %s", name,
                            bs->filename, why);
    }
    bm *l = realloc(s->bm->list, (s->bm->n + 1) * sizeof(*l));
    if (!l) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    s->bm->list = l;
    bm *b = &l[s->bm->n];
    memset(b, 0, sizeof(*b));
    b->name = vd_strdup(name);
    if (!b->name) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    b->gran_bits = (uint8_t)gb;
    b->enabled = !disabled;
    b->flags = disabled ? 0 : QCOW2_BME_AUTO;
    b->cleared = true;
    b->modified = true;
    b->disk_bits = nbits_for(s->size, gb);
    s->bm->n++;
    ret = end(s, 0, errp);
    if (ret < 0) {
        /* not on disk: forget it */
        pthread_mutex_lock(&s->lock);
        bm *f = find(s, name);
        if (f && f == &s->bm->list[s->bm->n - 1] && !f->table_size) {
            bm_free(f);
            s->bm->n--;
        }
        update_tracking(s);
        pthread_mutex_unlock(&s->lock);
    }
    return ret;
}

int qcow2_bitmap_remove(vd_node *bs, const char *name, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    int ret = begin(s, errp);
    if (ret < 0) {
        return ret;
    }
    bm *b = lookup(s, name, errp);
    if (!b) {
        pthread_mutex_unlock(&s->lock);
        return -ENOENT;
    }
    uint64_t off = b->table_offset;
    uint32_t size = b->table_size;
    bm_free(b);
    uint32_t i = (uint32_t)(b - s->bm->list);
    memmove(b, b + 1, (s->bm->n - i - 1) * sizeof(*b));
    s->bm->n--;
    /* as QEMU: the directory without it first, then the others stored */
    ret = write_dir(s);
    if (ret == 0) {
        free_table(s, off, size);
        ret = vd_cache_flush(s->refcount_cache);
    }
    if (ret == 0) {
        ret = commit(s, NULL, NULL, 0);
    }
    if (ret < 0) {
        vd_error_setg_errno(errp, -ret, "Could not store the bitmaps of '%s'", bs->filename);
    }
    update_tracking(s);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_bitmap_clear(vd_node *bs, const char *name, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    int ret = begin(s, errp);
    if (ret < 0) {
        return ret;
    }
    bm *b = lookup(s, name, errp);
    if (!b || usable(b, errp) < 0) {
        pthread_mutex_unlock(&s->lock);
        return b ? -EINVAL : -ENOENT;
    }
    for (uint64_t k = 0; b->chunks && k < b->nb_chunks; k++) {
        free(b->chunks[k]);
        b->chunks[k] = NULL;
    }
    free(b->old_table);
    b->old_table = NULL;
    /* the old table is freed once the new (empty) one is on disk */
    uint64_t off = b->table_offset;
    uint32_t size = b->table_size;
    b->cleared = true;
    b->modified = true;
    ret = commit(s, &off, &size, 1);
    if (ret < 0) {
        vd_error_setg_errno(errp, -ret, "Could not store the bitmaps of '%s'", bs->filename);
    }
    update_tracking(s);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

int qcow2_bitmap_enable(vd_node *bs, const char *name, bool enable, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    int ret = begin(s, errp);
    if (ret < 0) {
        return ret;
    }
    bm *b = lookup(s, name, errp);
    if (!b || usable(b, errp) < 0) {
        pthread_mutex_unlock(&s->lock);
        return b ? -EINVAL : -ENOENT;
    }
    b->enabled = enable;
    return end(s, 0, errp);
}

/* Set in dst the guest ranges set in src (any granularities). */
static int merge_into(qcow2_state *ds, bm *dst, qcow2_state *ss, bm *src)
{
    uint64_t cs = ss->cluster_size;
    uint64_t per = cs * 8;
    uint64_t nbits = nbits_for(ss->size, src->gran_bits);
    uint64_t ts = tsize_for(ss, ss->size, src->gran_bits);
    uint8_t *buf = malloc(cs);
    int ret = 0;
    if (!buf) {
        return -ENOMEM;
    }
    for (uint64_t k = 0; k < ts && ret == 0; k++) {
        const uint8_t *c;
        if (src->chunks && k < src->nb_chunks && src->chunks[k]) {
            c = src->chunks[k];
        } else {
            ret = read_disk_chunk(ss, src, k, buf);
            c = buf;
        }
        if (ret < 0 || vd_buffer_is_zero(c, cs)) {
            continue;
        }
        uint64_t lim = VD_MIN(per, nbits - k * per);
        for (uint64_t i = 0; i < lim && ret == 0;) {
            if (!c[i / 8]) {
                i = (i / 8 + 1) * 8;
                continue;
            }
            if (!(c[i / 8] & (1u << (i & 7)))) {
                i++;
                continue;
            }
            uint64_t j = i + 1;
            while (j < lim && (c[j / 8] & (1u << (j & 7)))) {
                j++;
            }
            uint64_t from = (k * per + i) << src->gran_bits;
            uint64_t to = (k * per + j) << src->gran_bits;
            to = VD_MIN(to, ds->size);
            if (from < to) {
                ret = set_range(ds, dst, from, to - from);
            }
            i = j;
        }
    }
    free(buf);
    return ret;
}

int qcow2_bitmap_merge(vd_node *bs, const char *name, vd_node *src, const char *src_name,
                       vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    if (strcmp(src->drv->name, bs->drv->name)) {
        return vd_error_set(errp, ENOTSUP, "Merge source '%s' is not a qcow2 image",
                            src->filename);
    }
    qcow2_state *ss = src->opaque;
    int ret = begin(s, errp);
    if (ret < 0) {
        return ret;
    }
    if (ss != s) {
        pthread_mutex_lock(&ss->lock);
    }
    bm *d = lookup(s, name, errp);
    bm *b = d && ss->bm ? lookup(ss, src_name, errp) : NULL;
    if (d && !ss->bm) {
        vd_error_set(errp, ENOENT, "Dirty bitmap '%s' not found", src_name);
    }
    if (!d || !b || usable(d, errp) < 0 || usable(b, errp) < 0) {
        ret = -EINVAL;
    } else if (ss->size != s->size) {
        ret = vd_error_set(errp, EINVAL, "Bitmaps are of different sizes (destination size is "
                           "%llu, source size is %llu) and can't be merged",
                           (unsigned long long)s->size, (unsigned long long)ss->size);
    } else {
        ret = merge_into(s, d, ss, b);
        if (ret < 0) {
            vd_error_setg_errno(errp, -ret, "Could not merge bitmap '%s'", src_name);
        }
    }
    if (ss != s) {
        pthread_mutex_unlock(&ss->lock);
    }
    if (ret < 0) {
        /* bits merged so far stay: a dirty bitmap may only over-report */
        update_tracking(s);
        pthread_mutex_unlock(&s->lock);
        return ret;
    }
    return end(s, 0, errp);
}

/* ------------------------------------------------------------- reading */

/* Disk pieces one status call may read: bounds the work per call. */
#define BM_STATUS_MAX_READS 16

int qcow2_bitmap_status(vd_node *bs, const char *name, uint64_t offset, uint64_t len,
                        uint64_t *pnum, bool *dirty)
{
    qcow2_state *s = bs->opaque;
    if (!len) {
        return -EINVAL;
    }
    pthread_mutex_lock(&s->lock);
    bm *b = s->bm ? find(s, name) : NULL;
    int ret = 0;
    if (!s->bm) {
        ret = -EIO; /* the directory could not be loaded */
    } else if (!b) {
        ret = -ENOENT;
    } else if (b->inconsistent) {
        ret = -EBUSY;
    } else if (offset >= s->size) {
        ret = -EINVAL;
    }
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        return ret;
    }
    len = VD_MIN(len, s->size - offset);
    uint64_t per = (uint64_t)s->cluster_size * 8;
    uint64_t first = offset >> b->gran_bits;
    uint64_t last = (offset + len - 1) >> b->gran_bits;
    uint8_t *buf = NULL;
    unsigned reads = 0;
    bool val = false;
    uint64_t bit = first;
    while (bit <= last) {
        uint64_t k = bit / per;
        const uint8_t *c;
        if (b->chunks && k < b->nb_chunks && b->chunks[k]) {
            c = b->chunks[k];
        } else {
            if (bit != first && reads >= BM_STATUS_MAX_READS) {
                break; /* the caller asks again for the rest */
            }
            if (!buf) {
                buf = malloc(s->cluster_size);
                if (!buf) {
                    ret = -ENOMEM;
                    break;
                }
            }
            ret = read_disk_chunk(s, b, k, buf);
            if (ret < 0) {
                break;
            }
            reads++;
            c = buf;
        }
        if (bit == first) {
            uint64_t i = bit - k * per;
            val = (c[i / 8] >> (i & 7)) & 1;
        }
        uint64_t i = bit - k * per, e = VD_MIN(last + 1, (k + 1) * per) - k * per;
        uint8_t same = val ? 0xff : 0x00;
        while (i < e) {
            if (!(i & 7) && i + 8 <= e && c[i / 8] == same) {
                i += 8; /* a whole byte of the same answer */
            } else if ((bool)((c[i / 8] >> (i & 7)) & 1) == val) {
                i++;
            } else {
                break;
            }
        }
        bit = k * per + i;
        if (i < e) {
            break; /* the answer changes here */
        }
    }
    pthread_mutex_unlock(&s->lock);
    free(buf);
    if (ret < 0) {
        return ret;
    }
    *pnum = VD_MIN(bit << b->gran_bits, offset + len) - offset;
    *dirty = val;
    return 0;
}
