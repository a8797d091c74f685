/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * parallels: Parallels expandable images, as QEMU's
 * docs/interop/parallels.txt describes them and QEMU 7.2 reads them: a
 * 64-byte little-endian header ("WithoutFreeSpace", version 1 layout, BAT
 * entries in sectors; or "WithouFreSpacExt", BAT entries in clusters), the
 * BAT right after it (32-bit entries, 0: not allocated, reads as zeroes),
 * and clusters of `tracks` sectors in the data area.  The Format Extension
 * cluster (ext_off) is read and checked (magic, MD5) and its dirty bitmaps
 * are loaded, read-only, under their UUID as name (NBD
 * qemu:dirty-bitmap:UUID), as QEMU does.
 *
 * Writing, as QEMU 7.2 does it: create (qemu-img's header, geometry and
 * data offset), allocating writes (a new cluster is appended at the end of
 * the data area and gets the data, the rest zeroes or the bytes of a
 * backing file given in the options), the BAT entries written at flush and
 * close -- after a flush of the data, so that a power cut never leaves an
 * entry pointing at unwritten space --, the in-use flag set while the image
 * is open read-write and cleared at close, where the file is cut to the end
 * of the data; check and check -r with qemu-img's verdicts, lines and
 * repairs.  Beyond QEMU 7.2: resize (grow, when the BAT has room before the
 * data area) and discard of whole clusters.  A dirty image (in-use set)
 * opens read-write only for check; an image with a Format Extension only
 * read-only (QEMU ignores the extension in read-write mode, which would
 * leave its bitmaps stale).  blkdebug events: header_update (in-use flag),
 * cluster_alloc, write_aio, read_aio, bat_update, cluster_free.
 *
 * Hostile input: tracks of 0 or above INT32_MAX / 513 (QEMU's limits), a
 * BAT of more than 64 MiB or past the end of the file, Format Extension
 * clusters above 16 MiB, features with flags, sizes past the cluster,
 * unknown features, bitmaps whose size, granularity or L1 size do not match
 * the disk, and bitmaps above 64 MiB in memory are refused at open.  BAT
 * entries past the end of the file read as zeroes (the file reads zeroes
 * there), as in QEMU.
 */
#include <nettle/md5.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "format-io.h"
#include "internal.h"

#define PRL_MAGIC1 "WithoutFreeSpace"
#define PRL_MAGIC2 "WithouFreSpacExt"
#define PRL_VERSION 2u
#define PRL_HEADER 64u
#define PRL_INUSE 0x746f6e59u
#define PRL_MAX_TRACKS (INT32_MAX / 513)
#define PRL_MAX_BAT_BYTES (64u << 20)
#define PRL_MAX_EXT_CLUSTER (16u << 20)
#define PRL_MAX_BITMAP_BYTES (64u << 20)
#define PRL_EXT_MAGIC 0xab234cef23dcea87ull
#define PRL_FEATURE_END 0ull
#define PRL_FEATURE_BITMAP 0x20385fae252cb34aull
#define PRL_MAX_BITMAPS 16
#define PRL_DEFAULT_CLUSTER (1u << 20)

enum {
    PRL_H_VERSION = 16,
    PRL_H_HEADS = 20,
    PRL_H_CYLINDERS = 24,
    PRL_H_TRACKS = 28,
    PRL_H_BAT_ENTRIES = 32,
    PRL_H_NB_SECTORS = 36,
    PRL_H_INUSE = 44,
    PRL_H_DATA_OFF = 48,
    PRL_H_FLAGS = 52,
    PRL_H_EXT_OFF = 56,
};

typedef struct prl_bitmap {
    char name[37];         /* the UUID, as QEMU names it */
    uint64_t granularity;  /* bytes */
    uint8_t *bits;         /* bit i (LSB first) covers granule i */
    uint64_t nbits;
} prl_bitmap;

typedef struct prl_state {
    /* guards bat[] and data_end: allocation appends clusters; data I/O on
     * allocated clusters runs outside it (clusters never move) */
    pthread_mutex_t lock;
    bool lock_ready;
    bool rw;            /* opened read-write: in-use flag set */
    uint8_t header[PRL_HEADER];
    uint64_t data_end;  /* bytes: where the next cluster goes */
    uint32_t *bat;
    uint32_t bat_size;
    /* BAT entries [bat_dirty_lo, bat_dirty_hi] changed in memory since they
     * were last written (lo > hi: none).  They go to the file at flush and
     * close, after a flush of the file (the data they point at first). */
    uint32_t bat_dirty_lo;
    uint32_t bat_dirty_hi;
    uint32_t tracks;
    uint64_t cluster_size;
    uint64_t off_multiplier; /* sectors per BAT unit */
    uint64_t total_sectors;
    bool ext_magic2;
    bool dirty;
    prl_bitmap bitmaps[PRL_MAX_BITMAPS];
    int nb_bitmaps;
} prl_state;

static uint64_t prl_cluster_host(const prl_state *s, uint64_t idx);

static int prl_probe(const uint8_t *buf, size_t len, const char *filename)
{
    (void)filename;
    if (len < PRL_HEADER) {
        return 0;
    }
    if ((!memcmp(buf, PRL_MAGIC1, 16) || !memcmp(buf, PRL_MAGIC2, 16)) &&
        vd_ld_le32(buf + PRL_H_VERSION) == PRL_VERSION) {
        return 100;
    }
    return 0;
}

static int prl_write_bat(vd_node *bs);

/* The header as it is in memory (in-use flag included), synced. */
static int prl_write_header(vd_node *bs)
{
    prl_state *s = bs->opaque;
    vd_node_event(bs->file, VD_EV_HEADER_UPDATE);
    int ret = vd_node_pwrite(bs->file, 0, PRL_HEADER, s->header, 0);
    return ret < 0 ? ret : vd_node_flush(bs->file);
}

static void prl_close(vd_node *bs)
{
    prl_state *s = bs->opaque;
    if (s->rw) {
        /* clean close: the BAT entries not written yet, then the in-use
         * flag cleared and the space after the data dropped.  The flag is
         * cleared even when the BAT could not be written: the BAT on disk
         * only ever points at data that reached the disk before it (see
         * prl_write_bat), so the image is consistent either way (clusters
         * the old BAT does not know are leaked space). */
        vd_error *err = NULL;
        (void)prl_write_bat(bs);
        vd_st_le32(s->header + PRL_H_INUSE, 0);
        if (prl_write_header(bs) == 0) {
            int64_t len = vd_node_get_length(bs->file);
            if (len > 0 && (uint64_t)len > s->data_end) {
                vd_node_truncate(bs->file, s->data_end, false, VD_PREALLOC_OFF, &err);
                vd_error_free(err);
            }
        }
        s->rw = false;
    }
    if (s->lock_ready) {
        pthread_mutex_destroy(&s->lock);
        s->lock_ready = false;
    }
    free(s->bat);
    s->bat = NULL;
    for (int i = 0; i < s->nb_bitmaps; i++) {
        free(s->bitmaps[i].bits);
    }
    s->nb_bitmaps = 0;
}

/* Load one dirty bitmap feature (data: data_size bytes). */
static int prl_load_bitmap(vd_node *bs, const uint8_t *data, uint64_t data_size,
                           vd_error **errp)
{
    prl_state *s = bs->opaque;
    if (data_size < 32) {
        return vd_error_set(errp, EINVAL,
                            "Too small Bitmap Feature area in Parallels Format Extension: "
                            "%llu bytes, expected at least 32 bytes",
                            (unsigned long long)data_size);
    }
    uint64_t size = vd_ld_le64(data);
    const uint8_t *id = data + 8;
    uint64_t granularity = (uint64_t)vd_ld_le32(data + 24) * 512;
    uint32_t l1_size = vd_ld_le32(data + 28);
    if (size != s->total_sectors) {
        return vd_error_set(errp, EINVAL,
                            "Bitmap size (in sectors) %llu differs from disk size in "
                            "sectors %llu",
                            (unsigned long long)size, (unsigned long long)s->total_sectors);
    }
    if (granularity < 512 || granularity > UINT32_MAX || !vd_is_pow2(granularity)) {
        return vd_error_set(errp, EINVAL,
                            "Invalid bitmap granularity %llu, expected a power of two of at "
                            "least 512 bytes",
                            (unsigned long long)granularity);
    }
    if ((uint64_t)l1_size * 8 > data_size - 32) {
        return vd_error_set(errp, EINVAL,
                            "Bitmaps feature corrupted: l1 table exceeds extension data_size");
    }
    if (s->nb_bitmaps == PRL_MAX_BITMAPS) {
        return vd_error_set(errp, EINVAL, "More than %d dirty bitmaps", PRL_MAX_BITMAPS);
    }
    uint64_t nbits = vd_div_round_up(s->total_sectors * 512, granularity);
    /* QEMU serialises in whole 64-bit words */
    uint64_t ser = vd_div_round_up(nbits, 64) * 8;
    uint64_t expect_l1 = vd_div_round_up(ser, s->cluster_size);
    if (expect_l1 != l1_size) {
        return vd_error_set(errp, EINVAL,
                            "Bitmap table size %u does not correspond to bitmap size and "
                            "cluster size. Expected %llu",
                            l1_size, (unsigned long long)expect_l1);
    }
    if (ser > PRL_MAX_BITMAP_BYTES) {
        return vd_error_set(errp, EFBIG, "Dirty bitmap of %llu bytes is larger than %u MiB",
                            (unsigned long long)ser, PRL_MAX_BITMAP_BYTES >> 20);
    }
    prl_bitmap *bm = &s->bitmaps[s->nb_bitmaps];
    memset(bm, 0, sizeof(*bm));
    bm->bits = vd_calloc(1, ser ? ser : 1);
    if (!bm->bits) {
        return vd_error_set(errp, ENOMEM, "Could not allocate the dirty bitmap");
    }
    snprintf(bm->name, sizeof(bm->name),
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", id[0],
             id[1], id[2], id[3], id[4], id[5], id[6], id[7], id[8], id[9], id[10], id[11],
             id[12], id[13], id[14], id[15]);
    bm->granularity = granularity;
    bm->nbits = nbits;
    s->nb_bitmaps++;
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t entry = vd_ld_le64(data + 32 + (uint64_t)i * 8);
        uint64_t off = (uint64_t)i * s->cluster_size;
        uint64_t n = VD_MIN(s->cluster_size, ser - off);
        if (entry == 0) {
            continue;
        }
        if (entry == 1) {
            memset(bm->bits + off, 0xff, n);
            continue;
        }
        if (entry > UINT64_MAX / 512) {
            return vd_error_set(errp, EINVAL, "Bitmap data cluster offset %llu is invalid",
                                (unsigned long long)entry);
        }
        int ret = vd_node_pread(bs->file, entry * 512, n, bm->bits + off, 0);
        if (ret < 0) {
            return vd_error_setg_errno(errp, ret, "Failed to read bitmap data cluster");
        }
    }
    /* bits past the disk end are not part of the bitmap */
    if (nbits % 8) {
        bm->bits[nbits / 8] &= (uint8_t)((1u << (nbits % 8)) - 1);
    }
    return 0;
}

