/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk convert: copy one or more images (concatenated) into a new or
 * existing image, as qemu-img convert does: same options, same decisions
 * about what to copy (block status of the sources, -S sparse detection,
 * zero-initialised targets, -B backing files), same exit codes.
 *
 * Speed: N worker threads (-m, default 8) each take the next chunk (at
 * most 2 MiB) under a lock, read it without the lock and write it.  Without
 * -W the writes are issued in source order (a ticket per chunk), reads
 * still overlap.  Compressed output (-c) compresses in every worker at once:
 * vd_pwrite_compressed is thread-safe.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmds.h"
#include "tool.h"

#define SECTOR 512ULL
#define BUF_SECTORS 4096             /* 2 MiB: qemu-img's IO_BUF_SIZE */
#define MAX_BUF_SECTORS 32768        /* -S upper bound (16 MiB) */
#define MAX_WORKERS 16               /* qemu-img's MAX_COROUTINES */
#define MAX_STATUS_SECTORS (INT32_MAX >> 9)

enum {
    OPT_OBJECT = 256,
    OPT_IMAGE_OPTS,
    OPT_TARGET_IMAGE_OPTS,
    OPT_SALVAGE,
    OPT_TARGET_IS_ZERO,
    OPT_BITMAPS,
    OPT_SKIP_BROKEN,
};

typedef enum { ST_DATA, ST_ZERO, ST_BACKING } blk_status;

typedef struct convert_state {
    vd_image **src;
    uint64_t *src_sectors;
    uint64_t *src_bytes; /* real lengths; reads past them return zeroes */
    int *src_alignment;  /* sectors */
    int src_num;
    uint64_t total_sectors;

    vd_image *target;
    bool compressed;
    bool target_has_backing;
    bool target_is_new;
    bool has_zero_init;
    bool wr_in_order;
    bool salvage;
    bool quiet;
    bool writethrough;
    int min_sparse;  /* sectors; 0 = write everything */
    int alignment;   /* sectors, power of two */
    int cluster_sectors;
    int buf_sectors;
    int64_t target_backing_sectors; /* negative when unknown */

    /* next chunk to hand out, and the cached block status (under lock) */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t sector_num;
    uint64_t sector_next_status;
    blk_status status;
    uint64_t wr_offs; /* end of the last in-order write */
    int ret;          /* 0 while fine, else -errno of the first failure */

    /* progress */
    uint64_t allocated_sectors;
    uint64_t allocated_done;

    /* -r: bytes per second for data writes (0 = unlimited) */
    uint64_t rate_limit;
    uint64_t rate_bytes;
    struct timespec rate_start;
} convert_state;

static void convert_usage_error(const char *fmt, const char *arg)
{
    char msg[512];
    snprintf(msg, sizeof(msg), fmt, arg);
    tool_error("%s\nTry '%s --help' for more information", msg, tool_progname());
}

/* Fast "all zero" check: the first word, then memcmp against itself. */
static bool convert_is_zero(const uint8_t *buf, size_t len)
{
    if (len == 0) {
        return true;
    }
    size_t head = len < 16 ? len : 16;
    for (size_t i = 0; i < head; i++) {
        if (buf[i]) {
            return false;
        }
    }
    return len <= 16 || !memcmp(buf, buf + 16, len - 16);
}

/* Which source holds sector_num, and where that source starts. */
static void convert_select_part(const convert_state *s, uint64_t sector_num, int *src_cur,
                                uint64_t *src_cur_offset)
{
    uint64_t base = 0;
    int i = 0;
    while (i < s->src_num - 1 && sector_num - base >= s->src_sectors[i]) {
        base += s->src_sectors[i];
        i++;
    }
    *src_cur = i;
    *src_cur_offset = base;
}

/*
 * How many sectors from sector_num share one status (s->status); the
 * block status answer is cached until s->sector_next_status.  Called with
 * s->lock held.  Returns the count or -errno.
 */
