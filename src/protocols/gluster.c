/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The `gluster` protocol driver: a file on a GlusterFS volume, through
 * libgfapi (glusterfs-api >= 7.6, whose glfs_pwrite, glfs_ftruncate and
 * glfs_fsync take pre/post stat arguments).
 *
 * Follows QEMU 7.2's block/gluster.c: filenames
 * gluster[+tcp|+unix|+rdma]://[HOST[:PORT]]/VOLUME/PATH[?socket=...]
 * (gluster-uri.c), or the options volume, path, server.N.type (inet, unix,
 * or the legacy tcp), server.N.host, server.N.port, server.N.path (also
 * server.N.socket), debug (0-9, default 4) and logfile (default "-", which
 * libgfapi writes to stderr, never stdout).  One connection (glfs_t) per
 * volume and server list is shared by the nodes of a process, as QEMU
 * shares it; it ends when the last node on it closes.
 *
 * Reads, writes, flush (glfs_fsync), truncate, create with preallocation
 * off, falloc (glfs_fallocate) or full (glfs_zerofill), discard
 * (glfs_discard), zero writes (glfs_zerofill) and block status through
 * SEEK_DATA / SEEK_HOLE when the volume answers them.
 *
 * Not supported: O_DIRECT (cache=none) opens, reopen, the rdma transport
 * (QEMU 7.2 falls back to tcp too), the inet keys to/ipv4/ipv6/keep-alive.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <glusterfs/api/glfs.h>

#include "gluster.h"

enum {
    GLUSTER_DEFAULT_PORT = 24007,
    GLUSTER_DEBUG_DEFAULT = 4,
    GLUSTER_DEBUG_MAX = 9,
    GLUSTER_MAX_SERVERS = 64,
};
/* QEMU's GLUSTER_MAX_TRANSFER: some GlusterFS versions fail 1 GiB requests */
#define GLUSTER_MAX_TRANSFER (512u << 20)

/* ------------------------------------------------------ shared connections */

typedef struct gluster_conn {
    struct gluster_conn *next;
    char *key; /* volume, servers, logfile and debug level */
    glfs_t *fs;
    unsigned refs;
} gluster_conn;

static pthread_mutex_t gluster_conn_lock = PTHREAD_MUTEX_INITIALIZER;
static gluster_conn *gluster_conns;

/* One server of the list (option values, not owned). */
typedef struct gluster_server {
    bool is_unix;
    const char *host;
    const char *port;
    const char *path;
} gluster_server;

typedef struct gluster_conf {
    const char *volume;
    const char *path;
    const char *logfile;
    int debug;
    size_t nservers;
    gluster_server servers[GLUSTER_MAX_SERVERS];
} gluster_conf;

typedef struct gluster_state {
    gluster_conn *conn;
    glfs_fd_t *fd;
    bool seek_data; /* the volume answers SEEK_DATA / SEEK_HOLE */
    _Atomic uint64_t size;
} gluster_state;

/*
 * A connection whose last node closed stays open, idle, for the next node
 * on the same volume: `create -f qcow2` and `convert` open one volume
 * several times in a row, and glfs_fini takes about ten seconds (libgfapi
 * waits for its call pool to drain).  The idle connections left at exit
 * are not finished: their files are closed, so every write has reached
 * the bricks (glfs_close flushes write-behind), and the process's end
 * closes the sockets.  Beyond GLUSTER_MAX_IDLE the oldest idle one ends.
 */
enum { GLUSTER_MAX_IDLE = 4 };

static void gluster_conn_put(gluster_conn *c)
{
    if (!c) {
        return;
    }
    gluster_conn *victim = NULL;
    pthread_mutex_lock(&gluster_conn_lock);
    if (--c->refs == 0) {
        unsigned idle = 0;
        gluster_conn **last = NULL;
        for (gluster_conn **p = &gluster_conns; *p; p = &(*p)->next) {
            if ((*p)->refs == 0) {
                idle++;
                last = p; /* new connections go first: the last is the oldest */
            }
        }
        if (idle > GLUSTER_MAX_IDLE && last) {
            victim = *last;
            *last = victim->next;
        }
    }
    pthread_mutex_unlock(&gluster_conn_lock);
    if (victim) {
        glfs_fini(victim->fs);
        free(victim->key);
        free(victim);
    }
}

