/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2: the driver table, probing, open (header, extensions, feature name
 * table, snapshot table and bitmap directory bounds), header rewrites,
 * create, info, flush, close and resize.
 *
 * Specification: QEMU's docs/interop/qcow2.txt, versions 2 and 3.
 * Not supported yet (clear error): encryption (AES, LUKS).  Snapshots,
 * bitmaps, amend, data files and extended L2 live in snapshot.c, bitmap.c,
 * amend.c, datafile.c and subcluster.c.  cache-clean-interval is honoured without a timer thread: caches
 * are trimmed by the next metadata operation after the interval elapsed.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "qcow2.h"

#define DEFAULT_L2_CACHE_MAX (32ull << 20)
#define MIN_L2_CACHE_ENTRIES 2
#define MIN_REFCOUNT_CACHE_ENTRIES 4
#define DEFAULT_CACHE_CLEAN_INTERVAL 600

static const char *const overlap_modes[] = {"none", "constant", "cached", "all", NULL};

static const vd_opt_desc qcow2_open_opts[] = {
    {"lazy-refcounts", VD_OPT_BOOL, "Postpone refcount updates", NULL},
    {"pass-discard-request", VD_OPT_BOOL, "Pass guest discard requests to the layer below",
     NULL},
    {"pass-discard-snapshot", VD_OPT_BOOL,
     "Generate discard requests when snapshot related space is freed", "on"},
    {"pass-discard-other", VD_OPT_BOOL,
     "Generate discard requests when other clusters are freed", "off"},
    {"overlap-check", VD_OPT_STRING,
     "Selects which overlap checks to perform from a range of templates (none, constant, "
     "cached, all)",
     "cached"},
    {"overlap-check.template", VD_OPT_STRING,
     "Selects which overlap checks to perform from a range of templates (none, constant, "
     "cached, all)",
     NULL},
    {"overlap-check.main-header", VD_OPT_BOOL, "Check for unintended writes into the main qcow2 header", NULL},
    {"overlap-check.active-l1", VD_OPT_BOOL, "Check for unintended writes into the active L1 table", NULL},
    {"overlap-check.active-l2", VD_OPT_BOOL, "Check for unintended writes into an active L2 table", NULL},
    {"overlap-check.refcount-table", VD_OPT_BOOL, "Check for unintended writes into the refcount table", NULL},
    {"overlap-check.refcount-block", VD_OPT_BOOL, "Check for unintended writes into a refcount block", NULL},
    {"overlap-check.snapshot-table", VD_OPT_BOOL, "Check for unintended writes into the snapshot table", NULL},
    {"overlap-check.inactive-l1", VD_OPT_BOOL, "Check for unintended writes into an inactive L1 table", NULL},
    {"overlap-check.inactive-l2", VD_OPT_BOOL, "Check for unintended writes into an inactive L2 table", NULL},
    {"overlap-check.bitmap-directory", VD_OPT_BOOL, "Check for unintended writes into the bitmap directory", NULL},
    {"cache-size", VD_OPT_SIZE, "Maximum combined metadata (L2 tables and refcount blocks) cache size", NULL},
    {"l2-cache-size", VD_OPT_SIZE, "Maximum L2 table cache size", NULL},
    {"l2-cache-entry-size", VD_OPT_SIZE, "Size of each entry in the L2 cache", NULL},
    {"refcount-cache-size", VD_OPT_SIZE, "Maximum refcount block cache size", NULL},
    /* a string here: qcow2_open reads it, so that a negative value gets
     * QEMU's "too big" (QEMU wraps it to an unsigned one) */
    {"cache-clean-interval", VD_OPT_STRING, "Clean unused cache entries after this time (in seconds)", "600"},
    {"encrypt.key-secret", VD_OPT_STRING, "ID of secret providing qcow2 AES key or LUKS passphrase", NULL},
    {"encrypt.format", VD_OPT_STRING, "Encryption format", NULL},
    {"data-file", VD_OPT_STRING, "Node reference or filename of the external data file", NULL},
    {NULL, 0, NULL, NULL},
};

static const vd_opt_desc qcow2_create_opts[] = {
    {"encryption", VD_OPT_BOOL, "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", NULL},
    {"encrypt.format", VD_OPT_STRING, "Encrypt the image, format choices: 'aes', 'luks'", NULL},
    {"encrypt.key-secret", VD_OPT_STRING, "ID of secret providing qcow AES key or LUKS passphrase", NULL},
    {"encrypt.cipher-alg", VD_OPT_STRING, "Name of encryption cipher algorithm", NULL},
    {"encrypt.cipher-mode", VD_OPT_STRING, "Name of encryption cipher mode", NULL},
    {"encrypt.ivgen-alg", VD_OPT_STRING, "Name of IV generator algorithm", NULL},
    {"encrypt.ivgen-hash-alg", VD_OPT_STRING, "Name of IV generator hash algorithm", NULL},
    {"encrypt.hash-alg", VD_OPT_STRING, "Name of encryption hash algorithm", NULL},
    {"encrypt.iter-time", VD_OPT_NUMBER, "Time to spend in PBKDF in milliseconds", NULL},
    {"cluster_size", VD_OPT_SIZE, "qcow2 cluster size", "65536"},
    {"extended_l2", VD_OPT_BOOL, "Extended L2 tables", "off"},
    {"preallocation", VD_OPT_STRING, "Preallocation mode (allowed values: off, metadata, falloc, full)", NULL},
    {"compression_type", VD_OPT_STRING, "Compression method used for image cluster compression", "zlib"},
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {"compat", VD_OPT_STRING, "Compatibility level (v2 [0.10] or v3 [1.1])", NULL},
    {"backing_file", VD_OPT_STRING, "File name of a base image", NULL},
    {"backing_fmt", VD_OPT_STRING, "Image format of the base image", NULL},
    {"data_file", VD_OPT_STRING, "File name of an external data file", NULL},
    {"data_file_raw", VD_OPT_BOOL, "The external data file must stay valid as a raw image", NULL},
    {"lazy_refcounts", VD_OPT_BOOL, "Postpone refcount updates", "off"},
    {"refcount_bits", VD_OPT_NUMBER, "Width of a reference count entry in bits", "16"},
    {NULL, 0, NULL, NULL},
};

/* What qcow2_amend accepts (amend.c; encrypt.*: LUKS key slots, crypto.c),
 * as `amend -o help` lists it. */
static const vd_opt_desc qcow2_amend_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {"compat", VD_OPT_STRING, "Compatibility level (v2 [0.10] or v3 [1.1])", NULL},
    {"backing_file", VD_OPT_STRING, "File name of a base image", NULL},
    {"backing_fmt", VD_OPT_STRING, "Image format of the base image", NULL},
    {"data_file", VD_OPT_STRING, "File name of an external data file", NULL},
    {"data_file_raw", VD_OPT_BOOL, "The external data file must stay valid as a raw image", NULL},
    {"lazy_refcounts", VD_OPT_BOOL, "Postpone refcount updates", NULL},
    {"refcount_bits", VD_OPT_NUMBER, "Width of a reference count entry in bits", NULL},
    {"encrypt.state", VD_OPT_STRING, "Select new state of affected keyslots (active/inactive)",
     NULL},
    {"encrypt.keyslot", VD_OPT_NUMBER, "Select a single keyslot to modify explicitly", NULL},
    {"encrypt.old-secret", VD_OPT_STRING, "Select all keyslots that match this password", NULL},
    {"encrypt.new-secret", VD_OPT_STRING,
     "New secret to set in the matching keyslots. Empty string to erase", NULL},
    {"encrypt.iter-time", VD_OPT_NUMBER, "Time to spend in PBKDF in milliseconds", NULL},
    {NULL, 0, NULL, NULL},
};

/* ----------------------------------------------------------- helpers */

qcow2_cluster_type qcow2_get_cluster_type(const qcow2_state *s, uint64_t l2_entry)
{
    if (l2_entry & QCOW_OFLAG_COMPRESSED) {
        return QCOW2_CLUSTER_COMPRESSED;
    }
    if ((l2_entry & QCOW_OFLAG_ZERO) && !s->extended_l2) {
        /* with extended L2 entries the bitmap says what reads as zeroes */
        return (l2_entry & L2E_OFFSET_MASK) ? QCOW2_CLUSTER_ZERO_ALLOC
                                            : QCOW2_CLUSTER_ZERO_PLAIN;
    }
    if (!(l2_entry & L2E_OFFSET_MASK)) {
        /* offset 0 is valid in an external data file, whose clusters
         * always carry COPIED (QEMU's rule) */
        return qcow2_has_data_file(s) && (l2_entry & QCOW_OFLAG_COPIED)
                   ? QCOW2_CLUSTER_NORMAL
                   : QCOW2_CLUSTER_UNALLOCATED;
    }
    return QCOW2_CLUSTER_NORMAL;
}

uint64_t qcow2_size_to_l1(const qcow2_state *s, uint64_t size)
{
    int shift = (int)(s->cluster_bits + s->l2_bits);
    return (size + (1ull << shift) - 1) >> shift;
}

static int qcow2_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len >= 8 && vd_ld_be32(buf) == QCOW2_MAGIC && vd_ld_be32(buf + 4) >= 2) {
        return 100;
    }
    return 0;
}

void qcow2_signal_corruption(qcow2_state *s, bool fatal, const char *fmt, ...)
{
    /* as QEMU: an image that cannot be written is only reported; the
     * notice goes out once (a fatal one after non-fatal ones still does) */
    fatal = fatal && !s->bs->read_only;
    if (s->broken || (s->signaled_corruption && !fatal)) {
        return;
    }
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (fatal) {
        vd_report_line("qcow2: Marking image as corrupt: %s; further corruption events will "
                       "be suppressed", msg);
    } else {
        vd_report_line("qcow2: Image is corrupt: %s; further non-fatal corruption events "
                       "will be suppressed", msg);
    }
    s->signaled_corruption = true;
    if (!fatal) {
        return;
    }
    /* QEMU marks the image corrupt and makes it unusable: the failing
     * request and every later one get EIO */
    s->broken = true;
    s->incompatible_features |= QCOW2_INCOMPAT_CORRUPT;
    if (s->version >= 3) {
        uint8_t buf[8];
        vd_st_be64(buf, s->incompatible_features);
        if (vd_node_pwrite(s->bs->file, 72, 8, buf, 0) == 0) {
            (void)vd_node_flush(s->bs->file);
        }
    }
}

/* --------------------------------------------------- header writing */

static const struct {
    uint8_t type, bit;
    const char *name;
} feature_table[] = {
    {0, 0, "dirty bit"},
    {0, 1, "corrupt bit"},
    {0, 2, "external data file"},
    {0, 3, "compression type"},
    {0, 4, "extended L2 entries"},
    {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},
    {2, 1, "raw external data"},
};

/* Append one extension to buf at *pos (bounded by cap). */
static int put_ext(uint8_t *buf, size_t cap, size_t *pos, uint32_t magic, const void *data,
                   uint32_t len)
{
    size_t padded = ((size_t)len + 7) & ~(size_t)7;
    if (*pos + 8 + padded > cap) {
        return -ENOSPC;
    }
    vd_st_be32(buf + *pos, magic);
    vd_st_be32(buf + *pos + 4, len);
    if (len) {
        memcpy(buf + *pos + 8, data, len);
    }
    memset(buf + *pos + 8 + len, 0, padded - len);
    *pos += 8 + padded;
    return 0;
}

