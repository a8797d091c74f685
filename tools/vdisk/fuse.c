/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk fuse: export an image as one regular file on a mount point, through
 * libfuse3's low-level API with its multi-threaded loop, as
 * qemu-storage-daemon's `--export type=fuse` does.  The mount point is an
 * existing regular file; the image's virtual disk appears on it as a raw
 * file.  Read, write, fsync, fallocate (punch hole, zero range, allocation
 * at the end), SEEK_DATA/SEEK_HOLE from block status, and truncate when
 * --growable.  Runs until unmounted (fusermount3 -u) or SIGTERM/SIGINT/
 * SIGHUP, then flushes and closes the image.  See docs/fuse.md.
 */
#define FUSE_USE_VERSION 312

#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "cmds.h"
#include "img.h"

#ifndef FALLOC_FL_KEEP_SIZE
#define FALLOC_FL_KEEP_SIZE 0x01
#endif
#ifndef FALLOC_FL_PUNCH_HOLE
#define FALLOC_FL_PUNCH_HOLE 0x02
#endif
#ifndef FALLOC_FL_ZERO_RANGE
#define FALLOC_FL_ZERO_RANGE 0x10
#endif

/* Largest request the kernel may send (libfuse's buffer holds 256 pages). */
#define FUSE_EXPORT_MAX_WRITE (1u << 20)
/* How long the kernel may keep the attributes (size, blocks). */
#define FUSE_EXPORT_ATTR_TIMEOUT 1.0

/* long-only options (past img.h's OPT_* codes) */
enum {
    OPT_FUSE_AIO = 512,
    OPT_FUSE_DISCARD,
    OPT_FUSE_DETECT_ZEROES,
    OPT_FUSE_ALLOW_OTHER,
    OPT_FUSE_DAEMONIZE,
    OPT_FUSE_PID_FILE,
    OPT_FUSE_THREADS,
};

typedef struct fuse_export {
    vd_image *img;
    vd_image *alloc_src; /* the node whose host allocation st_blocks shows */
    bool writable;
    bool growable;
    bool writethrough;
    /*
     * Requests hold it shared; a resize holds it exclusively, so that no
     * request sees the length change under it.
     */
    pthread_rwlock_t resize_lock;
    /* guards the attributes below (chmod, chown, utimens) */
    pthread_mutex_t attr_lock;
    mode_t mode; /* permission bits only */
    uid_t uid;
    gid_t gid;
    struct timespec atime, mtime, ctime;
    uint32_t blksize;
} fuse_export;

/* The library's errno for the last failed call (EIO when it gave none). */
static int lib_errno(void)
{
    int e = vd_get_errno();
    return e > 0 ? e : EIO;
}

static void now(struct timespec *ts)
{
    clock_gettime(CLOCK_REALTIME, ts);
}

/* ------------------------------------------------------------ attributes */

/* Bytes the image uses on the host, or -1 when the node cannot say. */
static int64_t allocated_bytes(fuse_export *e)
{
    vd_info *info = NULL;
    if (!e->alloc_src || vd_get_info(e->alloc_src, &info) < 0) {
        return -1;
    }
    int64_t a = info->actual_size;
    vd_info_free(info);
    return a;
}

static void fill_stat(fuse_export *e, struct stat *st)
{
    memset(st, 0, sizeof(*st));
    pthread_rwlock_rdlock(&e->resize_lock);
    int64_t len = vd_get_length(e->img);
    if (len < 0) {
        len = 0;
    }
    int64_t alloc = allocated_bytes(e);
    pthread_rwlock_unlock(&e->resize_lock);
    if (alloc < 0) {
        alloc = len; /* unknown: report it as fully allocated */
    }
    st->st_ino = FUSE_ROOT_ID;
    st->st_nlink = 1;
    st->st_size = len;
    st->st_blksize = e->blksize;
    st->st_blocks = (blkcnt_t)(((uint64_t)alloc + 511) / 512);
    pthread_mutex_lock(&e->attr_lock);
    st->st_mode = S_IFREG | e->mode;
    st->st_uid = e->uid;
    st->st_gid = e->gid;
    st->st_atim = e->atime;
    st->st_mtim = e->mtime;
    st->st_ctim = e->ctime;
    pthread_mutex_unlock(&e->attr_lock);
}

