/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk convert: copy one or more images (concatenated) into a new or
 * existing image, as qemu-img convert does: same options, same decisions
 * about what to copy (block status of the sources, -S sparse detection,
 * zero-initialised targets, -B backing files), same exit codes.
 *
 * Speed: N worker threads (-m; default 8; when every image is a local
 * file one, or with -c or direct I/O one per core, 2 to 8:
 * convert_default_workers) each take the next
 * chunk (at most 2 MiB) under a lock, read it without the lock and write it.  Without
 * -W the writes are issued in source order (a ticket per chunk), reads
 * still overlap.  Compressed output (-c) compresses in every worker at once
 * (its writes are not kept in order: compression happens inside them):
 * vd_pwrite_compressed is thread-safe.  With -C the data chunks are copied
 * by the kernel (vd_copy_range: copy_file_range between raw files), without
 * reading them, until the first refusal; then as without -C.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmds.h"
#include "img.h"
#include "tool.h"
#include "vdisk-bitmap.h"

#define SECTOR ((uint64_t)512)
#define BUF_SECTORS 4096      /* 2 MiB: qemu-img's IO_BUF_SIZE */
#define MAX_BUF_SECTORS 32768 /* -S upper bound (16 MiB) */
#define MAX_WORKERS 16        /* qemu-img's MAX_COROUTINES */
#define MAX_STATUS_SECTORS (INT32_MAX >> 9)

/* convert's own long option beyond img.h's (numbered clear of them) */
enum {
    OPT_SKIP_BROKEN = 1000,
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
    /* -C: data chunks are copied by vd_copy_range (copy_file_range) until
     * it fails once, then read and written (qemu-img's copy_range) */
    atomic_bool copy_range;
    int min_sparse; /* sectors; 0 = write everything */
    int alignment;  /* sectors, power of two */
    int cluster_sectors;
    int buf_sectors;
    int64_t target_backing_sectors; /* negative when unknown */

    /* next chunk to hand out, and the cached block status (under lock) */
    pthread_mutex_t lock;
    uint64_t sector_num;
    uint64_t sector_next_status;
    blk_status status;
    uint64_t wr_offs; /* end of the last in-order write */
    /* per worker: the chunk start it waits to write (UINT64_MAX: none) and
     * its own condition, so a finished write wakes exactly the next one */
    uint64_t wait_sector[MAX_WORKERS];
    pthread_cond_t wait_cond[MAX_WORKERS];
    int next_index;
    int ret; /* 0 while fine, else -errno of the first failure */