int qcow2_update_header(qcow2_state *s)
{
    size_t cs = s->cluster_size;
    uint8_t *buf = vd_aligned_alloc(4096, cs);
    size_t pos;
    int ret;

    if (!buf) {
        return -ENOMEM;
    }
    memset(buf, 0, cs);
    vd_st_be32(buf + 0, QCOW2_MAGIC);
    vd_st_be32(buf + 4, s->version);
    vd_st_be32(buf + 20, s->cluster_bits);
    vd_st_be64(buf + 24, s->size);
    vd_st_be32(buf + 32, s->crypt_method);
    vd_st_be32(buf + 36, s->l1_size);
    vd_st_be64(buf + 40, s->l1_table_offset);
    vd_st_be64(buf + 48, s->refcount_table_offset);
    vd_st_be32(buf + 56, s->refcount_table_clusters);
    vd_st_be32(buf + 60, s->nb_snapshots);
    vd_st_be64(buf + 64, s->snapshots_offset);
    if (s->version >= 3) {
        uint32_t hlen = QCOW2_HEADER_LEN_CREATE + s->header_tail_len;
        vd_st_be64(buf + 72, s->incompatible_features);
        vd_st_be64(buf + 80, s->compatible_features);
        vd_st_be64(buf + 88, s->autoclear_features);
        vd_st_be32(buf + 96, s->refcount_order);
        vd_st_be32(buf + 100, hlen);
        buf[104] = s->compression_type;
        if (s->header_tail_len) {
            memcpy(buf + QCOW2_HEADER_LEN_CREATE, s->header_tail, s->header_tail_len);
        }
        pos = hlen;
    } else {
        pos = QCOW2_V2_HEADER_LEN;
    }

    ret = 0;
    if (s->backing_format) {
        ret = put_ext(buf, cs, &pos, QCOW2_EXT_BACKING_FORMAT, s->backing_format,
                      (uint32_t)strlen(s->backing_format));
    }
    /* the data file name and the crypto header pointer (kept with the
     * unknown ones) go here, as QEMU's */
    for (int pass = 0; pass < 2; pass++) {
        uint32_t magic = pass ? QCOW2_EXT_CRYPTO : QCOW2_EXT_DATA_FILE;
        for (size_t i = 0; ret == 0 && i < s->nb_unknown_ext; i++) {
            if (s->unknown_ext[i].magic == magic) {
                ret = put_ext(buf, cs, &pos, magic, s->unknown_ext[i].data,
                              s->unknown_ext[i].len);
            }
        }
    }
    /* QEMU 7.2 leaves the table out for clusters of 4 KiB and below, where
     * its 384 bytes would crowd out the backing file name */
    if (ret == 0 && s->version >= 3 && s->cluster_size > 4096) {
        uint8_t ft[VD_ARRAY_SIZE(feature_table) * 48];
        memset(ft, 0, sizeof(ft));
        for (size_t i = 0; i < VD_ARRAY_SIZE(feature_table); i++) {
            ft[i * 48] = feature_table[i].type;
            ft[i * 48 + 1] = feature_table[i].bit;
            memcpy(ft + i * 48 + 2, feature_table[i].name, strlen(feature_table[i].name));
        }
        ret = put_ext(buf, cs, &pos, QCOW2_EXT_FEATURE_TABLE, ft, sizeof(ft));
    }
    if (ret == 0 && s->has_bitmaps_ext && (s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
        uint8_t bm[24];
        vd_st_be32(bm, s->nb_bitmaps);
        vd_st_be32(bm + 4, 0);
        vd_st_be64(bm + 8, s->bitmap_directory_size);
        vd_st_be64(bm + 16, s->bitmap_directory_offset);
        ret = put_ext(buf, cs, &pos, QCOW2_EXT_BITMAPS, bm, sizeof(bm));
    }
    for (size_t i = 0; ret == 0 && i < s->nb_unknown_ext; i++) {
        if (s->unknown_ext[i].magic == QCOW2_EXT_DATA_FILE ||
            s->unknown_ext[i].magic == QCOW2_EXT_CRYPTO) {
            continue;
        }
        ret = put_ext(buf, cs, &pos, s->unknown_ext[i].magic, s->unknown_ext[i].data,
                      s->unknown_ext[i].len);
    }
    if (ret == 0) {
        ret = put_ext(buf, cs, &pos, QCOW2_EXT_END, NULL, 0);
    }
    if (ret == 0 && s->backing_file) {
        size_t n = strlen(s->backing_file);
        if (pos + n > cs) {
            ret = -ENOSPC;
        } else {
            memcpy(buf + pos, s->backing_file, n);
            vd_st_be64(buf + 8, pos);
            vd_st_be32(buf + 16, (uint32_t)n);
        }
    }
    if (ret == 0) {
        ret = vd_node_pwrite(s->bs->file, 0, cs, buf, 0);
    }
    free(buf);
    return ret;
}

int qcow2_write_l1_fields(qcow2_state *s)
{
    uint8_t buf[12];
    vd_st_be32(buf, s->l1_size);
    vd_st_be64(buf + 4, s->l1_table_offset);
    return vd_node_pwrite(s->bs->file, 36, sizeof(buf), buf, 0);
}

int qcow2_write_reftable_fields(qcow2_state *s)
{
    uint8_t buf[12];
    vd_st_be64(buf, s->refcount_table_offset);
    vd_st_be32(buf + 8, s->refcount_table_clusters);
    return vd_node_pwrite(s->bs->file, 48, sizeof(buf), buf, 0);
}

static int write_incompat(qcow2_state *s)
{
    uint8_t buf[8];
    vd_st_be64(buf, s->incompatible_features);
    return vd_node_pwrite(s->bs->file, 72, 8, buf, 0);
}

int qcow2_mark_dirty(qcow2_state *s)
{
    if (s->version < 3 || (s->incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        return 0;
    }
    int ret = vd_node_flush(s->bs->file);
    if (ret < 0) {
        return ret;
    }
    s->incompatible_features |= QCOW2_INCOMPAT_DIRTY;
    ret = write_incompat(s);
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        s->incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
        return ret;
    }
    s->dirty_lazy = true;
    return 0;
}

int qcow2_mark_clean(qcow2_state *s)
{
    if (!(s->incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        return 0;
    }
    int ret = vd_cache_flush(s->l2_cache);
    if (ret == 0) {
        ret = vd_cache_flush(s->refcount_cache);
    }
    if (ret < 0) {
        return ret;
    }
    s->incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
    ret = write_incompat(s);
    if (ret == 0) {
        ret = vd_node_flush(s->bs->file);
    }
    if (ret < 0) {
        s->incompatible_features |= QCOW2_INCOMPAT_DIRTY;
        return ret;
    }
    s->dirty_lazy = false;
    return 0;
}

static uint64_t now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec;
}

int qcow2_begin_metadata_change(qcow2_state *s)
{
    int ret;
    if (s->broken || s->corrupt_ro) {
        return -EIO;
    }
    if (s->needs_repair) {
        vd_check_res res;
        memset(&res, 0, sizeof(res));
        s->needs_repair = false;
        ret = qcow2_check_locked(s, &res, VD_CHECK_FIX_LEAKS | VD_CHECK_FIX_ERRORS, NULL);
        if (ret < 0 || res.check_errors || res.corruptions) {
            s->broken = true;
            return ret < 0 ? ret : -EIO;
        }
    }
    if (s->cache_clean_interval) {
        uint64_t now = now_seconds();
        if (!s->last_clean) {
            s->last_clean = now;
        } else if (now - s->last_clean >= s->cache_clean_interval) {
            s->last_clean = now;
            vd_cache_clean_unused(s->l2_cache);
            vd_cache_clean_unused(s->refcount_cache);
        }
    }
    if (s->use_lazy_refcounts && !(s->incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        ret = qcow2_mark_dirty(s);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ opening */

static void free_state(qcow2_state *s)
{
    vd_cache_free(s->l2_cache);
    vd_cache_free(s->refcount_cache);
    s->l2_cache = s->refcount_cache = NULL;
    free(s->l1_table);
    free(s->refcount_table);
    s->l1_table = s->refcount_table = NULL;
    free(s->discq);
    s->discq = NULL;
    s->discq_n = s->discq_cap = 0;
    free(s->backing_file);
    free(s->backing_format);
    s->backing_file = s->backing_format = NULL;
    for (size_t i = 0; i < s->nb_unknown_ext; i++) {
        free(s->unknown_ext[i].data);
    }
    free(s->unknown_ext);
    s->unknown_ext = NULL;
    s->nb_unknown_ext = 0;
    s->cap_unknown_ext = 0;
    for (size_t i = 0; i < s->nb_feature_names; i++) {
        free(s->feature_names[i]);
    }
    free(s->feature_names);
    s->feature_names = NULL;
    s->nb_feature_names = 0;
    free(s->header_tail);
    s->header_tail = NULL;
    qcow2_free_snapshots(s);
    if (s->bitmaps) {
        for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
            free(s->bitmaps[i].name);
        }
        free(s->bitmaps);
        s->bitmaps = NULL;
    }
    s->bitmaps_loaded = false;
    qcow2_bitmaps_free(s);
    qcow2_crypto_free(s);
    qcow2_data_file_free(s);
}

void qcow2_free_snapshots(qcow2_state *s)
{
    if (!s->snapshots) {
        return;
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        free(s->snapshots[i].id);
        free(s->snapshots[i].name);
        free(s->snapshots[i].unknown_extra);
    }
    free(s->snapshots);
    s->snapshots = NULL;
}

/* An offset + length pair of a table must be aligned and addressable. */
static bool table_ok(const qcow2_state *s, uint64_t offset, uint64_t entries,
                     uint64_t entry_len)
{
    uint64_t size, end;
    if (vd_mul_overflow(entries, entry_len, &size) || vd_add_overflow(offset, size, &end) ||
        end > (uint64_t)INT64_MAX) {
        return false;
    }
    return qcow2_offset_into_cluster(s, offset) == 0;
}

int qcow2_read_snapshots(qcow2_state *s, vd_error **errp)
{
    uint8_t *buf = NULL;
    uint64_t pos = 0, cap = 0;
    int ret = 0;

    qcow2_free_snapshots(s);
    s->snapshots_size = 0;
    if (!s->nb_snapshots) {
        return 0;
    }
    s->snapshots = calloc(s->nb_snapshots, sizeof(*s->snapshots));
    if (!s->snapshots) {
        return vd_error_set(errp, ENOMEM, "Could not allocate the snapshot table");
    }
    /* Read in chunks: entries are variable-length; the whole table may
     * not exceed 64 MiB (QEMU's QCOW_MAX_SNAPSHOTS_SIZE). */
    const uint64_t max_size = 1024ull * QCOW2_MAX_SNAPSHOTS;
    uint64_t off = s->snapshots_offset;
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        uint8_t h[40];
        qcow2_snapshot *sn = &s->snapshots[i];
        ret = vd_node_pread(s->bs->file, off + pos, sizeof(h), h, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, -ret, "Failed to read snapshot table");
            goto fail;
        }
        sn->l1_offset = vd_ld_be64(h);
        sn->l1_size = vd_ld_be32(h + 8);
        uint16_t id_len = vd_ld_be16(h + 12), name_len = vd_ld_be16(h + 14);
        sn->date_sec = vd_ld_be32(h + 16);
        sn->date_nsec = vd_ld_be32(h + 20);
        sn->vm_clock_nsec = vd_ld_be64(h + 24);
        sn->vm_state_size = vd_ld_be32(h + 32);
        uint32_t extra = vd_ld_be32(h + 36);
        sn->icount = UINT64_MAX;
        if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
            ret = vd_error_set(errp, EFBIG,
                               "Too much extra metadata in snapshot table entry %u", i);
            goto fail;
        }
        uint64_t entry = 40 + (uint64_t)extra + id_len + name_len;
        uint64_t padded = (entry + 7) & ~7ull;
        if (pos + padded > max_size) {
            ret = vd_error_set(errp, EFBIG, "Snapshot table too large");
            goto fail;
        }
        if (entry - 40 > cap) {
            free(buf);
            cap = entry - 40;
            buf = malloc(cap);
            if (!buf) {
                ret = vd_error_set(errp, ENOMEM, "out of memory");
                goto fail;
            }
        }
        if (entry > 40) {
            ret = vd_node_pread(s->bs->file, off + pos + 40, entry - 40, buf, 0);
            if (ret < 0) {
                vd_error_setg_errno(errp, -ret, "Failed to read snapshot table");
                goto fail;
            }
        }
        if (extra >= 8) {
            sn->vm_state_size = vd_ld_be64(buf);
        }
        if (extra >= 16) {
            sn->disk_size = vd_ld_be64(buf + 8);
        } else {
            sn->disk_size = s->size;
        }
        if (extra >= 24) {
            sn->icount = vd_ld_be64(buf + 16);
        } else {
            sn->icount = UINT64_MAX; /* unknown, as QEMU */
        }
        sn->extra_data_size = extra;
        if (extra > 24) {
            /* kept so that rewriting the table preserves it (snapshot.c) */
            sn->unknown_extra = malloc(extra - 24);
            if (!sn->unknown_extra) {
                ret = vd_error_set(errp, ENOMEM, "out of memory");
                goto fail;
            }
            memcpy(sn->unknown_extra, buf + 24, extra - 24);
        }
        sn->id = malloc((size_t)id_len + 1);
        sn->name = malloc((size_t)name_len + 1);
        if (!sn->id || !sn->name) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
            goto fail;
        }
        if (id_len) {
            memcpy(sn->id, buf + extra, id_len);
        }
        sn->id[id_len] = 0;
        if (name_len) {
            memcpy(sn->name, buf + extra + id_len, name_len);
        }
        sn->name[name_len] = 0;
        pos += padded;
    }
    s->snapshots_size = pos;
    free(buf);
    return 0;