static char *gluster_conn_key(const gluster_conf *g)
{
    char *key = vd_asprintf("%s|%s|%d", g->volume, g->logfile, g->debug);
    for (size_t i = 0; key && i < g->nservers; i++) {
        const gluster_server *sv = &g->servers[i];
        char *k = sv->is_unix ? vd_asprintf("%s|unix:%s", key, sv->path)
                              : vd_asprintf("%s|tcp:%s:%s", key, sv->host, sv->port);
        free(key);
        key = k;
    }
    return key;
}

/*
 * glfs_init on a thread of its own, waited for at most GLUSTER_INIT_TIMEOUT
 * seconds: libgfapi waits forever when the volfile server answers the
 * volfile request with an RPC error (a unix socket of glusterd that is not
 * its glusterd-sockfile, for one) or not at all.  A connection that gave
 * up is abandoned (glfs_fini cannot run while glfs_init does): the thread
 * frees the job when glfs_init returns, if ever; the process's end closes
 * the sockets.  QEMU waits forever there.
 */
enum { GLUSTER_INIT_TIMEOUT = 60 };

typedef struct gluster_init_job {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    glfs_t *fs;
    int ret;
    int err;
    bool done;
    bool abandoned;
} gluster_init_job;

static void gluster_init_job_free(gluster_init_job *j)
{
    pthread_mutex_destroy(&j->lock);
    pthread_cond_destroy(&j->cond);
    free(j);
}

static void *gluster_init_thread(void *opaque)
{
    gluster_init_job *j = opaque;
    errno = 0;
    int r = glfs_init(j->fs);
    int e = errno;
    pthread_mutex_lock(&j->lock);
    j->ret = r;
    j->err = e;
    j->done = true;
    bool abandoned = j->abandoned;
    pthread_cond_signal(&j->cond);
    pthread_mutex_unlock(&j->lock);
    if (abandoned) {
        /* nobody holds the connection: it was never handed out */
        gluster_init_job_free(j);
    }
    return NULL;
}

/*
 * 0, or -1 with errno set (ETIMEDOUT when it gave up waiting; *abandoned is
 * then true and fs must be left alone).
 */