static int prl_read_extension(vd_node *bs, uint64_t ext_off, vd_error **errp)
{
    prl_state *s = bs->opaque;
    if (s->cluster_size > PRL_MAX_EXT_CLUSTER) {
        return vd_error_set(errp, EFBIG,
                            "Format Extension cluster of %llu bytes is larger than %u MiB",
                            (unsigned long long)s->cluster_size, PRL_MAX_EXT_CLUSTER >> 20);
    }
    if (ext_off > UINT64_MAX / 512) {
        return vd_error_set(errp, EINVAL, "Format Extension offset is invalid");
    }
    uint32_t csize = (uint32_t)s->cluster_size;
    uint8_t *c = vd_malloc(csize);
    if (!c) {
        return vd_error_set(errp, ENOMEM, "Failed to allocate the Format Extension cluster");
    }
    int ret = vd_node_pread(bs->file, ext_off * 512, csize, c, 0);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Failed to read Format Extension cluster");
        goto out;
    }
    if (csize < 24 || vd_ld_le64(c) != PRL_EXT_MAGIC) {
        ret = vd_error_set(errp, EINVAL,
                           "Wrong parallels Format Extension magic: 0x%llx, expected: 0x%llx",
                           csize >= 8 ? (unsigned long long)vd_ld_le64(c) : 0ull,
                           (unsigned long long)PRL_EXT_MAGIC);
        goto out;
    }
    struct md5_ctx md5;
    uint8_t digest[MD5_DIGEST_SIZE];
    md5_init(&md5);
    md5_update(&md5, csize - 24, c + 24);
    md5_digest(&md5, sizeof(digest), digest);
    if (memcmp(digest, c + 8, 16)) {
        ret = vd_error_set(errp, EINVAL,
                           "Wrong checksum in Format Extension header. Format extension is "
                           "corrupted.");
        goto out;
    }
    uint64_t pos = 24;
    for (;;) {
        if (csize - pos < 24) {
            ret = vd_error_set(errp, EINVAL,
                               "Can not read feature header, as remaining bytes (%llu) in "
                               "Format Extension is less than Feature header size (24)",
                               (unsigned long long)(csize - pos));
            goto out;
        }
        uint64_t magic = vd_ld_le64(c + pos);
        uint64_t flags = vd_ld_le64(c + pos + 8);
        uint32_t dsize = vd_ld_le32(c + pos + 16);
        pos += 24;
        if (flags) {
            ret = vd_error_set(errp, ENOTSUP, "Flags for extension feature are unsupported");
            goto out;
        }
        uint64_t aligned = vd_div_round_up(dsize, 8) * 8;
        if (aligned > csize - pos) {
            ret = vd_error_set(errp, EINVAL, "Feature data_size exceeds Format Extension cluster");
            goto out;
        }
        if (magic == PRL_FEATURE_END) {
            ret = 0;
            goto out;
        }
        if (magic != PRL_FEATURE_BITMAP) {
            ret = vd_error_set(errp, ENOTSUP, "Unknown feature: 0x%llx",
                               (unsigned long long)magic);
            goto out;
        }
        ret = prl_load_bitmap(bs, c + pos, dsize, errp);
        if (ret < 0) {
            goto out;
        }
        pos += aligned;
    }
