/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qed: the QEMU Enhanced Disk format, following QEMU's
 * docs/interop/qed_spec.txt and the behaviour of QEMU 7.2's block/qed.c:
 * a little-endian header in the first header_size clusters (backing file
 * name inside it), an L1 and L2 tables of table_size clusters each, data
 * clusters appended to the end of the file; an L2 entry of 1 is a zero
 * cluster.  Feature bits: backing file, need-check (set while allocating
 * writes are in flight without a backing file, cleared at close; an image
 * found with it set is checked and repaired before a read-write session
 * changes it) and "backing format is raw".
 *
 * Supported: read, write (with copy-on-write from the backing file for
 * partial clusters), zero clusters (pwrite_zeroes of whole clusters), check
 * and repair (invalid table entries dropped, leaks counted, not fixed,
 * exactly as QEMU), grow, change of the backing file, block status.
 *
 * Differences from QEMU: tables of one cluster (table_size=1) open here;
 * QEMU 7.2 refuses them ("QED table offset is invalid") because its offset
 * check treats a zero-length table span as an overflow.  Partial writes to a
 * zero cluster keep zeroes around the data (QEMU copies the backing file).
 * Tables larger than 16 MiB are refused (only zero-size images can have
 * them), and at most 32 MiB of L2 tables are cached (write-back, in the
 * shared src/core/cache.c).  No discard, no shrinking, no preallocation.
 */
#include <pthread.h>
#include <stdlib.h>

#include "cache.h"
#include "format-io.h"
#include "internal.h"

#define QED_MAGIC 0x00444551u /* "QED\0" */
#define QED_F_BACKING_FILE 0x01ull
#define QED_F_NEED_CHECK 0x02ull
#define QED_F_BACKING_FORMAT_NO_PROBE 0x04ull
#define QED_FEATURE_MASK (QED_F_BACKING_FILE | QED_F_NEED_CHECK | QED_F_BACKING_FORMAT_NO_PROBE)
#define QED_MIN_CLUSTER_SIZE (4u << 10)
#define QED_MAX_CLUSTER_SIZE (64u << 20)
#define QED_DEFAULT_CLUSTER_SIZE (64u << 10)
#define QED_MIN_TABLE_SIZE 1u
#define QED_MAX_TABLE_SIZE 16u
#define QED_DEFAULT_TABLE_SIZE 4u
#define QED_HEADER_BYTES 64u
#define QED_ZERO_CLUSTER 1ull
#define QED_SECTOR 512u
#define QED_TABLE_MAX_BYTES (16u << 20)
#define QED_CACHE_MAX_BYTES (32u << 20)
#define QED_CACHE_MAX_ENTRIES 50
#define QED_BACKING_NAME_MAX 4095u

enum {
    H_MAGIC = 0,
    H_CLUSTER_SIZE = 4,
    H_TABLE_SIZE = 8,
    H_HEADER_SIZE = 12,
    H_FEATURES = 16,
    H_COMPAT = 24,
    H_AUTOCLEAR = 32,
    H_L1_OFFSET = 40,
    H_IMAGE_SIZE = 48,
    H_BACKING_OFFSET = 56,
    H_BACKING_SIZE = 60,
};

typedef struct qed_header {
    uint32_t cluster_size;
    uint32_t table_size;
    uint32_t header_size;
    uint64_t features;
    uint64_t compat_features;
    uint64_t autoclear_features;
    uint64_t l1_table_offset;
    uint64_t image_size;
    uint32_t backing_filename_offset;
    uint32_t backing_filename_size;
} qed_header;

/* What a run of clusters is. */
enum qed_kind {
    QED_FOUND,   /* data clusters at consecutive host offsets */
    QED_ZERO,    /* zero clusters */
    QED_UNALLOC, /* L2 entries of 0 */
    QED_NO_L2,   /* no L2 table */
};

typedef struct qed_state {
    /* Guards the header, the tables, the cache and allocation; reads and
     * in-place writes of existing clusters run outside it. */
    pthread_mutex_t lock;
    bool lock_ready;
    qed_header h;
    uint64_t table_nelems;
    uint64_t table_bytes;
    unsigned l2_shift;
    unsigned l1_shift;
    uint64_t *l1;
    vd_cache *l2c;      /* L2 tables as on disk (little-endian) */
    uint64_t file_size; /* allocation point: whole clusters */
    bool writable;
    bool repair_pending; /* opened read-write with need-check set */
    /* An L2 table known to hold one value (0 or 1) throughout, so that a
     * hostile image whose L1 entries all name one such table costs one
     * step per L1 entry instead of a scan of the table each time.  Reset
     * whenever a table changes or the file grows. */
    uint64_t uni_off;
    uint64_t uni_val;
} qed_state;

static const vd_opt_desc qed_create_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {"backing_file", VD_OPT_STRING, "File name of a base image", NULL},
    {"backing_fmt", VD_OPT_STRING, "Image format of the base image", NULL},
    {"cluster_size", VD_OPT_SIZE, "Cluster size (in bytes)", "65536"},
    {"table_size", VD_OPT_SIZE, "L1/L2 table size (in clusters)", NULL},
    {NULL, 0, NULL, NULL},
};

static int qed_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len < QED_HEADER_BYTES) {
        return 0;
    }
    return vd_ld_le32(buf) == QED_MAGIC ? 100 : 0;
}

