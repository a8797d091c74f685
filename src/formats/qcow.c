/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow: the original QEMU Copy-On-Write format, version 1, as QEMU 7.2's
 * block/qcow.c defines it (there is no separate specification): a 48-byte
 * big-endian header, the backing file name after it, an L1 table of L2
 * table offsets, L2 tables of cluster offsets.  An L2 entry with bit 63 set
 * is a compressed cluster: raw deflate data (window 2^12) whose byte count
 * sits in the cluster_bits bits below bit 63, its offset in the rest.
 *
 * Supported: read and write, backing files (partial writes to new clusters
 * copy the rest of the cluster from the backing file; QEMU leaves it zero,
 * which only matters for images whose clusters are larger than a sector),
 * compressed clusters (read, and written by pwrite_compressed), a write-back
 * cache of 16 L2 tables (src/core/cache.c), make_empty for commit.
 *
 * AES encryption (crypt_method 1, flawed: kept to get data out of old images)
 * is read and written as QEMU does: AES-128-CBC keyed with the passphrase,
 * plain64 IVs from the guest offset, in 512-byte sectors; the request
 * alignment is the cluster size so no copy-on-write writes plaintext.
 * Not supported:
 * with "not supported yet" unless opened for metadata only; resize; check.
 * L1 tables above 32 MiB are refused (QEMU allows 2 GiB).
 */
#include <pthread.h>
#include <stdlib.h>
#include <zlib.h>

#include "cache.h"
#include "../crypto/crypto.h"
#include "format-io.h"
#include "internal.h"

#define QCOW_MAGIC 0x514649fbu /* "QFI\xfb" */
#define QCOW_VERSION 1u
#define QCOW_CRYPT_NONE 0u
#define QCOW_CRYPT_AES 1u
#define QCOW_OFLAG_COMPRESSED (1ull << 63)
#define QCOW_HEADER_SIZE 48u
#define QCOW_L2_CACHE 16
#define QCOW_L1_MAX_BYTES (32u << 20)
#define QCOW_SECTOR 512u

enum {
    H_MAGIC = 0,
    H_VERSION = 4,
    H_BACKING_OFFSET = 8,
    H_BACKING_SIZE = 16,
    H_MTIME = 20,
    H_SIZE = 24,
    H_CLUSTER_BITS = 32,
    H_L2_BITS = 33,
    H_CRYPT = 36,
    H_L1_OFFSET = 40,
};

typedef struct qcow_state {
    /* Guards the tables, the caches and allocation.  Data I/O to clusters
     * that already exist runs outside it: clusters never move. */
    pthread_mutex_t lock;
    bool lock_ready;
    unsigned cluster_bits;
    unsigned l2_bits;
    uint64_t cluster_size;
    uint64_t l2_entries;
    uint64_t size;
    uint64_t l1_offset;
    uint64_t l1_entries;
    uint64_t *l1;
    uint64_t offset_mask;
    vd_cache *l2c; /* L2 tables as on disk (big-endian) */
    /* the last decompressed cluster */
    uint8_t *ccache;
    uint64_t ccache_entry;
    bool ccache_valid;
    uint8_t *cbuf; /* compressed bytes */
    uint64_t file_end;
    bool encrypted;
    vd_crypto_blk *aes; /* NULL when opened without the key (info) */
    /* An L2 table known to be all zeroes, so that a hostile image whose L1
     * entries all name it costs one step per L1 entry, not a scan each.
     * Reset whenever anything is allocated. */
    uint64_t zero_l2;
} qcow_state;

static const vd_opt_desc qcow_create_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {"backing_file", VD_OPT_STRING, "File name of a base image", NULL},
    {"backing_fmt", VD_OPT_STRING, "Format of the backing image", NULL},
    {"encryption", VD_OPT_BOOL,
     "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", NULL},
    {"encrypt.format", VD_OPT_STRING, "Encrypt the image, format choices: 'aes'", NULL},
    {"encrypt.key-secret", VD_OPT_STRING,
     "ID of the secret that provides the AES encryption key", NULL},
    {NULL, 0, NULL, NULL},
};

static const vd_opt_desc qcow_open_opts[] = {
    {"encrypt.format", VD_OPT_STRING, "Encryption format", NULL},
    {"encrypt.key-secret", VD_OPT_STRING, "ID of the secret that provides the AES key", NULL},
    {NULL, 0, NULL, NULL},
};

static int qcow_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len >= 8 && vd_ld_be32(buf) == QCOW_MAGIC && vd_ld_be32(buf + 4) == QCOW_VERSION) {
        return 100;
    }
    return 0;
}