/*
 * Resize to size (exact: a format that cannot take that size fails with
 * EINVAL), or with round_up to at least size: when the format refuses an
 * unaligned size (qcow2 wants multiples of 512) the next multiple of 512.
 * Only grows when round_up.  The caller holds the resize lock exclusively.
 * 0 or an errno.
 */
static int resize_locked(fuse_export *e, uint64_t size, vd_prealloc prealloc, bool round_up)
{
    int64_t len = vd_get_length(e->img);
    if (len < 0) {
        return lib_errno();
    }
    if ((uint64_t)len == size || (round_up && (uint64_t)len >= size)) {
        return 0;
    }
    if (vd_truncate(e->img, size, !round_up, prealloc) == 0) {
        return 0;
    }
    int err = lib_errno();
    if (round_up && err == EINVAL && (size & 511) && size < UINT64_MAX - 511) {
        if (vd_truncate(e->img, (size + 511) & ~(uint64_t)511, false, prealloc) == 0) {
            return 0;
        }
        err = lib_errno();
    }
    return err;
}

/* A change of the contents or the size: mtime and ctime are now. */
static void touch_mtime(fuse_export *e)
{
    pthread_mutex_lock(&e->attr_lock);
    now(&e->mtime);
    e->ctime = e->mtime;
    pthread_mutex_unlock(&e->attr_lock);
}

/* resize_locked, taking the lock; updates the times. */
static int do_truncate(fuse_export *e, uint64_t size, vd_prealloc prealloc, bool round_up)
{
    pthread_rwlock_wrlock(&e->resize_lock);
    int err = resize_locked(e, size, prealloc, round_up);
    pthread_rwlock_unlock(&e->resize_lock);
    if (!err) {
        touch_mtime(e);
    }
    return err;
}