static int64_t convert_iteration_sectors(convert_state *s, uint64_t sector_num)
{
    int src_cur;
    uint64_t src_cur_offset;
    bool post_backing_zero = false;

    convert_select_part(s, sector_num, &src_cur, &src_cur_offset);

    uint64_t n = s->total_sectors - sector_num;
    if (n > MAX_STATUS_SECTORS) {
        n = MAX_STATUS_SECTORS;
    }
    if (s->target_backing_sectors >= 0) {
        uint64_t tbs = (uint64_t)s->target_backing_sectors;
        if (sector_num >= tbs) {
            post_backing_zero = true;
        } else if (sector_num + n > tbs) {
            /* zeroes are handled differently past the backing file's end */
            n = tbs - sector_num;
        }
    }

    if (s->sector_next_status <= sector_num) {
        vd_image *src = s->src[src_cur];
        uint64_t offset = (sector_num - src_cur_offset) * SECTOR;
        /* stay inside this source */
        if (n > s->src_sectors[src_cur] - (sector_num - src_cur_offset)) {
            n = s->src_sectors[src_cur] - (sector_num - src_cur_offset);
        }
        /* With a backing file on the target only what the source's top
         * layer defines is copied; otherwise the whole chain counts. */
        bool above = !s->target_has_backing || !vd_image_backing(src);
        vd_extent ext;
        unsigned flags;
        uint64_t count;

        for (;;) {
            if (vd_block_status(src, offset, n * SECTOR, above, &ext) == 0) {
                flags = ext.flags;
                count = ext.length;
                break;
            }
            if (!s->salvage) {
                tool_error("error while reading block status at offset %" PRIu64 ": %s",
                           offset, vd_get_error());
                return -(vd_get_errno() ? vd_get_errno() : EIO);
            }
            if (n == 1) {
                if (!s->quiet) {
                    tool_warn("error while reading block status at offset %" PRIu64 ": %s",
                              offset, vd_get_error());
                }
                /* just try to read the data, then */
                flags = VD_BS_DATA;
                count = SECTOR;
                break;
            }
            /* retry on a shorter range */
            n = (n + 3) / 4;
        }

        n = (count + SECTOR - 1) / SECTOR;
        if (n == 0) {
            n = 1;
        }
        /* keep sector_next_status aligned to the source's clusters so
         * chunks don't need partial-cluster reads */
        uint64_t tail = (sector_num - src_cur_offset + n) % (uint64_t)s->src_alignment[src_cur];
        if (n > tail) {
            n -= tail;
        }

        if (flags & VD_BS_ZERO) {
            s->status = post_backing_zero ? ST_BACKING : ST_ZERO;
        } else if (flags & VD_BS_DATA) {
            s->status = ST_DATA;
        } else {
            s->status = s->target_has_backing ? ST_BACKING : ST_DATA;
        }
        s->sector_next_status = sector_num + n;
    }

    if (n > s->sector_next_status - sector_num) {
        n = s->sector_next_status - sector_num;
    }
    if (s->status == ST_DATA && n > (uint64_t)s->buf_sectors) {
        n = (uint64_t)s->buf_sectors;
    }

    /* compressed images are written in whole clusters: a short unallocated
     * area counts as data of its cluster */
    if (s->compressed) {
        uint64_t cs = (uint64_t)s->cluster_sectors;
        if (n < cs) {
            n = cs < s->total_sectors - sector_num ? cs : s->total_sectors - sector_num;
            s->status = ST_DATA;
        } else {
            n -= n % cs;
        }
    }
    return (int64_t)n;
}

/* Read n sectors at sector_num (possibly spanning sources) into buf. */
static int convert_read(convert_state *s, uint64_t sector_num, uint64_t nb_sectors,
                        uint8_t *buf)
{
    uint64_t single_read_until = 0;

    while (nb_sectors > 0) {
        int src_cur;
        uint64_t src_cur_offset;
        convert_select_part(s, sector_num, &src_cur, &src_cur_offset);
        vd_image *src = s->src[src_cur];
        uint64_t offset = (sector_num - src_cur_offset) * SECTOR;
        uint64_t n = nb_sectors;
        uint64_t left = s->src_sectors[src_cur] - (sector_num - src_cur_offset);
        if (n > left) {
            n = left;
        }
        if (single_read_until > offset) {
            n = 1;
        }

        /* the source's last sector may be partial: zero-fill the rest */
        uint64_t bytes = n * SECTOR;
        uint64_t real = s->src_bytes[src_cur];
        uint64_t rd = offset >= real ? 0 : (real - offset < bytes ? real - offset : bytes);
        int ret = rd ? vd_pread(src, buf, rd, offset) : 0;
        if (ret < 0) {
            if (!s->salvage) {
                return -1;
            }
            if (n > 1) {
                /* find the bad sectors one by one */
                single_read_until = offset + bytes;
                continue;
            }
            if (!s->quiet) {
                tool_warn("error while reading offset %" PRIu64 ": %s", offset,
                          vd_get_error());
            }
            rd = 0;
        }
        if (rd < bytes) {
            memset(buf + rd, 0, bytes - rd);
        }
        sector_num += n;
        nb_sectors -= n;
        buf += bytes;
    }
    return 0;
}