static void qcow_close(vd_node *bs)
{
    qcow_state *s = bs->opaque;
    if (s->l2c) {
        /* dirty tables only exist after writes, which had the file open */
        vd_cache_flush(s->l2c);
        vd_cache_free(s->l2c);
        s->l2c = NULL;
    }
    vd_crypto_blk_free(s->aes);
    s->aes = NULL;
    free(s->l1);
    free(s->ccache);
    free(s->cbuf);
    s->l1 = NULL;
    s->ccache = NULL;
    s->cbuf = NULL;
    if (s->lock_ready) {
        pthread_mutex_destroy(&s->lock);
        s->lock_ready = false;
    }
}

static int qcow_open_aes(qcow_state *s, vd_opts *opts, vd_error **errp);

static int qcow_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    qcow_state *s = bs->opaque;
    uint8_t h[QCOW_HEADER_SIZE];
    int ret;
    (void)opts;

    pthread_mutex_init(&s->lock, NULL);
    s->lock_ready = true;
    ret = vd_node_pread(bs->file, 0, sizeof(h), h, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the qcow header");
        goto fail;
    }
    uint32_t version = vd_ld_be32(h + H_VERSION);
    uint64_t size = vd_ld_be64(h + H_SIZE);
    unsigned cluster_bits = h[H_CLUSTER_BITS];
    unsigned l2_bits = h[H_L2_BITS];
    uint32_t crypt = vd_ld_be32(h + H_CRYPT);

    if (vd_ld_be32(h + H_MAGIC) != QCOW_MAGIC) {
        ret = vd_error_set(errp, EINVAL, "Image not in qcow format");
        goto fail;
    }
    if (version != QCOW_VERSION) {
        ret = vd_error_set(errp, ENOTSUP, "qcow (v%u) does not support qcow version %u%s",
                           QCOW_VERSION, version,
                           version == 2 || version == 3 ? " (try the 'qcow2' driver)" : "");
        goto fail;
    }
    if (size <= 1) {
        ret = vd_error_set(errp, EINVAL, "Image size is too small (must be at least 2 bytes)");
        goto fail;
    }
    if (cluster_bits < 9 || cluster_bits > 16) {
        ret = vd_error_set(errp, EINVAL, "Cluster size must be between 512 and 64k");
        goto fail;
    }
    /* l2_bits counts 8-byte entries: the table is 512 bytes to 64k */
    if (l2_bits < 9 - 3 || l2_bits > 16 - 3) {
        ret = vd_error_set(errp, EINVAL, "L2 table size must be between 512 and 64k");
        goto fail;
    }
    if (crypt == QCOW_CRYPT_AES) {
        if (!(bs->flags & VD_NODE_NO_IO)) {
            ret = qcow_open_aes(s, opts, errp);
            if (ret < 0) {
                goto fail;
            }
        }
        s->encrypted = true;
    } else if (crypt != QCOW_CRYPT_NONE) {
        ret = vd_error_set(errp, EINVAL, "invalid encryption method in qcow header");
        goto fail;
    }

    s->cluster_bits = cluster_bits;
    s->l2_bits = l2_bits;
    s->cluster_size = 1ull << cluster_bits;
    s->l2_entries = 1ull << l2_bits;
    /* QEMU counts whole sectors */
    s->size = size / QCOW_SECTOR * QCOW_SECTOR;
    s->offset_mask = (1ull << (63 - cluster_bits)) - 1;

    unsigned shift = cluster_bits + l2_bits;
    s->l1_entries = vd_div_round_up(size, 1ull << shift);
    if (s->l1_entries * 8 > QCOW_L1_MAX_BYTES) {
        ret = vd_error_set(errp, EFBIG,
                           "Image too large (its L1 table of %llu bytes exceeds the %u MiB "
                           "supported)",
                           (unsigned long long)s->l1_entries * 8, QCOW_L1_MAX_BYTES >> 20);
        goto fail;
    }
    s->l1_offset = vd_ld_be64(h + H_L1_OFFSET);
    s->l1 = vd_malloc(s->l1_entries * 8);
    if (!s->l1) {
        ret = vd_error_set(errp, ENOMEM, "Could not allocate the L1 table");
        goto fail;
    }
    ret = vd_node_pread(bs->file, s->l1_offset, s->l1_entries * 8, s->l1, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not read the L1 table");
        goto fail;
    }
    for (uint64_t i = 0; i < s->l1_entries; i++) {
        s->l1[i] = vd_ld_be64(&s->l1[i]);
    }
    s->ccache = vd_malloc(s->cluster_size);
    s->cbuf = vd_malloc(s->cluster_size);
    s->l2c = vd_cache_new(bs->file, s->l2_entries * 8, QCOW_L2_CACHE);
    if (!s->ccache || !s->cbuf || !s->l2c) {
        ret = vd_error_set(errp, ENOMEM, "Out of memory");
        goto fail;
    }

    uint64_t boff = vd_ld_be64(h + H_BACKING_OFFSET);
    if (boff != 0) {
        uint32_t blen = vd_ld_be32(h + H_BACKING_SIZE);
        if (blen > 1023) {
            ret = vd_error_set(errp, EINVAL, "Backing file name too long");
            goto fail;
        }
        char *name = calloc(1, blen + 1);
        if (!name) {
            ret = vd_error_set(errp, ENOMEM, "Out of memory");
            goto fail;
        }
        ret = vd_node_pread(bs->file, boff, blen, name, 0);
        if (ret < 0) {
            free(name);
            vd_error_setg_errno(errp, ret, "Could not read the backing file name");
            goto fail;
        }
        if (name[0]) {
            bs->backing_file = name;
        } else {
            free(name);
        }
    }

    int64_t flen = vd_node_get_length(bs->file);
    if (flen < 0) {
        ret = vd_error_setg_errno(errp, (int)flen, "Could not get the file size");
        goto fail;
    }
    s->file_end = (uint64_t)flen;
    /* encryption worked on sectors; keep QEMU's limit for everything */
    bs->request_alignment = s->encrypted ? (uint32_t)s->cluster_size : QCOW_SECTOR;
    bs->has_zero_init = true;
    return 0;