/* ------------------------------------------------------------ operations */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
    (void)userdata;
    /* O_TRUNC reaches open() instead of becoming a SETATTR of size 0, so
     * that a fixed-size export can ignore it as a block device does. */
    if (conn->capable & FUSE_CAP_ATOMIC_O_TRUNC) {
        conn->want |= FUSE_CAP_ATOMIC_O_TRUNC;
    }
    /* Requests may be served out of order, by several threads. */
    if (conn->capable & FUSE_CAP_ASYNC_DIO) {
        conn->want |= FUSE_CAP_ASYNC_DIO;
    }
    /* No splice: requests are small enough to copy, and splice's pipes
     * would cost file descriptors per thread. */
    conn->want &= ~(FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
    conn->max_write = FUSE_EXPORT_MAX_WRITE;
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_export *e = fuse_req_userdata(req);
    struct stat st;
    fill_stat(e, &st);
    fuse_reply_attr(req, &st, FUSE_EXPORT_ATTR_TIMEOUT);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_export *e = fuse_req_userdata(req);
    const int supported = FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
                          FUSE_SET_ATTR_GID | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                          FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW |
                          FUSE_SET_ATTR_CTIME;
    if (to_set & ~supported) {
        fuse_reply_err(req, ENOTSUP);
        return;
    }
    if ((to_set & FUSE_SET_ATTR_MODE) && (attr->st_mode & S_IFMT) &&
        (attr->st_mode & S_IFMT) != S_IFREG) {
        fuse_reply_err(req, EINVAL); /* it stays a regular file */
        return;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        if (!e->writable) {
            fuse_reply_err(req, EROFS);
            return;
        }
        if (attr->st_size < 0) {
            fuse_reply_err(req, EINVAL);
            return;
        }
        int64_t len = vd_get_length(e->img);
        if (len < 0) {
            fuse_reply_err(req, lib_errno());
            return;
        }
        if ((uint64_t)attr->st_size != (uint64_t)len) {
            /* A fixed-size export is a disk: only --growable resizes it. */
            if (!e->growable) {
                fuse_reply_err(req, EPERM);
                return;
            }
            int err = do_truncate(e, (uint64_t)attr->st_size, VD_PREALLOC_OFF, false);
            if (err) {
                fuse_reply_err(req, err);
                return;
            }
        }
    }
    struct timespec t;
    now(&t);
    pthread_mutex_lock(&e->attr_lock);
    if (to_set & FUSE_SET_ATTR_MODE) {
        e->mode = attr->st_mode & 07777;
    }
    if (to_set & FUSE_SET_ATTR_UID) {
        e->uid = attr->st_uid;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
        e->gid = attr->st_gid;
    }
    if (to_set & FUSE_SET_ATTR_ATIME_NOW) {
        e->atime = t;
    } else if (to_set & FUSE_SET_ATTR_ATIME) {
        e->atime = attr->st_atim;
    }
    if (to_set & FUSE_SET_ATTR_MTIME_NOW) {
        e->mtime = t;
    } else if (to_set & FUSE_SET_ATTR_MTIME) {
        e->mtime = attr->st_mtim;
    }
    e->ctime = t;
    pthread_mutex_unlock(&e->attr_lock);
    struct stat st;
    fill_stat(e, &st);
    fuse_reply_attr(req, &st, FUSE_EXPORT_ATTR_TIMEOUT);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    fuse_export *e = fuse_req_userdata(req);
    if ((fi->flags & O_ACCMODE) != O_RDONLY && !e->writable) {
        fuse_reply_err(req, EROFS);
        return;
    }
    /*
     * O_TRUNC: a growable export is a file and becomes empty; a fixed-size
     * one is a disk and ignores it, as a block device does (so that
     * `dd of=MOUNTPOINT` without conv=notrunc works).
     */
    if ((fi->flags & O_TRUNC) && e->growable) {
        int err = do_truncate(e, 0, VD_PREALLOC_OFF, false);
        if (err) {
            fuse_reply_err(req, err);
            return;
        }
    }
    /* O_DIRECT bypasses the kernel's page cache, as on a local file. */
    if (fi->flags & O_DIRECT) {
        fi->direct_io = 1;
    }
    fi->keep_cache = 0;
    fuse_reply_open(req, fi);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_export *e = fuse_req_userdata(req);
    if (off < 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    pthread_rwlock_rdlock(&e->resize_lock);
    int64_t len = vd_get_length(e->img);
    if (len < 0) {
        pthread_rwlock_unlock(&e->resize_lock);
        fuse_reply_err(req, lib_errno());
        return;
    }
    if ((uint64_t)off >= (uint64_t)len || !size) {
        pthread_rwlock_unlock(&e->resize_lock);
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    if (size > (uint64_t)len - (uint64_t)off) {
        size = (size_t)((uint64_t)len - (uint64_t)off);
    }
    void *buf = malloc(size);
    if (!buf) {
        pthread_rwlock_unlock(&e->resize_lock);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    int r = vd_pread(e->img, buf, size, (uint64_t)off);
    int err = r < 0 ? lib_errno() : 0;
    pthread_rwlock_unlock(&e->resize_lock);
    if (err) {
        fuse_reply_err(req, err);
    } else {
        fuse_reply_buf(req, buf, size);
    }
    free(buf);
}

/*
 * Take the resize lock shared with [off, off+size) inside the image: a
 * growable export grows first.  Returns 0 with the lock held and *size
 * possibly clipped (a fixed-size export writes up to its end), or an errno
 * without the lock.
 */
static int lock_range_for_write(fuse_export *e, uint64_t off, size_t *size, bool grow)
{
    for (;;) {
        pthread_rwlock_rdlock(&e->resize_lock);
        int64_t len = vd_get_length(e->img);
        if (len < 0) {
            pthread_rwlock_unlock(&e->resize_lock);
            return lib_errno();
        }
        if (off + *size <= (uint64_t)len) {
            return 0;
        }
        if (!grow) {
            if (off >= (uint64_t)len) {
                pthread_rwlock_unlock(&e->resize_lock);
                return ENOSPC;
            }
            *size = (size_t)((uint64_t)len - off);
            return 0;
        }
        pthread_rwlock_unlock(&e->resize_lock);
        pthread_rwlock_wrlock(&e->resize_lock);
        int err = resize_locked(e, off + *size, VD_PREALLOC_OFF, true);
        pthread_rwlock_unlock(&e->resize_lock);
        if (err) {
            return err;
        }
        /* grown: check again under the shared lock (a truncate may have
         * come in between) */
    }
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_export *e = fuse_req_userdata(req);
    if (!e->writable) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (off < 0 || (uint64_t)off > INT64_MAX - size) {
        fuse_reply_err(req, EFBIG);
        return;
    }
    if (!size) {
        fuse_reply_write(req, 0);
        return;
    }
    int err = lock_range_for_write(e, (uint64_t)off, &size, e->growable);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    int r = vd_pwrite(e->img, buf, size, (uint64_t)off, e->writethrough ? VD_REQ_FUA : 0);
    err = r < 0 ? lib_errno() : 0;
    pthread_rwlock_unlock(&e->resize_lock);
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    touch_mtime(e);
    fuse_reply_write(req, size);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_export *e = fuse_req_userdata(req);
    int err = 0;
    if (e->writable) {
        pthread_rwlock_rdlock(&e->resize_lock);
        err = vd_flush(e->img) < 0 ? lib_errno() : 0;
        pthread_rwlock_unlock(&e->resize_lock);
    }
    fuse_reply_err(req, err);
}

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)datasync;
    op_flush(req, ino, fi);
}

static void op_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t length,
                         struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_export *e = fuse_req_userdata(req);
    if (!e->writable) {
        fuse_reply_err(req, EROFS);
        return;
    }
    if (off < 0 || length <= 0 || off > INT64_MAX - length) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
        fuse_reply_err(req, EOPNOTSUPP);
        return;
    }
    uint64_t start = (uint64_t)off, end = (uint64_t)off + (uint64_t)length;
    int64_t len = vd_get_length(e->img);
    if (len < 0) {
        fuse_reply_err(req, lib_errno());
        return;
    }
    int err = 0;
    if (!(mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE))) {
        /*
         * Plain allocation: inside the image nothing can promise that
         * space stays reserved, so only the end can be extended, with
         * preallocation, and only on a growable export.
         */
        if (start < (uint64_t)len || (mode & FALLOC_FL_KEEP_SIZE)) {
            err = EOPNOTSUPP;
        } else if (!e->growable) {
            err = EFBIG;
        } else {
            err = do_truncate(e, end, VD_PREALLOC_FALLOC, true);
        }
        fuse_reply_err(req, err);
        return;
    }
    if (mode & FALLOC_FL_PUNCH_HOLE) {
        if (!(mode & FALLOC_FL_KEEP_SIZE) || (mode & FALLOC_FL_ZERO_RANGE)) {
            fuse_reply_err(req, EINVAL);
            return;
        }
    } else if (!(mode & FALLOC_FL_KEEP_SIZE) && end > (uint64_t)len) {
        /* zero range past the end extends the file */
        if (!e->growable) {
            fuse_reply_err(req, EFBIG);
            return;
        }
        err = do_truncate(e, end, VD_PREALLOC_OFF, true);
        if (err) {
            fuse_reply_err(req, err);
            return;
        }
    }
    pthread_rwlock_rdlock(&e->resize_lock);
    len = vd_get_length(e->img);
    if (len < 0) {
        err = lib_errno();
    } else if (start < (uint64_t)len) {
        if (end > (uint64_t)len) {
            end = (uint64_t)len;
        }
        /*
         * A punched hole must read as zeroes, which a discard does not
         * promise: write zeroes and let the image deallocate (the export
         * opens with discard=unmap unless --discard says otherwise).  A
         * zero range keeps the space allocated.
         */
        unsigned flags = (mode & FALLOC_FL_PUNCH_HOLE) ? VD_REQ_MAY_UNMAP : 0;
        if (e->writethrough) {
            flags |= VD_REQ_FUA;
        }
        if (vd_pwrite_zeroes(e->img, start, end - start, flags) < 0) {
            err = lib_errno();
        }
    }
    pthread_rwlock_unlock(&e->resize_lock);
    if (!err) {
        touch_mtime(e);
    }
    fuse_reply_err(req, err);
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
                     struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_export *e = fuse_req_userdata(req);
    if (whence != SEEK_DATA && whence != SEEK_HOLE) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    pthread_rwlock_rdlock(&e->resize_lock);
    int64_t len = vd_get_length(e->img);
    int err = 0;
    uint64_t pos = off < 0 ? UINT64_MAX : (uint64_t)off;
    if (len < 0) {
        err = lib_errno();
    } else if (pos >= (uint64_t)len) {
        err = ENXIO;
    } else {
        /* A hole is a range that reads as zeroes through the whole chain. */
        while (pos < (uint64_t)len) {
            vd_extent ext;
            if (vd_block_status(e->img, pos, (uint64_t)len - pos, true, &ext) < 0) {
                err = lib_errno();
                break;
            }
            bool hole = (ext.flags & VD_BS_ZERO) != 0;
            if (hole == (whence == SEEK_HOLE)) {
                break;
            }
            if (!ext.length) {
                err = EIO;
                break;
            }
            pos += ext.length;
        }
        if (!err && pos >= (uint64_t)len) {
            if (whence == SEEK_DATA) {
                err = ENXIO;
            } else {
                pos = (uint64_t)len; /* the end is a hole */
            }
        }
    }
    pthread_rwlock_unlock(&e->resize_lock);
    if (err) {
        fuse_reply_err(req, err);
    } else {
        fuse_reply_lseek(req, (off_t)pos);
    }
}