static void qed_header_decode(const uint8_t *b, qed_header *h)
{
    h->cluster_size = vd_ld_le32(b + H_CLUSTER_SIZE);
    h->table_size = vd_ld_le32(b + H_TABLE_SIZE);
    h->header_size = vd_ld_le32(b + H_HEADER_SIZE);
    h->features = vd_ld_le64(b + H_FEATURES);
    h->compat_features = vd_ld_le64(b + H_COMPAT);
    h->autoclear_features = vd_ld_le64(b + H_AUTOCLEAR);
    h->l1_table_offset = vd_ld_le64(b + H_L1_OFFSET);
    h->image_size = vd_ld_le64(b + H_IMAGE_SIZE);
    h->backing_filename_offset = vd_ld_le32(b + H_BACKING_OFFSET);
    h->backing_filename_size = vd_ld_le32(b + H_BACKING_SIZE);
}

static void qed_header_encode(const qed_header *h, uint8_t *b)
{
    vd_st_le32(b + H_MAGIC, QED_MAGIC);
    vd_st_le32(b + H_CLUSTER_SIZE, h->cluster_size);
    vd_st_le32(b + H_TABLE_SIZE, h->table_size);
    vd_st_le32(b + H_HEADER_SIZE, h->header_size);
    vd_st_le64(b + H_FEATURES, h->features);
    vd_st_le64(b + H_COMPAT, h->compat_features);
    vd_st_le64(b + H_AUTOCLEAR, h->autoclear_features);
    vd_st_le64(b + H_L1_OFFSET, h->l1_table_offset);
    vd_st_le64(b + H_IMAGE_SIZE, h->image_size);
    vd_st_le32(b + H_BACKING_OFFSET, h->backing_filename_offset);
    vd_st_le32(b + H_BACKING_SIZE, h->backing_filename_size);
}

/* Rewrite the fixed header fields in place (the backing name stays). */
static int qed_write_header(vd_node *bs)
{
    qed_state *s = bs->opaque;
    uint8_t b[QED_HEADER_BYTES];
    qed_header_encode(&s->h, b);
    vd_node_event(bs->file, VD_EV_HEADER_UPDATE);
    return vd_node_pwrite(bs->file, 0, sizeof(b), b, 0);
}

/*
 * The largest image the tables address.  Computed with QEMU's wrapping
 * 64-bit arithmetic on purpose: QEMU refuses sizes above the wrapped value,
 * and so must we to create and open the same images.
 */
static uint64_t qed_max_image_size(uint32_t cluster_size, uint32_t table_size)
{
    uint64_t entries = (uint32_t)(table_size * cluster_size) / sizeof(uint64_t);
    uint64_t l2_span = entries * cluster_size;
    return l2_span * entries;
}

static bool qed_cluster_size_valid(uint64_t cs)
{
    return cs >= QED_MIN_CLUSTER_SIZE && cs <= QED_MAX_CLUSTER_SIZE && vd_is_pow2(cs);
}

static bool qed_table_size_valid(uint64_t ts)
{
    return ts >= QED_MIN_TABLE_SIZE && ts <= QED_MAX_TABLE_SIZE && vd_is_pow2(ts);
}

static bool qed_image_size_valid(uint64_t size, uint32_t cs, uint32_t ts)
{
    return size % QED_SECTOR == 0 && size <= qed_max_image_size(cs, ts);
}

/* A data cluster offset: aligned, after the header, inside the file. */
static bool qed_cluster_offset_valid(const qed_state *s, uint64_t off)
{
    uint64_t header_end = (uint64_t)s->h.header_size * s->h.cluster_size;
    return (off & (s->h.cluster_size - 1)) == 0 && off >= header_end && off < s->file_size;
}

static bool qed_table_offset_valid(const qed_state *s, uint64_t off)
{
    uint64_t last;
    if (vd_add_overflow(off, (uint64_t)(s->h.table_size - 1) * s->h.cluster_size, &last)) {
        return false;
    }
    return qed_cluster_offset_valid(s, off) && qed_cluster_offset_valid(s, last);
}

static int qed_read_table(vd_node *bs, uint64_t off, uint64_t *t)
{
    qed_state *s = bs->opaque;
    int ret = vd_node_pread(bs->file, off, s->table_bytes, t, 0);
    if (ret < 0) {
        return ret;
    }
    for (uint64_t i = 0; i < s->table_nelems; i++) {
        t[i] = vd_ld_le64(&t[i]);
    }
    return 0;
}

/* Write entries [first, first+n) of table t (at off), in whole sectors. */
static int qed_write_table(vd_node *bs, uint64_t off, const uint64_t *t, uint64_t first,
                           uint64_t n)
{
    qed_state *s = bs->opaque;
    uint64_t lo = vd_align_down(first * 8, QED_SECTOR);
    uint64_t hi =
        VD_MIN(vd_div_round_up((first + n) * 8, QED_SECTOR) * QED_SECTOR, s->table_bytes);
    uint8_t *b = vd_malloc(hi - lo);
    if (!b) {
        return -ENOMEM;
    }
    for (uint64_t i = lo / 8; i < hi / 8; i++) {
        vd_st_le64(b + (i * 8 - lo), t[i]);
    }
    int ret = vd_node_pwrite(bs->file, off + lo, hi - lo, b, 0);
    free(b);
    return ret;
}

/* Lock held.  Write back dirty L2 tables and forget all cached ones. */
static int qed_cache_drop(qed_state *s)
{
    s->uni_off = 0;
    return vd_cache_empty(s->l2c);
}