static int gluster_init_bounded(glfs_t *fs, bool *abandoned)
{
    *abandoned = false;
    gluster_init_job *j = calloc(1, sizeof(*j));
    if (!j) {
        errno = ENOMEM;
        return -1;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&j->lock, NULL);
    j->fs = fs;
    pthread_attr_t ta;
    pthread_attr_init(&ta);
    pthread_attr_setdetachstate(&ta, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int e = pthread_create(&t, &ta, gluster_init_thread, j);
    pthread_attr_destroy(&ta);
    if (e != 0) {
        gluster_init_job_free(j);
        errno = e;
        return -1;
    }
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += GLUSTER_INIT_TIMEOUT;
    pthread_mutex_lock(&j->lock);
    while (!j->done) {
        if (pthread_cond_timedwait(&j->cond, &j->lock, &deadline) == ETIMEDOUT && !j->done) {
            j->abandoned = true;
            pthread_mutex_unlock(&j->lock);
            *abandoned = true;
            errno = ETIMEDOUT;
            return -1;
        }
    }
    pthread_mutex_unlock(&j->lock);
    int r = j->ret;
    e = j->err;
    gluster_init_job_free(j);
    errno = e;
    return r;
}

/* QEMU's message for a failed glfs_init. */
static int gluster_connect_error(const gluster_conf *g, int err, vd_error **errp)
{
    return vd_error_set(errp, err ? err : EINVAL,
                        "Gluster connection for volume %s, path %s failed to connect",
                        g->volume, g->path);
}

static gluster_conn *gluster_conn_get(const gluster_conf *g, vd_error **errp)
{
    char *key = gluster_conn_key(g);
    if (!key) {
        vd_error_set(errp, ENOMEM, "out of memory");
        return NULL;
    }
    /*
     * Held across glfs_init so that two nodes on one volume share one
     * connection instead of racing to make two.
     */
    pthread_mutex_lock(&gluster_conn_lock);
    for (gluster_conn *c = gluster_conns; c; c = c->next) {
        if (!strcmp(c->key, key)) {
            c->refs++;
            pthread_mutex_unlock(&gluster_conn_lock);
            free(key);
            return c;
        }
    }
    gluster_conn *c = NULL;
    glfs_t *fs = glfs_new(g->volume);
    if (!fs) {
        vd_error_setg_errno(errp, errno ? errno : ENOMEM, "Gluster: cannot set up volume %s",
                            g->volume);
        goto fail;
    }
    for (size_t i = 0; i < g->nservers; i++) {
        const gluster_server *sv = &g->servers[i];
        int r = sv->is_unix ? glfs_set_volfile_server(fs, "unix", sv->path, 0)
                            : glfs_set_volfile_server(fs, "tcp", sv->host, atoi(sv->port));
        if (r < 0) {
            vd_error_setg_errno(errp, errno ? errno : EINVAL,
                                "Gluster: cannot use server %s", sv->is_unix ? sv->path
                                                                            : sv->host);
            goto fail;
        }
    }
    if (glfs_set_logging(fs, g->logfile, g->debug) < 0) {
        vd_error_setg_errno(errp, errno ? errno : EINVAL, "Gluster: cannot log to '%s'",
                            g->logfile);
        goto fail;
    }
    bool abandoned;
    if (gluster_init_bounded(fs, &abandoned) != 0) {
        gluster_connect_error(g, errno, errp);
        if (abandoned) {
            fs = NULL; /* still in glfs_init on its thread */
        }
        goto fail;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        vd_error_set(errp, ENOMEM, "out of memory");
        goto fail;
    }
    c->key = key;
    c->fs = fs;
    c->refs = 1;
    c->next = gluster_conns;
    gluster_conns = c;
    pthread_mutex_unlock(&gluster_conn_lock);
    return c;

fail:
    pthread_mutex_unlock(&gluster_conn_lock);
    if (fs) {
        int e = errno;
        glfs_fini(fs);
        errno = e;
    }
    free(key);
    return NULL;
}

/* ------------------------------------------------------------- options */

static const vd_opt_desc gluster_open_opts[] = {
    {"volume", VD_OPT_STRING, "name of gluster volume where VM image resides", NULL},
    {"path", VD_OPT_STRING, "absolute path to image file in gluster volume", NULL},
    {"debug", VD_OPT_NUMBER, "Gluster log level, valid range is 0-9", "4"},
    {"logfile", VD_OPT_STRING, "Logfile path of libgfapi", "-"},
    {NULL, 0, NULL, NULL},
};

/* In QEMU's `-o help` order. */
static const vd_opt_desc gluster_create_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {"preallocation", VD_OPT_STRING, "Preallocation mode (allowed values: off, falloc, full)",
     NULL},
    {"debug", VD_OPT_NUMBER, "Gluster log level, valid range is 0-9", NULL},
    {"logfile", VD_OPT_STRING, "Logfile path of libgfapi", NULL},
    {NULL, 0, NULL, NULL},
};

static const char *const gluster_protocols[] = {
    "gluster", "gluster+tcp", "gluster+unix", "gluster+rdma", NULL,
};

static const char *const gluster_prefixes[] = {"server.", NULL};

static int gluster_parse_filename(const char *filename, vd_opts *opts, vd_error **errp)
{
    int r = vd_gluster_parse_uri(filename, opts);
    if (r == -ENOMEM) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    if (r < 0) {
        return vd_error_set(errp, EINVAL, "invalid URI %s", filename);
    }
    return 0;
}

/* server.N.KEY */
static const char *gluster_server_opt(const vd_opts *opts, size_t i, const char *key)
{
    char name[64];
    snprintf(name, sizeof(name), "server.%zu.%s", i, key);
    return vd_opts_get(opts, name);
}