static const struct fuse_lowlevel_ops export_ops = {
    .init = op_init,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .fsync = op_fsync,
    .fallocate = op_fallocate,
    .lseek = op_lseek,
};

/* ------------------------------------------------------------- the mount */

/* libfuse's messages, as ours ("vdisk: fuse: ..."). */
static void fuse_log_to_stderr(enum fuse_log_level level, const char *fmt, va_list ap)
{
    if (level > FUSE_LOG_WARNING) {
        return;
    }
    fprintf(stderr, "%s: ", tool_progname());
    vfprintf(stderr, fmt, ap);
}

/* allow-other=auto: on when the mount helper will accept it. */
static bool allow_other_possible(void)
{
    if (geteuid() == 0) {
        return true;
    }
    FILE *f = fopen("/etc/fuse.conf", "r");
    if (!f) {
        return false;
    }
    char line[256];
    bool yes = false;
    while (fgets(line, sizeof(line), f)) {
        char *p = line;
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        if (!strncmp(p, "user_allow_other", 16) &&
            (p[16] == '\n' || p[16] == 0 || p[16] == ' ' || p[16] == '\t')) {
            yes = true;
        }
    }
    fclose(f);
    return yes;
}

/* A session mounted on mountpoint, or NULL after a message. */
static struct fuse_session *mount_export(fuse_export *e, const char *mountpoint,
                                         bool allow_other)
{
    char mount_opts[256];
    snprintf(mount_opts, sizeof(mount_opts),
             "fsname=vdisk,subtype=vdisk,default_permissions%s%s",
             allow_other ? ",allow_other" : "", e->writable ? "" : ",ro");
    char *args[] = {(char *)tool_progname(), (char *)"-o", mount_opts, NULL};
    struct fuse_args fargs = FUSE_ARGS_INIT(3, args);
    struct fuse_session *se = fuse_session_new(&fargs, &export_ops, sizeof(export_ops), e);
    fuse_opt_free_args(&fargs);
    if (!se) {
        tool_error("Failed to set up a FUSE session");
        return NULL;
    }
    if (fuse_session_mount(se, mountpoint) != 0) {
        fuse_session_destroy(se);
        return NULL;
    }
    return se;
}