fail:
    qcow_close(bs);
    return ret;
}

static int64_t qcow_get_length(vd_node *bs)
{
    qcow_state *s = bs->opaque;
    return (int64_t)s->size;
}

/*
 * Lock held.  Pin the L2 table for L1 index i (*table as on disk); with
 * alloc, a missing table is created at the end of the file.  *table is NULL
 * (and 0 returned) when the table does not exist and alloc is false.
 * Release with vd_cache_put(s->l2c, ...).
 */
static int qcow_get_l2(vd_node *bs, uint64_t i, bool alloc, uint8_t **table, uint64_t *l2_off)
{
    qcow_state *s = bs->opaque;
    uint64_t off = s->l1[i];
    uint64_t bytes = s->l2_entries * 8;
    void *t;
    int ret;

    *table = NULL;
    if (off != 0) {
        ret = vd_cache_get(s->l2c, off, &t);
        if (ret < 0) {
            return ret;
        }
        *table = t;
        *l2_off = off;
        return 0;
    }
    if (!alloc) {
        return 0;
    }
    if (vd_align_up_overflow(s->file_end, s->cluster_size, &off) || off + bytes < off) {
        return -EFBIG;
    }
    /* the table is on disk before the L1 entry points at it */
    ret = vd_cache_get_empty(s->l2c, off, &t);
    if (ret < 0) {
        return ret;
    }
    memset(t, 0, bytes);
    ret = vd_node_pwrite(bs->file, off, bytes, t, 0);
    if (ret == 0) {
        uint8_t be[8];
        vd_st_be64(be, off);
        ret = vd_node_pwrite(bs->file, s->l1_offset + i * 8, 8, be, 0);
    }
    if (ret < 0) {
        vd_cache_put(s->l2c, &t);
        vd_cache_discard(s->l2c, off);
        return ret;
    }
    s->file_end = off + bytes;
    s->l1[i] = off;
    s->zero_l2 = 0;
    *table = t;
    *l2_off = off;
    return 0;
}

/* Lock held.  The L2 entry of the cluster holding pos (0 when none). */
static int qcow_lookup(vd_node *bs, uint64_t pos, uint64_t *entry)
{
    qcow_state *s = bs->opaque;
    uint64_t i = pos >> (s->cluster_bits + s->l2_bits);
    uint8_t *t;
    uint64_t l2_off;
    *entry = 0;
    if (i >= s->l1_entries) {
        return 0;
    }
    int ret = qcow_get_l2(bs, i, false, &t, &l2_off);
    if (ret < 0 || !t) {
        return ret;
    }
    *entry = vd_ld_be64(t + ((pos >> s->cluster_bits) & (s->l2_entries - 1)) * 8);
    vd_cache_put(s->l2c, (void **)&t);
    return 0;
}

/* Lock held.  Decompress the cluster of L2 entry `entry` into s->ccache. */
static int qcow_decompress(vd_node *bs, uint64_t entry)
{
    qcow_state *s = bs->opaque;
    if (s->ccache_valid && s->ccache_entry == entry) {
        return 0;
    }
    s->ccache_valid = false;
    uint64_t coff = entry & s->offset_mask;
    uint64_t csize = (entry >> (63 - s->cluster_bits)) & (s->cluster_size - 1);
    int ret = vd_node_pread(bs->file, coff, csize, s->cbuf, 0);
    if (ret < 0) {
        return ret;
    }
    z_stream z;
    memset(&z, 0, sizeof(z));
    if (inflateInit2(&z, -12) != Z_OK) {
        return -ENOMEM;
    }
    z.next_in = s->cbuf;
    z.avail_in = (uInt)csize;
    z.next_out = s->ccache;
    z.avail_out = (uInt)s->cluster_size;
    int zr = inflate(&z, Z_FINISH);
    uint64_t out = s->cluster_size - z.avail_out;
    inflateEnd(&z);
    if ((zr != Z_STREAM_END && zr != Z_BUF_ERROR) || out != s->cluster_size) {
        return -EIO;
    }
    s->ccache_entry = entry;
    s->ccache_valid = true;
    return 0;
}