static bool gluster_server_present(const vd_opts *opts, size_t i)
{
    char pfx[32];
    int n = snprintf(pfx, sizeof(pfx), "server.%zu.", i);
    for (size_t k = 0; k < vd_opts_count(opts); k++) {
        if (!strncmp(vd_opts_key(opts, k), pfx, (size_t)n)) {
            return true;
        }
    }
    return false;
}

/* Fill g from the node's options (QEMU's qemu_gluster_parse_json). */
static int gluster_conf_from_opts(const vd_opts *opts, gluster_conf *g, vd_error **errp)
{
    memset(g, 0, sizeof(*g));
    const char *dbg = vd_opts_get(opts, "debug");
    g->debug = GLUSTER_DEBUG_DEFAULT;
    if (dbg) {
        char *end;
        errno = 0;
        long v = strtol(dbg, &end, 10);
        if (!*dbg || *end || errno) {
            return vd_error_set(errp, EINVAL, "Parameter 'debug' expects a number");
        }
        /* out-of-range levels are clamped, as QEMU does */
        g->debug = v < 0 ? 0 : v > GLUSTER_DEBUG_MAX ? GLUSTER_DEBUG_MAX : (int)v;
    }
    g->logfile = vd_opts_get(opts, "logfile");
    if (!g->logfile) {
        g->logfile = "-";
    }
    while (g->nservers < GLUSTER_MAX_SERVERS && gluster_server_present(opts, g->nservers)) {
        g->nservers++;
    }
    if (g->nservers == GLUSTER_MAX_SERVERS && gluster_server_present(opts, g->nservers)) {
        return vd_error_set(errp, EINVAL, "At most %d gluster servers are supported",
                            GLUSTER_MAX_SERVERS);
    }
    if (g->nservers == 0) {
        return vd_error_set(errp, EINVAL, "Parameter 'server' is missing");
    }
    g->volume = vd_opts_get(opts, "volume");
    if (!g->volume || !*g->volume) {
        return vd_error_set(errp, EINVAL, "Parameter 'volume' is missing");
    }
    g->path = vd_opts_get(opts, "path");
    if (!g->path || !*g->path) {
        return vd_error_set(errp, EINVAL, "Parameter 'path' is missing");
    }
    for (size_t i = 0; i < g->nservers; i++) {
        gluster_server *sv = &g->servers[i];
        const char *type = gluster_server_opt(opts, i, "type");
        if (!type) {
            return vd_error_set(errp, EINVAL,
                                "Parameter 'type' is missing (server array index %zu)", i);
        }
        if (!strcmp(type, "inet") || !strcmp(type, "tcp")) {
            sv->host = gluster_server_opt(opts, i, "host");
            sv->port = gluster_server_opt(opts, i, "port");
            if (!sv->host || !*sv->host) {
                return vd_error_set(errp, EINVAL,
                                    "Parameter 'host' is missing (server array index %zu)", i);
            }
            if (!sv->port) {
                return vd_error_set(errp, EINVAL,
                                    "Parameter 'port' is missing (server array index %zu)", i);
            }
            char *end;
            errno = 0;
            unsigned long p = strtoul(sv->port, &end, 10);
            if (!*sv->port || *end || errno || p > 65535 || sv->port[0] == '-') {
                return vd_error_set(errp, EINVAL, "'%s' is not a valid port number",
                                    sv->port);
            }
        } else if (!strcmp(type, "unix")) {
            sv->is_unix = true;
            sv->path = gluster_server_opt(opts, i, "path");
            if (!sv->path) {
                sv->path = gluster_server_opt(opts, i, "socket");
            }
            if (!sv->path || !*sv->path) {
                return vd_error_set(errp, EINVAL,
                                    "Parameter 'path' is missing (server array index %zu)", i);
            }
        } else {
            return vd_error_set(errp, EINVAL,
                                "Parameter 'type' may be 'inet' or 'unix' (server array "
                                "index %zu)",
                                i);
        }
    }
    return 0;
}