/*
 * SIGTERM, SIGINT and SIGHUP end the session.  libfuse's own handlers are
 * not used: they leave a signal alone that is ignored at start, and a
 * background job of a shell starts with SIGINT ignored.  No SA_RESTART, so
 * that the thread the signal lands on leaves its read of /dev/fuse and the
 * loop sees the session ended.
 */
static struct fuse_session *volatile g_session;
static volatile sig_atomic_t g_stop; /* a signal came before the session */

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
    if (g_session) {
        fuse_session_exit(g_session);
    }
}

static void set_signals(bool install)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = install ? on_signal : SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, install ? SIG_IGN : SIG_DFL);
}

static int write_pid_file(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        tool_error("Failed to write pid file '%s': %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "%ld\n", (long)getpid());
    if (fclose(f) != 0 || rename(tmp, path) < 0) {
        tool_error("Failed to write pid file '%s': %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static void fuse_usage(void)
{
    img_command_help("fuse");
}

/* ------------------------------------------------------------------ main */

int cmd_fuse(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"help", no_argument, NULL, 'h'},
        {"format", required_argument, NULL, 'f'},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"read-only", no_argument, NULL, 'r'},
        {"writable", no_argument, NULL, 'w'},
        {"growable", no_argument, NULL, 'g'},
        {"force-share", no_argument, NULL, 'U'},
        {"cache", required_argument, NULL, 't'},
        {"aio", required_argument, NULL, OPT_FUSE_AIO},
        {"discard", required_argument, NULL, OPT_FUSE_DISCARD},
        {"detect-zeroes", required_argument, NULL, OPT_FUSE_DETECT_ZEROES},
        {"allow-other", required_argument, NULL, OPT_FUSE_ALLOW_OTHER},
        {"daemonize", no_argument, NULL, OPT_FUSE_DAEMONIZE},
        {"pid-file", required_argument, NULL, OPT_FUSE_PID_FILE},
        {"threads", required_argument, NULL, OPT_FUSE_THREADS},
        {NULL, 0, NULL, 0},
    };
    img_common co = {0};
    bool read_only = false, writable_flag = false, growable = false, daemonize = false;
    const char *cache = NULL, *aio = NULL, *discard = "unmap", *detect_zeroes = NULL;
    const char *allow_other = "auto", *pid_file = NULL;
    long threads = 10;
    int c;

    while ((c = getopt_long(argc, argv, ":hf:qrwgUt:", longopts, NULL)) != -1) {
        switch (img_common_option(&co, NULL, c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_HELP:
            return 0;
        case IMG_OPT_FAIL:
            return 1;
        }
        char *end;
        switch (c) {
        case 'h':
            fuse_usage();
            return 0;
        case 'r':
            read_only = true;
            break;
        case 'w':
            writable_flag = true;
            break;
        case 'g':
            growable = true;
            break;
        case 't':
            cache = optarg;
            break;
        case OPT_FUSE_AIO:
            if (strcmp(optarg, "threads") && strcmp(optarg, "native") &&
                strcmp(optarg, "io_uring")) {
                tool_error("Invalid aio mode '%s' (threads, native or io_uring)", optarg);
                return 1;
            }
            aio = optarg;
            break;
        case OPT_FUSE_DISCARD:
            if (strcmp(optarg, "ignore") && strcmp(optarg, "off") && strcmp(optarg, "unmap") &&
                strcmp(optarg, "on")) {
                tool_error("Invalid discard mode '%s' (ignore or unmap)", optarg);
                return 1;
            }
            discard = optarg;
            break;
        case OPT_FUSE_DETECT_ZEROES:
            if (strcmp(optarg, "off") && strcmp(optarg, "on") && strcmp(optarg, "unmap")) {
                tool_error("Invalid detect-zeroes mode '%s' (off, on or unmap)", optarg);
                return 1;
            }
            detect_zeroes = optarg;
            break;
        case OPT_FUSE_ALLOW_OTHER:
            if (strcmp(optarg, "on") && strcmp(optarg, "off") && strcmp(optarg, "auto")) {
                tool_error("Invalid allow-other value '%s' (on, off or auto)", optarg);
                return 1;
            }
            allow_other = optarg;
            break;
        case OPT_FUSE_DAEMONIZE:
            daemonize = true;
            break;
        case OPT_FUSE_PID_FILE:
            pid_file = optarg;
            break;
        case OPT_FUSE_THREADS:
            errno = 0;
            threads = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end || threads < 1 || threads > 256) {
                tool_error("Invalid thread count '%s' (1 to 256)", optarg);
                return 1;
            }
            break;
        default:
            return img_bad_option(c, argv);
        }
    }
    if (argc - optind < 2) {
        return img_usage_error("Expecting an image and a mount point");
    }
    if (argc - optind > 2) {
        return img_usage_error("Unexpected argument '%s'", argv[optind + 2]);
    }
    if (read_only && writable_flag) {
        tool_error("-r/--read-only and -w/--writable are mutually exclusive");
        return 1;
    }
    if (read_only && growable) {
        tool_error("--growable needs a writable export");
        return 1;
    }
    if (co.force_share && !read_only) {
        tool_error("--force-share/-U can only be used with --read-only/-r");
        return 1;
    }
    const char *filename = argv[optind];
    const char *mountpoint = argv[optind + 1];

    struct stat mst;
    if (stat(mountpoint, &mst) < 0) {
        tool_error("Cannot use mount point '%s': %s", mountpoint, strerror(errno));
        return 1;
    }
    if (!S_ISREG(mst.st_mode)) {
        tool_error("Mount point '%s' is not a regular file", mountpoint);
        return 1;
    }
    /* (no access check: a user without rights on /dev/fuse mounts through
     * the set-uid fusermount3) */
    struct stat dst;
    if (stat("/dev/fuse", &dst) < 0 || !S_ISCHR(dst.st_mode)) {
        tool_error("No FUSE device /dev/fuse (is the fuse module loaded?)");
        return 1;
    }

    vd_opts *extra = vd_opts_new();
    bool writethrough = false;
    if (!extra) {
        tool_error("Out of memory");
        return 1;
    }
    if (!tool_parse_cache(cache, extra, &writethrough)) {
        vd_opts_free(extra);
        return 1;
    }
    if (aio) {
        vd_opts_set(extra, "file.aio", aio);
    }
    if (!read_only) {
        vd_opts_set(extra, "discard", discard);
    }
    if (detect_zeroes) {
        vd_opts_set(extra, "detect-zeroes", detect_zeroes);
    }

    /*
     * --daemonize: fork before opening anything (no library threads exist
     * yet); the parent waits for one byte that says the mount is ready,
     * and fails when the child ends without sending it.
     */
    int ready_fd = -1;
    if (daemonize) {
        int pfd[2];
        if (pipe(pfd) < 0) {
            tool_error("pipe: %s", strerror(errno));
            vd_opts_free(extra);
            return 1;
        }
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) {
            tool_error("Failed to fork: %s", strerror(errno));
            vd_opts_free(extra);
            return 1;
        }
        if (pid > 0) {
            close(pfd[1]);
            char ok = 0;
            ssize_t n;
            do {
                n = read(pfd[0], &ok, 1);
            } while (n < 0 && errno == EINTR);
            _exit(n == 1 && ok == 'y' ? 0 : 1);
        }
        close(pfd[0]);
        ready_fd = pfd[1];
    }

    unsigned flags = VD_OPEN_EXPORT;
    if (!read_only) {
        flags |= VD_OPEN_RDWR;
        if (growable) {
            flags |= VD_OPEN_RESIZE;
        }
    } else if (co.force_share) {
        flags |= VD_OPEN_FORCE_SHARE;
    }
    vd_image *img = tool_open(filename, co.fmt, co.image_opts,
                              vd_opts_count(extra) ? extra : NULL, flags, co.quiet);
    vd_opts_free(extra);
    if (!img) {
        return 1;
    }

    fuse_export e = {
        .img = img,
        .writable = !read_only,
        .growable = growable,
        .writethrough = writethrough,
        .mode = read_only ? 0400 : 0600,
        .uid = getuid(),
        .gid = getgid(),
    };
    pthread_rwlock_init(&e.resize_lock, NULL);
    pthread_mutex_init(&e.attr_lock, NULL);
    now(&e.mtime);
    e.atime = e.ctime = e.mtime;
    /* st_blocks: the host allocation of the node holding the data (the
     * format's file, or a protocol image itself). */
    e.alloc_src = vd_image_file(img);
    if (!e.alloc_src) {
        const char *kind = vd_driver_type(vd_image_format(img));
        if (kind && !strcmp(kind, "protocol")) {
            e.alloc_src = img;
        }
    }
    /* st_blksize: the cluster size (within reason), at least a page. */
    uint32_t bs = vd_image_cluster_size(img);
    uint32_t align = vd_image_alignment(img);
    if (bs < align) {
        bs = align;
    }
    if (bs < 4096 || bs > (2u << 20)) {
        bs = bs > (2u << 20) ? (2u << 20) : 4096;
    }
    e.blksize = bs;

    fuse_set_log_func(fuse_log_to_stderr);
    /* from here on a signal stops the export cleanly */
    set_signals(true);
    bool want_other =
        !strcmp(allow_other, "on") || (!strcmp(allow_other, "auto") && allow_other_possible());
    struct fuse_session *se = mount_export(&e, mountpoint, want_other);
    if (!se && want_other && !strcmp(allow_other, "auto")) {
        se = mount_export(&e, mountpoint, false);
    }
    int ret = 1;
    bool pid_written = false;
    if (!se) {
        tool_error("Failed to mount '%s' on '%s'", filename, mountpoint);
        goto out_close;
    }
    g_session = se;
    if (g_stop) {
        fuse_session_exit(se);
    }
    if (pid_file) {
        if (write_pid_file(pid_file) < 0) {
            goto out_signals;
        }
        pid_written = true;
    }
    if (daemonize) {
        setsid();
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
            if (devnull > STDERR_FILENO) {
                close(devnull);
            }
        }
        ssize_t w = write(ready_fd, "y", 1);
        (void)w;
        close(ready_fd);
        ready_fd = -1;
    }

    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (!cfg) {
        tool_error("Out of memory");
        goto out_signals;
    }
    fuse_loop_cfg_set_max_threads(cfg, (unsigned)threads);
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    int lr = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    /* a signal ends the loop with the signal number: a clean stop */
    ret = lr < 0 ? 1 : 0;
    if (lr < 0) {
        tool_error("FUSE session failed: %s", strerror(-lr));
    }

out_signals:
    g_session = NULL; /* a further signal waits for the close below */
    fuse_session_unmount(se);
    fuse_session_destroy(se);
out_close:
    if (e.writable && vd_flush(img) < 0) {
        tool_error_lib("Failed to flush '%s'", filename);
        ret = 1;
    }
    vd_close(img);
    /* the pid file goes last: when it is gone, the image is closed */
    if (pid_file && pid_written) {
        unlink(pid_file);
    }
    set_signals(false);
    pthread_rwlock_destroy(&e.resize_lock);
    pthread_mutex_destroy(&e.attr_lock);
    if (ready_fd >= 0) {
        close(ready_fd);
    }
    return ret;
}