out:
    free(c);
    return ret;
}

static int prl_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    prl_state *s = bs->opaque;
    uint8_t h[PRL_HEADER];
    int ret;
    (void)opts;

    pthread_mutex_init(&s->lock, NULL);
    s->lock_ready = true;
    int64_t file_len = vd_node_get_length(bs->file);
    if (file_len < 0) {
        return vd_error_setg_errno(errp, (int)file_len, "Could not get the file size");
    }
    if (file_len < PRL_HEADER) {
        return vd_error_set(errp, EINVAL, "Image not in Parallels format");
    }
    ret = vd_node_pread(bs->file, 0, sizeof(h), h, 0);
    if (ret < 0) {
        return vd_error_setg_errno(errp, ret, "Could not read the parallels header");
    }
    memcpy(s->header, h, sizeof(h));
    uint64_t nb_sectors = vd_ld_le64(h + PRL_H_NB_SECTORS);
    s->tracks = vd_ld_le32(h + PRL_H_TRACKS);
    if (vd_ld_le32(h + PRL_H_VERSION) != PRL_VERSION) {
        return vd_error_set(errp, EINVAL, "Image not in Parallels format");
    }
    if (!memcmp(h, PRL_MAGIC1, 16)) {
        s->off_multiplier = 1;
        nb_sectors &= 0xffffffffu;
    } else if (!memcmp(h, PRL_MAGIC2, 16)) {
        s->off_multiplier = s->tracks;
        s->ext_magic2 = true;
    } else {
        return vd_error_set(errp, EINVAL, "Image not in Parallels format");
    }
    if (s->tracks == 0) {
        return vd_error_set(errp, EINVAL, "Invalid image: Zero sectors per track");
    }
    if (s->tracks > PRL_MAX_TRACKS) {
        return vd_error_set(errp, EFBIG, "Invalid image: Too big cluster");
    }
    if (nb_sectors > (uint64_t)INT64_MAX / 512) {
        return vd_error_set(errp, EFBIG, "Invalid image: disk size of %llu sectors is too large",
                            (unsigned long long)nb_sectors);
    }
    s->total_sectors = nb_sectors;
    s->cluster_size = (uint64_t)s->tracks * 512;
    s->bat_size = vd_ld_le32(h + PRL_H_BAT_ENTRIES);
    /* QEMU's message (iotest 076); its limit is 2 GiB of BAT */
    if ((uint64_t)s->bat_size * 4 > PRL_MAX_BAT_BYTES) {
        return vd_error_set(errp, EFBIG, "Catalog too large");
    }
    if (PRL_HEADER + (uint64_t)s->bat_size * 4 > (uint64_t)file_len) {
        return vd_error_set(errp, EINVAL,
                            "Parallels BAT (%u entries) extends past the end of the file; the "
                            "image is truncated",
                            s->bat_size);
    }
    s->bat = vd_malloc((size_t)s->bat_size * 4 + 4);
    if (!s->bat) {
        return vd_error_set(errp, ENOMEM, "Could not allocate the parallels BAT");
    }
    if (s->bat_size) {
        ret = vd_node_pread(bs->file, PRL_HEADER, (uint64_t)s->bat_size * 4, s->bat, 0);
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not read the parallels BAT");
            goto fail;
        }
    }
    for (uint32_t i = 0; i < s->bat_size; i++) {
        s->bat[i] = vd_ld_le32(&s->bat[i]);
    }
    s->dirty = vd_ld_le32(h + PRL_H_INUSE) == PRL_INUSE;
    s->bat_dirty_lo = 1;
    s->bat_dirty_hi = 0;
    /* the data area starts at data_off, or after the BAT when it is 0 */
    uint64_t data_off = (uint64_t)vd_ld_le32(h + PRL_H_DATA_OFF) * 512;
    if (data_off == 0) {
        data_off = vd_div_round_up(PRL_HEADER + (uint64_t)s->bat_size * 4, 512) * 512;
    }
    s->data_end = data_off;
    for (uint32_t i = 0; i < s->bat_size; i++) {
        uint64_t host = prl_cluster_host(s, i);
        if (host && host + s->cluster_size > s->data_end) {
            s->data_end = host + s->cluster_size;
        }
    }
    uint64_t ext_off = vd_ld_le64(h + PRL_H_EXT_OFF);
    if (!bs->read_only) {
        if (s->dirty && !(bs->flags & VD_NODE_CHECK)) {
            ret = vd_error_set(errp, EACCES,
                               "parallels: Image was not closed correctly; cannot be opened "
                               "read/write");
            goto fail;
        }
        if (ext_off) {
            ret = vd_error_set(errp, ENOTSUP,
                               "parallels: an image with a Format Extension (dirty bitmaps) "
                               "can only be opened read-only");
            goto fail;
        }
        if (s->ext_magic2) {
            /* BAT entries count clusters: new clusters go on cluster
             * boundaries of the file */
            s->data_end = vd_div_round_up(s->data_end, s->cluster_size) * s->cluster_size;
        }
        vd_st_le32(s->header + PRL_H_INUSE, PRL_INUSE);
        ret = prl_write_header(bs);
        if (ret < 0) {
            /* the flag may have been written when the flush failed: take
             * it back (best effort) rather than leave an unclean image */
            vd_st_le32(s->header + PRL_H_INUSE, s->dirty ? PRL_INUSE : 0);
            vd_node_pwrite(bs->file, 0, PRL_HEADER, s->header, 0);
            vd_error_setg_errno(errp, ret, "Could not mark the parallels image in use");
            goto fail;
        }
        s->rw = true;
    }
    if (ext_off) {
        ret = prl_read_extension(bs, ext_off, errp);
        if (ret < 0) {
            goto fail;
        }
    }
    bs->has_zero_init = true;
    return 0;