/* QEMU's name for a node opened from options (one server only). */
static char *gluster_canonical_name(const gluster_conf *g)
{
    if (g->nservers != 1) {
        return NULL;
    }
    const gluster_server *sv = &g->servers[0];
    if (sv->is_unix) {
        return vd_asprintf("gluster+unix:///%s/%s?socket=%s", g->volume, g->path, sv->path);
    }
    bool v6 = strchr(sv->host, ':') != NULL;
    return vd_asprintf("gluster://%s%s%s:%s/%s/%s", v6 ? "[" : "", sv->host, v6 ? "]" : "",
                       sv->port, g->volume, g->path);
}

/* ---------------------------------------------------------------- open */

/* SEEK_DATA at the end of the file fails with ENXIO where it works. */
static bool gluster_test_seek(glfs_fd_t *fd)
{
    off_t eof = glfs_lseek(fd, 0, SEEK_END);
    if (eof < 0) {
        return false;
    }
    errno = 0;
    off_t r = glfs_lseek(fd, eof, SEEK_DATA);
    return r < 0 && errno == ENXIO;
}

static int gluster_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    gluster_state *s = bs->opaque;
    gluster_conf g;
    int r = gluster_conf_from_opts(opts, &g, errp);
    if (r < 0) {
        return r;
    }
    if (!bs->filename || !strcmp(bs->filename, "gluster")) {
        char *name = gluster_canonical_name(&g);
        if (name) {
            free(bs->filename);
            bs->filename = name;
        }
    }
    s->conn = gluster_conn_get(&g, errp);
    if (!s->conn) {
        return -EIO;
    }
    s->fd = glfs_open(s->conn->fs, g.path, bs->read_only ? O_RDONLY : O_RDWR);
    if (!s->fd) {
        int e = errno ? errno : EIO;
        gluster_conn_put(s->conn);
        s->conn = NULL;
        return vd_error_setg_errno(errp, e, "Could not open '%s'", bs->filename);
    }
    struct stat st;
    if (glfs_fstat(s->fd, &st) < 0) {
        int e = errno ? errno : EIO;
        glfs_close(s->fd);
        s->fd = NULL;
        gluster_conn_put(s->conn);
        s->conn = NULL;
        return vd_error_setg_errno(errp, e, "Could not stat '%s'", bs->filename);
    }
    atomic_store(&s->size, (uint64_t)st.st_size);
    s->seek_data = gluster_test_seek(s->fd);
    /* QEMU's gluster driver does sector-based I/O */
    bs->request_alignment = 512;
    bs->max_transfer = GLUSTER_MAX_TRANSFER;
    /* the volume may sit on a block device that does not read zeroes */
    bs->has_zero_init = false;
    return 0;
}

static void gluster_close(vd_node *bs)
{
    gluster_state *s = bs->opaque;
    if (s->fd) {
        glfs_close(s->fd);
        s->fd = NULL;
    }
    gluster_conn_put(s->conn);
    s->conn = NULL;
}

static int64_t gluster_get_length(vd_node *bs)
{
    gluster_state *s = bs->opaque;
    return (int64_t)atomic_load(&s->size);
}

static int64_t gluster_get_allocated_size(vd_node *bs)
{
    gluster_state *s = bs->opaque;
    struct stat st;
    if (glfs_fstat(s->fd, &st) < 0) {
        return errno ? -errno : -EIO;
    }
    return (int64_t)st.st_blocks * 512;
}

/* Note that the file now reaches at least end. */
static void gluster_grow(gluster_state *s, uint64_t end)
{
    uint64_t cur = atomic_load(&s->size);
    while (cur < end && !atomic_compare_exchange_weak(&s->size, &cur, end)) {
    }
}

/* ----------------------------------------------------------------- I/O */