/*
 * Lock held.  Classify the run of clusters starting at guest offset pos,
 * at most len bytes and never past the end of one L2 table's range --
 * except, with merge, a run without L2 tables, which goes on over the
 * following empty L1 entries (so that a sparse image costs few calls).
 * *host is the host offset of pos for QED_FOUND.
 */
static int qed_find(vd_node *bs, uint64_t pos, uint64_t len, bool merge, enum qed_kind *kind,
                    uint64_t *host, uint64_t *pnum)
{
    qed_state *s = bs->opaque;
    uint64_t cs = s->h.cluster_size;
    uint64_t in_cl = pos & (cs - 1);
    uint64_t l1i = pos >> s->l1_shift;
    uint64_t span = (1ull << s->l1_shift) - (pos & ((1ull << s->l1_shift) - 1));
    uint64_t max = VD_MIN(len, span);

    if (l1i >= s->table_nelems) {
        return -EIO;
    }
    uint64_t l2off = s->l1[l1i];
    if (l2off == 0 || l2off == s->uni_off) {
        /* no table, or a table of one value; with merge, the following
         * entries that read the same way join (no table and a table of
         * zeroes both read through to the backing file) */
        uint64_t val = l2off ? s->uni_val : 0;
        *kind = !l2off ? QED_NO_L2 : val == 0 ? QED_UNALLOC : QED_ZERO;
        while (merge && max < len && ++l1i < s->table_nelems) {
            uint64_t o = s->l1[l1i];
            bool same = val == 0 ? o == 0 || (o == s->uni_off && s->uni_val == 0)
                                 : o != 0 && o == s->uni_off;
            if (!same) {
                break;
            }
            max = VD_MIN(len, max + (1ull << s->l1_shift));
        }
        *pnum = max;
        return 0;
    }
    if (!qed_table_offset_valid(s, l2off)) {
        return -EINVAL;
    }
    void *tv;
    int ret = vd_cache_get(s->l2c, l2off, &tv);
    if (ret < 0) {
        return ret;
    }
    const uint8_t *t = tv;
    uint64_t i = (pos >> s->l2_shift) & (s->table_nelems - 1);
    uint64_t e = vd_ld_le64(t + i * 8);
    uint64_t n = VD_MIN(max, cs - in_cl);
    if (e == 0 || e == QED_ZERO_CLUSTER) {
        *kind = e == 0 ? QED_UNALLOC : QED_ZERO;
        bool from_start = i == 0;
        for (i++; n < max && i < s->table_nelems && vd_ld_le64(t + i * 8) == e; i++) {
            n = VD_MIN(max, n + cs);
        }
        if (from_start && n == max && max == span) {
            /* is the whole table this value? (scanned once, then known) */
            uint64_t k = i;
            while (k < s->table_nelems && vd_ld_le64(t + k * 8) == e) {
                k++;
            }
            if (k == s->table_nelems) {
                s->uni_off = l2off;
                s->uni_val = e;
            }
        }
    } else if (!qed_cluster_offset_valid(s, e)) {
        ret = -EINVAL;
    } else {
        *kind = QED_FOUND;
        *host = e + in_cl;
        uint64_t expect = e + cs;
        /* every entry of the run must be valid, not only the first: a later
         * one past the end of the file ends the run here and is refused
         * when reached */
        for (i++; n < max && i < s->table_nelems && vd_ld_le64(t + i * 8) == expect &&
                  qed_cluster_offset_valid(s, expect);
             i++) {
            n = VD_MIN(max, n + cs);
            expect += cs;
        }
    }
    vd_cache_put(s->l2c, &tv);
    *pnum = n;
    return ret;
}

static int qed_check_impl(vd_node *bs, vd_check_res *res, bool fix);

/*
 * Lock held.  An image found with need-check set is checked and repaired
 * before this session changes it.  QEMU does it when opening read-write;
 * doing it at the first change (or at close) gives the same image, and
 * lets `vdisk check -r` find and report the damage itself.
 */
static int qed_repair(vd_node *bs)
{
    qed_state *s = bs->opaque;
    if (!s->repair_pending) {
        return 0;
    }
    vd_check_res res;
    memset(&res, 0, sizeof(res));
    int ret = qed_check_impl(bs, &res, true);
    if (ret < 0) {
        /* "Image corrupted": no writes until it is repaired */
        return -EIO;
    }
    s->repair_pending = false;
    return 0;
}

static void qed_close(vd_node *bs)
{
    qed_state *s = bs->opaque;
    if (s->writable && s->l1) {
        /* opened read-write: leave the image repaired, as QEMU does */
        qed_repair(bs);
    }
    int wb = s->l2c ? vd_cache_flush(s->l2c) : 0;
    if (s->writable && s->l1 && wb == 0 && (s->h.features & QED_F_NEED_CHECK)) {
        /* clean shutdown: data and tables reach the disk before the flag goes */
        if (vd_node_flush(bs->file) == 0) {
            s->h.features &= ~QED_F_NEED_CHECK;
            if (qed_write_header(bs) == 0) {
                vd_node_flush(bs->file);
            }
        }
    }
    vd_cache_free(s->l2c);
    free(s->l1);
    s->l2c = NULL;
    s->l1 = NULL;
    if (s->lock_ready) {
        pthread_mutex_destroy(&s->lock);
        s->lock_ready = false;
    }
}