fail:
    prl_close(bs);
    return ret;
}

static int64_t prl_get_length(vd_node *bs)
{
    prl_state *s = bs->opaque;
    return (int64_t)(s->total_sectors * 512);
}

/* Host byte offset of cluster idx, or 0 when not allocated. */
static uint64_t prl_cluster_host(const prl_state *s, uint64_t idx)
{
    if (idx >= s->bat_size || s->bat[idx] == 0) {
        return 0;
    }
    /* at most 2^32 * 2^22 sectors * 512: below 2^63 */
    return (uint64_t)s->bat[idx] * s->off_multiplier * 512;
}

/* vd_fmt_read's map: one cluster (or a run of unallocated ones) at a time. */
static int prl_map(vd_node *bs, void *opaque, uint64_t offset, uint64_t max, void *buf,
                   vd_fmt_extent *ext)
{
    prl_state *s = bs->opaque;
    (void)opaque;
    (void)buf;
    uint64_t idx = offset / s->cluster_size;
    uint64_t in_cluster = offset % s->cluster_size;
    pthread_mutex_lock(&s->lock);
    uint64_t host = prl_cluster_host(s, idx);
    pthread_mutex_unlock(&s->lock);
    ext->len = VD_MIN(max, s->cluster_size - in_cluster);
    if (host) {
        vd_node_event(bs->file, VD_EV_READ_AIO);
        ext->kind = VD_FMT_MAP_DATA;
        ext->host = host + in_cluster;
    } else {
        /* the backing file given in the options, or zeroes (QEMU's
         * parallels has no backing file name in the image) */
        ext->kind = VD_FMT_MAP_BACKING;
    }
    return 0;
}