fail:
    free(buf);
    qcow2_free_snapshots(s);
    return ret < 0 ? ret : -EINVAL;
}

static int add_unknown_ext(qcow2_state *s, uint32_t magic, const uint8_t *data, uint32_t len);

int qcow2_add_crypto_ext(qcow2_state *s, const uint8_t *ext)
{
    return add_unknown_ext(s, QCOW2_EXT_CRYPTO, ext, 16);
}

static int add_unknown_ext(qcow2_state *s, uint32_t magic, const uint8_t *data, uint32_t len)
{
    qcow2_ext *n = s->unknown_ext;
    if (s->nb_unknown_ext == s->cap_unknown_ext) {
        /* doubling: a header cluster full of tiny extensions stays linear */
        size_t cap = s->cap_unknown_ext ? 2 * s->cap_unknown_ext : 4;
        n = realloc(s->unknown_ext, cap * sizeof(*n));
        if (!n) {
            return -ENOMEM;
        }
        s->unknown_ext = n;
        s->cap_unknown_ext = cap;
    }
    n[s->nb_unknown_ext].magic = magic;
    n[s->nb_unknown_ext].len = len;
    n[s->nb_unknown_ext].data = malloc(len ? len : 1);
    if (!n[s->nb_unknown_ext].data) {
        return -ENOMEM;
    }
    memcpy(n[s->nb_unknown_ext].data, data, len);
    s->nb_unknown_ext++;
    return 0;
}

static int read_extensions(qcow2_state *s, const uint8_t *hdr, uint64_t start, uint64_t end,
                           bool *crypto_ext, bool *need_header_update, vd_error **errp)
{
    uint64_t off = start;
    while (off < end) {
        if (end - off < 8) {
            /* QEMU reads the extension header past the end, then refuses */
            return vd_error_set(errp, EINVAL, "Header extension too large");
        }
        uint32_t magic = vd_ld_be32(hdr + off);
        uint32_t len = vd_ld_be32(hdr + off + 4);
        off += 8;
        if (len > end - off) {
            return vd_error_set(errp, EINVAL, "Header extension too large");
        }
        const uint8_t *data = hdr + off;
        switch (magic) {
        case QCOW2_EXT_END:
            return 0;
        case QCOW2_EXT_BACKING_FORMAT:
            if (len >= 16) {
                return vd_error_set(errp, EINVAL,
                                    "ERROR: ext_backing_format: len=%u too large (>=16)", len);
            }
            free(s->backing_format);
            s->backing_format = malloc(len + 1);
            if (!s->backing_format) {
                return vd_error_set(errp, ENOMEM, "out of memory");
            }
            memcpy(s->backing_format, data, len);
            s->backing_format[len] = 0;
            break;
        case QCOW2_EXT_FEATURE_TABLE:
            /* As QEMU: a short last entry is zero-padded, and the table
             * ends at the first entry without a name. */
            for (uint32_t i = 0; i < len; i += 48) {
                uint8_t e[48] = {0};
                memcpy(e, data + i, len - i < 48 ? len - i : 48);
                char name[47];
                memcpy(name, e + 2, 46);
                name[46] = 0;
                if (!name[0]) {
                    break;
                }
                char *entry = vd_asprintf("%u:%u:%s", e[0], e[1], name);
                char **n = entry ? realloc(s->feature_names,
                                           (s->nb_feature_names + 1) * sizeof(*n))
                                 : NULL;
                if (!n) {
                    free(entry);
                    return vd_error_set(errp, ENOMEM, "out of memory");
                }
                s->feature_names = n;
                n[s->nb_feature_names++] = entry;
            }
            break;
        case QCOW2_EXT_CRYPTO:
            /* kept with the unknown ones, read by crypto.c */
            *crypto_ext = true;
            if (add_unknown_ext(s, magic, data, len) < 0) {
                return vd_error_set(errp, ENOMEM, "out of memory");
            }
            break;
        case QCOW2_EXT_BITMAPS:
            if (len != 24) {
                return vd_error_set(errp, EINVAL, "bitmaps_ext: Invalid extension length");
            }
            if (!(s->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)) {
                /* written by a program without bitmap support: stale,
                 * dropped on the next header rewrite as QEMU does */
                *need_header_update = true;
                break;
            }
            s->nb_bitmaps = vd_ld_be32(data);
            if (vd_ld_be32(data + 4)) {
                return vd_error_set(errp, EINVAL, "bitmaps_ext: Reserved field is not zero");
            }
            s->bitmap_directory_size = vd_ld_be64(data + 8);
            s->bitmap_directory_offset = vd_ld_be64(data + 16);
            if (s->nb_bitmaps > QCOW2_MAX_BITMAPS) {
                return vd_error_set(errp, EINVAL,
                                    "bitmaps_ext: Image has %u bitmaps, exceeding the QEMU "
                                    "supported maximum of %u",
                                    s->nb_bitmaps, QCOW2_MAX_BITMAPS);
            }
            if (s->nb_bitmaps == 0) {
                return vd_error_set(errp, EINVAL, "found bitmaps extension with zero bitmaps");
            }
            if (qcow2_offset_into_cluster(s, s->bitmap_directory_offset)) {
                return vd_error_set(errp, EINVAL,
                                    "bitmaps_ext: invalid bitmap directory offset");
            }
            if (s->bitmap_directory_size > QCOW2_MAX_BITMAP_DIR_BYTES) {
                return vd_error_set(errp, EINVAL,
                                    "bitmaps_ext: bitmap directory size (%llu) exceeds the "
                                    "maximum supported size (%u)",
                                    (unsigned long long)s->bitmap_directory_size,
                                    QCOW2_MAX_BITMAP_DIR_BYTES);
            }
            s->has_bitmaps_ext = true;
            break;
        case QCOW2_EXT_DATA_FILE:
            /* parsed by datafile.c, kept as read for header rewrites */
            if (qcow2_data_file_parse_ext(s, data, len, errp) < 0) {
                return -EINVAL;
            }
            if (add_unknown_ext(s, magic, data, len) < 0) {
                return vd_error_set(errp, ENOMEM, "out of memory");
            }
            break;
        default:
            if (add_unknown_ext(s, magic, data, len) < 0) {
                return vd_error_set(errp, ENOMEM, "out of memory");
            }
            break;
        }
        off += ((uint64_t)len + 7) & ~7ull;
    }
    return 0;
}

/*
 * "Unsupported qcow2 feature(s): name, name" as QEMU words it: the named
 * incompatible bits in the order of the image's own feature table, then all
 * remaining bits as one "Unknown incompatible feature: MASK".
 */
static int report_unsupported(qcow2_state *s, uint64_t mask, vd_error **errp)
{
    char msg[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < s->nb_feature_names; i++) {
        unsigned type, bit;
        int consumed = 0;
        if (sscanf(s->feature_names[i], "%u:%u:%n", &type, &bit, &consumed) != 2 ||
            consumed == 0 || type != 0 || bit > 63 || !(mask & (1ull << bit))) {
            continue;
        }
        int n = snprintf(msg + used, sizeof(msg) - used, "%s%s", used ? ", " : "",
                         s->feature_names[i] + consumed);
        mask &= ~(1ull << bit);
        if (n < 0 || (size_t)n >= sizeof(msg) - used) {
            break;
        }
        used += (size_t)n;
    }
    if (mask && used < sizeof(msg)) {
        snprintf(msg + used, sizeof(msg) - used, "%sUnknown incompatible feature: %llx",
                 used ? ", " : "", (unsigned long long)mask);
    }
    return vd_error_set(errp, ENOTSUP, "Unsupported qcow2 feature(s): %s", msg);
}