    /* progress */
    bool progress_walk; /* allocated_sectors counts only copied sectors */
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
/* Why a salvaged read failed: QEMU's tools say only strerror (iotest 251);
 * under vdisk's own name the library's message, which names the image. */
static const char *salvage_reason(void)
{
    if (tool_is_qemu_name()) {
        return strerror(vd_get_errno() ? vd_get_errno() : EIO);
    }
    return vd_get_error();
}

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
                tool_error("error while reading block status at offset %" PRIu64 ": %s", offset,
                           vd_get_error());
                return -(vd_get_errno() ? vd_get_errno() : EIO);
            }
            if (n == 1) {
                if (!s->quiet) {
                    tool_warn("error while reading block status at offset %" PRIu64 ": %s",
                              offset, salvage_reason());
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
                tool_warn("error while reading offset %" PRIu64 ": %s", offset, salvage_reason());
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
    bool is_zero = tool_is_zero(buf, SECTOR);
    int i;
    for (i = 1; i < n; i++) {
        buf += SECTOR;
        if (is_zero != tool_is_zero(buf, SECTOR)) {
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

/*
 * Compressed output: the clusters from buf's start that are all non-zero
 * (true) or all zero (false), counted in *pnum sectors.  Each cluster is
 * written whole or not at all, as qemu-img does one cluster at a time; the
 * run lets one vd_pwrite_compressed call compress many clusters at once.
 */
static bool convert_cluster_run(const convert_state *s, const uint8_t *buf, int n, int *pnum)
{
    int cs = s->cluster_sectors;
    int first = cs < n ? cs : n;
    bool data = !tool_is_zero(buf, (size_t)first * SECTOR);
    int i = first;
    while (i < n) {
        int len = n - i < cs ? n - i : cs;
        if (!tool_is_zero(buf + (uint64_t)i * SECTOR, (size_t)len * SECTOR) != data) {
            break;
        }
        i += len;
    }
    *pnum = i;
    return data;
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
                (s->compressed && convert_cluster_run(s, buf, n, &n))) {
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

/*
 * -C: copy n data sectors at sector_num source by source with the kernel.
 * 0 when done; -1 when the offload is refused (the caller copies plainly).
 */
static int convert_copy_range(convert_state *s, uint64_t sector_num, uint64_t nb_sectors)
{
    while (nb_sectors > 0) {
        int src_cur;
        uint64_t src_cur_offset;
        convert_select_part(s, sector_num, &src_cur, &src_cur_offset);
        uint64_t offset = (sector_num - src_cur_offset) * SECTOR;
        uint64_t n = nb_sectors;
        uint64_t left = s->src_sectors[src_cur] - (sector_num - src_cur_offset);
        if (n > left) {
            n = left;
        }
        uint64_t bytes = n * SECTOR;
        if (sector_num * SECTOR + bytes > s->total_sectors * SECTOR) {
            bytes = s->total_sectors * SECTOR - sector_num * SECTOR;
        }
        convert_rate_wait(s, bytes);
        if (vd_copy_range(s->src[src_cur], offset, s->target, sector_num * SECTOR, bytes) < 0) {
            return -1;
        }
        sector_num += n;
        nb_sectors -= n;
    }
    return 0;
}

/* Wake every waiting writer (on failure, so they all stop). Under lock. */
static void convert_wake_all(convert_state *s)
{
    for (int i = 0; i < MAX_WORKERS; i++) {
        pthread_cond_signal(&s->wait_cond[i]);
    }
}

static void convert_fail(convert_state *s, int err)
{
    pthread_mutex_lock(&s->lock);
    if (!s->ret) {
        s->ret = err ? err : -EIO;
    }
    convert_wake_all(s);
    pthread_mutex_unlock(&s->lock);
}

static void *convert_worker(void *opaque)
{
    convert_state *s = opaque;
    size_t bufsize = (size_t)s->buf_sectors * SECTOR;
    uint8_t *buf = NULL;

    pthread_mutex_lock(&s->lock);
    int index = s->next_index++;
    pthread_mutex_unlock(&s->lock);

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
            convert_wake_all(s);
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
        /* with -p the bar counts copied sectors (as qemu-img); without it
         * (SIGUSR1 only) the position in the image */
        bool counted =
            !s->progress_walk || status == ST_DATA || (!s->min_sparse && status == ST_ZERO);
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

        bool offload = status == ST_DATA && atomic_load(&s->copy_range);
    retry:
        if (status == ST_DATA && !offload) {
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
            s->wait_sector[index] = sector_num;
            while (s->wr_offs != sector_num && !s->ret) {
                pthread_cond_wait(&s->wait_cond[index], &s->lock);
            }
            s->wait_sector[index] = UINT64_MAX;
        }
        bool go = !s->ret;
        pthread_mutex_unlock(&s->lock);

        if (go && offload) {
            if (convert_copy_range(s, sector_num, (uint64_t)n) < 0) {
                /* as qemu-img: no offload from now on, this chunk again */
                atomic_store(&s->copy_range, false);
                offload = false;
                goto retry; /* our turn to write stays: wr_offs has not moved */
            }
        } else if (go) {
            if (convert_write(s, sector_num, n, buf, status) < 0) {
                tool_error("error while writing at byte %" PRIu64 ": %s", sector_num * SECTOR,
                           vd_get_error());
                convert_fail(s, -(vd_get_errno() ? vd_get_errno() : EIO));
            }
        }

        if (s->wr_in_order) {
            pthread_mutex_lock(&s->lock);
            s->wr_offs = sector_num + (uint64_t)n;
            for (int i = 0; i < MAX_WORKERS; i++) {
                if (s->wait_sector[i] == s->wr_offs) {
                    pthread_cond_signal(&s->wait_cond[i]);
                    break;
                }
            }
            pthread_mutex_unlock(&s->lock);
        }
    }
    free(buf);
    return NULL;
}

static int convert_do_copy(convert_state *s, int num_workers, bool progress)
{
    if (!s->has_zero_init && s->target_is_new && s->min_sparse && !s->target_has_backing) {
        s->has_zero_init = vd_image_has_zero_init(s->target);
    }

    if (s->compressed) {
        if (s->cluster_sectors <= 0 || s->cluster_sectors > s->buf_sectors) {
            tool_error("invalid cluster size");
            return -EINVAL;
        }
        /* whole clusters per chunk (qemu-img takes one): the library
         * compresses the clusters of one call on all cores */
        s->buf_sectors -= s->buf_sectors % s->cluster_sectors;
        /*
         * Compression happens inside the write call, so writes kept in
         * order would compress one chunk at a time.  Let the workers
         * write as they finish: only the order of the compressed clusters
         * in the file changes, never what any offset reads.
         */
        s->wr_in_order = false;
    }

    /*
     * qemu-img walks the block status once to size the progress bar.
     * Without -p the bar is only seen on SIGUSR1; the walk is skipped and
     * every sector counts -- except with --salvage, where QEMU's walk warns
     * about the block status errors it meets (iotest 251).
     */
    s->progress_walk = progress;
    if (progress || s->salvage) {
        uint64_t sector_num = 0;
        while (sector_num < s->total_sectors) {
            int64_t n = convert_iteration_sectors(s, sector_num);
            if (n < 0) {
                return (int)n;
            }
            if (s->status == ST_DATA || (!s->min_sparse && s->status == ST_ZERO)) {
                s->allocated_sectors += (uint64_t)n;
            }
            sector_num += (uint64_t)n;
        }
    }
    if (!progress) {
        s->allocated_sectors = s->total_sectors;
    }

    s->sector_num = 0;
    s->sector_next_status = 0;
    s->wr_offs = 0;
    s->ret = 0;
    clock_gettime(CLOCK_MONOTONIC, &s->rate_start);

    if (num_workers == 1) {
        /* no thread to start and no hand-over: the copy runs right here */
        convert_worker(s);
        goto copied;
    }
    pthread_t tids[MAX_WORKERS];
    int started = 0;
    for (int i = 0; i < num_workers; i++) {
        if (pthread_create(&tids[i], NULL, convert_worker, s) != 0) {
            if (started == 0) {
                tool_error("Could not start a worker thread");
                return -EAGAIN;
            }
            break; /* fewer workers still finish the job */
        }
        started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(tids[i], NULL);
    }
copied:
    if (s->ret) {
        return s->ret;
    }
    if (vd_flush(s->target) < 0) {
        tool_error_lib("error while flushing the target");
        return -EIO;
    }
    return 0;
}

/*
 * Whether every node under img (its file children and backing chain)
 * ends in the local file protocol: then a worker never waits on a
 * network, only on the page cache or the disk.
 */
static bool convert_all_local(vd_image *img, int depth)
{
    if (!img || depth > 64) {
        return false;
    }
    vd_image *file = vd_image_file(img);
    vd_image *backing = vd_image_backing(img);
    if (backing && !convert_all_local(backing, depth + 1)) {
        return false;
    }
    if (file) {
        return convert_all_local(file, depth + 1);
    }
    const char *drv = vd_image_format(img);
    return drv && !strcmp(drv, "file");
}

/*
 * The number of worker threads when -m is not given.  qemu-img's 8
 * coroutines share one thread; 8 threads copying cached local files on
 * fewer cores only compete: the same pages are copied, but their eight
 * 2 MiB buffers no longer fit the caches, the buffered writes contend
 * for the target's inode lock, and the CPU time of a convert was about
 * twice that of 2 threads on 2 cores (docs/performance.md).  A plain
 * (uncompressed) copy between local files through the page cache is
 * fastest in one thread: measured on 2 cores, 2 threads took 20-25 %
 * longer on every raw/qcow2 pair (the kernel's copies into one file are
 * serialised by its inode lock, and each hand-over between threads costs
 * a wake-up).  Compression is CPU work: one worker per core.  Direct I/O
 * (cache mode none/directsync) waits on the device: one per core too.
 * Threads waiting on a network hide its latency, so those converts keep 8.
 */
static int convert_default_workers(const convert_state *s, int wanted, bool direct)
{
    for (int i = 0; i < s->src_num; i++) {
        if (!convert_all_local(s->src[i], 0)) {
            return wanted;
        }
    }
    if (!convert_all_local(s->target, 0)) {
        return wanted;
    }
    /* the cores this process may run on (taskset, cgroup cpusets) */
    cpu_set_t set;
    long ncpu = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set)
                                                            : sysconf(_SC_NPROCESSORS_ONLN);
    if (!s->compressed && !direct) {
        return 1;
    }
    int n = ncpu < 2 ? 2 : (ncpu > wanted ? wanted : (int)ncpu);
    return n < wanted ? n : wanted;
}

/* ------------------------------------------------------------- -o help */

static bool convert_has_help_option(const char *list)
{
    const char *p = list;
    while (p && *p) {
        char item[64];
        size_t k = 0;
        while (*p) {
            if (*p == ',') {
                if (p[1] == ',') {
                    if (k < sizeof(item) - 1) {
                        item[k++] = ',';
                    }
                    p += 2;
                    continue;
                }
                p++;
                break;
            }
            if (k < sizeof(item) - 1) {
                item[k++] = *p;
            }
            p++;
        }
        item[k] = '\0';
        if (!strcmp(item, "help") || !strcmp(item, "?")) {
            return true;
        }
    }
    return false;
}

static int convert_opt_cmp(const void *a, const void *b)
{
    return strcmp(((const vd_opt_desc *)a)->name, ((const vd_opt_desc *)b)->name);
}

static int convert_print_option_help(const char *filename, const char *fmt)
{
    const vd_opt_desc *d = vd_driver_create_opts(fmt, filename);
    if (!d) {
        tool_error("Unknown file format '%s'", fmt);
        return 1;
    }
    size_t n = 0;
    while (d[n].name) {
        n++;
    }
    vd_opt_desc *sorted = calloc(n + 1, sizeof(*sorted));
    if (!sorted) {
        tool_error("Out of memory");
        return 1;
    }
    memcpy(sorted, d, n * sizeof(*sorted));
    qsort(sorted, n, sizeof(*sorted), convert_opt_cmp);

    if (filename) {
        printf("Supported options:\n");
    } else {
        printf("Supported %s options:\n", fmt);
    }
    for (size_t i = 0; i < n; i++) {
        static const char *const types[] = {"str", "bool (on/off)", "num", "size"};
        char left[256];
        unsigned t = (unsigned)sorted[i].type;
        snprintf(left, sizeof(left), "%s=<%s>", sorted[i].name, t < 4 ? types[t] : "str");
        printf("  %-22s - %s\n", left, sorted[i].help ? sorted[i].help : "");
    }
    if (!filename) {
        printf("\nThe protocol level may support further options.\n"
               "Specify the target filename to include those options.\n");
    }
    free(sorted);
    return 0;
}

/* ------------------------------------------------------------- bitmaps */

typedef struct convert_bitmap {
    char *name;
    uint32_t granularity;
    bool in_use;
    bool enabled;
} convert_bitmap;

/*
 * The source's persistent bitmaps.  Returns -1 (message printed) when the
 * source cannot have bitmaps.
 */
static int convert_list_bitmaps(vd_image *src, convert_bitmap **out, size_t *count)
{
    *out = NULL;
    *count = 0;
    if (!vd_image_supports_bitmaps(src)) {
        tool_error("Source lacks bitmap support");
        return -1;
    }
    vd_bitmap_info *bl = NULL;
    size_t n = 0;
    if (vd_bitmap_list(src, &bl, &n) < 0) {
        tool_error_lib("Could not read the bitmaps of '%s'", vd_image_filename(src));
        return -1;
    }
    convert_bitmap *list = calloc(n ? n : 1, sizeof(*list));
    if (!list) {
        tool_error("Out of memory");
        vd_bitmap_list_free(bl, n);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        list[i].name = bl[i].name;
        bl[i].name = NULL;
        list[i].granularity = bl[i].granularity;
        list[i].in_use = bl[i].in_use;
        list[i].enabled = bl[i].enabled;
    }
    vd_bitmap_list_free(bl, n);
    *out = list;
    *count = n;
    return 0;
}

static void convert_free_bitmaps(convert_bitmap *list, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(list[i].name);
    }
    free(list);
}

static int convert_copy_bitmaps(vd_image *src, vd_image *dst, const convert_bitmap *list,
                                size_t count, bool skip_broken)
{
    /* warnings newest first, as qemu-img reports them */
    for (size_t k = count; k > 0 && skip_broken; k--) {
        if (list[k - 1].name && list[k - 1].in_use) {
            tool_warn("Skipping inconsistent bitmap '%s'", list[k - 1].name);
        }
    }
    /* the copies in the source's order, which the target then keeps */
    for (size_t i = 0; i < count; i++) {
        if (!list[i].name || list[i].in_use) {
            continue;
        }
        if (vd_bitmap_add(dst, list[i].name, list[i].granularity, !list[i].enabled) < 0 ||
            vd_bitmap_merge(dst, list[i].name, src, list[i].name) < 0) {
            tool_error_lib("Failed to populate bitmap %s", list[i].name);
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------- command */

/* Whether the target's driver can write compressed clusters. */
static bool convert_format_can_compress(const char *fmt)
{
    const vd_driver_info *di = fmt ? vd_driver_get_info(fmt) : NULL;
    return di && di->can_compress;
}

/* qemu-img's is_valid_option_list: not empty, no leading comma, and any
 * trailing commas escaped in pairs. */
static bool convert_valid_option_list(const char *list)
{
    size_t len = strlen(list), i = len;
    if (!len || list[0] == ',') {
        return false;
    }
    while (i > 0 && list[i - 1] == ',') {
        i--;
    }
    return (len - i) % 2 == 0;
}

int cmd_convert(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, 0, 'h'},
        {"object", required_argument, 0, OPT_OBJECT},
        {"image-opts", no_argument, 0, OPT_IMAGE_OPTS},
        {"force-share", no_argument, 0, 'U'},
        {"target-image-opts", no_argument, 0, OPT_TARGET_IMAGE_OPTS},
        {"salvage", no_argument, 0, OPT_SALVAGE},
        {"target-is-zero", no_argument, 0, OPT_TARGET_IS_ZERO},
        {"bitmaps", no_argument, 0, OPT_BITMAPS},
        {"skip-broken-bitmaps", no_argument, 0, OPT_SKIP_BROKEN},
        {0, 0, 0, 0},
    };
    const char *fmt = NULL, *out_fmt = NULL, *cache = "unsafe", *src_cache = "writeback";
    const char *out_baseimg = NULL, *backing_fmt = NULL, *snapshot_name = NULL;
    char *options = NULL;
    vd_opts *sn_opts = NULL;
    bool image_opts = false, tgt_image_opts = false, skip_create = false, progress = false;
    bool force_share = false, explicit_min_sparse = false, copy_range = false;
    bool bitmaps = false, skip_broken = false, target_is_zero = false;
    int num_workers = 8;
    bool workers_given = false;
    uint64_t rate_limit = 0;
    int ret = 1;
    convert_state s = {
        .min_sparse = 8, /* 4 KiB */
        .buf_sectors = BUF_SECTORS,
        .wr_in_order = true,
        .target_backing_sectors = -1,
    };
    vd_opts *create_opts = NULL, *tgt_opts = NULL, *src_opts = NULL;
    convert_bitmap *bm_list = NULL;
    size_t bm_count = 0;
    bool writethrough = false, src_writethrough = false;

    optind = 0;
    opterr = 0;
    img_common co = {0};
    for (;;) {
        int c = getopt_long(argc, argv, ":hf:O:B:CcF:o:l:S:pt:T:qnm:WUr:", long_options, NULL);
        if (c == -1) {
            break;
        }
        switch (img_common_option(&co, NULL, c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_FAIL:
            goto out;
        }
        switch (c) {
        case ':':
            convert_usage_error("missing argument for option '%s'", argv[optind - 1]);
            goto out;
        case '?':
            convert_usage_error("unrecognized option '%s'", argv[optind - 1]);
            goto out;
        case 'h':
            printf("usage: %s convert [--object objectdef] [--image-opts] "
                   "[--target-image-opts] [--target-is-zero] [--bitmaps "
                   "[--skip-broken-bitmaps]] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] "
                   "[-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F "
                   "backing_fmt]] [-o options] [-l snapshot_param] [-S sparse_size] "
                   "[-r rate_limit] [-m num_coroutines] [-W] [--salvage] filename "
                   "[filename2 [...]] output_filename\n",
                   tool_progname());
            ret = 0;
            goto out;
        case 'O':
            out_fmt = optarg;
            break;
        case 'B':
            out_baseimg = optarg;
            break;
        case 'C':
            copy_range = true;
            break;
        case 'c':
            s.compressed = true;
            break;
        case 'F':
            backing_fmt = optarg;
            break;
        case 'o': {
            size_t l = strlen(optarg);
            if (!convert_valid_option_list(optarg)) {
                tool_error("Invalid option list: %s", optarg);
                goto out;
            }
            if (!options) {
                options = strdup(optarg);
            } else {
                char *old = options;
                size_t need = strlen(old) + l + 2;
                options = malloc(need);
                if (options) {
                    snprintf(options, need, "%s,%s", old, optarg);
                }
                free(old);
            }
            if (!options) {
                tool_error("Out of memory");
                goto out;
            }
            break;
        }
        case 'l':
            if (!strncmp(optarg, "snapshot.", 9)) {
                vd_opts_free(sn_opts);
                sn_opts = vd_opts_new();
                bool ok = sn_opts && vd_opts_parse(sn_opts, optarg, NULL) == 0;
                for (size_t i = 0; ok && i < vd_opts_count(sn_opts); i++) {
                    const char *k = vd_opts_key(sn_opts, i);
                    if (strcmp(k, "snapshot.id") && strcmp(k, "snapshot.name")) {
                        tool_error("Invalid parameter '%s'", k);
                        ok = false;
                    }
                }
                if (!ok) {
                    tool_error("Failed in parsing snapshot param '%s'", optarg);
                    goto out;
                }
            } else {
                snapshot_name = optarg;
            }
            break;
        case 'S': {
            uint64_t sval;
            if (!tool_parse_size("buffer size for sparse output", optarg, &sval)) {
                goto out;
            }
            if (sval % SECTOR || sval / SECTOR > MAX_BUF_SECTORS) {
                tool_error("Invalid buffer size for sparse output specified. Valid sizes are "
                           "multiples of %" PRIu64 " up to %" PRIu64
                           ". Select 0 to disable sparse detection "
                           "(fully allocates output).",
                           SECTOR, MAX_BUF_SECTORS * SECTOR);
                goto out;
            }
            s.min_sparse = (int)(sval / SECTOR);
            explicit_min_sparse = true;
            break;
        }
        case 'p':
            progress = true;
            break;
        case 't':
            cache = optarg;
            break;
        case 'n':
            skip_create = true;
            break;
        case 'm': {
            char *end;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || v < 1 || v > MAX_WORKERS) {
                tool_error("Invalid number of coroutines. Allowed number of coroutines is "
                           "between 1 and %d",
                           MAX_WORKERS);
                goto out;
            }
            num_workers = (int)v;
            workers_given = true;
            break;
        }
        case 'W':
            s.wr_in_order = false;
            break;
        case 'r':
            if (!tool_parse_size("rate limit", optarg, &rate_limit)) {
                goto out;
            }
            break;
        case OPT_TARGET_IMAGE_OPTS:
            tgt_image_opts = true;
            break;
        case OPT_SALVAGE:
            s.salvage = true;
            break;
        case OPT_TARGET_IS_ZERO:
            target_is_zero = true;
            break;
        case OPT_BITMAPS:
            bitmaps = true;
            break;
        case OPT_SKIP_BROKEN:
            skip_broken = true;
            break;
        }
    }
    if (co.fmt) {
        fmt = co.fmt;
    }
    if (co.src_cache) {
        src_cache = co.src_cache;
    }
    s.quiet = co.quiet;
    force_share = co.force_share;
    image_opts = co.image_opts;

    if (!out_fmt && !tgt_image_opts) {
        out_fmt = "raw";
    }
    if (skip_broken && !bitmaps) {
        tool_error("Use of --skip-broken-bitmaps requires --bitmaps");
        goto out;
    }
    if (s.compressed && copy_range) {
        tool_error("Cannot enable copy offloading when -c is used");
        goto out;
    }
    if (explicit_min_sparse && copy_range) {
        tool_error("Cannot enable copy offloading when -S is used");
        goto out;
    }
    if (copy_range && s.salvage) {
        tool_error("Cannot use copy offloading in salvaging mode");
        goto out;
    }
    if (tgt_image_opts && !skip_create) {
        tool_error("--target-image-opts requires use of -n flag");
        goto out;
    }
    if (skip_create && options) {
        tool_error("-o has no effect when skipping image creation");
        goto out;
    }
    if (target_is_zero && !skip_create) {
        tool_error("--target-is-zero requires use of -n flag");
        goto out;
    }
    s.has_zero_init = target_is_zero;

    s.src_num = argc - optind - 1;
    const char *out_filename = s.src_num >= 1 ? argv[argc - 1] : NULL;

    if (options && convert_has_help_option(options)) {
        if (out_fmt) {
            ret = convert_print_option_help(out_filename, out_fmt);
        } else {
            tool_error("Option help requires a format be specified");
        }
        goto out;
    }
    if (s.src_num < 1) {
        tool_error("Must specify image file name");
        goto out;
    }

    src_opts = vd_opts_new();
    tgt_opts = vd_opts_new();
    if (!src_opts || !tgt_opts) {
        tool_error("Out of memory");
        goto out;
    }
    if (!tool_parse_cache(src_cache, src_opts, &src_writethrough)) {
        goto out;
    }

    if (s.quiet) {
        progress = false;
    }
    tool_progress_init(progress);

    s.src = calloc((size_t)s.src_num, sizeof(*s.src));
    s.src_sectors = calloc((size_t)s.src_num, sizeof(*s.src_sectors));
    s.src_bytes = calloc((size_t)s.src_num, sizeof(*s.src_bytes));
    s.src_alignment = calloc((size_t)s.src_num, sizeof(*s.src_alignment));
    if (!s.src || !s.src_sectors || !s.src_bytes || !s.src_alignment) {
        tool_error("Out of memory");
        goto out_progress;
    }
    for (int i = 0; i < s.src_num; i++) {
        const char *name = argv[optind + i];
        s.src[i] = tool_open(name, fmt, image_opts, src_opts,
                             force_share ? VD_OPEN_FORCE_SHARE : VD_OPEN_NO_SHARE, s.quiet);
        if (!s.src[i]) {
            goto out_progress;
        }
        int64_t len = vd_get_length(s.src[i]);
        if (len < 0) {
            tool_error("Could not get size of %s: %s", name, vd_get_error());
            goto out_progress;
        }
        s.src_bytes[i] = (uint64_t)len;
        s.src_sectors[i] = ((uint64_t)len + SECTOR - 1) / SECTOR;
        uint32_t a = vd_image_alignment(s.src[i]);
        uint32_t cl = vd_image_cluster_size(s.src[i]);
        int al = (int)((a + SECTOR - 1) / SECTOR);
        if ((int)(cl / SECTOR) > al) {
            al = (int)(cl / SECTOR);
        }
        s.src_alignment[i] = al > 0 ? al : 1;
        s.total_sectors += s.src_sectors[i];
    }

    if (sn_opts || snapshot_name) {
        vd_image *snap = NULL;
        if (sn_opts) {
            snap = vd_snapshot_open(s.src[0], vd_opts_get(sn_opts, "snapshot.name"),
                                    vd_opts_get(sn_opts, "snapshot.id"));
        } else if (s.src_num > 1) {
            tool_error("No support for concatenating multiple snapshot");
            goto out_progress;
        } else {
            /* an id first, then a name, as qemu-img does */
            snap = vd_snapshot_open(s.src[0], NULL, snapshot_name);
            if (!snap && vd_get_errno() == ENOENT) {
                snap = vd_snapshot_open(s.src[0], snapshot_name, NULL);
            }
        }
        if (!snap) {
            tool_error("Failed to load snapshot: %s", vd_get_error());
            goto out_progress;
        }
        /* the snapshot may have another size */
        int64_t len = vd_get_length(snap);
        if (len >= 0 && s.src_num == 1) {
            s.src[0] = snap;
            s.src_bytes[0] = (uint64_t)len;
            s.src_sectors[0] = ((uint64_t)len + SECTOR - 1) / SECTOR;
            s.total_sectors = s.src_sectors[0];
        }
    }

    if (!skip_create) {
        const char *type = vd_driver_type(out_fmt);
        if (!type) {
            tool_error("Unknown file format '%s'", out_fmt);
            goto out_progress;
        }
        const vd_opt_desc *desc = vd_driver_create_opts(out_fmt, out_filename);
        create_opts = vd_opts_new();
        if (!create_opts) {
            tool_error("Out of memory");
            goto out_progress;
        }
        if (options && vd_opts_parse(create_opts, options, NULL) < 0) {
            tool_error("%s", vd_get_error());
            goto out_progress;
        }
        bool has_backing_opt = false, has_backing_fmt_opt = false;
        for (size_t i = 0; desc && desc[i].name; i++) {
            if (!strcmp(desc[i].name, "backing_file")) {
                has_backing_opt = true;
            } else if (!strcmp(desc[i].name, "backing_fmt")) {
                has_backing_fmt_opt = true;
            }
        }
        if (desc) {
            for (size_t i = 0; i < vd_opts_count(create_opts); i++) {
                const char *k = vd_opts_key(create_opts, i);
                size_t j = 0;
                while (desc[j].name && strcmp(desc[j].name, k)) {
                    j++;
                }
                if (!desc[j].name) {
                    tool_error("Invalid parameter '%s'", k);
                    goto out_progress;
                }
            }
        }
        char sizebuf[32];
        snprintf(sizebuf, sizeof(sizebuf), "%" PRIu64, s.total_sectors * SECTOR);
        vd_opts_set(create_opts, "size", sizebuf);
        if (out_baseimg) {
            if (!has_backing_opt) {
                tool_error("Backing file not supported for file format '%s'", out_fmt);
                goto out_progress;
            }
            vd_opts_set(create_opts, "backing_file", out_baseimg);
        }
        if (backing_fmt) {
            if (!has_backing_fmt_opt) {
                tool_error("Backing file format not supported for file format '%s'", out_fmt);
                goto out_progress;
            }
            vd_opts_set(create_opts, "backing_fmt", backing_fmt);
        }
        if (vd_opts_get(create_opts, "backing_file")) {
            out_baseimg = vd_opts_get(create_opts, "backing_file");
        }
    }
    s.target_has_backing = out_baseimg != NULL;

    if (s.has_zero_init && s.target_has_backing) {
        tool_error("Cannot use --target-is-zero when the destination image has a backing file");
        /* qemu-img 7.2 stops here with exit status 0; so do we */
        ret = 0;
        goto out_progress;
    }
    if (s.src_num > 1 && out_baseimg) {
        tool_error("Having a backing file for the target makes no sense when concatenating "
                   "multiple input images");
        goto out_progress;
    }
    if (create_opts && vd_opts_get(create_opts, "backing_file") &&
        !vd_opts_get(create_opts, "backing_fmt")) {
        tool_error("Use of backing file requires explicit backing format");
        goto out_progress;
    }

    if (s.compressed && create_opts) {
        const char *enc = vd_opts_get(create_opts, "encryption");
        const char *encfmt = vd_opts_get(create_opts, "encrypt.format");
        const char *prealloc = vd_opts_get(create_opts, "preallocation");
        if (!convert_format_can_compress(out_fmt)) {
            tool_error("Compression not supported for this file format");
            goto out_progress;
        }
        if ((enc && strcmp(enc, "off") && strcmp(enc, "false") && strcmp(enc, "no") &&
             strcmp(enc, "0")) ||
            encfmt) {
            tool_error("Compression and encryption not supported at the same time");
            goto out_progress;
        }
        if (prealloc && strcmp(prealloc, "off")) {
            tool_error("Compression and preallocation not supported at the same time");
            goto out_progress;
        }
    }

    if (bitmaps) {
        if (s.src_num > 1) {
            tool_error("Copying bitmaps only possible with single source");
            goto out_progress;
        }
        if (convert_list_bitmaps(s.src[0], &bm_list, &bm_count) < 0) {
            goto out_progress;
        }
        /* newest first, the order qemu-img reports them in */
        for (size_t k = bm_count; k > 0 && !skip_broken; k--) {
            size_t i = k - 1;
            if (bm_list[i].in_use) {
                tool_error("Cannot copy inconsistent bitmap '%s'\nTry --skip-broken-bitmaps, "
                           "or use '%s bitmap --remove' to delete it",
                           bm_list[i].name ? bm_list[i].name : "", tool_progname());
                goto out_progress;
            }
        }
    }

    if (!skip_create) {
        /* secrets named at creation are needed to open the result */
        for (size_t i = 0; i < vd_opts_count(create_opts); i++) {
            const char *k = vd_opts_key(create_opts, i);
            size_t kl = strlen(k);
            if (kl >= 10 && !strcmp(k + kl - 10, "key-secret")) {
                vd_opts_set(tgt_opts, k, vd_opts_value(create_opts, i));
            }
        }
        /* the sources are opened without sharing writes, so creating over
         * one of them fails on its lock, as in QEMU */
        if (vd_create(out_filename, out_fmt, create_opts) < 0) {
            tool_error("%s: error while converting %s: %s", out_filename, out_fmt,
                       vd_get_error());
            goto out_progress;
        }
    }
    s.target_is_new = !skip_create;

    /* like qemu-img, the target's cache mode is checked after creating it */
    if (!tool_parse_cache(cache, tgt_opts, &writethrough)) {
        goto out_progress;
    }
    s.writethrough = writethrough;

    if (s.min_sparse) {
        vd_opts_set(tgt_opts, "discard", "unmap");
    }
    unsigned tflags = VD_OPEN_RDWR;
    if (vd_opts_get(tgt_opts, "cache.direct")) {
        /* O_DIRECT may need the file grown to the physical sector size */
        tflags |= VD_OPEN_RESIZE;
    }
    if (!skip_create && out_fmt && !strcmp(out_fmt, "qcow2") &&
        !vd_opts_get(tgt_opts, "cache-size") && !vd_opts_get(tgt_opts, "l2-cache-size") &&
        !vd_opts_get(tgt_opts, "refcount-cache-size")) {
        /*
         * A new qcow2 is written front to back: each L2 table is filled
         * once and never needed again, so QEMU's default cache (up to
         * 32 MiB) only holds tables of the past (a 1 TiB target with
         * scattered data took 33 MiB of RSS for them).
         */
        vd_opts_set(tgt_opts, "l2-cache-size", "1M");
    }
    if (skip_create) {
        s.target = tool_open(out_filename, out_fmt, tgt_image_opts, tgt_opts, tflags, s.quiet);
    } else {
        s.target = tool_open(out_filename, out_fmt, false, tgt_opts, tflags, s.quiet);
    }
    if (!s.target) {
        goto out_progress;
    }

    if (bitmaps) {
        const char *tf = vd_image_format(s.target);
        if (!vd_image_supports_bitmaps(s.target)) {
            tool_error("Format driver '%s' does not support bitmaps", tf ? tf : "?");
            goto out_progress;
        }
    }
    if (s.compressed && (!vd_image_format(s.target) ||
                         !convert_format_can_compress(vd_image_format(s.target)))) {
        tool_error("Compression not supported for this file format");
        goto out_progress;
    }

    /* align writes to the target to avoid read-modify-write cycles */
    {
        int p2 = 1;
        while (s.min_sparse && p2 * 2 <= s.min_sparse) {
            p2 *= 2;
        }
        int ta = (int)((vd_image_alignment(s.target) + SECTOR - 1) / SECTOR);
        s.alignment = p2 > ta ? p2 : ta;
        if (s.alignment < 1) {
            s.alignment = 1;
        }
    }

    if (skip_create) {
        int64_t out_len = vd_get_length(s.target);
        if (out_len < 0) {
            tool_error("unable to get output image length: %s", vd_get_error());
            goto out_progress;
        }
        if ((uint64_t)out_len < s.total_sectors * SECTOR) {
            tool_error("output file is smaller than input file");
            goto out_progress;
        }
    }

    if (s.target_has_backing && s.target_is_new) {
        /* only an optimisation: unknown (-1) is fine */
        vd_image *b = vd_image_backing(s.target);
        int64_t bl = b ? vd_get_length(b) : -1;
        s.target_backing_sectors =
            bl >= 0 ? (int64_t)(((uint64_t)bl + SECTOR - 1) / SECTOR) : -1;
    }

    /* as qemu-img: a target that only takes compressed clusters (vmdk
     * streamOptimized) is written as with -c */
    s.compressed = s.compressed || vd_image_needs_compressed_writes(s.target);
    s.cluster_sectors = (int)(vd_image_cluster_size(s.target) / SECTOR);
    s.rate_limit = rate_limit;
    /* FUA writes (-t writethrough) are left to the plain path */
    atomic_init(&s.copy_range, copy_range && !s.writethrough);

    pthread_mutex_init(&s.lock, NULL);
    for (int i = 0; i < MAX_WORKERS; i++) {
        pthread_cond_init(&s.wait_cond[i], NULL);
        s.wait_sector[i] = UINT64_MAX;
    }
    if (!workers_given) {
        /* tool_parse_cache sets "on" (-t/-T none or directsync) */
        const char *sd = vd_opts_get(src_opts, "cache.direct");
        const char *td = vd_opts_get(tgt_opts, "cache.direct");
        bool direct = (sd && !strcmp(sd, "on")) || (td && !strcmp(td, "on"));
        num_workers = convert_default_workers(&s, num_workers, direct);
    }
    int r = convert_do_copy(&s, num_workers, progress);
    for (int i = 0; i < MAX_WORKERS; i++) {
        pthread_cond_destroy(&s.wait_cond[i]);
    }
    pthread_mutex_destroy(&s.lock);
    if (r < 0) {
        goto out_progress;
    }

    if (bitmaps &&
        convert_copy_bitmaps(s.src[0], s.target, bm_list, bm_count, skip_broken) < 0) {
        goto out_progress;
    }
    ret = 0;

out_progress:
    if (ret == 0) {
        tool_progress_update(100.0);
    }
    tool_progress_end();
    if (s.target) {
        vd_close(s.target);
    }
    for (int i = 0; s.src && i < s.src_num; i++) {
        if (s.src[i]) {
            vd_close(s.src[i]);
        }
    }
out:
    convert_free_bitmaps(bm_list, bm_count);
    free(s.src);
    free(s.src_sectors);
    free(s.src_bytes);
    free(s.src_alignment);
    vd_opts_free(create_opts);
    vd_opts_free(tgt_opts);
    vd_opts_free(src_opts);
    vd_opts_free(sn_opts);
    free(options);
    return ret;
}