static int prl_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    (void)flags;
    return vd_fmt_read(bs, offset, len, buf, prl_map, NULL);
}

static int prl_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                            uint64_t *pnum, uint64_t *map, vd_node **file)
{
    prl_state *s = bs->opaque;
    (void)want_zero;
    pthread_mutex_lock(&s->lock);
    uint64_t idx = offset / s->cluster_size;
    uint64_t in_cluster = offset % s->cluster_size;
    uint64_t host = prl_cluster_host(s, idx);
    uint64_t n = VD_MIN(len, s->cluster_size - in_cluster);
    /* contiguous runs: unallocated clusters, or clusters that follow each
     * other in the file (QEMU answers per cluster, map merges them) */
    while (n < len) {
        if (idx + 1 >= s->bat_size) {
            /* past the BAT nothing is allocated: one answer to the end */
            if (!host) {
                n = len;
            }
            break;
        }
        uint64_t next = prl_cluster_host(s, idx + 1);
        if (host ? next != host + (idx + 1 - offset / s->cluster_size) * s->cluster_size
                 : next != 0) {
            break;
        }
        idx++;
        n = VD_MIN(len, n + s->cluster_size);
    }
    pthread_mutex_unlock(&s->lock);
    *pnum = n;
    if (!host) {
        return 0;
    }
    *map = host + in_cluster;
    *file = bs->file;
    return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
}

/*
 * Write the BAT entries changed since the last time (lock held, or no
 * other thread).  The file is flushed first, so that an entry never
 * reaches the disk before the data of its cluster: after a power cut the
 * BAT on disk points only at written clusters, whatever the disk cache
 * kept or dropped (new clusters whose entry did not make it are leaked
 * space).  QEMU also writes the BAT at flush time (flush_to_os), without
 * the barrier.  The core flushes the file again after this.
 */
static int prl_write_bat(vd_node *bs)
{
    prl_state *s = bs->opaque;
    if (s->bat_dirty_lo > s->bat_dirty_hi) {
        return 0;
    }
    int ret = vd_node_flush(bs->file);
    if (ret < 0) {
        return ret;
    }
    uint32_t lo = s->bat_dirty_lo, n = s->bat_dirty_hi - lo + 1;
    uint8_t *buf = vd_malloc((size_t)n * 4);
    if (!buf) {
        return -ENOMEM;
    }
    for (uint32_t i = 0; i < n; i++) {
        vd_st_le32(buf + (size_t)i * 4, s->bat[lo + i]);
    }
    vd_node_event(bs->file, VD_EV_BAT_UPDATE);
    ret = vd_node_pwrite(bs->file, PRL_HEADER + (uint64_t)lo * 4, (uint64_t)n * 4, buf, 0);
    free(buf);
    if (ret == 0) {
        s->bat_dirty_lo = 1;
        s->bat_dirty_hi = 0;
    }
    return ret;
}

static void prl_bat_set(prl_state *s, uint32_t idx, uint32_t value)
{
    s->bat[idx] = value;
    if (s->bat_dirty_lo > s->bat_dirty_hi) {
        s->bat_dirty_lo = s->bat_dirty_hi = idx;
    } else {
        s->bat_dirty_lo = VD_MIN(s->bat_dirty_lo, idx);
        s->bat_dirty_hi = VD_MAX(s->bat_dirty_hi, idx);
    }
}

/*
 * Write n bytes at in_cluster of cluster idx, which is not allocated (lock
 * held): a new cluster at the end of the data area gets the data, the rest
 * of it the backing file's bytes or zeroes; then its BAT entry changes in
 * memory (written at the next flush).
 */
static int prl_alloc_write(vd_node *bs, uint64_t idx, uint64_t in_cluster, uint64_t n,
                           const uint8_t *data)
{
    prl_state *s = bs->opaque;
    if (idx >= s->bat_size) {
        return -EIO;
    }
    uint64_t at = s->data_end;
    uint64_t unit = s->off_multiplier * 512;
    if (at % unit || at / unit > UINT32_MAX || at / unit == 0) {
        /* the BAT cannot address it (a v1 image past 2 TiB) */
        return -ENOSPC;
    }
    vd_node_event(bs->file, VD_EV_CLUSTER_ALLOC);
    int ret = vd_fmt_cow_write(bs->file, at, s->cluster_size, idx * s->cluster_size + in_cluster,
                               n, data, bs->backing ? vd_fmt_cow_backing : NULL, bs);
    if (ret < 0) {
        /* nothing points at the space: the next allocation reuses it */
        return ret;
    }
    prl_bat_set(s, (uint32_t)idx, (uint32_t)(at / unit));
    s->data_end = at + s->cluster_size;
    return 0;
}