static int parse_cache_options(qcow2_state *s, vd_opts *opts, uint64_t *l2_cache_size,
                               uint64_t *l2_entry_size, uint64_t *rc_cache_size,
                               vd_error **errp)
{
    uint64_t cs = s->cluster_size;
    uint64_t max_l2_entries = vd_div_round_up(s->size ? s->size : 1, cs);
    uint64_t max_l2_cache;
    uint64_t min_rc = (uint64_t)MIN_REFCOUNT_CACHE_ENTRIES * cs;
    uint64_t combined = 0, l2_max = DEFAULT_L2_CACHE_MAX;
    bool combined_set = vd_opts_get(opts, "cache-size") != NULL;
    bool l2_set = vd_opts_get(opts, "l2-cache-size") != NULL;
    bool rc_set = vd_opts_get(opts, "refcount-cache-size") != NULL;

    if (vd_mul_overflow(max_l2_entries, 8, &max_l2_cache) ||
        vd_align_up_overflow(max_l2_cache, cs, &max_l2_cache)) {
        max_l2_cache = UINT64_MAX;
    }
    if (vd_opts_get_size(opts, "cache-size", 0, &combined, errp) < 0 ||
        vd_opts_get_size(opts, "l2-cache-size", DEFAULT_L2_CACHE_MAX, &l2_max, errp) < 0 ||
        vd_opts_get_size(opts, "refcount-cache-size", min_rc, rc_cache_size, errp) < 0 ||
        vd_opts_get_size(opts, "l2-cache-entry-size", cs, l2_entry_size, errp) < 0) {
        return -EINVAL;
    }
    *l2_cache_size = VD_MIN(max_l2_cache, l2_max);
    if (combined_set) {
        if (l2_set && rc_set) {
            return vd_error_set(errp, EINVAL, "cache-size, l2-cache-size and "
                                "refcount-cache-size may not be set at the same time");
        } else if (l2_set && l2_max > combined) {
            return vd_error_set(errp, EINVAL, "l2-cache-size may not exceed cache-size");
        } else if (rc_set && *rc_cache_size > combined) {
            return vd_error_set(errp, EINVAL, "refcount-cache-size may not exceed cache-size");
        }
        if (l2_set) {
            *rc_cache_size = combined - *l2_cache_size;
        } else if (rc_set) {
            *l2_cache_size = combined - *rc_cache_size;
        } else if (max_l2_cache != UINT64_MAX && combined >= max_l2_cache + min_rc) {
            *l2_cache_size = max_l2_cache;
            *rc_cache_size = combined - *l2_cache_size;
        } else {
            *rc_cache_size = VD_MIN(combined, min_rc);
            *l2_cache_size = combined - *rc_cache_size;
        }
    }
    if (*l2_entry_size < 512 || *l2_entry_size > cs || !vd_is_pow2(*l2_entry_size)) {
        return vd_error_set(errp, EINVAL,
                            "L2 cache entry size must be a power of two between 512 and the "
                            "cluster size (%u)",
                            s->cluster_size);
    }
    return 0;
}

/*
 * Runs before every L2 slice write-back: the data its entries point to must
 * be on disk first, or a power cut leaves an entry pointing at old bytes (or
 * at a cluster of the data file that never got them).  The refcount
 * dependency alone does not order this when no refcount changed (a reused
 * zero cluster, lazy refcounts, an external data file).  QEMU flushes here
 * too.  Called by the cache under s->lock.
 */
static int qcow2_before_l2_write(void *opaque, uint64_t offset, uint64_t len)
{
    qcow2_state *s = opaque;
    if (s->data_unflushed) {
        int ret = vd_node_flush(s->data);
        if (ret < 0) {
            return ret;
        }
        s->data_unflushed = false;
    }
    return qcow2_cache_check_l2(s, offset, len);
}