static int qed_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    qed_state *s = bs->opaque;
    uint8_t b[QED_HEADER_BYTES];
    qed_header *h = &s->h;
    int ret;
    (void)opts;

    pthread_mutex_init(&s->lock, NULL);
    s->lock_ready = true;
    ret = vd_node_pread(bs->file, 0, sizeof(b), b, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the QED header");
        goto fail;
    }
    if (vd_ld_le32(b + H_MAGIC) != QED_MAGIC) {
        ret = vd_error_set(errp, EINVAL, "Image not in QED format");
        goto fail;
    }
    qed_header_decode(b, h);
    if (h->features & ~QED_FEATURE_MASK) {
        ret = vd_error_set(errp, ENOTSUP, "Unsupported QED features: %llx",
                           (unsigned long long)(h->features & ~QED_FEATURE_MASK));
        goto fail;
    }
    if (!qed_cluster_size_valid(h->cluster_size)) {
        ret = vd_error_set(errp, EINVAL, "QED cluster size %u is invalid", h->cluster_size);
        goto fail;
    }
    int64_t flen = vd_node_get_length(bs->file);
    if (flen < 0) {
        ret = vd_error_setg_errno(errp, (int)flen, "Could not get the file size");
        goto fail;
    }
    s->file_size = vd_align_down((uint64_t)flen, h->cluster_size);
    if (!qed_table_size_valid(h->table_size)) {
        ret = vd_error_set(errp, EINVAL, "QED table size %u is invalid", h->table_size);
        goto fail;
    }
    if (!qed_image_size_valid(h->image_size, h->cluster_size, h->table_size)) {
        ret = vd_error_set(errp, EINVAL, "QED image size %llu is invalid",
                           (unsigned long long)h->image_size);
        goto fail;
    }
    s->table_bytes = (uint64_t)h->table_size * h->cluster_size;
    if (s->table_bytes > QED_TABLE_MAX_BYTES) {
        ret = vd_error_set(errp, ENOTSUP, "QED tables of %llu bytes are not supported",
                           (unsigned long long)s->table_bytes);
        goto fail;
    }
    if (h->header_size == 0) {
        ret = vd_error_set(errp, EINVAL, "QED header size is invalid");
        goto fail;
    }
    if (!qed_table_offset_valid(s, h->l1_table_offset)) {
        ret = vd_error_set(errp, EINVAL, "QED table offset is invalid");
        goto fail;
    }
    s->table_nelems = s->table_bytes / 8;
    s->l2_shift = (unsigned)vd_ctz64(h->cluster_size);
    s->l1_shift = s->l2_shift + (unsigned)vd_ctz64(s->table_nelems);

    if (h->features & QED_F_BACKING_FILE) {
        uint64_t end = (uint64_t)h->backing_filename_offset + h->backing_filename_size;
        if (end > (uint64_t)h->cluster_size * h->header_size ||
            h->backing_filename_size > QED_BACKING_NAME_MAX) {
            ret = vd_error_set(errp, EINVAL, "QED backing file name is invalid");
            goto fail;
        }
        char *name = calloc(1, h->backing_filename_size + 1);
        if (!name) {
            ret = vd_error_set(errp, ENOMEM, "Out of memory");
            goto fail;
        }
        ret = vd_node_pread(bs->file, h->backing_filename_offset, h->backing_filename_size,
                            name, 0);
        if (ret < 0) {
            free(name);
            vd_error_setg_errno(errp, ret, "Could not read the backing file name");
            goto fail;
        }
        bs->backing_file = name;
        if (h->features & QED_F_BACKING_FORMAT_NO_PROBE) {
            bs->backing_format = vd_strdup("raw");
        }
    }

    s->writable = (bs->flags & VD_NODE_RDWR) && !bs->read_only;
    /* Unknown autoclear bits are knocked out by writers that don't know
     * them, so that the program that set them can tell. */
    if (h->autoclear_features && s->writable) {
        h->autoclear_features = 0;
        ret = qed_write_header(bs);
        if (ret == 0) {
            ret = vd_node_flush(bs->file);
        }
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not update the QED header");
            goto fail;
        }
    }

    s->l1 = vd_malloc(s->table_bytes);
    uint64_t n = VD_MIN((uint64_t)QED_CACHE_MAX_ENTRIES,
                        VD_MAX(2, QED_CACHE_MAX_BYTES / s->table_bytes));
    s->l2c = vd_cache_new(bs->file, s->table_bytes, (size_t)n);
    if (s->l2c) {
        vd_cache_set_write_event(s->l2c, VD_EV_L2_UPDATE);
        vd_cache_set_load_event(s->l2c, VD_EV_L2_LOAD);
    }
    if (!s->l1 || !s->l2c) {
        ret = vd_error_set(errp, ENOMEM, "Out of memory");
        goto fail;
    }
    ret = qed_read_table(bs, h->l1_table_offset, s->l1);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the L1 table");
        goto fail;
    }

    /* Not closed cleanly: a writer repairs before it changes anything
     * (see qed_repair).  Readers may look at an inconsistent image, which
     * helps recovering data. */
    s->repair_pending = (h->features & QED_F_NEED_CHECK) && s->writable;

    bs->pwrite_zeroes_alignment = h->cluster_size;
    bs->has_zero_init = true;
    return 0;

fail:
    s->writable = false;
    qed_close(bs);
    return ret;
}

static int64_t qed_get_length(vd_node *bs)
{
    qed_state *s = bs->opaque;
    return (int64_t)s->h.image_size;
}