static bool qcow_is_normal(uint64_t entry)
{
    return entry && !(entry & QCOW_OFLAG_COMPRESSED);
}

/*
 * Lock held.  How many bytes from offset (at most len) belong to clusters
 * like the one at offset, whose L2 entry is `entry`: unallocated, or
 * normal at consecutive host offsets (a compressed cluster stands alone).
 * Missing L2 tables are skipped whole and present ones scanned in place,
 * so a sparse image of any size costs steps bounded by its tables.
 */
static int qcow_run(vd_node *bs, uint64_t offset, uint64_t len, uint64_t entry, uint64_t *pnum)
{
    qcow_state *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    unsigned shift = s->cluster_bits + s->l2_bits;
    uint64_t n = VD_MIN(len, cs - (offset & (cs - 1)));
    uint64_t pos = offset + n;
    uint64_t expect = (entry & s->offset_mask) + cs;
    bool normal = qcow_is_normal(entry);
    int ret = 0;

    if (entry && !normal) {
        *pnum = n;
        return 0;
    }
    while (n < len) {
        uint64_t i = pos >> shift;
        if (i >= s->l1_entries) {
            break;
        }
        if (s->l1[i] == 0 || s->l1[i] == s->zero_l2) {
            if (normal) {
                break;
            }
            uint64_t span = (1ull << shift) - (pos & ((1ull << shift) - 1));
            n += span;
            pos += span;
            continue;
        }
        uint8_t *t;
        uint64_t l2_off;
        ret = qcow_get_l2(bs, i, false, &t, &l2_off);
        if (ret < 0) {
            break;
        }
        bool same = true;
        uint64_t k0 = (pos >> s->cluster_bits) & (s->l2_entries - 1);
        if (k0 == 0 && !normal && vd_buffer_is_zero(t, s->l2_entries * 8)) {
            s->zero_l2 = l2_off;
        }
        for (uint64_t k = k0; k < s->l2_entries && n < len; k++) {
            uint64_t e = vd_ld_be64(t + k * 8);
            same = normal ? qcow_is_normal(e) && (e & s->offset_mask) == expect : e == 0;
            if (!same) {
                break;
            }
            n += cs;
            pos += cs;
            expect += cs;
        }
        vd_cache_put(s->l2c, (void **)&t);
        if (!same) {
            break;
        }
    }
    *pnum = VD_MIN(n, len);
    return ret;
}

/* vd_fmt_read's map: a run of host-contiguous clusters or of holes, or one
 * compressed cluster decompressed into buf under the lock. */