/*
 * Reads go through glfs_preadv_async and wait for its callback, as QEMU's
 * reads do: libgfapi then copies the reply into the caller's buffer and
 * frees it on its own thread.  libgfapi pools reply buffers (iobufs) up
 * to 1 MiB only (32 of 128 KiB, 8 of 256 KiB, 2 of 1 MiB); a larger read
 * gets them from calloc (iobuf_get2 -> iobuf_get_from_stdalloc, in the
 * client and the socket layers).  With glfs_pread the caller's thread
 * copied and freed them, and with convert's 8 workers reading 2 MiB each
 * glibc trimmed and regrew its heaps between reads (madvise DONTNEED of
 * 6-8 MiB), so every calloc cleared freshly faulted pages: a 512 MiB
 * qcow2 -> raw convert (384 MiB of data) took 58000-100000 page faults and
 * 0.9-2.6 s of CPU, qemu-img 19000-22000 and 0.6-0.8 s; through the
 * callback 22000-24500 and 0.7-0.9 s, with the 8 reads still in flight.
 */
typedef struct gluster_wait {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    ssize_t ret;
    int err;
    bool done;
} gluster_wait;

static void gluster_read_done(glfs_fd_t *fd, ssize_t ret, struct glfs_stat *pre,
                              struct glfs_stat *post, void *opaque)
{
    (void)fd;
    (void)pre;
    (void)post;
    gluster_wait *w = opaque;
    int e = errno;
    pthread_mutex_lock(&w->lock);
    w->ret = ret;
    w->err = e;
    w->done = true;
    pthread_cond_signal(&w->cond);
    pthread_mutex_unlock(&w->lock);
}

static ssize_t gluster_read_async(gluster_state *s, void *p, size_t len, off_t offset)
{
    gluster_wait w = {.done = false};
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, NULL);
    struct iovec iov = {.iov_base = p, .iov_len = len};
    ssize_t r;
    if (glfs_preadv_async(s->fd, &iov, 1, offset, 0, gluster_read_done, &w) < 0) {
        r = -1;
    } else {
        pthread_mutex_lock(&w.lock);
        while (!w.done) {
            pthread_cond_wait(&w.cond, &w.lock);
        }
        pthread_mutex_unlock(&w.lock);
        r = w.ret;
        errno = w.err;
    }
    pthread_mutex_destroy(&w.lock);
    pthread_cond_destroy(&w.cond);
    return r;
}

static int gluster_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    gluster_state *s = bs->opaque;
    uint8_t *p = buf;
    int ret = 0;
    while (len) {
        ssize_t n = gluster_read_async(s, p, (size_t)len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            ret = errno ? -errno : -EIO;
            break;
        }
        if (n == 0) {
            /* past the end of the file: zeroes, as the file driver reads */
            memset(p, 0, (size_t)len);
            break;
        }
        p += n;
        offset += (uint64_t)n;
        len -= (uint64_t)n;
    }
    return ret;
}

static int gluster_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                          unsigned flags)
{
    gluster_state *s = bs->opaque;
    const uint8_t *p = buf;
    uint64_t end = offset + len;
    while (len) {
        ssize_t n = glfs_pwrite(s->fd, p, (size_t)len, (off_t)offset, 0, NULL, NULL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno ? -errno : -EIO;
        }
        if (n == 0) {
            return -EIO;
        }
        p += n;
        offset += (uint64_t)n;
        len -= (uint64_t)n;
    }
    gluster_grow(s, end);
    return 0;
}

static int gluster_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    gluster_state *s = bs->opaque;
    if (len > (uint64_t)INT64_MAX - offset) {
        return -EINVAL;
    }
    if (glfs_zerofill(s->fd, (off_t)offset, (off_t)len) < 0) {
        int e = errno ? errno : EIO;
        /* a brick without zerofill: let the core write zero buffers */
        return e == EOPNOTSUPP || e == ENOSYS ? -ENOTSUP : -e;
    }
    gluster_grow(s, offset + len);
    return 0;
}

static int gluster_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    gluster_state *s = bs->opaque;
    if (glfs_discard(s->fd, (off_t)offset, (size_t)len) < 0) {
        int e = errno ? errno : EIO;
        /* discard is a hint: a volume that cannot punch holes ignores it */
        return e == EOPNOTSUPP || e == ENOSYS ? 0 : -e;
    }
    return 0;
}