/* vd_fmt_read's map: one qed_find run, looked up under the lock. */
static int qed_map(vd_node *bs, void *opaque, uint64_t offset, uint64_t max, void *buf,
                   vd_fmt_extent *ext)
{
    qed_state *s = bs->opaque;
    enum qed_kind kind = QED_UNALLOC;
    (void)opaque;
    (void)buf;

    pthread_mutex_lock(&s->lock);
    int ret = qed_find(bs, offset, max, true, &kind, &ext->host, &ext->len);
    pthread_mutex_unlock(&s->lock);
    ext->kind = kind == QED_FOUND  ? VD_FMT_MAP_DATA
                : kind == QED_ZERO ? VD_FMT_MAP_ZERO
                                   : VD_FMT_MAP_BACKING;
    return ret;
}

static int qed_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    (void)flags;
    return vd_fmt_read(bs, offset, len, buf, qed_map, NULL);
}

/* Lock held.  Before the first L2 update of a session without a backing
 * file: mark the image as needing a check should we not close cleanly. */
static int qed_set_need_check(vd_node *bs)
{
    qed_state *s = bs->opaque;
    if (bs->backing || bs->backing_file || (s->h.features & QED_F_NEED_CHECK)) {
        /* with a backing file, data is flushed before each L2 update instead */
        return 0;
    }
    s->h.features |= QED_F_NEED_CHECK;
    int ret = qed_write_header(bs);
    if (ret == 0) {
        ret = vd_node_flush(bs->file);
    }
    if (ret < 0) {
        s->h.features &= ~QED_F_NEED_CHECK;
    }
    return ret;
}

/*
 * Lock held.  Point the n clusters from guest offset first (one L2 table)
 * at host offsets value, value+cs, ... (or all at `value` when !step).
 */
static int qed_update_l2(vd_node *bs, uint64_t first, uint64_t ncl, uint64_t value, bool step)
{
    qed_state *s = bs->opaque;
    uint64_t l1i = first >> s->l1_shift;
    uint64_t l2i = (first >> s->l2_shift) & (s->table_nelems - 1);
    uint64_t l2off = s->l1[l1i];
    bool fresh = l2off == 0;
    void *tv;
    int ret;

    s->uni_off = 0;

    if (bs->backing || bs->backing_file) {
        /* data must be stable before an L2 entry points at it, or a crash
         * would show zeroes where the backing file had data */
        vd_cache_set_flush_before(s->l2c);
    }
    if (fresh) {
        l2off = s->file_size;
        uint64_t end;
        if (vd_add_overflow(l2off, s->table_bytes, &end)) {
            return -EFBIG;
        }
        ret = vd_cache_get_empty(s->l2c, l2off, &tv);
        if (ret < 0) {
            return ret;
        }
        memset(tv, 0, s->table_bytes);
        s->file_size = end;
    } else {
        ret = vd_cache_get(s->l2c, l2off, &tv);
        if (ret < 0) {
            return ret;
        }
    }
    uint8_t *t = tv;
    for (uint64_t k = 0; k < ncl; k++) {
        vd_st_le64(t + (l2i + k) * 8, step ? value + k * s->h.cluster_size : value);
    }
    vd_cache_mark_dirty(s->l2c, tv);
    vd_cache_put(s->l2c, &tv);
    if (fresh) {
        /* the new table reaches the file before the L1 entry names it */
        vd_node_event(bs->file, VD_EV_L2_ALLOC_WRITE);
        ret = vd_cache_write(s->l2c);
        if (ret == 0) {
            s->l1[l1i] = l2off;
            vd_node_event(bs->file, VD_EV_L1_UPDATE);
            ret = qed_write_table(bs, s->h.l1_table_offset, s->l1, l1i, 1);
            if (ret < 0) {
                s->l1[l1i] = 0;
            }
        }
    }
    return ret;
}

/*
 * Lock held.  Allocating write of [pos, pos+n) (one run from qed_find of
 * kind `kind`): new clusters at the end of the file, the parts of the first
 * and last cluster the write does not cover copied from the backing file
 * (or zeroes for a zero cluster).
 */
static int qed_alloc_write(vd_node *bs, uint64_t pos, uint64_t n, const uint8_t *p,
                           enum qed_kind kind)
{
    qed_state *s = bs->opaque;
    uint64_t cs = s->h.cluster_size;
    uint64_t first = vd_align_down(pos, cs);
    uint64_t end;
    int ret;

    if (vd_align_up_overflow(pos + n, cs, &end)) {
        return -EFBIG;
    }
    uint64_t ncl = (end - first) / cs;
    uint64_t host = s->file_size;
    uint64_t new_size;
    if (vd_add_overflow(host, ncl * cs, &new_size)) {
        return -EFBIG;
    }
    vd_node_event(bs->file, VD_EV_CLUSTER_ALLOC);
    ret = qed_set_need_check(bs);
    if (ret < 0) {
        return ret;
    }
    ret = vd_fmt_cow_write(bs->file, host, cs, pos, n, p,
                           kind == QED_ZERO ? vd_fmt_cow_zeroes : vd_fmt_cow_backing, bs);
    if (ret < 0) {
        return ret;
    }
    s->file_size = new_size;
    s->uni_off = 0;
    return qed_update_l2(bs, first, ncl, host, true);
}