static int qcow_map(vd_node *bs, void *opaque, uint64_t offset, uint64_t max, void *buf,
                    vd_fmt_extent *ext)
{
    qcow_state *s = bs->opaque;
    uint64_t in_cl = offset & (s->cluster_size - 1);
    uint64_t entry;
    (void)opaque;

    ext->len = VD_MIN(max, s->cluster_size - in_cl);
    pthread_mutex_lock(&s->lock);
    int ret = qcow_lookup(bs, offset, &entry);
    if (ret == 0 && (qcow_is_normal(entry) || !entry)) {
        /* one I/O for host-contiguous clusters or a hole */
        ret = qcow_run(bs, offset, max, entry, &ext->len);
    }
    if (ret == 0 && qcow_is_normal(entry)) {
        ext->kind = VD_FMT_MAP_DATA;
        ext->host = (entry & s->offset_mask) + in_cl;
    } else if (ret == 0 && entry) {
        ext->kind = VD_FMT_MAP_FILLED;
        ret = qcow_decompress(bs, entry);
        if (ret == 0) {
            memcpy(buf, s->ccache + in_cl, ext->len);
        }
    } else {
        ext->kind = VD_FMT_MAP_BACKING;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int qcow_pread_plain(vd_node *bs, uint64_t offset, uint64_t len, void *buf,
                            unsigned flags)
{
    (void)flags;

    return vd_fmt_read(bs, offset, len, buf, qcow_map, NULL);
}

/* The clusters of one allocating write (vd_fmt_cow_write's opaque). */
typedef struct qcow_cow {
    vd_node *bs;
    const uint8_t *table; /* their L2 table */
    uint64_t l2i;         /* the entry of `first` */
    uint64_t first;       /* guest offset of the first cluster */
} qcow_cow;

/*
 * Lock held.  vd_fmt_cow_write's read_old: what part of a cluster the write
 * does not cover held: decompressed data, the backing file, or zeroes.
 */
static int qcow_fill(void *opaque, uint64_t cluster, uint64_t from, uint64_t to, uint8_t *buf)
{
    qcow_cow *c = opaque;
    qcow_state *s = c->bs->opaque;
    uint64_t entry =
        vd_ld_be64(c->table + (c->l2i + (cluster - c->first) / s->cluster_size) * 8);
    if (entry & QCOW_OFLAG_COMPRESSED) {
        int ret = qcow_decompress(c->bs, entry);
        if (ret == 0) {
            memcpy(buf + from, s->ccache + from, to - from);
        }
        return ret;
    }
    return vd_node_read_backing(c->bs, cluster + from, to - from, buf + from);
}

/*
 * Lock held.  Allocating write of [offset, offset+len) (len <= what the L2
 * table of offset covers), all clusters of which are unallocated or
 * compressed: new clusters appended at the end of the file.
 */
static int qcow_alloc_write(vd_node *bs, uint64_t offset, uint64_t len, const uint8_t *p,
                            uint8_t *table)
{
    qcow_state *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t first = offset & ~(cs - 1);
    uint64_t end;
    if (vd_align_up_overflow(offset + len, cs, &end)) {
        return -EFBIG;
    }
    uint64_t ncl = (end - first) / cs;
    uint64_t l2i = (first >> s->cluster_bits) & (s->l2_entries - 1);
    uint64_t host;
    int ret;

    if (vd_align_up_overflow(s->file_end, cs, &host) || host + ncl * cs < host ||
        ((host + ncl * cs) & ~s->offset_mask)) {
        return -EFBIG;
    }
    qcow_cow cow = {bs, table, l2i, first};
    ret = vd_fmt_cow_write(bs->file, host, cs, offset, len, p, qcow_fill, &cow);
    if (ret < 0) {
        return ret;
    }
    s->file_end = host + ncl * cs;
    s->zero_l2 = 0;

    /* then the L2 entries (written back later: data always comes first) */
    for (uint64_t k = 0; k < ncl; k++) {
        vd_st_be64(table + (l2i + k) * 8, host + k * cs);
    }
    vd_cache_mark_dirty(s->l2c, table);
    return 0;
}

static int qcow_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                       unsigned flags)
{
    qcow_state *s = bs->opaque;
    const uint8_t *p = buf;
    int ret = 0;
    (void)flags;

    while (len > 0 && ret == 0) {
        uint64_t cs = s->cluster_size;
        uint64_t in_cl = offset & (cs - 1);
        uint64_t l1i = offset >> (s->cluster_bits + s->l2_bits);
        /* bytes up to the end of this L2 table's range */
        uint64_t span = (s->l2_entries << s->cluster_bits) -
                        (offset & ((s->l2_entries << s->cluster_bits) - 1));
        uint8_t *table;
        uint64_t l2_off;
        if (l1i >= s->l1_entries) {
            return -EIO;
        }
        pthread_mutex_lock(&s->lock);
        ret = qcow_get_l2(bs, l1i, true, &table, &l2_off);
        if (ret < 0) {
            pthread_mutex_unlock(&s->lock);
            break;
        }
        uint64_t l2i = (offset >> s->cluster_bits) & (s->l2_entries - 1);
        uint64_t entry = vd_ld_be64(table + l2i * 8);
        uint64_t n = VD_MIN(len, cs - in_cl);
        if (qcow_is_normal(entry)) {
            uint64_t host = (entry & s->offset_mask) + in_cl;
            uint64_t k = l2i + 1;
            while (n < VD_MIN(len, span) && k < s->l2_entries) {
                uint64_t e = vd_ld_be64(table + k * 8);
                if (!qcow_is_normal(e) || (e & s->offset_mask) != host - in_cl + (in_cl + n)) {
                    break;
                }
                n = VD_MIN(VD_MIN(len, span), n + cs);
                k++;
            }
            vd_cache_put(s->l2c, (void **)&table);
            pthread_mutex_unlock(&s->lock);
            ret = vd_node_pwrite(bs->file, host, n, p, 0);
        } else {
            /* a run of clusters that all need allocation (compressed ones
             * alone, since each needs its own decompression) */
            if (!(entry & QCOW_OFLAG_COMPRESSED)) {
                uint64_t k = l2i + 1;
                while (n < VD_MIN(len, span) && k < s->l2_entries &&
                       vd_ld_be64(table + k * 8) == 0) {
                    n = VD_MIN(VD_MIN(len, span), n + cs);
                    k++;
                }
            }
            ret = qcow_alloc_write(bs, offset, n, p, table);
            vd_cache_put(s->l2c, (void **)&table);
            pthread_mutex_unlock(&s->lock);
        }
        offset += n;
        len -= n;
        p += n;
    }
    return ret;
}

/* One cluster (or the last, partial one) compressed. */
static int qcow_compress_cluster(vd_node *bs, uint64_t offset, uint64_t len, const void *buf)
{
    qcow_state *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    int ret;

    uint8_t *in = vd_malloc(cs);
    uint8_t *out = vd_malloc(cs);
    if (!in || !out) {
        free(in);
        free(out);
        return -ENOMEM;
    }
    /* the last cluster of the image is padded with zeroes */
    memcpy(in, buf, len);
    memset(in + len, 0, cs - len);
    z_stream z;
    memset(&z, 0, sizeof(z));
    uint64_t out_len = cs;
    if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) ==
        Z_OK) {
        z.next_in = in;
        z.avail_in = (uInt)cs;
        z.next_out = out;
        z.avail_out = (uInt)cs;
        if (deflate(&z, Z_FINISH) == Z_STREAM_END) {
            out_len = cs - z.avail_out;
        }
        deflateEnd(&z);
    }
    if (out_len >= cs) {
        /* not compressible: a normal cluster */
        free(in);
        free(out);
        return qcow_pwrite(bs, offset, len, buf, 0);
    }
    uint8_t *table;
    uint64_t l2_off;
    uint64_t l1i = offset >> (s->cluster_bits + s->l2_bits);
    pthread_mutex_lock(&s->lock);
    ret = qcow_get_l2(bs, l1i, true, &table, &l2_off);
    uint64_t l2i = (offset >> s->cluster_bits) & (s->l2_entries - 1);
    if (ret == 0 && vd_ld_be64(table + l2i * 8) != 0) {
        /* already allocated: overwrite it as a normal cluster instead */
        vd_cache_put(s->l2c, (void **)&table);
        pthread_mutex_unlock(&s->lock);
        free(in);
        free(out);
        return qcow_pwrite(bs, offset, len, buf, 0);
    }
    if (ret == 0) {
        uint64_t coff = s->file_end;
        if ((coff + out_len) & ~s->offset_mask) {
            ret = -EFBIG;
        } else {
            ret = vd_node_pwrite(bs->file, coff, out_len, out, 0);
        }
        if (ret == 0) {
            uint64_t e = coff | QCOW_OFLAG_COMPRESSED | (out_len << (63 - s->cluster_bits));
            vd_st_be64(table + l2i * 8, e);
            vd_cache_mark_dirty(s->l2c, table);
            s->file_end = coff + out_len;
            s->zero_l2 = 0;
        }
        vd_cache_put(s->l2c, (void **)&table);
    }
    pthread_mutex_unlock(&s->lock);
    free(in);
    free(out);
    return ret;
}