static int gluster_flush(vd_node *bs)
{
    gluster_state *s = bs->opaque;
    if (glfs_fsync(s->fd, NULL, NULL) < 0) {
        return errno ? -errno : -EIO;
    }
    return 0;
}

/*
 * Where the data or the hole that starts at offset ends (file-posix's
 * find_allocation): *data is the first data at or after offset, *hole the
 * first hole at or after it.  -ENXIO: offset is in the trailing hole.
 */
static int gluster_find_allocation(gluster_state *s, uint64_t offset, uint64_t *data,
                                   uint64_t *hole)
{
    errno = 0;
    off_t d = glfs_lseek(s->fd, (off_t)offset, SEEK_DATA);
    if (d < 0) {
        return errno ? -errno : -EIO;
    }
    if ((uint64_t)d == offset) {
        errno = 0;
        off_t h = glfs_lseek(s->fd, (off_t)offset, SEEK_HOLE);
        if (h < 0) {
            return errno ? -errno : -EIO;
        }
        if ((uint64_t)h <= offset) {
            /* raced with a write: call it data */
            *data = offset;
            *hole = UINT64_MAX;
            return 0;
        }
        *data = offset;
        *hole = (uint64_t)h;
        return 0;
    }
    if ((uint64_t)d < offset) {
        return -EIO; /* a broken answer */
    }
    *hole = offset;
    *data = (uint64_t)d;
    return 0;
}

static int gluster_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                                uint64_t *pnum, uint64_t *map, vd_node **file)
{
    gluster_state *s = bs->opaque;
    *map = offset;
    *file = bs;
    *pnum = len;
    if (!want_zero || !s->seek_data) {
        return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
    }
    uint64_t data = 0, hole = 0;
    int r = gluster_find_allocation(s, offset, &data, &hole);
    if (r == -ENXIO) {
        return VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID; /* the trailing hole */
    }
    if (r < 0) {
        return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID; /* no answer: no holes */
    }
    uint32_t a = bs->request_alignment ? bs->request_alignment : 1;
    if (data == offset) {
        /* a hole that starts inside an aligned block: the block is data */
        uint64_t n = hole - offset;
        if (n < len) {
            uint64_t up;
            if (!vd_align_up_overflow(n, a, &up)) {
                n = up;
            }
        }
        *pnum = VD_MIN(len, n);
        return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
    }
    uint64_t n = vd_align_down(data - offset, a);
    if (n == 0) {
        /* data within the first block: the block is data */
        *pnum = VD_MIN(len, (uint64_t)a);
        return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
    }
    *pnum = VD_MIN(len, n);
    return VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID;
}

/* -------------------------------------------------------- truncate/create */

/* QEMU's qemu_gluster_do_truncate. */
static int gluster_do_truncate(glfs_fd_t *fd, uint64_t size, vd_prealloc prealloc,
                               vd_error **errp)
{
    if (size > (uint64_t)INT64_MAX) {
        return vd_error_set(errp, EFBIG, "Image size is too large");
    }
    off_t cur = glfs_lseek(fd, 0, SEEK_END);
    if (cur < 0) {
        return vd_error_setg_errno(errp, errno ? errno : EIO,
                                   "Failed to determine current size");
    }
    if ((uint64_t)cur > size && prealloc != VD_PREALLOC_OFF) {
        return vd_error_set(errp, ENOTSUP, "Cannot use preallocation for shrinking files");
    }
    if ((uint64_t)cur == size) {
        return 0;
    }
    switch (prealloc) {
    case VD_PREALLOC_FALLOC:
        if (glfs_fallocate(fd, 0, cur, (size_t)(size - (uint64_t)cur)) < 0) {
            return vd_error_setg_errno(errp, errno ? errno : EIO,
                                       "Could not preallocate data for the new area");
        }
        return 0;
    case VD_PREALLOC_FULL:
        if (glfs_ftruncate(fd, (off_t)size, NULL, NULL) < 0) {
            return vd_error_setg_errno(errp, errno ? errno : EIO, "Could not resize file");
        }
        if (glfs_zerofill(fd, cur, (off_t)(size - (uint64_t)cur)) < 0) {
            int e = errno ? errno : EIO;
            (void)glfs_ftruncate(fd, cur, NULL, NULL);
            return vd_error_setg_errno(errp, e, "Could not zerofill the new area");
        }
        return 0;
    case VD_PREALLOC_OFF:
        if (glfs_ftruncate(fd, (off_t)size, NULL, NULL) < 0) {
            return vd_error_setg_errno(errp, errno ? errno : EIO, "Could not resize file");
        }
        return 0;
    default:
        return vd_error_set(errp, ENOTSUP, "Unsupported preallocation mode: %s",
                            vd_prealloc_name(prealloc));
    }
}