static int prl_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                      unsigned flags)
{
    prl_state *s = bs->opaque;
    const uint8_t *p = buf;
    (void)flags;

    while (len > 0) {
        uint64_t idx = offset / s->cluster_size;
        uint64_t in_cluster = offset % s->cluster_size;
        uint64_t n = VD_MIN(len, s->cluster_size - in_cluster);
        int ret;
        pthread_mutex_lock(&s->lock);
        uint64_t host = prl_cluster_host(s, idx);
        if (host) {
            /* clusters never move: the write may run outside the lock */
            pthread_mutex_unlock(&s->lock);
            vd_node_event(bs->file, VD_EV_WRITE_AIO);
            ret = vd_node_pwrite(bs->file, host + in_cluster, n, p, 0);
        } else {
            ret = prl_alloc_write(bs, idx, in_cluster, n, p);
            pthread_mutex_unlock(&s->lock);
        }
        if (ret < 0) {
            return ret;
        }
        offset += n;
        len -= n;
        p += n;
    }
    return 0;
}

/*
 * Discard (not in QEMU 7.2's parallels; later QEMUs have one): whole
 * clusters inside the range lose their BAT entry (written at the next
 * flush) and their space in the file is discarded.  Freed space is never
 * reused (new clusters go at the end of the data area), so a BAT on disk
 * that still points at a discarded cluster reads either its old bytes or
 * zeroes, never another cluster's data.  With a backing file (given in
 * the options) nothing is done: the backing file's bytes would show
 * through where the guest had data.
 */