static int qcow_pwrite_compressed(vd_node *bs, uint64_t offset, uint64_t len, const void *buf)
{
    qcow_state *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    const uint8_t *p = buf;

    if (s->encrypted) {
        return -ENOTSUP;
    }
    /* whole clusters; only the image's last one may be partial.  (len 0 is
     * QEMU's "end of compressed data" marker: nothing to do.) */
    if ((offset & (cs - 1)) || ((len & (cs - 1)) && offset + len != s->size)) {
        return -EINVAL;
    }
    while (len > 0) {
        uint64_t n = VD_MIN(len, cs);
        int ret = qcow_compress_cluster(bs, offset, n, p);
        if (ret < 0) {
            return ret;
        }
        offset += n;
        len -= n;
        p += n;
    }
    return 0;
}

static int qcow_flush(vd_node *bs)
{
    qcow_state *s = bs->opaque;
    pthread_mutex_lock(&s->lock);
    int ret = vd_cache_write(s->l2c);
    pthread_mutex_unlock(&s->lock);
    return ret < 0 ? ret : vd_node_flush(bs->file);
}

static int qcow_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                             uint64_t *pnum, uint64_t *map, vd_node **file)
{
    qcow_state *s = bs->opaque;
    uint64_t entry;
    (void)want_zero;

    pthread_mutex_lock(&s->lock);
    uint64_t in_cl = offset & (s->cluster_size - 1);
    uint64_t n = VD_MIN(len, s->cluster_size - in_cl);
    int ret = qcow_lookup(bs, offset, &entry);
    if (ret < 0) {
        pthread_mutex_unlock(&s->lock);
        return ret;
    }
    if (s->encrypted) {
        ret = entry ? VD_BLOCK_DATA : 0;
    } else if (entry & QCOW_OFLAG_COMPRESSED) {
        ret = VD_BLOCK_DATA | VD_BLOCK_COMPRESSED;
    } else {
        ret = qcow_run(bs, offset, len, entry, &n);
        if (ret == 0 && entry) {
            *map = (entry & s->offset_mask) + in_cl;
            *file = bs->file;
            ret = VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
        }
    }
    pthread_mutex_unlock(&s->lock);
    *pnum = n;
    return ret;
}

