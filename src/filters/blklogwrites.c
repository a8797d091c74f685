/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The "blklogwrites" filter (QEMU 7.2's block/blklogwrites.c): passes every
 * request to its file child and records each write, zero write, discard
 * and flush in a second child, the log, in the on-disk format of Linux's
 * dm-log-writes target (Documentation/admin-guide/device-mapper/
 * log-writes.rst), so that the replay tools for that format (and
 * tests/replay/replay.py) can rebuild the image as it was at any point.
 *
 * Log layout, all little-endian, in units of the log sector size S:
 *   sector 0: super block {u64 magic 0x6a736677736872, u64 version 1,
 *             u64 nr_entries, u32 sectorsize}, zero padded to S;
 *   then per entry: one sector {u64 sector, u64 nr_sectors, u64 flags,
 *             u64 data_len = 0} zero padded, followed (except for discards)
 *             by nr_sectors sectors of data.  Offsets and lengths are in S
 *             units; flags: 1 flush, 2 fua, 4 discard, 8 mark, 16 metadata.
 *   A zero write is logged with nr_sectors sectors of zeroes, a flush as an
 *   entry with no data.  The super block is rewritten (and the log flushed)
 *   after every flush entry and every log-super-update-interval entries.
 *
 * Options: file.* (the image), log.* (the log, an existing file),
 * log-sector-size (default 512, a power of two from 512 to 8 MiB; requests
 * are aligned to it), log-append (continue an existing log instead of
 * starting a new one), log-super-update-interval (default 4096).
 *
 * Not supported: resizing through the filter (QEMU's cannot either: a
 * length change would not be in the log); marks are never written (QEMU
 * writes none either).
 */
#include <inttypes.h>
#include <stdlib.h>

#include "internal.h"

#define LOG_MAGIC 0x6a736677736872ull
#define LOG_VERSION 1ull
#define LOG_FLUSH_FLAG (1u << 0)
#define LOG_FUA_FLAG (1u << 1)
#define LOG_DISCARD_FLAG (1u << 2)
#define LOG_MARK_FLAG (1u << 3)
#define LOG_METADATA_FLAG (1u << 4)
#define LOG_FLAG_MASK                                                                    \
    (LOG_FLUSH_FLAG | LOG_FUA_FLAG | LOG_DISCARD_FLAG | LOG_MARK_FLAG | LOG_METADATA_FLAG)
#define LOG_ENTRY_BYTES 32u
#define LOG_SUPER_BYTES 28u
/* zero writes are logged from a zero buffer of at most this size at a time */
#define LOG_ZERO_CHUNK (1u << 20)

typedef struct blw_state {
    vd_node *log;
    uint32_t sector_bits;
    uint32_t sector_size;
    uint64_t update_interval;
    pthread_mutex_t lock; /* orders the log: position, count, super block */
    uint64_t cur_log_sector;
    uint64_t nr_entries;
    uint8_t *zero;     /* LOG_ZERO_CHUNK bytes of zeroes */
    size_t zero_len;
    bool active;       /* writable: the log is written */
    bool unflushed;    /* entries logged since the last flush entry */
} blw_state;

static const vd_opt_desc blw_open_opts[] = {
    {"log-sector-size", VD_OPT_SIZE, "Log sector size", "512"},
    {"log-append", VD_OPT_BOOL, "Append to an existing log", "off"},
    {"log-super-update-interval", VD_OPT_NUMBER,
     "Log superblock update interval (# of write requests)", "4096"},
    {NULL, 0, NULL, NULL},
};

static const char *const blw_prefixes[] = {"file.", "log.", NULL};

/* Walk the entries of an existing log to the sector after the last one. */
static int blw_find_end(blw_state *s, uint64_t nr_entries, uint64_t *end, vd_error **errp)
{
    uint64_t cur = 1;
    int64_t log_len = vd_node_get_length(s->log);
    if (log_len < 0) {
        return vd_error_setg_errno(errp, (int)log_len, "Could not get the length of the log");
    }
    for (uint64_t i = 0; i < nr_entries; i++) {
        uint8_t e[LOG_ENTRY_BYTES];
        uint64_t off;
        if (vd_mul_overflow(cur, s->sector_size, &off) ||
            off + LOG_ENTRY_BYTES > (uint64_t)log_len) {
            return vd_error_set(errp, EINVAL,
                                "Log '%s' ends before its entry %" PRIu64 " of %" PRIu64,
                                s->log->filename, i, nr_entries);
        }
        int ret = vd_node_pread(s->log, off, sizeof(e), e, 0);
        if (ret < 0) {
            return vd_error_setg_errno(errp, ret, "Failed to read log entry %" PRIu64, i);
        }
        uint64_t flags = vd_ld_le64(e + 16);
        if (flags & ~(uint64_t)LOG_FLAG_MASK) {
            return vd_error_set(errp, EINVAL,
                                "Invalid flags 0x%" PRIx64 " in log entry %" PRIu64, flags, i);
        }
        cur++;
        if (!(flags & LOG_DISCARD_FLAG)) {
            uint64_t n = vd_ld_le64(e + 8);
            if (vd_add_overflow(cur, n, &cur) || cur > (uint64_t)log_len / s->sector_size + 1) {
                return vd_error_set(errp, EINVAL,
                                    "Log entry %" PRIu64 " of '%s' reaches past its end", i,
                                    s->log->filename);
            }
        }
    }
    *end = cur;
    return 0;
}

static int blw_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    blw_state *s = bs->opaque;
    uint64_t sector_size, interval;
    bool append;
    int ret;

    if (!bs->file) {
        return vd_error_set(errp, EINVAL, "The blklogwrites filter needs a file child");
    }
    if (vd_opts_get_size(opts, "log-sector-size", 512, &sector_size, errp) < 0 ||
        vd_opts_get_bool(opts, "log-append", false, &append, errp) < 0 ||
        vd_opts_get_u64(opts, "log-super-update-interval", 4096, &interval, errp) < 0) {
        return -EINVAL;
    }
    if (append && vd_opts_get(opts, "log-sector-size")) {
        return vd_error_set(errp, EINVAL,
                            "log-append and log-sector-size are mutually exclusive");
    }
    if (!append && (sector_size < 512 || sector_size > (1u << 23) || !vd_is_pow2(sector_size))) {
        return vd_error_set(errp, EINVAL, "Invalid log sector size %" PRIu64, sector_size);
    }
    if (interval == 0) {
        return vd_error_set(errp, EINVAL, "Invalid log superblock update interval %" PRIu64,
                            interval);
    }
    s->sector_size = (uint32_t)sector_size;
    s->sector_bits = (uint32_t)vd_ctz64(sector_size);
    s->update_interval = interval;

    vd_opts *lo = vd_opts_extract_prefix(opts, "log");
    if (!lo) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    const char *lf = vd_opts_get(lo, "filename");
    char *lfn = vd_strdup(lf);
    vd_opts_set(lo, "filename", NULL);
    if (!lfn && !vd_opts_get(lo, "driver")) {
        vd_opts_free(lo);
        return vd_error_set(errp, EINVAL, "blklogwrites needs a log (log.filename)");
    }
    /* the log is ours alone: never shared with a writer */
    s->log = vd_node_open_file(lfn, lo, bs->flags & (VD_NODE_RDWR | VD_NODE_FORCE_SHARE),
                               errp);
    free(lfn);
    vd_opts_free(lo);
    if (!s->log) {
        return -EINVAL;
    }
    s->active = !bs->read_only;
    s->zero_len = LOG_ZERO_CHUNK;
    s->zero = vd_aligned_alloc(4096, s->zero_len);
    if (!s->zero) {
        ret = vd_error_set(errp, ENOMEM, "out of memory");
        goto fail;
    }
    memset(s->zero, 0, s->zero_len);

    if (append) {
        uint8_t sb[LOG_SUPER_BYTES];
        int64_t llen = vd_node_get_length(s->log);
        if (llen < 0) {
            ret = vd_error_setg_errno(errp, (int)llen, "Could not get the length of '%s'",
                                      s->log->filename);
            goto fail;
        }
        if (llen == 0) {
            /* an empty log: as if it had a super block with no entries */
            vd_st_le64(sb, LOG_MAGIC);
            vd_st_le64(sb + 8, LOG_VERSION);
            vd_st_le64(sb + 16, 0);
            vd_st_le32(sb + 24, 512);
        } else if ((ret = vd_node_pread(s->log, 0, sizeof(sb), sb, 0)) < 0) {
            vd_error_setg_errno(errp, ret, "Could not read the log superblock of '%s'",
                                s->log->filename);
            goto fail;
        }
        if (vd_ld_le64(sb) != LOG_MAGIC) {
            ret = vd_error_set(errp, EINVAL, "Invalid log superblock magic in '%s'",
                               s->log->filename);
            goto fail;
        }
        if (vd_ld_le64(sb + 8) != LOG_VERSION) {
            ret = vd_error_set(errp, EINVAL, "Unsupported log version %" PRIu64,
                               vd_ld_le64(sb + 8));
            goto fail;
        }
        uint32_t ss = vd_ld_le32(sb + 24);
        if (ss < 512 || ss > (1u << 23) || !vd_is_pow2(ss)) {
            ret = vd_error_set(errp, EINVAL, "Invalid log sector size %" PRIu32 " in '%s'", ss,
                               s->log->filename);
            goto fail;
        }
        s->sector_size = ss;
        s->sector_bits = (uint32_t)vd_ctz64(ss);
        s->nr_entries = vd_ld_le64(sb + 16);
        ret = blw_find_end(s, s->nr_entries, &s->cur_log_sector, errp);
        if (ret < 0) {
            goto fail;
        }
    } else {
        s->cur_log_sector = 1;
        s->nr_entries = 0;
    }

    pthread_mutex_init(&s->lock, NULL);
    bs->request_alignment = (uint32_t)VD_MAX(s->sector_size, bs->file->request_alignment);
    bs->max_transfer = bs->file->max_transfer;
    bs->has_zero_init = bs->file->has_zero_init;
    bs->supports_fua = bs->file->supports_fua;
    return 0;

fail:
    free(s->zero);
    s->zero = NULL;
    vd_node_close(s->log);
    s->log = NULL;
    return ret;
}