static int qcow2_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    uint8_t h[QCOW2_HEADER_LEN_CREATE];
    uint8_t *hdr = NULL;
    int ret;
    bool crypto_ext = false, need_header_update = false;

    s->bs = bs;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->inflight_cond, NULL);

    int64_t file_len = vd_node_get_length(bs->file);
    if (file_len < 0) {
        ret = vd_error_setg_errno(errp, (int)-file_len, "Could not get the size of '%s'",
                                  bs->filename);
        goto fail;
    }
    memset(h, 0, sizeof(h));
    ret = vd_node_pread(bs->file, 0, VD_MIN(sizeof(h), (uint64_t)file_len), h, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, -ret, "Could not read qcow2 header");
        goto fail;
    }
    if (file_len < QCOW2_V2_HEADER_LEN || vd_ld_be32(h) != QCOW2_MAGIC) {
        ret = vd_error_set(errp, EINVAL, "Image is not in qcow2 format");
        goto fail;
    }
    s->version = vd_ld_be32(h + 4);
    if (s->version < 2 || s->version > 3) {
        ret = vd_error_set(errp, ENOTSUP, "Unsupported qcow2 version %u", s->version);
        goto fail;
    }
    s->cluster_bits = vd_ld_be32(h + 20);
    if (s->cluster_bits < QCOW2_MIN_CLUSTER_BITS || s->cluster_bits > QCOW2_MAX_CLUSTER_BITS) {
        ret = vd_error_set(errp, EINVAL, "Unsupported cluster size: 2^%u", s->cluster_bits);
        goto fail;
    }
    s->cluster_size = 1u << s->cluster_bits;
    s->l2_bits = s->cluster_bits - 3;
    s->l2_size = 1u << s->l2_bits;
    s->size = vd_ld_be64(h + 24);
    s->crypt_method = vd_ld_be32(h + 32);
    s->l1_size = vd_ld_be32(h + 36);
    s->l1_table_offset = vd_ld_be64(h + 40);
    s->refcount_table_offset = vd_ld_be64(h + 48);
    s->refcount_table_clusters = vd_ld_be32(h + 56);
    s->nb_snapshots = vd_ld_be32(h + 60);
    s->snapshots_offset = vd_ld_be64(h + 64);
    uint64_t backing_offset = vd_ld_be64(h + 8);
    uint32_t backing_size = vd_ld_be32(h + 16);

    if (s->version == 2) {
        s->incompatible_features = 0;
        s->compatible_features = 0;
        s->autoclear_features = 0;
        s->refcount_order = 4;
        s->header_length = QCOW2_V2_HEADER_LEN;
    } else {
        s->incompatible_features = vd_ld_be64(h + 72);
        s->compatible_features = vd_ld_be64(h + 80);
        s->autoclear_features = vd_ld_be64(h + 88);
        s->refcount_order = vd_ld_be32(h + 96);
        s->header_length = vd_ld_be32(h + 100);
        if (s->header_length < QCOW2_V3_HEADER_LEN) {
            ret = vd_error_set(errp, EINVAL, "qcow2 header too short");
            goto fail;
        }
        if (s->header_length > s->cluster_size) {
            ret = vd_error_set(errp, EINVAL, "qcow2 header exceeds cluster size");
            goto fail;
        }
    }

    /* the whole first cluster: header, extensions, backing file name */
    hdr = vd_aligned_alloc(4096, s->cluster_size);
    if (!hdr) {
        ret = vd_error_set(errp, ENOMEM, "out of memory");
        goto fail;
    }
    memset(hdr, 0, s->cluster_size);
    ret = vd_node_pread(bs->file, 0, VD_MIN((uint64_t)s->cluster_size, (uint64_t)file_len),
                        hdr, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, -ret, "Could not read qcow2 header");
        goto fail;
    }
    if (s->header_length > QCOW2_V3_HEADER_LEN) {
        s->compression_type = hdr[104];
    }
    if (s->header_length > QCOW2_HEADER_LEN_CREATE) {
        s->header_tail_len = s->header_length - QCOW2_HEADER_LEN_CREATE;
        s->header_tail = malloc(s->header_tail_len);
        if (!s->header_tail) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(s->header_tail, hdr + QCOW2_HEADER_LEN_CREATE, s->header_tail_len);
    }

    if (backing_offset > s->cluster_size) {
        ret = vd_error_set(errp, EINVAL, "Invalid backing file offset");
        goto fail;
    }
    uint64_t ext_end = backing_offset ? backing_offset : s->cluster_size;
    uint64_t ext_start = s->version == 2 ? QCOW2_V2_HEADER_LEN : s->header_length;
    if (ext_start < ext_end) {
        ret = read_extensions(s, hdr, ext_start, ext_end, &crypto_ext, &need_header_update,
                              errp);
        if (ret < 0) {
            goto fail;
        }
    }
    uint64_t bm_dir_end;
    if (s->has_bitmaps_ext &&
        (vd_add_overflow(s->bitmap_directory_offset, s->bitmap_directory_size, &bm_dir_end) ||
         bm_dir_end > (uint64_t)file_len)) {
        /* read whole (up to 64 MiB): bound it by the file */
        ret = vd_error_set(errp, EINVAL, "bitmaps_ext: bitmap directory is past the end of "
                           "the file");
        goto fail;
    }

    uint64_t unknown = s->incompatible_features & ~QCOW2_INCOMPAT_KNOWN;
    if (unknown) {
        ret = report_unsupported(s, unknown, errp);
        goto fail;
    }
    if (s->incompatible_features & QCOW2_INCOMPAT_EXTL2) {
        /* subcluster.c: 16-byte entries, 32 subclusters of >= 512 bytes */
        s->extended_l2 = true;
        s->l2_bits = s->cluster_bits - 4;
        s->l2_size = 1u << s->l2_bits;
        s->sc_bits = s->cluster_bits - 5;
        if (s->sc_bits < QCOW2_MIN_CLUSTER_BITS) {
            ret = vd_error_set(errp, EINVAL, "Unsupported subcluster size: %u",
                               1u << s->sc_bits);
            goto fail;
        }
    }
    if (s->incompatible_features & QCOW2_INCOMPAT_CORRUPT) {
        /* Writes are refused; check -r all may still repair the image. */
        s->corrupt_ro = !bs->read_only;
    }
    if (s->refcount_order > 6) {
        ret = vd_error_set(errp, EINVAL,
                           "Reference count entry width too large; may not exceed 64 bits");
        goto fail;
    }
    s->refcount_bits = 1u << s->refcount_order;
    s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ull << s->refcount_bits) - 1;
    s->refcount_block_bits = s->cluster_bits + 3 - s->refcount_order;

    /* compression type */
    if (s->compression_type > QCOW2_COMPRESSION_ZSTD) {
        ret = vd_error_set(errp, ENOTSUP, "qcow2: unknown compression type: %u",
                           s->compression_type);
        goto fail;
    }
    if (s->compression_type == QCOW2_COMPRESSION_ZLIB) {
        if (s->incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
            ret = vd_error_set(errp, EINVAL,
                               "qcow2: Compression type incompatible feature bit must not be set");
            goto fail;
        }
    } else if (!(s->incompatible_features & QCOW2_INCOMPAT_COMPRESSION)) {
        ret = vd_error_set(errp, EINVAL,
                           "qcow2: Compression type incompatible feature bit must be set");
        goto fail;
    }
    s->csize_shift = 62 - (s->cluster_bits - 8);
    s->csize_mask = (1ull << (s->cluster_bits - 8)) - 1;
    s->cluster_offset_mask = (1ull << s->csize_shift) - 1;

    if (s->crypt_method > 2) {
        ret = vd_error_set(errp, EINVAL, "Unsupported encryption method: %u", s->crypt_method);
        goto fail;
    }

    /* refcount table */
    if (s->refcount_table_clusters > QCOW2_MAX_REFTABLE_BYTES / s->cluster_size) {
        ret = vd_error_set(errp, EINVAL, "Reference count table too large");
        goto fail;
    }
    if (s->refcount_table_clusters == 0) {
        ret = vd_error_set(errp, EINVAL, "Image does not contain a reference count table");
        goto fail;
    }
    if (!table_ok(s, s->refcount_table_offset, s->refcount_table_clusters, s->cluster_size)) {
        ret = vd_error_set(errp, EINVAL, "Reference count table offset invalid");
        goto fail;
    }
    /* tables are read whole at open: bound them by the file, not only by
     * QEMU's maxima (a one-cluster file must not cost 8 or 32 MiB) */
    if (s->refcount_table_offset +
            ((uint64_t)s->refcount_table_clusters << s->cluster_bits) > (uint64_t)file_len) {
        ret = vd_error_set(errp, EINVAL, "Reference count table is past the end of the file");
        goto fail;
    }

    /* snapshot table bounds */
    if (s->nb_snapshots > QCOW2_MAX_SNAPSHOTS) {
        ret = vd_error_set(errp, EINVAL, "Snapshot table too large");
        goto fail;
    }
    if (!table_ok(s, s->snapshots_offset, s->nb_snapshots, 40)) {
        ret = vd_error_set(errp, EINVAL, "Snapshot table offset invalid");
        goto fail;
    }

    /* L1 table */
    if (s->l1_size > QCOW2_MAX_L1_BYTES / 8) {
        ret = vd_error_set(errp, EFBIG, "Active L1 table too large");
        goto fail;
    }
    uint64_t l1_needed = qcow2_size_to_l1(s, s->size);
    if (s->size > (uint64_t)INT64_MAX || l1_needed > INT32_MAX) {
        ret = vd_error_set(errp, EFBIG, "Image is too big");
        goto fail;
    }
    if (s->l1_size < l1_needed) {
        ret = vd_error_set(errp, EINVAL, "L1 table is too small");
        goto fail;
    }
    if (s->l1_size && !table_ok(s, s->l1_table_offset, s->l1_size, 8)) {
        ret = vd_error_set(errp, EINVAL, "Active L1 table offset invalid");
        goto fail;
    }
    if (s->l1_size && s->l1_table_offset + (uint64_t)s->l1_size * 8 > (uint64_t)file_len) {
        ret = vd_error_set(errp, EINVAL, "L1 table is past the end of the file");
        goto fail;
    }

    /* backing file name */
    if (backing_offset) {
        if (backing_size > VD_MIN(QCOW2_MAX_BACKING_NAME, s->cluster_size - backing_offset)) {
            ret = vd_error_set(errp, EINVAL, "Backing file name too long");
            goto fail;
        }
        s->backing_file = malloc((size_t)backing_size + 1);
        if (!s->backing_file) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
            goto fail;
        }
        memcpy(s->backing_file, hdr + backing_offset, backing_size);
        s->backing_file[backing_size] = 0;
        if (strlen(s->backing_file) != backing_size) {
            ret = vd_error_set(errp, EINVAL, "Backing file name contains a NUL byte");
            goto fail;
        }
    }
    free(hdr);
    hdr = NULL;

    if (s->l1_size) {
        s->l1_table = vd_malloc((size_t)s->l1_size * 8);
        if (!s->l1_table) {
            ret = vd_error_set(errp, ENOMEM, "Could not allocate L1 table");
            goto fail;
        }
        ret = vd_node_pread(bs->file, s->l1_table_offset, (uint64_t)s->l1_size * 8,
                            s->l1_table, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, -ret, "Could not read L1 table");
            goto fail;
        }
        for (uint32_t i = 0; i < s->l1_size; i++) {
            s->l1_table[i] = vd_ld_be64(&s->l1_table[i]);
        }
    }
    ret = qcow2_refcount_init(s, errp);
    if (ret < 0) {
        goto fail;
    }
    if (!bs->read_only && !(bs->flags & VD_NODE_CHECK)) {
        /* a refcount block past the end of the file would be read as zeroes
         * and written back there, into a sparse file of any size: refuse
         * to write until check -r rebuilds the refcounts (reads never
         * follow refcount blocks, and check reports them as corruption) */
        for (uint64_t i = 0; i < s->refcount_table_size; i++) {
            uint64_t off = s->refcount_table[i] & REFT_OFFSET_MASK;
            if (off && off + s->cluster_size > (uint64_t)file_len) {
                ret = vd_error_set(errp, EINVAL, "Refcount block %llu at %#llx is past the end "
                                   "of the file; repair it with 'vdisk check -r all'",
                                   (unsigned long long)i, (unsigned long long)off);
                goto fail;
            }
        }
    }

    /* options */
    bool lazy;
    if (vd_opts_get_bool(opts, "lazy-refcounts",
                         (s->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) != 0, &lazy,
                         errp) < 0) {
        ret = -EINVAL;
        goto fail;
    }
    if (lazy && s->version < 3) {
        ret = vd_error_set(errp, EINVAL, "Lazy refcounts require a qcow2 image with at least "
                           "qemu 1.1 compatibility level");
        goto fail;
    }
    s->use_lazy_refcounts = lazy;
    bool req, snap, other;
    if (vd_opts_get_bool(opts, "pass-discard-request", bs->discard_unmap, &req, errp) < 0 ||
        vd_opts_get_bool(opts, "pass-discard-snapshot", true, &snap, errp) < 0 ||
        vd_opts_get_bool(opts, "pass-discard-other", false, &other, errp) < 0) {
        ret = -EINVAL;
        goto fail;
    }
    s->discard_passthrough[QCOW2_DISCARD_NEVER] = false;
    s->discard_passthrough[QCOW2_DISCARD_ALWAYS] = true;
    s->discard_passthrough[QCOW2_DISCARD_REQUEST] = req;
    s->discard_passthrough[QCOW2_DISCARD_SNAPSHOT] = snap;
    s->discard_passthrough[QCOW2_DISCARD_OTHER] = other;

    int mode;
    const char *tmpl = vd_opts_get(opts, "overlap-check.template");
    const char *ol = vd_opts_get(opts, "overlap-check");
    if (tmpl && ol && strcmp(tmpl, ol)) {
        ret = vd_error_set(errp, EINVAL, "Conflicting values for qcow2 options "
                           "'overlap-check' ('%s') and 'overlap-check.template' ('%s')",
                           ol, tmpl);
        goto fail;
    }
    const char *ol_mode = tmpl ? tmpl : ol ? ol : "cached";
    for (mode = 0; overlap_modes[mode] && strcmp(overlap_modes[mode], ol_mode); mode++) {
    }
    if (!overlap_modes[mode]) {
        /* QEMU's words, for either key (iotest 137) */
        ret = vd_error_set(errp, EINVAL, "Unsupported value '%s' for qcow2 option "
                           "'overlap-check'. Allowed are any of the following: none, "
                           "constant, cached, all", ol_mode);
        goto fail;
    }
    static const unsigned templates[] = {0, QCOW2_OL_CONSTANT, QCOW2_OL_CACHED, QCOW2_OL_ALL};
    s->overlap_check = templates[mode];
    static const char *const ol_keys[] = {
        "overlap-check.main-header", "overlap-check.active-l1",
        "overlap-check.active-l2", "overlap-check.refcount-table",
        "overlap-check.refcount-block", "overlap-check.snapshot-table",
        "overlap-check.inactive-l1", "overlap-check.inactive-l2",
        "overlap-check.bitmap-directory",
    };
    for (unsigned i = 0; i < VD_ARRAY_SIZE(ol_keys); i++) {
        bool on;
        if (vd_opts_get_bool(opts, ol_keys[i], (s->overlap_check >> i) & 1, &on, errp) < 0) {
            ret = -EINVAL;
            goto fail;
        }
        s->overlap_check = on ? (s->overlap_check | (1u << i)) : (s->overlap_check & ~(1u << i));
    }
    uint64_t interval;
    const char *ci = vd_opts_get(opts, "cache-clean-interval");
    if (ci && ci[0] == '-' && ci[1] >= '0' && ci[1] <= '9') {
        /* QEMU reads it as an unsigned number: -1 wraps to a huge one */
        ret = vd_error_set(errp, EINVAL, "Cache clean interval too big");
        goto fail;
    }
    if (vd_opts_get_u64(opts, "cache-clean-interval", DEFAULT_CACHE_CLEAN_INTERVAL, &interval,
                        errp) < 0) {
        ret = -EINVAL;
        goto fail;
    }
    if (interval > UINT32_MAX) {
        ret = vd_error_set(errp, EINVAL, "Cache clean interval too big");
        goto fail;
    }
    s->cache_clean_interval = interval;
    ret = qcow2_data_file_open(bs, opts, errp); /* datafile.c: sets s->data */
    if (ret < 0) {
        goto fail;
    }
    bs->request_alignment = 1; /* qcow2_crypto_open may raise it */
    ret = qcow2_crypto_open(bs, s, opts, errp); /* crypto.c */
    if (ret < 0) {
        goto fail;
    }

    uint64_t l2_cache_size, l2_entry_size, rc_cache_size;
    ret = parse_cache_options(s, opts, &l2_cache_size, &l2_entry_size, &rc_cache_size, errp);
    if (ret < 0) {
        goto fail;
    }
    uint64_t l2_entries = l2_cache_size / l2_entry_size;
    if (l2_entries < MIN_L2_CACHE_ENTRIES) {
        l2_entries = MIN_L2_CACHE_ENTRIES;
    }
    if (l2_entries > INT32_MAX) {
        ret = vd_error_set(errp, EINVAL, "L2 cache size too big");
        goto fail;
    }
    uint64_t rc_entries = rc_cache_size / s->cluster_size;
    if (rc_entries < MIN_REFCOUNT_CACHE_ENTRIES) {
        rc_entries = MIN_REFCOUNT_CACHE_ENTRIES;
    }
    if (rc_entries > INT32_MAX) {
        ret = vd_error_set(errp, EINVAL, "Refcount cache size too big");
        goto fail;
    }
    s->l2_slice_size = l2_entry_size;
    s->l2_slice_entries = (uint32_t)(l2_entry_size / qcow2_l2_entry_size(s));
    s->l2_cache = vd_cache_new(bs->file, l2_entry_size, l2_entries);
    s->refcount_cache = vd_cache_new(bs->file, s->cluster_size, rc_entries);
    if (s->l2_cache && s->refcount_cache) {
        vd_cache_set_write_event(s->l2_cache, VD_EV_L2_UPDATE);
        vd_cache_set_load_event(s->l2_cache, VD_EV_L2_LOAD);
        vd_cache_set_write_event(s->refcount_cache, VD_EV_REFBLOCK_UPDATE_PART);
    }
    if (!s->l2_cache || !s->refcount_cache) {
        ret = vd_error_set(errp, ENOMEM, "Could not allocate metadata caches");
        goto fail;
    }
    vd_cache_set_check(s->l2_cache, qcow2_before_l2_write, s);
    vd_cache_set_check(s->refcount_cache, qcow2_cache_check_refblock, s);

    ret = qcow2_read_snapshots(s, errp);
    if (ret < 0) {
        goto fail;
    }
    ret = qcow2_bitmaps_open(s, errp); /* bitmap.c: the directory, dirty tracking */
    if (ret < 0) {
        goto fail;
    }

    if (!bs->read_only) {
        /* Unknown autoclear bits are cleared (bitmap.c keeps enabled
         * bitmaps up to date). */
        uint64_t keep = QCOW2_AUTOCLEAR_BITMAPS | QCOW2_AUTOCLEAR_DATA_FILE_RAW;
        if (s->autoclear_features & ~keep) {
            s->autoclear_features &= keep;
            need_header_update = true;
        }
        if (s->incompatible_features & QCOW2_INCOMPAT_DIRTY) {
            s->needs_repair = true;
        }
        if (need_header_update && !s->corrupt_ro) {
            ret = qcow2_update_header(s);
            if (ret == 0) {
                ret = vd_node_flush(bs->file);
            }
            if (ret < 0) {
                vd_error_setg_errno(errp, -ret, "Could not update qcow2 header");
                goto fail;
            }
        }
    }

    if (s->backing_file) {
        bs->backing_file = vd_strdup(s->backing_file);
        if (s->backing_format) {
            bs->backing_format = vd_strdup(s->backing_format);
        }
    }
    bs->pwrite_zeroes_alignment = s->cluster_size;
    bs->has_zero_init = true;
    s->nb_compress_threads = 0;
    if (s->needs_repair && !s->corrupt_ro && !(bs->flags & VD_NODE_CHECK)) {
        /* a dirty image opened read-write is repaired now, as QEMU does;
         * `vdisk check` opens with VD_OPEN_CHECK to report the damage */
        vd_check_res res;
        memset(&res, 0, sizeof(res));
        pthread_mutex_lock(&s->lock);
        s->needs_repair = false;
        /* QEMU prints this repair's lines (iotest 039) */
        bool was = vd_check_auto_begin();
        ret = qcow2_check_locked(s, &res, VD_CHECK_FIX_LEAKS | VD_CHECK_FIX_ERRORS, errp);
        vd_check_auto_end(was);
        pthread_mutex_unlock(&s->lock);
        if (ret == 0 && (res.check_errors || res.corruptions)) {
            ret = vd_error_set(errp, EIO, "Could not repair the dirty image '%s'", bs->filename);
        }
        if (ret < 0) {
            goto fail;
        }
    }
    ret = qcow2_bitmaps_mark_open(s); /* bitmap.c */
    if (ret < 0) {
        vd_error_setg_errno(errp, -ret, "Could not mark the bitmaps of '%s' in use", bs->filename);
        goto fail;
    }
    return 0;