static int qcow_make_empty(vd_node *bs, vd_error **errp)
{
    qcow_state *s = bs->opaque;
    uint64_t bytes = s->l1_entries * 8;
    int ret;

    pthread_mutex_lock(&s->lock);
    memset(s->l1, 0, bytes);
    ret = vd_node_pwrite_zeroes(bs->file, s->l1_offset, bytes, 0);
    if (ret == 0) {
        ret = vd_node_flush(bs->file);
    }
    if (ret == 0) {
        ret = vd_node_truncate(bs->file, s->l1_offset + bytes, false, VD_PREALLOC_OFF, errp);
    }
    /* the cached tables are gone with the file's tail: drop them unwritten */
    vd_cache *fresh = vd_cache_new(bs->file, s->l2_entries * 8, QCOW_L2_CACHE);
    if (fresh) {
        vd_cache_free(s->l2c);
        s->l2c = fresh;
    } else if (ret == 0) {
        ret = -ENOMEM;
    }
    s->ccache_valid = false;
    s->file_end = s->l1_offset + bytes;
    s->zero_l2 = 0;
    pthread_mutex_unlock(&s->lock);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not empty the image");
    }
    return 0;
}

static int qcow_get_info(vd_node *bs, vd_info *info, vd_error **errp)
{
    qcow_state *s = bs->opaque;
    (void)errp;
    info->cluster_size = (uint32_t)s->cluster_size;
    info->encrypted = s->encrypted;
    info->weak_encryption = s->encrypted; /* AES-CBC is qcow's only cipher */
    return 0;
}

static uint32_t qcow_cluster_size(vd_node *bs)
{
    qcow_state *s = bs->opaque;
    return (uint32_t)s->cluster_size;
}

static int qcow_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    uint64_t size;
    bool encryption;
    int ret;

    ret = vd_opts_get_size(opts, "size", 0, &size, errp);
    if (ret < 0) {
        return ret;
    }
    ret = vd_opts_get_bool(opts, "encryption", false, &encryption, errp);
    if (ret < 0) {
        return ret;
    }
    const char *enc_fmt = vd_opts_get(opts, "encrypt.format");
    if (enc_fmt && strcmp(enc_fmt, "aes")) {
        return vd_error_set(errp, EINVAL, "Unsupported encryption format '%s'", enc_fmt);
    }
    if (size > UINT64_MAX - QCOW_SECTOR) {
        return vd_error_set(errp, EFBIG, "Image size is too large");
    }
    size = vd_div_round_up(size, QCOW_SECTOR) * QCOW_SECTOR;
    if (size == 0) {
        return vd_error_set(errp, EINVAL, "Image size is too small, cannot be zero length");
    }
    const char *backing = vd_opts_get(opts, "backing_file");
    if (backing && !strcmp(backing, "fat:")) {
        /* vvfat's special backing: QEMU stores none */
        backing = NULL;
    }
    if (backing && strlen(backing) > 1023) {
        return vd_error_set(errp, EINVAL, "Backing file name too long");
    }

    uint8_t h[QCOW_HEADER_SIZE];
    memset(h, 0, sizeof(h));
    vd_st_be32(h + H_MAGIC, QCOW_MAGIC);
    vd_st_be32(h + H_VERSION, QCOW_VERSION);
    vd_st_be64(h + H_SIZE, size);
    uint64_t header_size = QCOW_HEADER_SIZE;
    size_t blen = 0;
    if (backing) {
        blen = strlen(backing);
        vd_st_be64(h + H_BACKING_OFFSET, header_size);
        vd_st_be32(h + H_BACKING_SIZE, (uint32_t)blen);
        header_size += blen;
        /* 512-byte clusters: a sector write never copies from the backing */
        h[H_CLUSTER_BITS] = 9;
        h[H_L2_BITS] = 12;
    } else {
        h[H_CLUSTER_BITS] = 12;
        h[H_L2_BITS] = 9;
    }
    header_size = (header_size + 7) & ~7ull;
    unsigned shift = h[H_CLUSTER_BITS] + h[H_L2_BITS];
    uint64_t l1_entries = vd_div_round_up(size, 1ull << shift);
    if (l1_entries * 8 > QCOW_L1_MAX_BYTES) {
        return vd_error_set(errp, EFBIG, "Image size is too large for the qcow format");
    }
    vd_st_be64(h + H_L1_OFFSET, header_size);
    vd_st_be32(h + H_CRYPT, (encryption || enc_fmt) ? QCOW_CRYPT_AES : QCOW_CRYPT_NONE);

    vd_node *file;
    ret = vd_create_open_file(filename, opts, &file, errp);
    if (ret < 0) {
        return ret;
    }
    /*
     * The key is only checked to exist: it is not stored.  As QEMU, with
     * the file already created: a failure here leaves it empty (QEMU's
     * qcow, unlike luks and qcow2, deletes nothing).
     */
    if (encryption || enc_fmt) {
        uint8_t *pass;
        size_t passlen;
        const char *sid = vd_opts_get(opts, "encrypt.key-secret");
        if (!sid) {
            ret = vd_error_set(errp, EINVAL, "Parameter 'encrypt.key-secret' is required for "
                                             "cipher");
        } else {
            ret = vd_secret_lookup_utf8(sid, &pass, &passlen, errp);
            if (ret == 0) {
                vd_memzero(pass, passlen);
                free(pass);
            }
        }
        if (ret < 0) {
            vd_node_close(file);
            return ret;
        }
    }
    ret = vd_node_pwrite(file, 0, sizeof(h), h, 0);
    if (ret == 0 && backing) {
        ret = vd_node_pwrite(file, QCOW_HEADER_SIZE, blen, backing, 0);
    }
    if (ret == 0) {
        /* the L1 table, zeroed in whole sectors as QEMU writes it */
        uint64_t bytes = vd_div_round_up(l1_entries * 8, QCOW_SECTOR) * QCOW_SECTOR;
        uint8_t *zero = calloc(1, bytes);
        if (!zero) {
            ret = -ENOMEM;
        } else {
            ret = vd_node_pwrite(file, header_size, bytes, zero, 0);
            free(zero);
        }
    }
    return vd_create_close_file(file, ret, "Could not write the qcow image", errp);
}