static int gluster_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                            vd_error **errp)
{
    gluster_state *s = bs->opaque;
    int r = gluster_do_truncate(s->fd, size, prealloc, errp);
    if (r == 0) {
        atomic_store(&s->size, size);
    }
    return r;
}

static int gluster_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    static const char *const prealloc_names[] = {"off", "metadata", "falloc", "full", NULL};
    uint64_t size;
    int prealloc;
    if (vd_opts_get_size(opts, "size", 0, &size, errp) < 0 ||
        vd_opts_get_enum(opts, "preallocation", prealloc_names, VD_PREALLOC_OFF, &prealloc,
                         errp) < 0) {
        return -EINVAL;
    }
    /* QEMU rounds the size of a new file up to whole sectors */
    if (vd_align_up_overflow(size, 512, &size) || size > (uint64_t)INT64_MAX) {
        return vd_error_set(errp, EFBIG, "Image size is too large");
    }
    vd_opts *o = vd_opts_new();
    if (!o) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    int ret;
    if (!strncmp(filename, "json:", 5)) {
        ret = vd_opts_parse_json_filename(o, filename, errp);
    } else {
        ret = gluster_parse_filename(filename, o, errp);
    }
    for (const char *const *k = (const char *const[]){"debug", "logfile", NULL}; *k; k++) {
        const char *v = vd_opts_get(opts, *k);
        if (v) {
            vd_opts_set(o, *k, v);
        }
    }
    gluster_conf g;
    if (ret == 0) {
        ret = gluster_conf_from_opts(o, &g, errp);
    }
    gluster_conn *c = NULL;
    if (ret == 0) {
        c = gluster_conn_get(&g, errp);
        if (!c) {
            ret = -EIO;
        }
    }
    if (ret == 0) {
        glfs_fd_t *fd = glfs_creat(c->fs, g.path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (!fd) {
            ret = vd_error_setg_errno(errp, errno ? errno : EIO, "Could not create '%s'",
                                      filename);
        } else {
            ret = gluster_do_truncate(fd, size, (vd_prealloc)prealloc, errp);
            if (glfs_close(fd) != 0 && ret == 0) {
                ret = vd_error_setg_errno(errp, errno ? errno : EIO,
                                          "Could not close the new file");
            }
        }
    }
    gluster_conn_put(c);
    vd_opts_free(o);
    return ret;
}

const vd_driver vd_drv_gluster = {
    .name = "gluster",
    .kind = VD_DRV_PROTOCOL,
    .protocols = gluster_protocols,
    .state_size = sizeof(gluster_state),
    .create_opts = gluster_create_opts,
    .open_opts = gluster_open_opts,
    .opt_prefixes = gluster_prefixes,
    .parse_filename = gluster_parse_filename,
    .open = gluster_open,
    .close = gluster_close,
    .create = gluster_create,
    .get_length = gluster_get_length,
    .get_allocated_size = gluster_get_allocated_size,
    .pread = gluster_pread,
    .pwrite = gluster_pwrite,
    .pwrite_zeroes = gluster_pwrite_zeroes,
    .discard = gluster_discard,
    .flush = gluster_flush,
    .block_status = gluster_block_status,
    .truncate = gluster_truncate,
};