fail:
    free(hdr);
    free_state(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->inflight_cond);
    return ret < 0 ? ret : -EINVAL;
}

static int qcow2_flush(vd_node *bs)
{
    qcow2_state *s = bs->opaque;
    int ret;
    pthread_mutex_lock(&s->lock);
    if (s->broken) {
        pthread_mutex_unlock(&s->lock);
        return -EIO;
    }
    ret = vd_cache_write(s->l2_cache);
    if (ret == 0 && !(s->incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
        ret = vd_cache_write(s->refcount_cache);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static void qcow2_close(vd_node *bs)
{
    qcow2_state *s = bs->opaque;
    if (!bs->read_only && !s->broken) {
        pthread_mutex_lock(&s->lock);
        if (s->needs_repair && !s->corrupt_ro) {
            /* opened read-write while dirty and never written: repair now,
             * as QEMU would have at open */
            (void)qcow2_begin_metadata_change(s);
        }
        (void)qcow2_bitmaps_close(s); /* a failure leaves them in_use */
        int ret = vd_cache_flush(s->l2_cache);
        if (ret == 0) {
            ret = vd_cache_flush(s->refcount_cache);
        }
        if (ret == 0 && s->dirty_lazy && !s->needs_repair) {
            (void)qcow2_mark_clean(s);
        }
        pthread_mutex_unlock(&s->lock);
    }
    free_state(s);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->inflight_cond);
}

static int64_t qcow2_get_length(vd_node *bs)
{
    qcow2_state *s = bs->opaque;
    return (int64_t)s->size;
}

static uint32_t qcow2_cluster_size_cb(vd_node *bs)
{
    qcow2_state *s = bs->opaque;
    return s->cluster_size;
}

/* Persistent bitmaps need the version 3 header's extensions. */
static bool qcow2_supports_bitmaps(vd_node *bs)
{
    qcow2_state *s = bs->opaque;
    return s->version >= 3;
}

/* --------------------------------------------------------------- info */

static int qcow2_get_info(vd_node *bs, vd_info *info, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    char *bitmaps = NULL;

    pthread_mutex_lock(&s->lock);
    info->cluster_size = s->cluster_size;
    /* QEMU's qcow2_vm_state_offset: the first guest offset past what the
     * L1 table covers for the virtual size */
    uint64_t span = (uint64_t)1 << (s->l2_bits + s->cluster_bits);
    info->vm_state_offset = vd_div_round_up(s->size, span) * span;
    info->has_dirty_flag = true;
    info->dirty_flag = (s->incompatible_features & QCOW2_INCOMPAT_DIRTY) != 0;
    info->corrupt = (s->incompatible_features & QCOW2_INCOMPAT_CORRUPT) != 0;
    info->encrypted = s->crypt_method != 0;
    info->weak_encryption = s->crypt_method == QCOW2_CRYPT_AES;
    char *enc = qcow2_crypto_info_json(s); /* crypto.c */
    if (!enc) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    if (s->bitmaps_loaded && s->bitmaps) {
        size_t cap = 64, len = 0;
        bitmaps = malloc(cap);
        if (!bitmaps) {
            pthread_mutex_unlock(&s->lock);
            return vd_error_set(errp, ENOMEM, "out of memory");
        }
        len = (size_t)snprintf(bitmaps, cap, ",\"bitmaps\":[");
        for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
            const qcow2_bitmap *b = &s->bitmaps[i];
            char flags[32] = "";
            if (b->flags & QCOW2_BME_IN_USE) {
                strcat(flags, "\"in-use\"");
            }
            if (b->flags & QCOW2_BME_AUTO) {
                strcat(flags, *flags ? ",\"auto\"" : "\"auto\"");
            }
            /* names are at most 1023 bytes; escape quotes and backslashes */
            char name[2048 + 8];
            size_t n = 0;
            for (const char *p = b->name; *p && n < sizeof(name) - 8; p++) {
                unsigned char ch = (unsigned char)*p;
                if (ch == '"' || ch == '\\') {
                    name[n++] = '\\';
                    name[n++] = (char)ch;
                } else if (ch < 0x20) {
                    n += (size_t)snprintf(name + n, sizeof(name) - n, "\\u%04x", ch);
                } else {
                    name[n++] = (char)ch;
                }
            }
            name[n] = 0;
            char *item = vd_asprintf("%s{\"flags\":[%s],\"name\":\"%s\",\"granularity\":%llu}",
                                     i ? "," : "", flags, name,
                                     1ull << (b->granularity_bits & 63));
            if (!item) {
                free(bitmaps);
                pthread_mutex_unlock(&s->lock);
                return vd_error_set(errp, ENOMEM, "out of memory");
            }
            size_t il = strlen(item);
            if (len + il + 2 > cap) {
                cap = (len + il + 2) * 2;
                char *nb = realloc(bitmaps, cap);
                if (!nb) {
                    free(item);
                    free(bitmaps);
                    pthread_mutex_unlock(&s->lock);
                    return vd_error_set(errp, ENOMEM, "out of memory");
                }
                bitmaps = nb;
            }
            memcpy(bitmaps + len, item, il + 1);
            len += il;
            free(item);
        }
        strcpy(bitmaps + len, "]");
    }
    const char *ct = s->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib";
    if (s->version == 2) {
        info->format_specific_json = vd_asprintf(
            "{\"type\":\"qcow2\",\"data\":{\"compat\":\"0.10\",\"compression-type\":\"%s\","
            "\"refcount-bits\":%u%s}}",
            ct, s->refcount_bits, enc);
    } else {
        char *df = qcow2_data_file_info_json(s); /* datafile.c */
        info->format_specific_json = df ? vd_asprintf(
            "{\"type\":\"qcow2\",\"data\":{\"compat\":\"1.1\",\"compression-type\":\"%s\","
            "\"lazy-refcounts\":%s%s,\"refcount-bits\":%u%s%s,\"corrupt\":%s,"
            "\"extended-l2\":%s}}",
            ct, (s->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) ? "true" : "false",
            bitmaps ? bitmaps : "", s->refcount_bits, enc, df,
            (s->incompatible_features & QCOW2_INCOMPAT_CORRUPT) ? "true" : "false",
            s->extended_l2 ? "true" : "false") : NULL;
        free(df);
    }
    free(bitmaps);
    free(enc);
    pthread_mutex_unlock(&s->lock);
    if (!info->format_specific_json) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    return 0;
}

static int qcow2_snapshot_list(vd_node *bs, vd_snapshot_info **list, size_t *count,
                               vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    *list = NULL;
    *count = 0;
    if (!s->nb_snapshots || !s->snapshots) {
        return 0;
    }
    vd_snapshot_info *l = calloc(s->nb_snapshots, sizeof(*l));
    if (!l) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const qcow2_snapshot *sn = &s->snapshots[i];
        l[i].id = vd_strdup(sn->id);
        l[i].name = vd_strdup(sn->name);
        l[i].vm_state_size = sn->vm_state_size;
        l[i].date_sec = sn->date_sec;
        l[i].date_nsec = sn->date_nsec;
        l[i].vm_clock_nsec = sn->vm_clock_nsec;
        l[i].icount = sn->icount;
        l[i].disk_size = sn->disk_size;
        if (!l[i].id || !l[i].name) {
            vd_snapshot_list_free(l, s->nb_snapshots);
            return vd_error_set(errp, ENOMEM, "out of memory");
        }
    }
    *list = l;
    *count = s->nb_snapshots;
    return 0;
}

static int qcow2_change_backing_file(vd_node *bs, const char *backing_file,
                                     const char *backing_fmt, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    if (backing_file && strlen(backing_file) > QCOW2_MAX_BACKING_NAME) {
        return vd_error_set(errp, EINVAL, "Backing file name too long");
    }
    if (backing_fmt && strlen(backing_fmt) >= 16) {
        return vd_error_set(errp, EINVAL, "Backing format name too long");
    }
    pthread_mutex_lock(&s->lock);
    if (s->broken || s->corrupt_ro) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_set(errp, EIO, "Image '%s' is corrupt; cannot be written",
                            bs->filename);
    }
    char *old_file = s->backing_file, *old_fmt = s->backing_format;
    s->backing_file = backing_file && *backing_file ? vd_strdup(backing_file) : NULL;
    s->backing_format = s->backing_file && backing_fmt && *backing_fmt ? vd_strdup(backing_fmt)
                                                                       : NULL;
    int ret = qcow2_update_header(s);
    if (ret == 0) {
        ret = vd_node_flush(bs->file);
    }
    if (ret < 0) {
        free(s->backing_file);
        free(s->backing_format);
        s->backing_file = old_file;
        s->backing_format = old_fmt;
        pthread_mutex_unlock(&s->lock);
        if (ret == -ENOSPC) {
            return vd_error_set(errp, ENOSPC, "Backing file name does not fit in the header");
        }
        return vd_error_setg_errno(errp, -ret, "Could not update the qcow2 header");
    }
    free(old_file);
    free(old_fmt);
    free(bs->backing_file);
    free(bs->backing_format);
    bs->backing_file = vd_strdup(s->backing_file);
    bs->backing_format = vd_strdup(s->backing_format);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static int qcow2_make_empty(vd_node *bs, vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    pthread_mutex_lock(&s->lock);
    int ret = qcow2_begin_metadata_change(s);
    if (ret == 0) {
        qcow2_wait_inflight(s, 0, UINT64_MAX);
        ret = qcow2_cluster_discard(s, 0, s->size, QCOW2_DISCARD_SNAPSHOT, true);
    }
    if (ret == 0) {
        ret = vd_cache_flush(s->l2_cache);
    }
    pthread_mutex_unlock(&s->lock);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Could not empty '%s'", bs->filename);
    }
    return 0;
}