/* ------------------------------------------------------------------ AES */

static int qcow_open_aes(qcow_state *s, vd_opts *opts, vd_error **errp)
{
    const char *sid = vd_opts_get(opts, "encrypt.key-secret");
    if (!sid) {
        return vd_error_set(errp, EINVAL, "Parameter 'encrypt.key-secret' is required for cipher");
    }
    uint8_t *pass;
    size_t passlen;
    int r = vd_secret_lookup_utf8(sid, &pass, &passlen, errp);
    if (r < 0) {
        return r;
    }
    s->aes = vd_crypto_legacy_aes_new(pass, passlen, errp);
    vd_memzero(pass, passlen);
    free(pass);
    return s->aes ? 0 : -EINVAL;
}

/* Read, then decrypt what came from (uncompressed) data clusters. */
static int qcow_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    qcow_state *s = bs->opaque;
    if (s->encrypted && !s->aes) {
        return -EPERM;
    }
    int ret = qcow_pread_plain(bs, offset, len, buf, flags);
    uint8_t *p = buf;
    while (ret == 0 && s->aes && len > 0) {
        uint64_t n = VD_MIN(len, s->cluster_size - (offset & (s->cluster_size - 1)));
        uint64_t entry;
        pthread_mutex_lock(&s->lock);
        ret = qcow_lookup(bs, offset, &entry);
        pthread_mutex_unlock(&s->lock);
        if (ret == 0 && entry && !(entry & QCOW_OFLAG_COMPRESSED)) {
            vd_crypto_blk_decrypt(s->aes, offset, p, n);
        }
        offset += n;
        p += n;
        len -= n;
    }
    return ret;
}

static int qcow_pwrite_crypt(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                             unsigned flags)
{
    qcow_state *s = bs->opaque;
    if (!s->encrypted) {
        return qcow_pwrite(bs, offset, len, buf, flags);
    }
    if (!s->aes) {
        return -EPERM;
    }
    uint8_t *tmp = vd_malloc(len);
    if (!tmp) {
        return -ENOMEM;
    }
    memcpy(tmp, buf, len);
    vd_crypto_blk_encrypt(s->aes, offset, tmp, len);
    int ret = qcow_pwrite(bs, offset, len, tmp, flags);
    free(tmp);
    return ret;
}

const vd_driver vd_drv_qcow = {
    .name = "qcow",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(qcow_state),
    .create_opts = qcow_create_opts,
    .open_opts = qcow_open_opts,
    .supports_backing = true,
    .probe = qcow_probe,
    .open = qcow_open,
    .close = qcow_close,
    .create = qcow_create,
    .get_length = qcow_get_length,
    .pread = qcow_pread,
    .pwrite = qcow_pwrite_crypt,
    .pwrite_compressed = qcow_pwrite_compressed,
    .flush = qcow_flush,
    .block_status = qcow_block_status,
    .get_info = qcow_get_info,
    .make_empty = qcow_make_empty,
    .cluster_size = qcow_cluster_size,
};