/*
 * qemu-img's is_allocated_sectors: whether the first sector holds data,
 * and in *pnum how many sectors share that state, with the end rounded to
 * the target's alignment so requests stay aligned.
 */
static bool convert_allocated_run(const uint8_t *buf, int n, int *pnum, uint64_t sector_num,
                                  int alignment)
{
    if (n <= 0) {
        *pnum = 0;
        return false;
    }
    bool is_zero = convert_is_zero(buf, SECTOR);
    int i;
    for (i = 1; i < n; i++) {
        buf += SECTOR;
        if (is_zero != convert_is_zero(buf, SECTOR)) {
            break;
        }
    }
    if (i == n) {
        *pnum = i;
        return !is_zero;
    }
    int tail = (int)((sector_num + (uint64_t)i) & (uint64_t)(alignment - 1));
    if (tail) {
        if (is_zero && i <= tail) {
            /* the data sector after it rewrites this tail anyway (RMW) */
            is_zero = false;
        }
        if (!is_zero) {
            i += alignment - tail;
            if (i > n) {
                i = n;
            }
        } else {
            i -= tail;
        }
    }
    *pnum = i;
    return !is_zero;
}

/* Like convert_allocated_run, but zero runs shorter than min sectors
 * inside data are kept in the data write (no tiny holes). */
static bool convert_allocated_min(const uint8_t *buf, int n, int *pnum, int min,
                                  uint64_t sector_num, int alignment)
{
    if (n < min) {
        min = n;
    }
    if (!convert_allocated_run(buf, n, pnum, sector_num, alignment)) {
        return false;
    }
    int num_used = *pnum;
    int num_checked = num_used;
    buf += SECTOR * (uint64_t)*pnum;
    n -= *pnum;
    sector_num += (uint64_t)*pnum;

    while (n > 0) {
        bool data = convert_allocated_run(buf, n, pnum, sector_num, alignment);
        buf += SECTOR * (uint64_t)*pnum;
        n -= *pnum;
        sector_num += (uint64_t)*pnum;
        num_checked += *pnum;
        if (data) {
            num_used = num_checked;
        } else if (*pnum >= min) {
            break;
        }
    }
    *pnum = num_used;
    return true;
}

static void convert_rate_wait(convert_state *s, uint64_t bytes)
{
    if (!s->rate_limit) {
        return;
    }
    pthread_mutex_lock(&s->lock);
    uint64_t before = s->rate_bytes;
    s->rate_bytes += bytes;
    pthread_mutex_unlock(&s->lock);

    /* the write may start once the bytes before it fit the budget */
    double due = (double)before / (double)s->rate_limit;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double elapsed = (double)(now.tv_sec - s->rate_start.tv_sec) +
                     (double)(now.tv_nsec - s->rate_start.tv_nsec) / 1e9;
    if (due > elapsed) {
        double d = due - elapsed;
        struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
        }
    }
}