static int64_t qcow2_get_allocated_size(vd_node *bs)
{
    if (bs->file && bs->file->drv->get_allocated_size) {
        return bs->file->drv->get_allocated_size(bs->file);
    }
    return -ENOTSUP;
}

/* ------------------------------------------------------------- resize */

int qcow2_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                   vd_error **errp)
{
    qcow2_state *s = bs->opaque;
    int ret;
    (void)exact;

    if (size % 512) {
        return vd_error_set(errp, EINVAL, "The new size must be a multiple of 512");
    }
    pthread_mutex_lock(&s->lock);
    ret = qcow2_begin_metadata_change(s);
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        return vd_error_setg_errno(errp, -ret, "Cannot resize '%s'", bs->filename);
    }
    qcow2_wait_inflight(s, 0, UINT64_MAX);
    uint64_t old = s->size;
    uint64_t new_l1 = qcow2_size_to_l1(s, size);
    if (size != old && qcow2_bitmaps_resize(s, size) < 0) {
        ret = vd_error_set(errp, ENOTSUP, "Cannot resize an image with inconsistent "
                           "persistent bitmaps");
        goto out;
    }
    if (new_l1 > QCOW2_MAX_L1_BYTES / 8) {
        ret = vd_error_set(errp, EFBIG, "The image size is too large for file format 'qcow2' "
                           "(try using a larger cluster size)");
        goto out;
    }
    /* v3 snapshots keep their own disk size; bitmap.c resizes bitmaps */
    if (size != old && s->nb_snapshots && s->version < 3) {
        ret = vd_error_set(errp, ENOTSUP, "Can't resize a v2 image which has snapshots");
        goto out;
    }
    if (size < old) {
        if (prealloc != VD_PREALLOC_OFF) {
            ret = vd_error_set(errp, ENOTSUP,
                               "Preallocation can't be used for shrinking an image");
            goto out;
        }
        uint64_t start;
        if (vd_align_up_overflow(size, s->cluster_size, &start)) {
            start = UINT64_MAX;
        }
        if (start < old) {
            ret = qcow2_cluster_discard(s, start, old - start, QCOW2_DISCARD_ALWAYS, true);
            if (ret < 0) {
                vd_error_setg_errno(errp, -ret, "Failed to discard cropped clusters");
                goto out;
            }
        }
        ret = qcow2_shrink_l1_table(s, new_l1);
        if (ret < 0) {
            vd_error_setg_errno(errp, -ret, "Failed to reduce the number of L2 tables");
            goto out;
        }
        ret = vd_cache_flush(s->l2_cache);
        if (ret == 0) {
            ret = vd_cache_flush(s->refcount_cache);
        }
        if (ret == 0) {
            ret = qcow2_shrink_reftable(s);
        }
        if (ret < 0) {
            vd_error_setg_errno(errp, -ret, "Failed to discard unused refblocks");
            goto out;
        }
        int64_t file_len = vd_node_get_length(bs->file);
        if (file_len > 0) {
            int64_t last = qcow2_get_last_cluster(s, file_len);
            if (last >= 0 && (uint64_t)(last + 1) * s->cluster_size < (uint64_t)file_len) {
                vd_error *ign = NULL;
                (void)vd_node_truncate(bs->file, (uint64_t)(last + 1) * s->cluster_size,
                                       false, VD_PREALLOC_OFF, &ign);
                vd_error_free(ign);
            }
        }
    } else if (size > old) {
        ret = qcow2_grow_l1_table(s, new_l1, true);
        if (ret < 0) {
            vd_error_setg_errno(errp, -ret, "Failed to grow the L1 table");
            goto out;
        }
    }
    uint64_t saved = s->size;
    s->size = size;
    if (size > old && prealloc != VD_PREALLOC_OFF) {
        ret = qcow2_preallocate(s, old, size - old, prealloc, errp);
        if (ret < 0) {
            s->size = saved;
            goto out;
        }
    }
    uint8_t buf[8];
    vd_st_be64(buf, size);
    ret = vd_node_pwrite(bs->file, 24, 8, buf, 0);
    if (ret == 0) {
        ret = vd_node_flush(bs->file);
    }
    if (ret < 0) {
        s->size = saved;
        vd_error_setg_errno(errp, -ret, "Failed to update the image size");
        goto out;
    }
    if (qcow2_has_data_file(s) && s->data != bs->file && prealloc == VD_PREALLOC_OFF) {
        /* the external data file follows the virtual size, as in QEMU */
        ret = vd_node_truncate(s->data, size, exact, VD_PREALLOC_OFF, errp);
        if (ret < 0) {
            goto out;
        }
    }
    /* a longer backing file must not show through the new area */
    if (size > old && bs->backing) {
        int64_t blen = vd_node_get_length(bs->backing);
        if (blen > (int64_t)old) {
            /*
             * As QEMU: zero (sub)clusters from the first boundary after the
             * old end, explicit zero bytes before it; the partial last
             * cluster keeps the data below the old end.
             */
            uint64_t unit = s->extended_l2 ? (uint64_t)1 << s->sc_bits : s->cluster_size;
            uint64_t zero_start = vd_div_round_up(old, unit) * unit;
            if (size > zero_start) {
                ret = qcow2_cluster_zeroize(s, zero_start, size - zero_start, 0);
                if (ret == -ENOTSUP) {
                    ret = 0;
                }
                if (ret < 0) {
                    vd_error_setg_errno(errp, -ret, "Failed to zero out new clusters");
                    goto out;
                }
            }
            if (zero_start > old) {
                uint64_t len = VD_MIN(zero_start, size) - old;
                uint8_t *z = calloc(1, len);
                if (!z) {
                    ret = vd_error_set(errp, ENOMEM, "Failed to zero out the unaligned head");
                    goto out;
                }
                pthread_mutex_unlock(&s->lock);
                ret = qcow2_crypto_pwrite(bs, old, len, z, 0);
                pthread_mutex_lock(&s->lock);
                free(z);
                if (ret < 0) {
                    vd_error_setg_errno(errp, -ret, "Failed to zero out the new area");
                    goto out;
                }
            }
        }
    }
    ret = 0;
out:
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* ------------------------------------------------------------- create */

int qcow2_parse_version(const char *compat, int *version, vd_error **errp)
{
    if (!compat || !strcmp(compat, "1.1") || !strcmp(compat, "v3")) {
        *version = 3;
    } else if (!strcmp(compat, "0.10") || !strcmp(compat, "v2")) {
        *version = 2;
    } else {
        return vd_error_set(errp, EINVAL, "Parameter 'version' does not accept value '%s'",
                            compat);
    }
    return 0;
}

int qcow2_parse_create_opts(const vd_opts *opts, qcow2_create_params *p, bool need_size,
                            vd_error **errp)
{
    uint64_t rb;
    bool b;
    memset(p, 0, sizeof(*p));
    if (vd_opts_get_size(opts, "size", 0, &p->size, errp) < 0) {
        return -EINVAL;
    }
    (void)need_size;
    if (qcow2_parse_version(vd_opts_get(opts, "compat"), &p->version, errp) < 0) {
        return -EINVAL;
    }
    if (vd_opts_get_size(opts, "cluster_size", 65536, &p->cluster_size, errp) < 0) {
        return -EINVAL;
    }
    if (!vd_is_pow2(p->cluster_size) || p->cluster_size < 512 ||
        p->cluster_size > (2u << 20)) {
        return vd_error_set(errp, EINVAL,
                            "Cluster size must be a power of two between 512 and 2048k");
    }
    const char *pa = vd_opts_get(opts, "preallocation");
    p->prealloc = VD_PREALLOC_OFF;
    if (pa) {
        int v = vd_prealloc_parse(pa);
        if (v < 0) {
            return vd_error_set(errp, EINVAL,
                                "Parameter 'preallocation' does not accept value '%s'", pa);
        }
        p->prealloc = (vd_prealloc)v;
    }
    if (vd_opts_get_bool(opts, "lazy_refcounts", false, &p->lazy, errp) < 0) {
        return -EINVAL;
    }
    if (vd_opts_get_u64(opts, "refcount_bits", 16, &rb, errp) < 0) {
        return -EINVAL;
    }
    if (rb > 64 || !vd_is_pow2(rb)) {
        return vd_error_set(errp, EINVAL,
                            "Refcount width must be a power of two and may not exceed 64 bits");
    }
    p->refcount_order = vd_ctz64(rb);
    const char *ct = vd_opts_get(opts, "compression_type");
    p->compression_type = QCOW2_COMPRESSION_ZLIB;
    if (ct) {
        if (!strcmp(ct, "zstd")) {
            p->compression_type = QCOW2_COMPRESSION_ZSTD;
        } else if (strcmp(ct, "zlib")) {
            return vd_error_set(errp, EINVAL,
                                "Parameter 'compression-type' does not accept value '%s'", ct);
        }
    }
    if (p->version < 3 && rb != 16) {
        return vd_error_set(errp, EINVAL, "Different refcount widths than 16 bits require "
                            "compatibility level 1.1 or above (use version=v3 or greater)");
    }
    if (p->version < 3 && p->lazy) {
        return vd_error_set(errp, EINVAL, "Lazy refcounts only supported with compatibility "
                            "level 1.1 and above (use version=v3 or greater)");
    }
    if (p->version < 3 && p->compression_type != QCOW2_COMPRESSION_ZLIB) {
        return vd_error_set(errp, EINVAL, "Non-zlib compression type is only supported with "
                            "compatibility level 1.1 and above (use version=v3 or greater)");
    }
    p->backing_file = vd_opts_get(opts, "backing_file");
    p->backing_fmt = vd_opts_get(opts, "backing_fmt");
    if (p->backing_file && !*p->backing_file) {
        p->backing_file = NULL;
    }
    if (p->backing_fmt && !p->backing_file) {
        return vd_error_set(errp, EINVAL, "Backing format cannot be used without backing file");
    }
    if (vd_opts_get_bool(opts, "extended_l2", false, &p->extended_l2, errp) < 0) {
        return -EINVAL;
    }
    if (p->backing_file && p->prealloc != VD_PREALLOC_OFF && !p->extended_l2) {
        return vd_error_set(errp, EINVAL, "Backing file and preallocation can only be used at "
                            "the same time if extended_l2 is on");
    }
    if (p->backing_file && strlen(p->backing_file) > QCOW2_MAX_BACKING_NAME) {
        return vd_error_set(errp, EINVAL, "Backing file name too long");
    }
    if (p->backing_fmt && strlen(p->backing_fmt) >= 16) {
        return vd_error_set(errp, EINVAL, "Backing format name too long");
    }
    if (vd_opts_get_bool(opts, "encryption", false, &b, errp) < 0) {
        return -EINVAL;
    }
    if (p->extended_l2 && p->version < 3) {
        return vd_error_set(errp, EINVAL, "Extended L2 entries are only supported with "
                            "compatibility level 1.1 and above (use version=v3 or greater)");
    }
    if (p->extended_l2 && p->cluster_size < 16384) {
        return vd_error_set(errp, EINVAL, "Extended L2 entries are only supported with "
                            "cluster sizes of at least 16384 bytes");
    }
    if (qcow2_data_file_create_opts(opts, p->version, p->backing_file, &p->data_file,
                                    &p->data_file_raw, errp) < 0) {
        return -EINVAL;
    }
    if (p->data_file_raw && p->prealloc == VD_PREALLOC_OFF) {
        /* the raw data file and the mapping stay in sync (QEMU's rule) */
        p->prealloc = VD_PREALLOC_METADATA;
    }
    /* round up to whole sectors, as qemu-img does */
    if (p->size % 512) {
        if (vd_align_up_overflow(p->size, 512, &p->size)) {
            return vd_error_set(errp, EFBIG, "Image size too large");
        }
    }
    uint64_t l2_entries = p->cluster_size / (p->extended_l2 ? 16 : 8);
    uint64_t l1 = vd_div_round_up(vd_div_round_up(p->size, p->cluster_size), l2_entries);
    if (l1 > QCOW2_MAX_L1_BYTES / 8) {
        return vd_error_set(errp, EFBIG, "The image size is too large for file format 'qcow2' "
                            "(try using a larger cluster size)");
    }
    return 0;
}