static void blw_close(vd_node *bs)
{
    blw_state *s = bs->opaque;
    vd_node_close(s->log);
    free(s->zero);
    pthread_mutex_destroy(&s->lock);
}

/* Write the super block and flush the log (lock held). */
static int blw_update_super(blw_state *s)
{
    uint8_t *b = calloc(1, s->sector_size);
    if (!b) {
        return -ENOMEM;
    }
    vd_st_le64(b, LOG_MAGIC);
    vd_st_le64(b + 8, LOG_VERSION);
    vd_st_le64(b + 16, s->nr_entries);
    vd_st_le32(b + 24, s->sector_size);
    int ret = vd_node_pwrite(s->log, 0, s->sector_size, b, 0);
    free(b);
    if (ret == 0) {
        ret = vd_node_flush(s->log);
    }
    return ret;
}

/*
 * Append one entry for [offset, offset+len) with flags; data NULL logs
 * zeroes (unless a discard or flush, which carry none).
 */
static int blw_log(blw_state *s, uint64_t offset, uint64_t len, const void *data,
                   unsigned flags)
{
    uint8_t *hdr = calloc(1, s->sector_size);
    if (!hdr) {
        return -ENOMEM;
    }
    uint64_t nsec = len >> s->sector_bits;
    vd_st_le64(hdr, offset >> s->sector_bits);
    vd_st_le64(hdr + 8, nsec);
    vd_st_le64(hdr + 16, flags);
    vd_st_le64(hdr + 24, 0);

    pthread_mutex_lock(&s->lock);
    uint64_t at = s->cur_log_sector << s->sector_bits;
    int ret = vd_node_pwrite(s->log, at, s->sector_size, hdr, 0);
    if (ret == 0 && nsec && !(flags & LOG_DISCARD_FLAG)) {
        at += s->sector_size;
        if (data) {
            ret = vd_node_pwrite(s->log, at, len, data, 0);
        } else {
            for (uint64_t done = 0; done < len && ret == 0;) {
                uint64_t n = VD_MIN(len - done, (uint64_t)s->zero_len);
                ret = vd_node_pwrite(s->log, at + done, n, s->zero, 0);
                done += n;
            }
        }
    }
    if (ret == 0) {
        s->cur_log_sector += 1 + ((flags & LOG_DISCARD_FLAG) ? 0 : nsec);
        s->nr_entries++;
        if (!(flags & LOG_FLUSH_FLAG)) {
            s->unflushed = true;
        }
        if ((flags & LOG_FLUSH_FLAG) || s->nr_entries % s->update_interval == 0) {
            ret = blw_update_super(s);
        }
    }
    pthread_mutex_unlock(&s->lock);
    free(hdr);
    return ret;
}