static int convert_write(convert_state *s, uint64_t sector_num, int nb_sectors,
                         const uint8_t *buf, blk_status status)
{
    unsigned wflags = s->writethrough ? VD_REQ_FUA : 0;

    while (nb_sectors > 0) {
        int n = nb_sectors;
        uint64_t off = sector_num * SECTOR;

        switch (status) {
        case ST_BACKING:
            /* left unallocated: the target's backing file shows through */
            break;

        case ST_DATA:
            /*
             * Write real data, or everything with -S 0.  Compressed
             * clusters are written whole, so only an all-zero buffer
             * saves the write there.
             */
            if (!s->min_sparse ||
                (!s->compressed &&
                 convert_allocated_min(buf, n, &n, s->min_sparse, sector_num, s->alignment)) ||
                (s->compressed && !convert_is_zero(buf, (size_t)n * SECTOR))) {
                uint64_t bytes = (uint64_t)n * SECTOR;
                if (off + bytes > s->total_sectors * SECTOR) {
                    bytes = s->total_sectors * SECTOR - off;
                }
                convert_rate_wait(s, bytes);
                int ret = s->compressed ? vd_pwrite_compressed(s->target, buf, bytes, off)
                                        : vd_pwrite(s->target, buf, bytes, off, wflags);
                if (ret < 0) {
                    return -1;
                }
                break;
            }
            /* fall through: the data is zeroes */
            /* FALLTHROUGH */
        case ST_ZERO:
            if (s->has_zero_init) {
                break;
            }
            if (vd_pwrite_zeroes(s->target, off, (uint64_t)n * SECTOR,
                                 VD_REQ_MAY_UNMAP | wflags) < 0) {
                return -1;
            }
            break;
        }

        sector_num += (uint64_t)n;
        nb_sectors -= n;
        buf += (uint64_t)n * SECTOR;
    }
    return 0;
}

static void convert_fail(convert_state *s, int err)
{
    pthread_mutex_lock(&s->lock);
    if (!s->ret) {
        s->ret = err ? err : -EIO;
    }
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static void *convert_worker(void *opaque)
{
    convert_state *s = opaque;
    size_t bufsize = (size_t)s->buf_sectors * SECTOR;
    uint8_t *buf = NULL;

    if (posix_memalign((void **)&buf, 4096, bufsize)) {
        tool_error("Out of memory allocating a %zu byte buffer", bufsize);
        convert_fail(s, -ENOMEM);
        return NULL;
    }

    for (;;) {
        pthread_mutex_lock(&s->lock);
        if (s->ret || s->sector_num >= s->total_sectors) {
            pthread_mutex_unlock(&s->lock);
            break;
        }
        int64_t n64 = convert_iteration_sectors(s, s->sector_num);
        if (n64 < 0) {
            if (!s->ret) {
                s->ret = (int)n64;
            }
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->lock);
            break;
        }
        uint64_t sector_num = s->sector_num;
        blk_status status = s->status;
        if (!s->min_sparse && status == ST_ZERO && n64 > s->buf_sectors) {
            n64 = s->buf_sectors;
        }
        /* ST_ZERO / ST_BACKING runs may be far longer than the buffer;
         * they are never read, so that is fine */
        int n = n64 > INT32_MAX ? INT32_MAX : (int)n64;
        s->sector_num += (uint64_t)n;
        bool counted = status == ST_DATA || (!s->min_sparse && status == ST_ZERO);
        if (counted) {
            s->allocated_done += (uint64_t)n;
        }
        double pct = s->allocated_sectors
                         ? 100.0 * (double)s->allocated_done / (double)s->allocated_sectors
                         : 100.0;
        pthread_mutex_unlock(&s->lock);
        if (counted) {
            tool_progress_update(pct);
        }

        if (status == ST_DATA) {
            if (convert_read(s, sector_num, (uint64_t)n, buf) < 0) {
                tool_error("error while reading at byte %" PRIu64 ": %s", sector_num * SECTOR,
                           vd_get_error());
                convert_fail(s, -(vd_get_errno() ? vd_get_errno() : EIO));
            }
        } else if (!s->min_sparse && status == ST_ZERO) {
            status = ST_DATA;
            memset(buf, 0, (size_t)n * SECTOR);
        }

        pthread_mutex_lock(&s->lock);
        if (s->wr_in_order) {
            /* keep the writes in order: wait for our turn */
            while (s->wr_offs != sector_num && !s->ret) {
                pthread_cond_wait(&s->cond, &s->lock);
            }
        }
        bool go = !s->ret;
        pthread_mutex_unlock(&s->lock);

        if (go) {
            if (convert_write(s, sector_num, n, buf, status) < 0) {
                tool_error("error while writing at byte %" PRIu64 ": %s", sector_num * SECTOR,
                           vd_get_error());
                convert_fail(s, -(vd_get_errno() ? vd_get_errno() : EIO));
            }
        }

        if (s->wr_in_order) {
            pthread_mutex_lock(&s->lock);
            s->wr_offs = sector_num + (uint64_t)n;
            pthread_cond_broadcast(&s->cond);
            pthread_mutex_unlock(&s->lock);
        }
    }
    free(buf);
    return NULL;
}