static int qed_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                      unsigned flags)
{
    qed_state *s = bs->opaque;
    const uint8_t *p = buf;
    int ret = 0;
    (void)flags;

    if (s->repair_pending) {
        pthread_mutex_lock(&s->lock);
        ret = qed_repair(bs);
        pthread_mutex_unlock(&s->lock);
    }
    while (len > 0 && ret == 0) {
        enum qed_kind kind;
        uint64_t host = 0, n;
        pthread_mutex_lock(&s->lock);
        ret = qed_find(bs, offset, len, false, &kind, &host, &n);
        if (ret == 0 && kind == QED_FOUND) {
            pthread_mutex_unlock(&s->lock);
            vd_node_event(bs->file, VD_EV_WRITE_AIO);
            ret = vd_node_pwrite(bs->file, host, n, p, 0);
        } else {
            if (ret == 0) {
                ret = qed_alloc_write(bs, offset, n, p, kind);
            }
            pthread_mutex_unlock(&s->lock);
        }
        offset += n;
        len -= n;
        p += n;
    }
    return ret;
}

static int qed_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    qed_state *s = bs->opaque;
    uint64_t cs = s->h.cluster_size;
    int ret = 0;
    (void)flags;

    /* zero clusters are whole clusters; the end of the image may be partial */
    if ((offset & (cs - 1)) || ((len & (cs - 1)) && offset + len != s->h.image_size)) {
        return -ENOTSUP;
    }
    if (s->repair_pending) {
        pthread_mutex_lock(&s->lock);
        ret = qed_repair(bs);
        pthread_mutex_unlock(&s->lock);
    }
    while (len > 0 && ret == 0) {
        enum qed_kind kind;
        uint64_t host = 0, n;
        pthread_mutex_lock(&s->lock);
        ret = qed_find(bs, offset, len, false, &kind, &host, &n);
        if (ret == 0 && kind == QED_FOUND) {
            /* allocated clusters are zeroed in place, as QEMU does */
            pthread_mutex_unlock(&s->lock);
            ret = vd_node_pwrite_zeroes(bs->file, host, n, 0);
        } else {
            if (ret == 0 && kind != QED_ZERO) {
                uint64_t ncl = vd_div_round_up(n, cs);
                ret = qed_set_need_check(bs);
                if (ret == 0) {
                    ret = qed_update_l2(bs, offset, ncl, QED_ZERO_CLUSTER, false);
                }
            }
            pthread_mutex_unlock(&s->lock);
        }
        offset += n;
        len -= n;
    }
    return ret;
}

static int qed_flush(vd_node *bs)
{
    qed_state *s = bs->opaque;
    pthread_mutex_lock(&s->lock);
    int ret = vd_cache_write(s->l2c);
    pthread_mutex_unlock(&s->lock);
    return ret < 0 ? ret : vd_node_flush(bs->file);
}

static int qed_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                            uint64_t *pnum, uint64_t *map, vd_node **file)
{
    qed_state *s = bs->opaque;
    enum qed_kind kind;
    uint64_t host = 0, n;
    (void)want_zero;

    pthread_mutex_lock(&s->lock);
    int ret = qed_find(bs, offset, len, true, &kind, &host, &n);
    pthread_mutex_unlock(&s->lock);
    if (ret < 0) {
        return ret;
    }
    *pnum = n;
    switch (kind) {
    case QED_FOUND:
        *map = host;
        *file = bs->file;
        return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
    case QED_ZERO:
        return VD_BLOCK_ZERO;
    default:
        return 0;
    }
}

static int qed_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                        vd_error **errp)
{
    qed_state *s = bs->opaque;
    (void)exact;

    if (prealloc != VD_PREALLOC_OFF) {
        return vd_error_set(errp, ENOTSUP, "Unsupported preallocation mode '%s'",
                            vd_prealloc_name(prealloc));
    }
    if (!qed_image_size_valid(size, s->h.cluster_size, s->h.table_size)) {
        return vd_error_set(errp, EINVAL, "Invalid image size specified");
    }
    if (size < s->h.image_size) {
        return vd_error_set(errp, ENOTSUP, "Shrinking images is currently not supported");
    }
    pthread_mutex_lock(&s->lock);
    int ret = qed_repair(bs);
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_setg_errno(errp, ret, "Image corrupted");
    }
    uint64_t old = s->h.image_size;
    s->h.image_size = size;
    ret = qed_write_header(bs);
    if (ret < 0) {
        s->h.image_size = old;
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Failed to update the image size");
    }
    return 0;
}

/* ------------------------------------------------------------------ check */

typedef struct qed_checker {
    vd_node *bs;
    vd_check_res *res;
    bool fix;
    uint64_t nclusters;
    uint8_t *used; /* one bit per cluster of the file */
} qed_checker;

/* Mark n clusters from off used; false when one was already (corruption). */
static bool qed_mark_used(qed_checker *c, uint64_t off, uint64_t n)
{
    qed_state *s = c->bs->opaque;
    uint64_t cl = off / s->h.cluster_size;
    int dup = 0;
    for (; n > 0; n--, cl++) {
        if (cl >= c->nclusters) {
            continue;
        }
        uint8_t bit = (uint8_t)(1u << (cl % 8));
        if (c->used[cl / 8] & bit) {
            dup++;
        }
        c->used[cl / 8] |= bit;
    }
    c->res->corruptions += dup;
    return dup == 0;
}