static int qcow2_create_write(const char *filename, const vd_opts *opts,
                              const qcow2_create_params *pp, vd_error **errp);

static int qcow2_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    qcow2_create_params p;
    int ret = qcow2_parse_create_opts(opts, &p, true, errp);
    if (ret < 0) {
        return ret;
    }
    uint64_t cs = p.cluster_size;
    if (p.data_file && QCOW2_HEADER_LEN_CREATE + 16 + strlen(p.data_file) > cs) {
        return vd_error_set(errp, EINVAL, "Data file name does not fit in the header");
    }

    /* the protocol file: empty, with its own options (nocow ...) */
    vd_opts *fo = vd_opts_new();
    if (!fo) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    vd_opts_set(fo, "size", "0");
    for (size_t i = 0; i < vd_opts_count(opts); i++) {
        const char *k = vd_opts_key(opts, i);
        if (!strcmp(k, "nocow") || !strcmp(k, "extent_size_hint")) {
            vd_opts_set(fo, k, vd_opts_value(opts, i));
        }
    }
    ret = vd_create_file(filename, fo, errp);
    vd_opts_free(fo);
    if (ret < 0) {
        return ret;
    }
    /*
     * As QEMU's qcow2_co_create_opts: once the file exists, a failure
     * deletes it and the data file (even ones that existed before).
     */
    if (p.data_file) {
        ret = qcow2_data_file_create(filename, p.data_file, p.size, p.prealloc, errp); /* datafile.c */
        if (ret < 0) {
            vd_create_delete_file(filename);
            return ret;
        }
    }
    ret = qcow2_create_write(filename, opts, &p, errp);
    if (ret < 0) {
        vd_create_delete_file(filename);
        if (p.data_file) {
            qcow2_data_file_delete(filename, p.data_file); /* datafile.c */
        }
    }
    return ret;
}

/* The metadata of a new image whose file (and data file) exist. */
static int qcow2_create_write(const char *filename, const vd_opts *opts,
                              const qcow2_create_params *pp, vd_error **errp)
{
    const qcow2_create_params p = *pp;
    uint64_t cs = p.cluster_size;
    int ret;
    vd_node *file = vd_node_open_file(filename, NULL, VD_NODE_RDWR | VD_NODE_RESIZE, errp);
    if (!file) {
        return -EIO;
    }
    /* header cluster, refcount table (cluster 1), refcount block (cluster 2) */
    uint8_t *buf = vd_aligned_alloc(4096, 3 * cs);
    if (!buf) {
        vd_node_close(file);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    memset(buf, 0, 3 * cs);
    vd_st_be32(buf, QCOW2_MAGIC);
    vd_st_be32(buf + 4, (uint32_t)p.version);
    vd_st_be32(buf + 20, (uint32_t)vd_ctz64(cs));
    vd_st_be64(buf + 48, cs);
    vd_st_be32(buf + 56, 1);
    if (p.version >= 3) {
        uint64_t incompat = 0;
        if (p.compression_type != QCOW2_COMPRESSION_ZLIB) {
            incompat |= QCOW2_INCOMPAT_COMPRESSION;
        }
        if (p.extended_l2) {
            incompat |= QCOW2_INCOMPAT_EXTL2; /* subcluster.c */
        }
        if (p.data_file) {
            size_t pos = QCOW2_HEADER_LEN_CREATE;
            incompat |= QCOW2_INCOMPAT_DATA_FILE;
            vd_st_be64(buf + 88, p.data_file_raw ? QCOW2_AUTOCLEAR_DATA_FILE_RAW : 0);
            (void)qcow2_data_file_put_ext(buf, cs, &pos, p.data_file); /* fits: <= 1023 */
        }
        vd_st_be64(buf + 72, incompat);
        vd_st_be64(buf + 80, p.lazy ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
        vd_st_be32(buf + 96, (uint32_t)p.refcount_order);
        vd_st_be32(buf + 100, QCOW2_HEADER_LEN_CREATE);
        buf[104] = (uint8_t)p.compression_type;
    }
    vd_st_be64(buf + cs, 2 * cs);
    qcow2_state tmp;
    memset(&tmp, 0, sizeof(tmp));
    tmp.refcount_order = (uint32_t)p.refcount_order;
    tmp.refcount_bits = 1u << p.refcount_order;
    for (int i = 0; i < 3; i++) {
        qcow2_rc_set(&tmp, buf + 2 * cs, (uint64_t)i, 1);
    }
    ret = vd_node_pwrite(file, 0, 3 * cs, buf, 0);
    free(buf);
    if (ret == 0) {
        ret = vd_node_flush(file);
    }
    vd_node_close(file);
    if (ret < 0) {
        return vd_error_setg_errno(errp, -ret, "Could not write qcow2 header");
    }

    /* now as a qcow2 node: feature table, size (L1), preallocation, backing */
    vd_opts *oo = vd_opts_new();
    if (!oo) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    vd_opts_set(oo, "lazy-refcounts", "off");
    vd_node *bs = vd_node_open(filename, "qcow2", oo, VD_NODE_RDWR | VD_NODE_NO_BACKING |
                               VD_NODE_RESIZE, errp);
    vd_opts_free(oo);
    if (!bs) {
        return -EIO;
    }
    qcow2_state *s = bs->opaque;
    pthread_mutex_lock(&s->lock);
    ret = qcow2_update_header(s);
    pthread_mutex_unlock(&s->lock);
    if (ret < 0) {
        vd_error_setg_errno(errp, -ret, "Could not write qcow2 header");
        goto out;
    }
    ret = qcow2_truncate(bs, p.size, true, p.prealloc, errp);
    if (ret < 0) {
        goto out;
    }
    if (p.backing_file) {
        ret = qcow2_change_backing_file(bs, p.backing_file, p.backing_fmt, errp);
        if (ret < 0) {
            goto out;
        }
    }
    ret = qcow2_crypto_create(bs, opts, errp); /* crypto.c */
    if (ret < 0) {
        goto out;
    }
    ret = vd_node_flush(bs);
    if (ret < 0) {
        vd_error_setg_errno(errp, -ret, "Could not flush '%s'", filename);
    }
out:
    vd_node_close(bs);
    return ret;
}

/*
 * Reopen (QEMU's qcow2_join_options): a new overlap-check template replaces
 * every old overlap-check option; a new total cache size replaces the old
 * partial ones; and an old total size gives way when the partial sizes
 * would otherwise make all three set.
 */
static void qcow2_join_options(vd_opts *old, const vd_opts *changes)
{
    if (vd_opts_get(changes, "overlap-check") || vd_opts_get(changes, "overlap-check.template")) {
        vd_opts_set(old, "overlap-check", NULL);
        vd_opts_remove_prefix(old, "overlap-check");
    }
    if (vd_opts_get(changes, "cache-size")) {
        vd_opts_set(old, "l2-cache-size", NULL);
        vd_opts_set(old, "refcount-cache-size", NULL);
    } else if (vd_opts_get(old, "cache-size") &&
               (vd_opts_get(old, "l2-cache-size") || vd_opts_get(changes, "l2-cache-size")) &&
               (vd_opts_get(old, "refcount-cache-size") ||
                vd_opts_get(changes, "refcount-cache-size"))) {
        vd_opts_set(old, "cache-size", NULL);
    }
}

const vd_driver vd_drv_qcow2 = {
    .name = "qcow2",
    .join_options = qcow2_join_options,
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(qcow2_state),
    .create_opts = qcow2_create_opts,
    .open_opts = qcow2_open_opts,
    .supports_backing = true,
    .probe = qcow2_probe,
    .open = qcow2_open,
    .close = qcow2_close,
    .create = qcow2_create,
    .get_length = qcow2_get_length,
    .get_allocated_size = qcow2_get_allocated_size,
    .pread = qcow2_crypto_pread,
    .pwrite = qcow2_crypto_pwrite,
    .pwrite_zeroes = qcow2_crypto_pwrite_zeroes,
    .pwrite_compressed = qcow2_pwrite_compressed,
    .discard = qcow2_discard,
    .flush = qcow2_flush,
    .block_status = qcow2_crypto_block_status,
    .truncate = qcow2_truncate,
    .check = qcow2_check,
    .get_info = qcow2_get_info,
    .measure = qcow2_measure,
    .change_backing_file = qcow2_change_backing_file,
    .make_empty = qcow2_make_empty,
    .cluster_size = qcow2_cluster_size_cb,
    .snapshot_list = qcow2_snapshot_list,
    .snapshot_create = qcow2_snapshot_create,
    .snapshot_apply = qcow2_snapshot_apply,
    .snapshot_delete = qcow2_snapshot_delete,
    .snapshot_load_tmp = qcow2_snapshot_load_tmp,
    .bitmap_add = qcow2_bitmap_add,
    .bitmap_remove = qcow2_bitmap_remove,
    .bitmap_clear = qcow2_bitmap_clear,
    .bitmap_enable = qcow2_bitmap_enable,
    .bitmap_merge = qcow2_bitmap_merge,
    .bitmap_status = qcow2_bitmap_status,
    .amend = qcow2_amend,
    .amend_opts = qcow2_amend_opts,
    .supports_bitmaps = qcow2_supports_bitmaps,
};