static int prl_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    prl_state *s = bs->opaque;
    if (bs->backing) {
        return 0;
    }
    uint64_t first, end = offset + len;
    if (vd_align_up_overflow(offset, s->cluster_size, &first)) {
        return 0;
    }
    /* the last cluster may be partial: discarding to the end covers it */
    if (end < s->total_sectors * 512) {
        end = vd_align_down(end, s->cluster_size);
    } else {
        end = vd_div_round_up(end, s->cluster_size) * s->cluster_size;
    }
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    for (uint64_t idx = first / s->cluster_size;
         idx < end / s->cluster_size && idx < s->bat_size && ret == 0; idx++) {
        uint64_t host = prl_cluster_host(s, idx);
        if (!host) {
            continue;
        }
        prl_bat_set(s, (uint32_t)idx, 0);
        vd_node_event(bs->file, VD_EV_CLUSTER_FREE);
        /* advisory below: a file that cannot discard keeps the bytes */
        (void)vd_node_discard(bs->file, host, s->cluster_size);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/*
 * Grow the disk (QEMU 7.2's parallels cannot resize).  The BAT gets the
 * new entries in place, so they must fit between the BAT and the first
 * data cluster: images qemu-img and vdisk create leave the rest of a
 * cluster after the BAT (a 1 MiB cluster holds 262128 entries).  The new
 * entries (zero) are written first, then the header with the new size.
 */
static int prl_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                        vd_error **errp)
{
    prl_state *s = bs->opaque;
    (void)exact;
    if (prealloc != VD_PREALLOC_OFF) {
        return vd_error_set(errp, ENOTSUP, "Unsupported preallocation mode '%s'",
                            vd_prealloc_name(prealloc));
    }
    if (size % 512) {
        return vd_error_set(errp, EINVAL, "Image size must be a multiple of 512 bytes");
    }
    uint64_t sectors = size / 512;
    if (sectors < s->total_sectors) {
        return vd_error_set(errp, ENOTSUP, "Cannot shrink a parallels image");
    }
    if (sectors == s->total_sectors) {
        return 0;
    }
    if (!s->ext_magic2 && sectors > UINT32_MAX) {
        return vd_error_set(errp, EFBIG,
                            "A version 1 parallels image (WithoutFreeSpace) holds at most "
                            "%llu bytes",
                            (unsigned long long)UINT32_MAX * 512);
    }
    uint64_t entries = vd_div_round_up(sectors, s->tracks);
    if (entries * 4 > PRL_MAX_BAT_BYTES) {
        return vd_error_set(errp, EFBIG, "Catalog too large");
    }
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    /* the data area starts at data_off (or right after the BAT when 0) and
     * no cluster may lie below the new BAT's end */
    uint64_t data_off = (uint64_t)vd_ld_le32(s->header + PRL_H_DATA_OFF) * 512;
    if (data_off == 0) {
        data_off = vd_div_round_up(PRL_HEADER + (uint64_t)s->bat_size * 4, 512) * 512;
    }
    uint64_t low = data_off;
    for (uint32_t i = 0; i < s->bat_size; i++) {
        uint64_t h = prl_cluster_host(s, i);
        if (h && h < low) {
            low = h;
        }
    }
    uint64_t bat_end = PRL_HEADER + entries * 4;
    if (entries > s->bat_size && bat_end > low) {
        ret = vd_error_set(errp, ENOSPC,
                           "Cannot grow this parallels image to %llu bytes: its BAT would "
                           "need %llu entries, the data area at %llu leaves room for %llu",
                           (unsigned long long)size, (unsigned long long)entries,
                           (unsigned long long)low,
                           (unsigned long long)((low - PRL_HEADER) / 4));
        goto out;
    }
    if (entries > s->bat_size) {
        uint32_t *nb = realloc(s->bat, (size_t)entries * 4 + 4);
        if (!nb) {
            ret = vd_error_set(errp, ENOMEM, "Could not allocate the parallels BAT");
            goto out;
        }
        s->bat = nb;
        uint32_t old = s->bat_size;
        s->bat_size = (uint32_t)entries;
        for (uint32_t i = old; i < s->bat_size; i++) {
            prl_bat_set(s, i, 0);
        }
        ret = prl_write_bat(bs);
        if (ret == 0) {
            ret = vd_node_flush(bs->file);
        }
        if (ret < 0) {
            /* the header still has the old count: the entries are unused */
            s->bat_size = old;
            s->bat_dirty_hi = VD_MIN(s->bat_dirty_hi, old ? old - 1 : 0);
            if (old == 0) {
                s->bat_dirty_lo = 1;
                s->bat_dirty_hi = 0;
            }
            vd_error_setg_errno(errp, ret, "Could not write the parallels BAT");
            goto out;
        }
        vd_st_le32(s->header + PRL_H_BAT_ENTRIES, s->bat_size);
    }
    if (vd_ld_le32(s->header + PRL_H_DATA_OFF) == 0) {
        /* keep the data area where it is */
        vd_st_le32(s->header + PRL_H_DATA_OFF, (uint32_t)(data_off / 512));
    }
    vd_st_le64(s->header + PRL_H_NB_SECTORS, sectors);
    vd_st_le32(s->header + PRL_H_CYLINDERS, (uint32_t)VD_MIN(sectors / (16 * 32), UINT32_MAX));
    s->total_sectors = sectors;
    ret = prl_write_header(bs);
    if (ret < 0) {
        vd_error_setg_errno(errp, ret, "Could not write the parallels header");
    }
out:
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int prl_flush(vd_node *bs)
{
    prl_state *s = bs->opaque;
    pthread_mutex_lock(&s->lock);
    int ret = prl_write_bat(bs);
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/*
 * qemu-img check's parallels verdicts, lines and repairs (QEMU 7.2's
 * parallels_co_check): an unclean header (in-use flag) and clusters
 * outside the file are corruptions, space after the data is leaked.
 * Repairs: the flag is cleared at close (the image is open read-write for
 * the repair), entries of clusters outside the file are cleared and the
 * BAT written at once, leaked space is cut off the file.
 */
static int prl_check(vd_node *bs, vd_check_res *res, unsigned fix, vd_error **errp)
{
    prl_state *s = bs->opaque;
    bool fix_errors = fix & VD_CHECK_FIX_ERRORS;
    bool fix_leaks = fix & VD_CHECK_FIX_LEAKS;
    int ret = 0;
    if (fix && !s->rw) {
        return vd_error_set(errp, EROFS, "Cannot repair a read-only image");
    }
    int64_t size = vd_node_get_length(bs->file);
    if (size < 0) {
        res->check_errors++;
        return vd_error_setg_errno(errp, (int)size, "Could not get the file size");
    }
    /* QEMU sees file sizes in whole sectors */
    size = (int64_t)vd_div_round_up((uint64_t)size, 512) * 512;
    pthread_mutex_lock(&s->lock);
    if (s->dirty) {
        vd_check_line("%s image was not closed correctly", fix_errors ? "Repairing" : "ERROR");
        res->corruptions++;
        if (fix_errors) {
            /* prl_close clears the flag on disk */
            res->corruptions_fixed++;
            s->dirty = false;
        }
    }
    uint64_t high = 0, prev = 0;
    bool write_bat = false;
    res->total_clusters = s->bat_size;
    for (uint32_t i = 0; i < s->bat_size; i++) {
        uint64_t off = prl_cluster_host(s, i);
        if (!off) {
            prev = 0;
            continue;
        }
        if (off > (uint64_t)size) {
            vd_check_line("%s cluster %u is outside image", fix_errors ? "Repairing" : "ERROR",
                          i);
            res->corruptions++;
            if (fix_errors) {
                prl_bat_set(s, i, 0);
                res->corruptions_fixed++;
                write_bat = true;
                prev = 0;
                continue;
            }
        }
        res->allocated_clusters++;
        high = VD_MAX(high, off);
        if (prev && prev + s->cluster_size != off) {
            res->fragmented_clusters++;
        }
        prev = off;
    }
    if (write_bat) {
        ret = prl_write_bat(bs);
        if (ret == 0) {
            ret = vd_node_flush(bs->file);
        }
        if (ret < 0) {
            res->check_errors++;
            vd_error_setg_errno(errp, ret, "Could not write the parallels BAT");
            goto out;
        }
    }
    uint64_t end;
    if (high == 0) {
        uint64_t data_off = (uint64_t)vd_ld_le32(s->header + PRL_H_DATA_OFF) * 512;
        end = data_off ? data_off
                       : vd_div_round_up(PRL_HEADER + (uint64_t)s->bat_size * 4, 512) * 512;
    } else {
        end = high + s->cluster_size;
    }
    res->image_end_offset = (int64_t)end;
    if ((uint64_t)size > end) {
        int count = (int)VD_MIN(vd_div_round_up((uint64_t)size - end, s->cluster_size),
                                (uint64_t)INT32_MAX);
        vd_check_line("%s space leaked at the end of the image %lld",
                      fix_leaks ? "Repairing" : "ERROR", (long long)((uint64_t)size - end));
        res->leaks += count;
        if (fix_leaks) {
            /* the space past the data goes: later clusters are appended
             * at the new end */
            ret = vd_node_truncate(bs->file, end, true, VD_PREALLOC_OFF, errp);
            if (ret < 0) {
                res->check_errors++;
                goto out;
            }
            res->leaks_fixed += count;
            if (s->data_end > end) {
                s->data_end = s->ext_magic2
                                  ? vd_div_round_up(end, s->cluster_size) * s->cluster_size
                                  : end;
            }
        }
    }
out:
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static const vd_opt_desc prl_create_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {"cluster_size", VD_OPT_SIZE, "Parallels image cluster size", "1048576"},
    {NULL, 0, NULL, NULL},
};

static int prl_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    uint64_t size, cl;
    int ret = vd_opts_get_size(opts, "size", 0, &size, errp);
    if (ret < 0) {
        return ret;
    }
    ret = vd_opts_get_size(opts, "cluster_size", PRL_DEFAULT_CLUSTER, &cl, errp);
    if (ret < 0) {
        return ret;
    }
    /* QEMU works in whole sectors */
    size = vd_div_round_up(size, 512) * 512;
    cl = vd_div_round_up(cl, 512) * 512;
    if (cl == 0 || cl / 512 > PRL_MAX_TRACKS) {
        return vd_error_set(errp, EINVAL, "Cluster size is too large");
    }
    if (size / cl >= (1ull << 32)) {
        return vd_error_set(errp, E2BIG, "Image size is too large for this cluster size");
    }
    uint64_t sectors = size / 512;
    uint64_t bat_entries = vd_div_round_up(sectors, cl / 512);
    uint64_t meta = vd_div_round_up(PRL_HEADER + bat_entries * 4, cl) * cl;
    if (meta / 512 > UINT32_MAX) {
        return vd_error_set(errp, E2BIG, "Image size is too large for this cluster size");
    }
    uint8_t h[PRL_HEADER];
    memset(h, 0, sizeof(h));
    memcpy(h, PRL_MAGIC2, 16);
    vd_st_le32(h + PRL_H_VERSION, PRL_VERSION);
    vd_st_le32(h + PRL_H_HEADS, 16);
    vd_st_le32(h + PRL_H_CYLINDERS, (uint32_t)(sectors / (16 * 32)));
    vd_st_le32(h + PRL_H_TRACKS, (uint32_t)(cl / 512));
    vd_st_le32(h + PRL_H_BAT_ENTRIES, (uint32_t)bat_entries);
    vd_st_le64(h + PRL_H_NB_SECTORS, sectors);
    vd_st_le32(h + PRL_H_DATA_OFF, (uint32_t)(meta / 512));

    vd_node *file;
    ret = vd_create_open_file(filename, opts, &file, errp);
    if (ret < 0) {
        return ret;
    }
    /* the BAT is all zeroes: a new file of the right size holds it */
    ret = vd_node_truncate(file, meta, true, VD_PREALLOC_OFF, errp);
    if (ret == 0) {
        ret = vd_node_pwrite_zeroes(file, 0, meta, 0);
        if (ret == 0) {
            ret = vd_node_pwrite(file, 0, sizeof(h), h, 0);
        }
        if (ret < 0) {
            vd_error_setg_errno(errp, ret, "Could not write the parallels header");
        }
    }
    return vd_create_close_file(file, ret, "Could not flush the new image", errp);
}

static int prl_bitmap_status(vd_node *bs, const char *name, uint64_t offset, uint64_t len,
                             uint64_t *pnum, bool *dirty)
{
    prl_state *s = bs->opaque;
    const prl_bitmap *bm = NULL;
    for (int i = 0; i < s->nb_bitmaps; i++) {
        if (!strcmp(s->bitmaps[i].name, name)) {
            bm = &s->bitmaps[i];
        }
    }
    if (!bm) {
        return -ENOENT;
    }
    uint64_t g = offset / bm->granularity;
    bool first = g < bm->nbits && ((bm->bits[g / 8] >> (g % 8)) & 1);
    uint64_t end = offset;
    while (end < offset + len) {
        uint64_t gi = end / bm->granularity;
        if (gi >= bm->nbits) {
            /* past the bitmap: clean to the end */
            end = first ? end : offset + len;
            break;
        }
        bool d = (bm->bits[gi / 8] >> (gi % 8)) & 1;
        if (d != first) {
            break;
        }
        end = (gi + 1) * bm->granularity;
    }
    *pnum = VD_MIN(end, offset + len) - offset;
    *dirty = first;
    return 0;
}

const vd_driver vd_drv_parallels = {
    .name = "parallels",
    .supports_backing = true, /* in the options only, as QEMU 7.2 */
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(prl_state),
    .create_opts = prl_create_opts,
    .probe = prl_probe,
    .open = prl_open,
    .close = prl_close,
    .get_length = prl_get_length,
    .create = prl_create,
    .pread = prl_pread,
    .pwrite = prl_pwrite,
    .flush = prl_flush,
    .discard = prl_discard,
    .truncate = prl_truncate,
    .block_status = prl_block_status,
    .check = prl_check,
    .bitmap_status = prl_bitmap_status,
};