/* Returns the number of invalid entries of L2 table t. */
static uint64_t qed_check_l2(qed_checker *c, uint64_t *t)
{
    qed_state *s = c->bs->opaque;
    uint64_t invalid = 0, last = 0;
    for (uint64_t i = 0; i < s->table_nelems; i++) {
        uint64_t off = t[i];
        if (off == 0 || off == QED_ZERO_CLUSTER) {
            continue;
        }
        c->res->allocated_clusters++;
        if (last && last + s->h.cluster_size != off) {
            c->res->fragmented_clusters++;
        }
        last = off;
        if (!qed_cluster_offset_valid(s, off)) {
            if (c->fix) {
                t[i] = 0;
                c->res->corruptions_fixed++;
            } else {
                c->res->corruptions++;
            }
            invalid++;
            continue;
        }
        qed_mark_used(c, off, 1);
    }
    return invalid;
}

static int qed_check_l1(qed_checker *c)
{
    vd_node *bs = c->bs;
    qed_state *s = bs->opaque;
    uint64_t invalid_l1 = 0;
    int ret, last_error = 0;

    qed_mark_used(c, s->h.l1_table_offset, s->h.table_size);
    uint64_t *t = vd_malloc(s->table_bytes);
    if (!t) {
        c->res->check_errors++;
        return -ENOMEM;
    }
    for (uint64_t i = 0; i < s->table_nelems; i++) {
        uint64_t off = s->l1[i];
        if (off == 0) {
            continue;
        }
        if (!qed_table_offset_valid(s, off)) {
            if (c->fix) {
                s->l1[i] = 0;
                c->res->corruptions_fixed++;
            } else {
                c->res->corruptions++;
            }
            invalid_l1++;
            continue;
        }
        if (!qed_mark_used(c, off, s->h.table_size)) {
            /* a table sharing clusters with another: skip it */
            continue;
        }
        ret = qed_read_table(bs, off, t);
        if (ret < 0) {
            c->res->check_errors++;
            last_error = ret;
            continue;
        }
        if (qed_check_l2(c, t) > 0 && c->fix) {
            ret = qed_write_table(bs, off, t, 0, s->table_nelems);
            if (ret < 0) {
                c->res->check_errors++;
                last_error = ret;
            }
        }
    }
    free(t);
    if (invalid_l1 > 0 && c->fix) {
        ret = qed_write_table(bs, s->h.l1_table_offset, s->l1, 0, s->table_nelems);
        if (ret < 0) {
            c->res->check_errors++;
            last_error = ret;
        }
    }
    return last_error;
}

/* Lock held (or exclusive use during open). */
static int qed_check_impl(vd_node *bs, vd_check_res *res, bool fix)
{
    qed_state *s = bs->opaque;
    qed_checker c = {
        .bs = bs,
        .res = res,
        .fix = fix,
        .nclusters = s->file_size / s->h.cluster_size,
    };
    /* the tables on disk are what is checked: cached changes go first */
    int ret = qed_cache_drop(s);
    if (ret < 0) {
        res->check_errors++;
        return ret;
    }
    c.used = calloc(1, c.nclusters / 8 + 1);
    if (!c.used) {
        res->check_errors++;
        return -ENOMEM;
    }
    res->total_clusters = vd_div_round_up(s->h.image_size, s->h.cluster_size);
    ret = qed_check_l1(&c);
    if (ret == 0) {
        /* leaks only count when the whole image was scanned */
        for (uint64_t i = s->h.header_size; i < c.nclusters; i++) {
            if (!(c.used[i / 8] & (1u << (i % 8)))) {
                res->leaks++;
            }
        }
    }
    free(c.used);
    /* repairs went straight to the file */
    qed_cache_drop(s);
    if (fix && res->corruptions == 0 && res->check_errors == 0 &&
        (s->h.features & QED_F_NEED_CHECK)) {
        /* repaired (or found clean): fixes reach the disk before the flag goes */
        int r = vd_node_flush(bs->file);
        if (r == 0) {
            s->h.features &= ~QED_F_NEED_CHECK;
            r = qed_write_header(bs);
        }
        if (r < 0 && ret == 0) {
            ret = r;
        }
    }
    return ret;
}

static int qed_check(vd_node *bs, vd_check_res *res, unsigned fix, vd_error **errp)
{
    qed_state *s = bs->opaque;
    if (fix && !s->writable) {
        return vd_error_set(errp, EROFS, "Cannot repair an image opened read-only");
    }
    pthread_mutex_lock(&s->lock);
    int ret = qed_check_impl(bs, res, fix != 0);
    if (ret == 0 && fix) {
        s->repair_pending = false;
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Check of the QED image failed");
    }
    return 0;
}

static int qed_change_backing_file(vd_node *bs, const char *backing_file,
                                   const char *backing_fmt, vd_error **errp)
{
    qed_state *s = bs->opaque;
    if (backing_file && !backing_file[0]) {
        backing_file = NULL;
    }
    if (backing_file && s->h.compat_features) {
        /* unknown compat data may follow the header: we can't move it */
        return vd_error_set(errp, ENOTSUP,
                            "Cannot change the backing file of a QED image with unknown "
                            "compatible features");
    }
    qed_header nh = s->h;
    nh.features &= ~(QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE);
    size_t blen = backing_file ? strlen(backing_file) : 0;
    if (backing_file) {
        nh.features |= QED_F_BACKING_FILE;
        if (backing_fmt && !strcmp(backing_fmt, "raw")) {
            nh.features |= QED_F_BACKING_FORMAT_NO_PROBE;
        }
    }
    nh.backing_filename_offset = QED_HEADER_BYTES;
    nh.backing_filename_size = (uint32_t)blen;
    if (QED_HEADER_BYTES + (uint64_t)blen > (uint64_t)nh.header_size * nh.cluster_size ||
        blen > QED_BACKING_NAME_MAX) {
        return vd_error_set(errp, ENOSPC, "The backing file name does not fit in the header");
    }
    uint8_t *b = vd_malloc(QED_HEADER_BYTES + blen);
    if (!b) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    qed_header_encode(&nh, b);
    if (blen) {
        memcpy(b + QED_HEADER_BYTES, backing_file, blen);
    }
    pthread_mutex_lock(&s->lock);
    int ret = qed_repair(bs);
    if (ret == 0) {
        ret = vd_node_pwrite(bs->file, 0, QED_HEADER_BYTES + blen, b, 0);
    }
    if (ret == 0) {
        ret = vd_node_flush(bs->file);
    }
    if (ret == 0) {
        s->h = nh;
    }
    pthread_mutex_unlock(&s->lock);
    free(b);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not write the QED header");
    }
    return 0;
}