static int blw_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    return vd_node_pread(bs->file, offset, len, buf, flags);
}

static int blw_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                      unsigned flags)
{
    blw_state *s = bs->opaque;
    int ret = vd_node_pwrite(bs->file, offset, len, buf, flags);
    int lret = blw_log(s, offset, len, buf, (flags & VD_REQ_FUA) ? LOG_FUA_FLAG : 0);
    return lret < 0 ? lret : ret;
}

static int blw_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    blw_state *s = bs->opaque;
    int ret = vd_node_pwrite_zeroes(bs->file, offset, len, flags);
    int lret = blw_log(s, offset, len, NULL, (flags & VD_REQ_FUA) ? LOG_FUA_FLAG : 0);
    return lret < 0 ? lret : ret;
}

static int blw_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    blw_state *s = bs->opaque;
    int ret = vd_node_discard(bs->file, offset, len);
    int lret = blw_log(s, offset, len, NULL, LOG_DISCARD_FLAG);
    return lret < 0 ? lret : ret;
}

static int blw_flush(vd_node *bs)
{
    blw_state *s = bs->opaque;
    /* The core flushes the file when this returns, before the caller's
     * flush completes: the entry marks the point before which every
     * logged write is durable. */
    if (!s->active) {
        return 0;
    }
    /* QEMU's block layer skips a flush when nothing was written since the
     * last one (write_gen == flushed_gen): so does the log */
    pthread_mutex_lock(&s->lock);
    bool dirty = s->unflushed;
    s->unflushed = false;
    pthread_mutex_unlock(&s->lock);
    if (!dirty) {
        return 0;
    }
    int ret = blw_log(s, 0, 0, NULL, LOG_FLUSH_FLAG);
    if (ret < 0) {
        pthread_mutex_lock(&s->lock);
        s->unflushed = true;
        pthread_mutex_unlock(&s->lock);
    }
    return ret;
}

static int blw_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                        vd_error **errp)
{
    (void)size;
    (void)exact;
    (void)prealloc;
    return vd_error_set(errp, ENOTSUP,
                        "The blklogwrites filter over '%s' cannot resize (the log has no "
                        "record for it)",
                        bs->file->filename);
}

const vd_driver vd_drv_blklogwrites = {
    .name = "blklogwrites",
    .kind = VD_DRV_FILTER,
    .state_size = sizeof(blw_state),
    .open_opts = blw_open_opts,
    .is_filter = true,
    .open = blw_open,
    .close = blw_close,
    .pread = blw_pread,
    .pwrite = blw_pwrite,
    .pwrite_zeroes = blw_pwrite_zeroes,
    .discard = blw_discard,
    .flush = blw_flush,
    .truncate = blw_truncate,
    .opt_prefixes = blw_prefixes,
};