static int qed_get_info(vd_node *bs, vd_info *info, vd_error **errp)
{
    qed_state *s = bs->opaque;
    (void)errp;
    info->cluster_size = s->h.cluster_size;
    return 0;
}

static uint32_t qed_cluster_size(vd_node *bs)
{
    qed_state *s = bs->opaque;
    return s->h.cluster_size;
}

static int qed_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    uint64_t size, cs, ts;
    int ret;

    ret = vd_opts_get_size(opts, "size", 0, &size, errp);
    if (ret == 0) {
        ret = vd_opts_get_size(opts, "cluster_size", QED_DEFAULT_CLUSTER_SIZE, &cs, errp);
    }
    if (ret == 0) {
        ret = vd_opts_get_size(opts, "table_size", QED_DEFAULT_TABLE_SIZE, &ts, errp);
    }
    if (ret < 0) {
        return ret;
    }
    /* qemu-img create rounds the size up to whole sectors before the check
     * below (as the other formats do) */
    if (size <= UINT64_MAX - (QED_SECTOR - 1)) {
        size = vd_div_round_up(size, QED_SECTOR) * QED_SECTOR;
    }
    if (!qed_cluster_size_valid(cs)) {
        return vd_error_set(errp, EINVAL,
                            "QED cluster size must be within range [%u, %u] and power of 2",
                            QED_MIN_CLUSTER_SIZE, QED_MAX_CLUSTER_SIZE);
    }
    if (!qed_table_size_valid(ts)) {
        return vd_error_set(errp, EINVAL,
                            "QED table size must be within range [%u, %u] and power of 2",
                            QED_MIN_TABLE_SIZE, QED_MAX_TABLE_SIZE);
    }
    if (!qed_image_size_valid(size, (uint32_t)cs, (uint32_t)ts)) {
        return vd_error_set(errp, EINVAL,
                            "QED image size must be a non-zero multiple of cluster size and "
                            "less than %llu bytes",
                            (unsigned long long)qed_max_image_size((uint32_t)cs, (uint32_t)ts));
    }
    const char *backing = vd_opts_get(opts, "backing_file");
    const char *backing_fmt = vd_opts_get(opts, "backing_fmt");
    size_t blen = backing ? strlen(backing) : 0;
    if (backing && (QED_HEADER_BYTES + blen > cs || blen > QED_BACKING_NAME_MAX)) {
        return vd_error_set(errp, EINVAL, "Backing file name too long");
    }

    qed_header h;
    memset(&h, 0, sizeof(h));
    h.cluster_size = (uint32_t)cs;
    h.table_size = (uint32_t)ts;
    h.header_size = 1;
    h.l1_table_offset = cs;
    h.image_size = size;
    if (backing) {
        h.features |= QED_F_BACKING_FILE;
        h.backing_filename_offset = QED_HEADER_BYTES;
        h.backing_filename_size = (uint32_t)blen;
        if (backing_fmt && !strcmp(backing_fmt, "raw")) {
            h.features |= QED_F_BACKING_FORMAT_NO_PROBE;
        }
    }
    uint8_t hb[QED_HEADER_BYTES];
    qed_header_encode(&h, hb);

    vd_node *file;
    ret = vd_create_open_file(filename, opts, &file, errp);
    if (ret < 0) {
        return ret;
    }
    ret = vd_node_pwrite(file, 0, sizeof(hb), hb, 0);
    if (ret == 0 && backing) {
        ret = vd_node_pwrite(file, QED_HEADER_BYTES, blen, backing, 0);
    }
    if (ret == 0) {
        uint64_t l1_bytes = cs * ts;
        uint8_t *zero = calloc(1, l1_bytes);
        if (!zero) {
            ret = -ENOMEM;
        } else {
            ret = vd_node_pwrite(file, cs, l1_bytes, zero, 0);
            free(zero);
        }
    }
    return vd_create_close_file(file, ret, "Could not write the QED image", errp);
}

const vd_driver vd_drv_qed = {
    .name = "qed",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(qed_state),
    .create_opts = qed_create_opts,
    .supports_backing = true,
    .probe = qed_probe,
    .open = qed_open,
    .close = qed_close,
    .create = qed_create,
    .get_length = qed_get_length,
    .pread = qed_pread,
    .pwrite = qed_pwrite,
    .pwrite_zeroes = qed_pwrite_zeroes,
    .flush = qed_flush,
    .block_status = qed_block_status,
    .truncate = qed_truncate,
    .check = qed_check,
    .get_info = qed_get_info,
    .change_backing_file = qed_change_backing_file,
    .cluster_size = qed_cluster_size,
};
