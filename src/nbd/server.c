/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The NBD server behind vdisk-nbd (public API: vdisk-nbd.h).
 *
 * Protocol: fixed newstyle handshake only (no oldstyle), with
 * NBD_OPT_EXPORT_NAME/ABORT/LIST/STARTTLS/INFO/GO/STRUCTURED_REPLY/
 * LIST_META_CONTEXT/SET_META_CONTEXT/EXTENDED_HEADERS; commands READ
 * (structured replies with hole chunks), WRITE, DISC, FLUSH, TRIM, CACHE,
 * WRITE_ZEROES (FAST_ZERO, NO_HOLE), BLOCK_STATUS (base:allocation,
 * qemu:allocation-depth, qemu:dirty-bitmap:NAME; the payload form with
 * extended headers).  Not supported: NBD_CMD_RESIZE.
 *
 * Threads: serve() accepts and sends the greeting; each client gets a
 * short-lived thread for the rest of the handshake (bounded by the
 * handshake limit).  In the transmission phase no thread belongs to a
 * client: one pool of workers, shared by every connection, serves them
 * all.  Idle workers wait in epoll_wait() for connection sockets to
 * become readable (one-shot: a readable connection goes to exactly one
 * worker).  That worker reads the next request without blocking (a
 * request may arrive in pieces: the partial header or payload stays with
 * the connection), passes the connection on (queued for another worker
 * when more bytes are already buffered, else re-armed in epoll), then
 * serves the request with the synchronous, thread safe vd_* calls and
 * sends the reply under the connection's write lock with one writev.  So
 * one connection has up to SRV_CONN_MAX_REQS requests in service, replies
 * go out of order, and an idle connection costs only its memory.  Workers
 * start as requests need them, up to --threads (default: from the number
 * of cores); workers blocked sending to a client that does not read its
 * replies do not count against that size.
 *
 * Memory per client is bounded: requests carry at most NBD_MAX_PAYLOAD
 * bytes, and a connection whose next request would push its bytes in
 * flight over the client memory limit is not read (parked) until enough
 * of its requests have finished.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "conn.h"
#include "internal.h"
#include "net.h"
#include "proto.h"
#include "tls.h"
#include "vdisk-nbd.h"

/* workers of the shared pool: 0 = automatic (8 per core, 16 to 48) */
#define SRV_DEFAULT_THREADS 0
#define SRV_MAX_THREADS 256
#define SRV_DEFAULT_CLIENT_MEM (64ull * 1024 * 1024)
#define SRV_DEFAULT_HANDSHAKE_MS 10000
/* ceiling on simultaneous connections even when "unlimited" (-e 0) */
#define SRV_HARD_MAX_CONNS 1024
/* granule of zero detection in reads: shorter zero runs go as data */
#define SRV_MIN_HOLE 4096u
#define SRV_MAX_READ_CHUNKS 64
/* extents per block status chunk: bounds the work of one request */
#define SRV_MAX_BS_EXTENTS 2048u
/* buffers a worker keeps between requests */
#define SRV_RETAIN_BUF (2u * 1024 * 1024)
/* requests of one connection served at once: a client that stops reading
 * its replies blocks at most this many workers (in send) */
#define SRV_CONN_MAX_REQS 16
/* CACHE requests beyond this are only partly honoured (it is a hint) */
#define SRV_MAX_CACHE (64ull * 1024 * 1024)

/* metadata context ids, as QEMU numbers them */
enum {
    META_BASE_ALLOCATION = 0,
    META_ALLOCATION_DEPTH = 1,
    META_DIRTY_BITMAP = 2,
    META_COUNT = 3,
};

typedef struct srv_export {
    char *name;
    char *desc;
    char *bitmap;
    char *bitmap_ctx; /* "qemu:dirty-bitmap:NAME" */
    vd_node *bm_node; /* the node holding the bitmap */
    vd_image *img;
    uint64_t offset;
    uint64_t size;
    bool read_only;
    bool writethrough;
    bool depth;
    int multi_conn;
    uint32_t min_block, pref_block, max_block;
} srv_export;

typedef struct srv_client srv_client;

/* The workers shared by every connection in the transmission phase. */
typedef struct srv_pool {
    pthread_mutex_t lock;
    srv_client *qhead, *qtail; /* connections with bytes to read */
    unsigned max;              /* workers at most */
    unsigned started;       /* changed under lock, also read without */
    unsigned idle;          /* workers waiting for work (atomic) */
    unsigned sending;       /* workers in srv_send() (atomic) */
    bool running, stop;
    int epfd;  /* idle workers wait here for readable connections */
    int evfd;  /* in epfd: entries queued, or stop */
    pthread_t *workers;
} srv_pool;

struct vd_nbd_server {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    srv_export *exports;
    size_t nexports;
    vd_nbd_tls_creds *tls;
    unsigned max_conns;
    unsigned threads;
    unsigned handshake_ms;
    bool persistent;
    uint64_t client_mem;
    vd_nbd_log_level log_level;
    vd_nbd_log_fn *log_fn;
    void *log_opaque;
    int wake[2]; /* pipe: stop requests and client exits wake serve() */
    volatile sig_atomic_t stop_requested;
    unsigned nclients;
    unsigned next_id;
    srv_client *clients;
    bool served_one; /* a client that reached transmission has left */
    srv_pool pool;
};

/* A worker's buffer: request payload, then reply data; kept between
 * requests (up to SRV_RETAIN_BUF) so that requests allocate nothing. */
typedef struct srv_worker {
    uint8_t *buf;
    size_t cap;
} srv_worker;

/* where the reader of a connection stands */
enum {
    RS_HEADER,  /* collecting a request header */
    RS_MEM,     /* header decoded, waiting for memory budget */
    RS_PAYLOAD, /* budget taken, collecting the payload */
};

struct srv_client {
    vd_nbd_server *srv;
    srv_client *next, *prev;
    unsigned id;
    char peer[96];
    vd_nbd_conn conn;

    /* negotiation */
    bool greeted; /* serve() sent the greeting already */
    bool fixed;
    bool no_zeroes;
    bool structured;
    bool extended;
    bool tls_active;
    bool meta_set;     /* SET_META_CONTEXT succeeded ... */
    char *meta_export; /* ... for this export name */
    bool meta[META_COUNT];
    srv_export *exp;
    bool transmission;

    /* transmission; the read side belongs to one worker at a time (the
     * one that took the connection from the queue or from epoll) */
    pthread_mutex_t wlock, mlock;
    srv_client *qnext; /* in the pool's queue */
    int rstate;
    uint8_t hdr[NBD_EXT_REQUEST_LEN];
    size_t hgot;
    vd_nbd_request req;  /* the request being read */
    uint64_t plen, pgot; /* its payload: length, bytes read */
    uint64_t need;       /* its memory budget */
    uint8_t *pbuf;       /* a partly read payload waits here ... */
    size_t pcap;         /* ... with its buffer's size */
    bool registered;     /* in the pool's epoll set */
    int handoff;         /* see srv_arm() (atomic) */
    /* under mlock */
    uint64_t inflight; /* payload bytes held by requests in progress */
    unsigned nreq;     /* requests being served */
    bool parked;       /* not read until inflight drops */
    bool reader_done;  /* no more requests will be read */
    bool finished;     /* torn down (or being) */
    bool *done_flag;   /* vd_nbd_server_handle_fd() waits for this */
    int dead;          /* stop reading requests (atomic) */
};

/* ------------------------------------------------------------------ log */

static void srv_log(vd_nbd_server *srv, vd_nbd_log_level level, const char *fmt, ...)
    VD_PRINTF(3, 4);

static void srv_log(vd_nbd_server *srv, vd_nbd_log_level level, const char *fmt, ...)
{
    if (!srv->log_fn || level > srv->log_level) {
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    srv->log_fn(srv->log_opaque, level, msg);
}

#define CLOG(c, level, fmt, ...)                                                               \
    srv_log((c)->srv, level, "client %u (%s): " fmt, (c)->id, (c)->peer, ##__VA_ARGS__)

/* ------------------------------------------------------------- exports */

static srv_export *srv_find_export(vd_nbd_server *srv, const char *name, size_t len)
{
    for (size_t i = 0; i < srv->nexports; i++) {
        srv_export *e = &srv->exports[i];
        if (strlen(e->name) == len && !memcmp(e->name, name, len)) {
            return e;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- server */

static void srv_pool_push(vd_nbd_server *srv, srv_client *c);
static void srv_pool_stop(vd_nbd_server *srv);

vd_nbd_server *vd_nbd_server_new(void)
{
    vd_nbd_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        vd_set_public_error(ENOMEM, "out of memory");
        return NULL;
    }
    if (pipe2(srv->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        vd_set_public_error(errno, "cannot create pipe: %s", strerror(errno));
        free(srv);
        return NULL;
    }
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cond, NULL);
    pthread_mutex_init(&srv->pool.lock, NULL);
    srv->pool.epfd = srv->pool.evfd = -1;
    srv->max_conns = 1;
    srv->threads = SRV_DEFAULT_THREADS;
    srv->handshake_ms = SRV_DEFAULT_HANDSHAKE_MS;
    srv->client_mem = SRV_DEFAULT_CLIENT_MEM;
    srv->log_level = VD_NBD_LOG_WARNING;
    return srv;
}

static void srv_stop_clients(vd_nbd_server *srv)
{
    pthread_mutex_lock(&srv->lock);
    for (srv_client *c = srv->clients; c; c = c->next) {
        __atomic_store_n(&c->dead, 1, __ATOMIC_SEQ_CST);
        vd_nbd_conn_shutdown(&c->conn);
        /* a parked client would wait for requests that may never end */
        pthread_mutex_lock(&c->mlock);
        bool resume = c->parked;
        c->parked = false;
        pthread_mutex_unlock(&c->mlock);
        if (resume) {
            srv_pool_push(srv, c);
        }
    }
    while (srv->nclients) {
        pthread_cond_wait(&srv->cond, &srv->lock);
    }
    pthread_mutex_unlock(&srv->lock);
}

void vd_nbd_server_free(vd_nbd_server *srv)
{
    if (!srv) {
        return;
    }
    srv_stop_clients(srv);
    srv_pool_stop(srv);
    pthread_mutex_destroy(&srv->pool.lock);
    for (size_t i = 0; i < srv->nexports; i++) {
        srv_export *e = &srv->exports[i];
        free(e->name);
        free(e->desc);
        free(e->bitmap);
        free(e->bitmap_ctx);
    }
    free(srv->exports);
    vd_nbd_tls_creds_free(srv->tls);
    close(srv->wake[0]);
    close(srv->wake[1]);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->cond);
    free(srv);
}

/*
 * The node holding persistent bitmap `name`: the image's node, else down
 * its filters and backing chain, as qemu-nbd searches.
 */
static int srv_find_bitmap(vd_image *img, const char *name, uint64_t len, vd_node **out)
{
    for (vd_node *bs = vd_image_node(img); bs;
         bs = bs->drv->is_filter ? bs->file : bs->backing) {
        if (!bs->drv->bitmap_status) {
            continue;
        }
        uint64_t pnum;
        bool dirty;
        int ret = bs->drv->bitmap_status(bs, name, 0, 1, &pnum, &dirty);
        if (ret == 0 || (ret == -EINVAL && !len)) {
            *out = bs;
            return 0;
        }
        if (ret == -EBUSY) {
            vd_set_public_error(EINVAL, "Bitmap '%s' is inconsistent and cannot be used",
                                name);
            return -1;
        }
        if (ret != -ENOENT) {
            vd_set_public_error(-ret, "Cannot read bitmap '%s': %s", name, strerror(-ret));
            return -1;
        }
    }
    vd_set_public_error(ENOENT, "Bitmap '%s' is not found", name);
    return -1;
}

int vd_nbd_server_add_export(vd_nbd_server *srv, const vd_nbd_export_opts *o)
{
    const char *name = o->name ? o->name : "";
    if (!o->image) {
        vd_set_public_error(EINVAL, "export '%s' has no image", name);
        return -1;
    }
    if (!vd_nbd_valid_string(name, strlen(name)) ||
        (o->description && strlen(o->description) > NBD_MAX_STRING)) {
        vd_set_public_error(EINVAL, "export name or description longer than %u bytes",
                            NBD_MAX_STRING);
        return -1;
    }
    if (srv_find_export(srv, name, strlen(name))) {
        vd_set_public_error(EEXIST, "export '%s' already exists", name);
        return -1;
    }
    int64_t len = vd_get_length(o->image);
    if (len < 0) {
        return -1;
    }
    if (o->offset > (uint64_t)len) {
        vd_set_public_error(EINVAL, "offset %llu is beyond the end of the image (%lld bytes)",
                            (unsigned long long)o->offset, (long long)len);
        return -1;
    }
    uint64_t size = (uint64_t)len - o->offset;
    if (o->size) {
        if (o->size > size) {
            vd_set_public_error(EINVAL, "export size %llu exceeds the image",
                                (unsigned long long)o->size);
            return -1;
        }
        size = o->size;
    }
    vd_node *bm_node = NULL;
    if (o->bitmap && srv_find_bitmap(o->image, o->bitmap, (uint64_t)len, &bm_node) < 0) {
        return -1;
    }
    srv_export *n = realloc(srv->exports, (srv->nexports + 1) * sizeof(*n));
    if (!n) {
        vd_set_public_error(ENOMEM, "out of memory");
        return -1;
    }
    srv->exports = n;
    srv_export *e = &srv->exports[srv->nexports];
    memset(e, 0, sizeof(*e));
    e->name = strdup(name);
    e->desc = o->description ? strdup(o->description) : NULL;
    if (!e->name || (o->description && !e->desc)) {
        free(e->name);
        free(e->desc);
        vd_set_public_error(ENOMEM, "out of memory");
        return -1;
    }
    if (o->bitmap) {
        e->bitmap = vd_strdup(o->bitmap);
        e->bitmap_ctx = e->bitmap ? vd_asprintf("qemu:dirty-bitmap:%s", o->bitmap) : NULL;
        if (!e->bitmap_ctx) {
            free(e->name);
            free(e->desc);
            free(e->bitmap);
            vd_set_public_error(ENOMEM, "out of memory");
            return -1;
        }
        e->bm_node = bm_node;
    }
    e->img = o->image;
    e->offset = o->offset;
    e->size = size;
    e->read_only = o->read_only || vd_image_is_read_only(o->image);
    e->writethrough = o->writethrough;
    e->depth = o->allocation_depth;
    e->multi_conn = o->multi_conn;
    uint32_t align = vd_image_alignment(o->image);
    e->min_block = align && vd_is_pow2(align) && align <= 65536 ? align : 1;
    e->pref_block = VD_MAX(4096u, e->min_block);
    e->max_block = NBD_MAX_PAYLOAD;
    srv->nexports++;
    return 0;
}

int vd_nbd_server_set_tls(vd_nbd_server *srv, vd_nbd_tls_creds *creds)
{
    if (creds && !creds->server) {
        vd_set_public_error(EINVAL, "Expecting TLS credentials with a server endpoint");
        return -1;
    }
    vd_nbd_tls_creds_free(srv->tls);
    srv->tls = vd_nbd_tls_creds_ref(creds);
    return 0;
}

void vd_nbd_server_set_max_connections(vd_nbd_server *srv, unsigned n)
{
    srv->max_conns = n;
}

void vd_nbd_server_set_persistent(vd_nbd_server *srv, bool persistent)
{
    srv->persistent = persistent;
}

void vd_nbd_server_set_handshake_limit(vd_nbd_server *srv, unsigned ms)
{
    srv->handshake_ms = ms;
}

void vd_nbd_server_set_threads(vd_nbd_server *srv, unsigned n)
{
    srv->threads = n > SRV_MAX_THREADS ? SRV_MAX_THREADS : n; /* 0: automatic */
}

void vd_nbd_server_set_client_memory(vd_nbd_server *srv, uint64_t bytes)
{
    srv->client_mem = VD_MAX(bytes, (uint64_t)NBD_MAX_PAYLOAD);
}

void vd_nbd_server_set_log(vd_nbd_server *srv, vd_nbd_log_level max_level, vd_nbd_log_fn *fn,
                           void *opaque)
{
    srv->log_level = max_level;
    srv->log_fn = fn;
    srv->log_opaque = opaque;
}

void vd_nbd_server_stop(vd_nbd_server *srv)
{
    srv->stop_requested = 1;
    ssize_t r = write(srv->wake[1], "s", 1);
    (void)r;
}

static void srv_wake(vd_nbd_server *srv)
{
    ssize_t r = write(srv->wake[1], "c", 1);
    (void)r;
}

/* ------------------------------------------------------ option replies */

static int srv_rep(srv_client *c, uint32_t opt, uint32_t type, const void *data, size_t len)
{
    uint8_t hdr[NBD_REP_HDR_LEN];
    vd_nbd_rep_encode(hdr, opt, type, (uint32_t)len);
    struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)data, len}};
    return vd_nbd_conn_writev(&c->conn, iov, len ? 2 : 1);
}

static int srv_rep_err(srv_client *c, uint32_t opt, uint32_t type, const char *fmt, ...)
    VD_PRINTF(4, 5);

static int srv_rep_err(srv_client *c, uint32_t opt, uint32_t type, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    CLOG(c, VD_NBD_LOG_DEBUG, "%s: %s (%s)", vd_nbd_opt_name(opt), vd_nbd_rep_name(type), msg);
    return srv_rep(c, opt, type, msg, strlen(msg));
}

static uint16_t srv_tflags(srv_client *c, srv_export *e)
{
    vd_nbd_server *srv = c->srv;
    uint16_t f =
        NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_CACHE;
    if (e->read_only) {
        f |= NBD_FLAG_READ_ONLY;
    } else {
        f |= NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES | NBD_FLAG_SEND_FAST_ZERO;
    }
    if (c->structured) {
        f |= NBD_FLAG_SEND_DF;
    }
    /* One vd_image serves every connection, with no per-connection cache:
     * a flush on one connection covers writes made on all of them. */
    bool multi = e->multi_conn < 0 ? srv->max_conns != 1 : e->multi_conn > 0;
    if (multi) {
        f |= NBD_FLAG_CAN_MULTI_CONN;
    }
    if (c->extended) {
        f |= NBD_FLAG_BLOCK_STATUS_PAYLOAD;
    }
    return f;
}

/* -------------------------------------------------------- meta contexts */

typedef struct meta_walk {
    srv_client *c;
    srv_export *e;
    bool list;              /* LIST (wildcards allowed) or SET */
    bool found[META_COUNT]; /* contexts matched so far */
} meta_walk;

static bool meta_eq(const char *q, size_t len, const char *s)
{
    return strlen(s) == len && !memcmp(q, s, len);
}

static int meta_query(void *opaque, const char *q, size_t len)
{
    meta_walk *w = opaque;
    srv_export *e = w->e;
    if (meta_eq(q, len, "base:allocation") || (w->list && meta_eq(q, len, "base:"))) {
        w->found[META_BASE_ALLOCATION] = true;
        return 0;
    }
    bool qemu_all = w->list && meta_eq(q, len, "qemu:");
    if (e->depth && (qemu_all || meta_eq(q, len, "qemu:allocation-depth"))) {
        w->found[META_ALLOCATION_DEPTH] = true;
    }
    if (e->bitmap_ctx && (qemu_all || (w->list && meta_eq(q, len, "qemu:dirty-bitmap:")) ||
                          meta_eq(q, len, e->bitmap_ctx))) {
        w->found[META_DIRTY_BITMAP] = true;
    }
    /* everything else, known namespace or not, is ignored as the spec says */
    return 0;
}

static const char *meta_name(srv_export *e, int id)
{
    switch (id) {
    case META_BASE_ALLOCATION:
        return "base:allocation";
    case META_ALLOCATION_DEPTH:
        return "qemu:allocation-depth";
    default:
        return e->bitmap_ctx;
    }
}

static int srv_opt_meta(srv_client *c, uint32_t opt, const uint8_t *body, uint32_t len)
{
    bool list = opt == NBD_OPT_LIST_META_CONTEXT;
    if (!list) {
        /* a SET replaces the previous selection even when it fails */
        c->meta_set = false;
        memset(c->meta, 0, sizeof(c->meta));
        free(c->meta_export);
        c->meta_export = NULL;
    }
    if (!c->structured) {
        return srv_rep_err(c, opt, NBD_REP_ERR_INVALID,
                           "structured replies have not been negotiated");
    }
    const char *name;
    size_t name_len;
    uint32_t nq;
    int r = vd_nbd_parse_meta_body(body, len, &name, &name_len, &nq, NULL, NULL);
    if (r < 0) {
        return srv_rep_err(c, opt, NBD_REP_ERR_INVALID, "malformed %s request",
                           vd_nbd_opt_name(opt));
    }
    srv_export *e = srv_find_export(c->srv, name, name_len);
    if (!e) {
        return srv_rep_err(c, opt, NBD_REP_ERR_UNKNOWN, "export '%.*s' not present",
                           (int)name_len, name);
    }
    meta_walk w = {.c = c, .e = e, .list = list};
    if (list && nq == 0) {
        w.found[META_BASE_ALLOCATION] = true;
        w.found[META_ALLOCATION_DEPTH] = e->depth;
        w.found[META_DIRTY_BITMAP] = e->bitmap_ctx != NULL;
    } else {
        vd_nbd_parse_meta_body(body, len, &name, &name_len, &nq, meta_query, &w);
    }
    for (int id = 0; id < META_COUNT; id++) {
        if (!w.found[id]) {
            continue;
        }
        const char *cn = meta_name(e, id);
        size_t cl = strlen(cn);
        uint8_t buf[4 + NBD_MAX_STRING + 32];
        /* LIST replies carry id 0: the ids are only meaningful after SET */
        vd_st_be32(buf, list ? 0 : (uint32_t)id);
        memcpy(buf + 4, cn, cl);
        r = srv_rep(c, opt, NBD_REP_META_CONTEXT, buf, 4 + cl);
        if (r < 0) {
            return r;
        }
        CLOG(c, VD_NBD_LOG_DEBUG, "%s: %s", vd_nbd_opt_name(opt), cn);
    }
    if (!list) {
        c->meta_export = strndup(name, name_len);
        if (!c->meta_export) {
            return -ENOMEM;
        }
        memcpy(c->meta, w.found, sizeof(c->meta));
        c->meta_set = true;
    }
    return srv_rep(c, opt, NBD_REP_ACK, NULL, 0);
}

/* ----------------------------------------------------------- handshake */

static void srv_enter_transmission(srv_client *c, srv_export *e)
{
    c->exp = e;
    c->transmission = true;
    if (!c->meta_set || strcmp(c->meta_export, e->name)) {
        /* contexts chosen for another export do not carry over */
        memset(c->meta, 0, sizeof(c->meta));
    }
}

static int srv_opt_info(srv_client *c, uint32_t opt, const uint8_t *body, uint32_t len,
                        bool *go)
{
    const char *name;
    size_t name_len;
    const uint8_t *reqs;
    uint16_t nreqs;
    if (vd_nbd_parse_info_body(body, len, &name, &name_len, &reqs, &nreqs) < 0) {
        return srv_rep_err(c, opt, NBD_REP_ERR_INVALID, "malformed %s request",
                           vd_nbd_opt_name(opt));
    }
    srv_export *e = srv_find_export(c->srv, name, name_len);
    if (!e) {
        return srv_rep_err(c, opt, NBD_REP_ERR_UNKNOWN, "export '%.*s' not present",
                           (int)name_len, name);
    }
    bool want_name = false, want_desc = false, want_bs = false;
    for (uint16_t i = 0; i < nreqs; i++) {
        switch (vd_ld_be16(reqs + 2 * i)) {
        case NBD_INFO_NAME:
            want_name = true;
            break;
        case NBD_INFO_DESCRIPTION:
            want_desc = true;
            break;
        case NBD_INFO_BLOCK_SIZE:
            want_bs = true;
            break;
        default:
            break; /* unknown requests are ignored */
        }
    }
    uint8_t buf[2 + NBD_MAX_STRING];
    int r;
    if (want_name) {
        vd_st_be16(buf, NBD_INFO_NAME);
        memcpy(buf + 2, e->name, strlen(e->name));
        if ((r = srv_rep(c, opt, NBD_REP_INFO, buf, 2 + strlen(e->name))) < 0) {
            return r;
        }
    }
    if (want_desc && e->desc) {
        vd_st_be16(buf, NBD_INFO_DESCRIPTION);
        memcpy(buf + 2, e->desc, strlen(e->desc));
        if ((r = srv_rep(c, opt, NBD_REP_INFO, buf, 2 + strlen(e->desc))) < 0) {
            return r;
        }
    }
    /* Always tell the sizes; the minimum is only raised for clients that
     * promised to honour it (the core handles unaligned requests anyway). */
    vd_st_be16(buf, NBD_INFO_BLOCK_SIZE);
    vd_st_be32(buf + 2, want_bs ? e->min_block : 1);
    vd_st_be32(buf + 6, e->pref_block);
    vd_st_be32(buf + 10, e->max_block);
    if ((r = srv_rep(c, opt, NBD_REP_INFO, buf, 14)) < 0) {
        return r;
    }
    uint16_t tflags = srv_tflags(c, e);
    vd_st_be16(buf, NBD_INFO_EXPORT);
    vd_st_be64(buf + 2, e->size);
    vd_st_be16(buf + 10, tflags);
    if ((r = srv_rep(c, opt, NBD_REP_INFO, buf, 12)) < 0) {
        return r;
    }
    if ((r = srv_rep(c, opt, NBD_REP_ACK, NULL, 0)) < 0) {
        return r;
    }
    CLOG(c, VD_NBD_LOG_DEBUG, "%s '%s': size %llu flags 0x%x", vd_nbd_opt_name(opt), e->name,
         (unsigned long long)e->size, tflags);
    if (opt == NBD_OPT_GO) {
        srv_enter_transmission(c, e);
        *go = true;
    }
    return 0;
}

static int srv_opt_export_name(srv_client *c, const uint8_t *body, uint32_t len)
{
    if (c->extended) {
        CLOG(c, VD_NBD_LOG_WARNING, "NBD_OPT_EXPORT_NAME after extended headers");
        return -EPROTO;
    }
    srv_export *e = srv_find_export(c->srv, (const char *)body, len);
    if (!e) {
        /* this option cannot fail gracefully: the spec says hang up */
        CLOG(c, VD_NBD_LOG_WARNING, "export '%.*s' not present", (int)VD_MIN(len, 256u),
             (const char *)body);
        return -ENOENT;
    }
    uint8_t buf[8 + 2 + 124];
    memset(buf, 0, sizeof(buf));
    vd_st_be64(buf, e->size);
    vd_st_be16(buf + 8, srv_tflags(c, e));
    int r = vd_nbd_conn_write(&c->conn, buf, c->no_zeroes ? 10 : sizeof(buf));
    if (r < 0) {
        return r;
    }
    srv_enter_transmission(c, e);
    return 0;
}

static int srv_opt_list(srv_client *c)
{
    vd_nbd_server *srv = c->srv;
    for (size_t i = 0; i < srv->nexports; i++) {
        srv_export *e = &srv->exports[i];
        size_t nl = strlen(e->name), dl = e->desc ? strlen(e->desc) : 0;
        uint8_t buf[4 + 2 * NBD_MAX_STRING];
        vd_st_be32(buf, (uint32_t)nl);
        memcpy(buf + 4, e->name, nl);
        if (dl) {
            memcpy(buf + 4 + nl, e->desc, dl);
        }
        int r = srv_rep(c, NBD_OPT_LIST, NBD_REP_SERVER, buf, 4 + nl + dl);
        if (r < 0) {
            return r;
        }
    }
    return srv_rep(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static int srv_opt_starttls(srv_client *c)
{
    vd_error *err = NULL;
    int r = srv_rep(c, NBD_OPT_STARTTLS, NBD_REP_ACK, NULL, 0);
    if (r < 0) {
        return r;
    }
    r = vd_nbd_conn_starttls(&c->conn, c->srv->tls, true, NULL, &err);
    if (r < 0) {
        CLOG(c, VD_NBD_LOG_WARNING, "%s", err ? err->msg : "TLS handshake failed");
        vd_error_free(err);
        return r;
    }
    /* nothing negotiated in plaintext may survive the upgrade */
    c->tls_active = true;
    c->structured = false;
    c->extended = false;
    c->meta_set = false;
    memset(c->meta, 0, sizeof(c->meta));
    free(c->meta_export);
    c->meta_export = NULL;
    CLOG(c, VD_NBD_LOG_INFO, "TLS established");
    return 0;
}

/*
 * The handshake.  1: transmission phase entered; 0: the client ended it
 * (NBD_OPT_ABORT or hang-up); <0: the client misbehaved or I/O failed.
 */
static int srv_greet(srv_client *c)
{
    uint8_t buf[18];
    vd_st_be64(buf, NBD_MAGIC);
    vd_st_be64(buf + 8, NBD_IHAVEOPT);
    vd_st_be16(buf + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    c->greeted = true;
    return vd_nbd_conn_write(&c->conn, buf, 18);
}

static int srv_handshake(srv_client *c)
{
    vd_nbd_server *srv = c->srv;
    uint8_t buf[18];
    int r = c->greeted ? 0 : srv_greet(c);
    if (r < 0) {
        return r;
    }
    r = vd_nbd_conn_read(&c->conn, buf, 4);
    if (r < 0) {
        return r;
    }
    uint32_t cflags = vd_ld_be32(buf);
    if (cflags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
        CLOG(c, VD_NBD_LOG_WARNING, "unknown client flags 0x%x", cflags);
        return -EPROTO;
    }
    c->fixed = cflags & NBD_FLAG_C_FIXED_NEWSTYLE;
    c->no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

    for (;;) {
        uint8_t hdr[NBD_OPT_HDR_LEN];
        r = vd_nbd_conn_read(&c->conn, hdr, sizeof(hdr));
        if (r < 0) {
            return r;
        }
        if (vd_ld_be64(hdr) != NBD_IHAVEOPT) {
            CLOG(c, VD_NBD_LOG_WARNING, "bad option magic");
            return -EPROTO;
        }
        uint32_t opt = vd_ld_be32(hdr + 8);
        uint32_t len = vd_ld_be32(hdr + 12);
        CLOG(c, VD_NBD_LOG_DEBUG, "option %s (%u), %u bytes", vd_nbd_opt_name(opt), opt, len);
        if (len > NBD_MAX_OPTION_LEN) {
            CLOG(c, VD_NBD_LOG_WARNING, "option %u with %u bytes of data: too big", opt, len);
            return -EPROTO;
        }
        if (!c->fixed && opt != NBD_OPT_EXPORT_NAME) {
            /* non-fixed newstyle knows no other option and no replies */
            CLOG(c, VD_NBD_LOG_WARNING, "option %u without fixed newstyle", opt);
            return -EPROTO;
        }
        if (srv->tls && !c->tls_active && opt != NBD_OPT_STARTTLS && opt != NBD_OPT_ABORT) {
            if (opt == NBD_OPT_EXPORT_NAME) {
                CLOG(c, VD_NBD_LOG_WARNING, "NBD_OPT_EXPORT_NAME without TLS");
                return -EPROTO;
            }
            if ((r = vd_nbd_conn_skip(&c->conn, len)) < 0 ||
                (r = srv_rep_err(c, opt, NBD_REP_ERR_TLS_REQD, "TLS is required")) < 0) {
                return r;
            }
            continue;
        }
        uint8_t *body = malloc(len ? len : 1);
        if (!body) {
            return -ENOMEM;
        }
        r = vd_nbd_conn_read(&c->conn, body, len);
        if (r < 0) {
            free(body);
            return r == -ENODATA ? -ECONNRESET : r;
        }
        bool go = false;
        switch (opt) {
        case NBD_OPT_EXPORT_NAME:
            r = srv_opt_export_name(c, body, len);
            go = r == 0;
            break;
        case NBD_OPT_ABORT:
            srv_rep(c, opt, NBD_REP_ACK, NULL, 0);
            free(body);
            return 0;
        case NBD_OPT_LIST:
            r = len ? srv_rep_err(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_LIST with data")
                    : srv_opt_list(c);
            break;
        case NBD_OPT_STARTTLS:
            if (len) {
                r = srv_rep_err(c, opt, NBD_REP_ERR_INVALID, "NBD_OPT_STARTTLS with data");
            } else if (!srv->tls) {
                r = srv_rep_err(c, opt, NBD_REP_ERR_POLICY, "TLS not configured");
            } else if (c->tls_active) {
                r = srv_rep_err(c, opt, NBD_REP_ERR_INVALID, "TLS already active");
            } else {
                r = srv_opt_starttls(c);
            }
            break;
        case NBD_OPT_INFO:
        case NBD_OPT_GO:
            r = srv_opt_info(c, opt, body, len, &go);
            break;
        case NBD_OPT_STRUCTURED_REPLY:
            if (len) {
                r = srv_rep_err(c, opt, NBD_REP_ERR_INVALID, "option with data");
            } else if (c->extended) {
                r = srv_rep_err(c, opt, NBD_REP_ERR_EXT_HEADER_REQD,
                                "extended headers already negotiated");
            } else {
                c->structured = true;
                r = srv_rep(c, opt, NBD_REP_ACK, NULL, 0);
            }
            break;
        case NBD_OPT_EXTENDED_HEADERS:
            if (len) {
                r = srv_rep_err(c, opt, NBD_REP_ERR_INVALID, "option with data");
            } else {
                c->extended = true;
                c->structured = true;
                r = srv_rep(c, opt, NBD_REP_ACK, NULL, 0);
            }
            break;
        case NBD_OPT_LIST_META_CONTEXT:
        case NBD_OPT_SET_META_CONTEXT:
            r = srv_opt_meta(c, opt, body, len);
            break;
        default:
            r = srv_rep_err(c, opt, NBD_REP_ERR_UNSUP, "option %u not supported", opt);
            break;
        }
        free(body);
        if (r < 0) {
            return r;
        }
        if (go) {
            return 1;
        }
    }
}

/* -------------------------------------------------------- transmission */

static int srv_send(srv_client *c, const struct iovec *iov, int n)
{
    /* counted: a client that does not read its replies blocks us here,
     * and the pool grows past its size for such workers */
    srv_pool *p = &c->srv->pool;
    __atomic_add_fetch(&p->sending, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&c->wlock);
    int r = vd_nbd_conn_writev(&c->conn, iov, n);
    pthread_mutex_unlock(&c->wlock);
    __atomic_sub_fetch(&p->sending, 1, __ATOMIC_RELAXED);
    if (r < 0) {
        /* the socket is broken: stop reading, let the others fail fast */
        if (!__atomic_exchange_n(&c->dead, 1, __ATOMIC_SEQ_CST)) {
            CLOG(c, VD_NBD_LOG_INFO, "cannot send reply: %s", strerror(-r));
        }
        vd_nbd_conn_shutdown(&c->conn);
    }
    return r;
}

/* Success without payload. */
static void srv_reply_ok(srv_client *c, const vd_nbd_request *req)
{
    uint8_t hdr[NBD_EXT_CHUNK_LEN];
    size_t n;
    if (c->extended) {
        n = vd_nbd_chunk_encode(hdr, true, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE,
                                req->cookie, req->offset, 0);
    } else {
        n = vd_nbd_simple_reply_encode(hdr, 0, req->cookie);
    }
    struct iovec iov = {hdr, n};
    srv_send(c, &iov, 1);
}

static void srv_reply_err(srv_client *c, const vd_nbd_request *req, int err, const char *fmt,
                          ...) VD_PRINTF(4, 5);

/* Failure with errno err (positive) and a message for structured clients. */
static void srv_reply_err(srv_client *c, const vd_nbd_request *req, int err, const char *fmt,
                          ...)
{
    uint32_t werr = vd_nbd_errno_to_wire(err);
    if (!werr) {
        werr = NBD_EIO;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int ml = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (ml < 0) {
        ml = 0;
    }
    ml = VD_MIN(ml, (int)sizeof(msg) - 1);
    CLOG(c, VD_NBD_LOG_DEBUG, "%s cookie %llu: error %u: %s", vd_nbd_cmd_name(req->type),
         (unsigned long long)req->cookie, werr, msg);
    uint8_t hdr[NBD_EXT_CHUNK_LEN + 6];
    if (!c->structured) {
        size_t n = vd_nbd_simple_reply_encode(hdr, werr, req->cookie);
        struct iovec iov = {hdr, n};
        srv_send(c, &iov, 1);
        return;
    }
    size_t n = vd_nbd_chunk_encode(hdr, c->extended, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
                                   req->cookie, req->offset, 6 + (uint64_t)ml);
    vd_st_be32(hdr + n, werr);
    vd_st_be16(hdr + n + 4, (uint16_t)ml);
    struct iovec iov[2] = {{hdr, n + 6}, {msg, (size_t)ml}};
    srv_send(c, iov, 2);
}

/* The library's error of the failed call just made in this thread. */
static void srv_reply_lib_err(srv_client *c, const vd_nbd_request *req)
{
    int e = vd_get_errno();
    srv_reply_err(c, req, e ? e : EIO, "%s", vd_get_error());
}

static int srv_worker_buf(srv_worker *w, size_t n)
{
    if (w->cap >= n) {
        return 0;
    }
    free(w->buf);
    w->cap = 0;
    w->buf = malloc(n);
    if (!w->buf) {
        return -ENOMEM;
    }
    w->cap = n;
    return 0;
}

typedef struct srv_read_chunk {
    uint64_t pos; /* relative to the request */
    uint64_t len;
    bool hole;
} srv_read_chunk;

static void srv_cmd_read(srv_client *c, srv_worker *w, const vd_nbd_request *req)
{
    srv_export *e = c->exp;
    uint64_t len = req->length;
    uint64_t off = e->offset + req->offset;
    uint8_t *buf = w->buf;
    if (!c->structured) {
        if (len && vd_pread(e->img, buf, len, off) < 0) {
            srv_reply_lib_err(c, req);
            return;
        }
        uint8_t hdr[NBD_SIMPLE_REPLY_LEN];
        vd_nbd_simple_reply_encode(hdr, 0, req->cookie);
        struct iovec iov[2] = {{hdr, sizeof(hdr)}, {buf, len}};
        srv_send(c, iov, 2);
        return;
    }
    if (!len) {
        srv_reply_ok(c, req);
        return;
    }

    if (vd_pread(e->img, buf, len, off) < 0) {
        srv_reply_lib_err(c, req);
        return;
    }
    /*
     * Zero runs travel as hole chunks.  Scanning the data we just read is
     * cheaper than asking block status first (a non-zero block stops the
     * scan at its first word) and finds zeroes that were written as data.
     */
    srv_read_chunk ch[SRV_MAX_READ_CHUNKS];
    int nch = 0;
    if (req->flags & NBD_CMD_FLAG_DF) {
        ch[nch++] = (srv_read_chunk){0, len, len >= 512 && vd_buffer_is_zero(buf, len)};
    } else {
        for (uint64_t pos = 0; pos < len;) {
            uint64_t n = VD_MIN((uint64_t)SRV_MIN_HOLE, len - pos);
            bool hole = n == SRV_MIN_HOLE && vd_buffer_is_zero(buf + pos, n);
            if (nch && ch[nch - 1].hole == hole) {
                ch[nch - 1].len += n;
            } else if (nch == SRV_MAX_READ_CHUNKS - 1) {
                /* out of chunks: the rest goes as data */
                ch[nch++] = (srv_read_chunk){pos, len - pos, false};
                break;
            } else {
                ch[nch++] = (srv_read_chunk){pos, n, hole};
            }
            pos += n;
        }
        if (nch == 1 && !ch[0].hole && len < SRV_MIN_HOLE && len >= 512 &&
            vd_buffer_is_zero(buf, len)) {
            ch[0].hole = true;
        }
    }

    uint8_t hdrs[SRV_MAX_READ_CHUNKS][NBD_EXT_CHUNK_LEN + 12];
    struct iovec iov[2 * SRV_MAX_READ_CHUNKS];
    int niov = 0;
    for (int i = 0; i < nch; i++) {
        uint16_t flags = i == nch - 1 ? NBD_REPLY_FLAG_DONE : 0;
        uint8_t *h = hdrs[i];
        size_t n;
        if (ch[i].hole) {
            n = vd_nbd_chunk_encode(h, c->extended, flags, NBD_REPLY_TYPE_OFFSET_HOLE,
                                    req->cookie, req->offset, 12);
            vd_st_be64(h + n, req->offset + ch[i].pos);
            vd_st_be32(h + n + 8, (uint32_t)ch[i].len);
            iov[niov++] = (struct iovec){h, n + 12};
        } else {
            n = vd_nbd_chunk_encode(h, c->extended, flags, NBD_REPLY_TYPE_OFFSET_DATA,
                                    req->cookie, req->offset, 8 + ch[i].len);
            vd_st_be64(h + n, req->offset + ch[i].pos);
            iov[niov++] = (struct iovec){h, n + 8};
            iov[niov++] = (struct iovec){buf + ch[i].pos, ch[i].len};
        }
    }
    srv_send(c, iov, niov);
}

typedef struct srv_extent {
    uint64_t len;
    uint32_t flags;
} srv_extent;

/* Extents of one context over [off, off+len) of the export. */
static int srv_extents(srv_client *c, int ctx, uint64_t off, uint64_t len, bool one,
                       srv_extent *ext, unsigned *count)
{
    srv_export *e = c->exp;
    unsigned n = 0, max = one ? 1 : SRV_MAX_BS_EXTENTS;
    uint64_t pos = off, end = off + len;
    while (pos < end) {
        vd_extent x;
        if (ctx == META_DIRTY_BITMAP) {
            /* NBD_STATE_DIRTY (1) for set bits, 0 for clean */
            bool dirty = false;
            int ret = e->bm_node->drv->bitmap_status(e->bm_node, e->bitmap, e->offset + pos,
                                                     end - pos, &x.length, &dirty);
            if (ret < 0) {
                if (n) {
                    break;
                }
                vd_set_public_error(-ret, "Cannot read bitmap '%s': %s", e->bitmap,
                                    strerror(-ret));
                return -1;
            }
            x.flags = dirty ? 1 : 0;
        } else if (vd_block_status(e->img, e->offset + pos, end - pos, true, &x) < 0) {
            if (n) {
                break; /* answer what we have; the client asks again */
            }
            return -1;
        }
        uint64_t l = VD_MIN(x.length, end - pos);
        if (!l) {
            break;
        }
        uint32_t f;
        if (ctx == META_DIRTY_BITMAP) {
            f = x.flags;
        } else if (ctx == META_BASE_ALLOCATION) {
            f = (x.flags & VD_BS_DATA ? 0 : NBD_STATE_HOLE) |
                (x.flags & VD_BS_ZERO ? NBD_STATE_ZERO : 0);
        } else {
            /* 0 unallocated, 1 this image, 2 its backing file, ... */
            f = x.flags & VD_BS_ALLOCATED ? (uint32_t)x.depth + 1 : 0;
        }
        if (n && ext[n - 1].flags == f) {
            ext[n - 1].len += l;
        } else if (n < max) {
            ext[n++] = (srv_extent){l, f};
        } else {
            break;
        }
        pos += l;
    }
    *count = n;
    return 0;
}

static void srv_cmd_block_status(srv_client *c, srv_worker *w, const vd_nbd_request *req,
                                 const uint8_t *payload, uint64_t plen)
{
    srv_export *e = c->exp;
    bool want[META_COUNT];
    uint64_t len = req->length;
    if (plen) {
        /* payload form: effect length, then the context ids wanted */
        if (plen < 8 || (plen - 8) % 4) {
            srv_reply_err(c, req, EINVAL, "malformed block status payload");
            return;
        }
        len = vd_ld_be64(payload);
        memset(want, 0, sizeof(want));
        for (uint64_t i = 8; i < plen; i += 4) {
            uint32_t id = vd_ld_be32(payload + i);
            if (id >= META_COUNT || !c->meta[id] || want[id]) {
                srv_reply_err(c, req, EINVAL, "unknown or repeated context id %u", id);
                return;
            }
            want[id] = true;
        }
    } else {
        memcpy(want, c->meta, sizeof(want));
    }
    int nctx = 0;
    for (int i = 0; i < META_COUNT; i++) {
        nctx += want[i];
    }
    if (!nctx) {
        srv_reply_err(c, req, EINVAL, "no metadata context was negotiated");
        return;
    }
    if (!len || req->offset > e->size || len > e->size - req->offset) {
        srv_reply_err(c, req, EINVAL, "block status request out of range");
        return;
    }
    if (!c->extended) {
        /* compact descriptors have 32-bit lengths */
        len = VD_MIN(len, (uint64_t)UINT32_MAX - 65535);
    }
    bool one = req->flags & NBD_CMD_FLAG_REQ_ONE;
    size_t per = c->extended ? 16 : 8;
    size_t need = (size_t)META_COUNT *
                  (SRV_MAX_BS_EXTENTS * (per + sizeof(srv_extent)) + NBD_EXT_CHUNK_LEN + 8);
    if (srv_worker_buf(w, need) < 0) {
        srv_reply_err(c, req, ENOMEM, "out of memory");
        return;
    }
    srv_extent *ext = (srv_extent *)(void *)w->buf;
    uint8_t *out = w->buf + (size_t)META_COUNT * SRV_MAX_BS_EXTENTS * sizeof(srv_extent);
    struct iovec iov[META_COUNT];
    int niov = 0, done = 0;
    for (int id = 0; id < META_COUNT; id++) {
        if (!want[id]) {
            continue;
        }
        srv_extent *x = ext + (size_t)id * SRV_MAX_BS_EXTENTS;
        unsigned n;
        if (srv_extents(c, id, req->offset, len, one, x, &n) < 0) {
            srv_reply_lib_err(c, req);
            return;
        }
        done++;
        uint16_t flags = done == nctx ? NBD_REPLY_FLAG_DONE : 0;
        uint8_t *h = out;
        size_t hl;
        if (c->extended) {
            hl = vd_nbd_chunk_encode(h, true, flags, NBD_REPLY_TYPE_BLOCK_STATUS_EXT,
                                     req->cookie, req->offset, 8 + 16 * (uint64_t)n);
            vd_st_be32(h + hl, (uint32_t)id);
            vd_st_be32(h + hl + 4, n);
            hl += 8;
            for (unsigned i = 0; i < n; i++) {
                vd_st_be64(h + hl, x[i].len);
                vd_st_be64(h + hl + 8, x[i].flags);
                hl += 16;
            }
        } else {
            hl = vd_nbd_chunk_encode(h, false, flags, NBD_REPLY_TYPE_BLOCK_STATUS, req->cookie,
                                     0, 4 + 8 * (uint64_t)n);
            vd_st_be32(h + hl, (uint32_t)id);
            hl += 4;
            for (unsigned i = 0; i < n; i++) {
                vd_st_be32(h + hl, (uint32_t)x[i].len);
                vd_st_be32(h + hl + 4, x[i].flags);
                hl += 8;
            }
        }
        iov[niov++] = (struct iovec){h, hl};
        out += hl;
    }
    srv_send(c, iov, niov);
}

static void srv_cmd_cache(srv_client *c, srv_worker *w, const vd_nbd_request *req)
{
    srv_export *e = c->exp;
    uint64_t len = VD_MIN(req->length, SRV_MAX_CACHE);
    size_t step = 1024 * 1024;
    if (srv_worker_buf(w, step) < 0) {
        srv_reply_err(c, req, ENOMEM, "out of memory");
        return;
    }
    for (uint64_t pos = 0; pos < len; pos += step) {
        size_t n = (size_t)VD_MIN((uint64_t)step, len - pos);
        if (vd_pread(e->img, w->buf, n, e->offset + req->offset + pos) < 0) {
            srv_reply_lib_err(c, req);
            return;
        }
    }
    srv_reply_ok(c, req);
}

/* Serve one request; the payload (plen bytes) is in w->buf. */
static void srv_handle(srv_client *c, srv_worker *w, const vd_nbd_request *req, uint64_t plen)
{
    srv_export *e = c->exp;
    uint16_t allowed = NBD_CMD_FLAG_FUA;
    bool writes = false, range = true;
    switch (req->type) {
    case NBD_CMD_READ:
        allowed |= c->structured ? NBD_CMD_FLAG_DF : 0;
        break;
    case NBD_CMD_WRITE:
        allowed |= c->extended ? NBD_CMD_FLAG_PAYLOAD_LEN : 0;
        writes = true;
        break;
    case NBD_CMD_FLUSH:
        range = false;
        break;
    case NBD_CMD_TRIM:
        writes = true;
        break;
    case NBD_CMD_CACHE:
        break;
    case NBD_CMD_WRITE_ZEROES:
        allowed |= NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
        writes = true;
        break;
    case NBD_CMD_BLOCK_STATUS:
        allowed |= NBD_CMD_FLAG_REQ_ONE | (c->extended ? NBD_CMD_FLAG_PAYLOAD_LEN : 0);
        range = false; /* checked with the effect length below */
        break;
    default:
        srv_reply_err(c, req, EINVAL, "unknown command %u", req->type);
        return;
    }
    if (req->flags & ~allowed) {
        srv_reply_err(c, req, EINVAL, "flags 0x%x not valid for %s", req->flags,
                      vd_nbd_cmd_name(req->type));
        return;
    }
    if (plen && req->type != NBD_CMD_WRITE && req->type != NBD_CMD_BLOCK_STATUS) {
        srv_reply_err(c, req, EINVAL, "%s takes no payload", vd_nbd_cmd_name(req->type));
        return;
    }
    if (c->extended && req->type == NBD_CMD_WRITE && !(req->flags & NBD_CMD_FLAG_PAYLOAD_LEN)) {
        srv_reply_err(c, req, EINVAL, "NBD_CMD_WRITE without a payload");
        return;
    }
    if (writes && e->read_only) {
        srv_reply_err(c, req, EPERM, "export '%s' is read-only", e->name);
        return;
    }
    if (range && (req->offset > e->size || req->length > e->size - req->offset)) {
        srv_reply_err(c, req,
                      req->type == NBD_CMD_WRITE || req->type == NBD_CMD_WRITE_ZEROES ? ENOSPC
                                                                                      : EINVAL,
                      "request [%llu, +%llu) is beyond the end of the export (%llu bytes)",
                      (unsigned long long)req->offset, (unsigned long long)req->length,
                      (unsigned long long)e->size);
        return;
    }
    uint64_t off = e->offset + req->offset;
    bool fua = (req->flags & NBD_CMD_FLAG_FUA) || e->writethrough;
    int r = 0;
    switch (req->type) {
    case NBD_CMD_READ:
        if (req->length > NBD_MAX_PAYLOAD) {
            srv_reply_err(c, req, EINVAL, "read of %llu bytes exceeds the maximum of %u",
                          (unsigned long long)req->length, NBD_MAX_PAYLOAD);
            return;
        }
        srv_cmd_read(c, w, req);
        return;
    case NBD_CMD_WRITE:
        if (req->length) {
            r = vd_pwrite(e->img, w->buf, req->length, off, fua ? VD_REQ_FUA : 0);
        }
        break;
    case NBD_CMD_FLUSH:
        r = vd_flush(e->img);
        break;
    case NBD_CMD_TRIM:
        if (req->length) {
            r = vd_discard(e->img, off, req->length);
            if (r == 0 && fua) {
                r = vd_flush(e->img);
            }
        }
        break;
    case NBD_CMD_CACHE:
        srv_cmd_cache(c, w, req);
        return;
    case NBD_CMD_WRITE_ZEROES:
        if (req->length) {
            unsigned f = fua ? VD_REQ_FUA : 0;
            if (!(req->flags & NBD_CMD_FLAG_NO_HOLE)) {
                f |= VD_REQ_MAY_UNMAP;
            }
            if (req->flags & NBD_CMD_FLAG_FAST_ZERO) {
                f |= VD_REQ_NO_FALLBACK;
            }
            r = vd_pwrite_zeroes(e->img, off, req->length, f);
        }
        break;
    case NBD_CMD_BLOCK_STATUS:
        srv_cmd_block_status(c, w, req, w->buf, plen);
        return;
    }
    if (r < 0) {
        srv_reply_lib_err(c, req);
    } else {
        srv_reply_ok(c, req);
    }
}

/* ------------------------------------------------------------ the pool */

static void srv_client_finish(srv_client *c);
static void *srv_pool_worker_main(void *opaque);

/* Queue a connection whose next bytes are already buffered, and wake a
 * worker waiting in epoll_wait() through the eventfd. */
static void srv_pool_push(vd_nbd_server *srv, srv_client *c)
{
    srv_pool *p = &srv->pool;
    pthread_mutex_lock(&p->lock);
    c->qnext = NULL;
    if (p->qtail) {
        p->qtail->qnext = c;
    } else {
        p->qhead = c;
    }
    p->qtail = c;
    pthread_mutex_unlock(&p->lock);
    uint64_t one = 1;
    ssize_t r = write(p->evfd, &one, sizeof(one));
    (void)r;
}

/* Hand the connection's read side to epoll: a worker gets it when the
 * socket becomes readable (or hangs up). */
static int srv_arm(vd_nbd_server *srv, srv_client *c)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLONESHOT, .data.ptr = c};
    /* registered on first use, armed: a registered but disarmed socket
     * would still report hang-ups, a second owner of the read side.
     * Set before the call: the event may fire before it returns. */
    int op = c->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
    c->registered = true;
    /* The kernel orders what we wrote before epoll_ctl() before the
     * worker's epoll_wait() return; ThreadSanitizer does not know that
     * of EPOLL_CTL_MOD, so say it with a release the worker acquires. */
    __atomic_store_n(&c->handoff, 1, __ATOMIC_RELEASE);
    if (epoll_ctl(srv->pool.epfd, op, c->conn.fd, &ev) < 0) {
        int e = errno;
        c->registered = op == EPOLL_CTL_MOD;
        return -e;
    }
    return 0;
}

/* Stop reading requests from c; it goes away once its requests are done. */
static void srv_reader_stop(srv_client *c, int r)
{
    __atomic_store_n(&c->dead, 1, __ATOMIC_SEQ_CST);
    if (r < 0) {
        if (r != -ECONNRESET && r != -EPROTO) {
            CLOG(c, VD_NBD_LOG_INFO, "connection failed: %s", strerror(-r));
        }
        /* hard disconnect: in-flight replies may be lost */
        vd_nbd_conn_shutdown(&c->conn);
    }
    pthread_mutex_lock(&c->mlock);
    if (c->rstate == RS_PAYLOAD) {
        /* the request being read will not be served */
        c->nreq--;
        c->inflight -= c->need;
        c->rstate = RS_HEADER;
    }
    c->reader_done = true;
    bool last = c->nreq == 0 && !c->finished;
    c->finished |= last;
    pthread_mutex_unlock(&c->mlock);
    if (last) {
        srv_client_finish(c);
    }
}

/* Pass the read side on: to the queue when bytes are buffered, else to
 * epoll.  The caller must not touch the read side afterwards. */
static void srv_pass_on(vd_nbd_server *srv, srv_client *c)
{
    if (vd_nbd_conn_pending(&c->conn)) {
        srv_pool_push(srv, c);
        return;
    }
    int r = srv_arm(srv, c);
    if (r < 0) {
        CLOG(c, VD_NBD_LOG_WARNING, "cannot watch the connection: %s", strerror(-r));
        srv_reader_stop(c, r);
    }
}

/* May c's next request (needing c->need bytes) be read now?  (mlock) */
static bool srv_may_read(vd_nbd_server *srv, srv_client *c)
{
    if (__atomic_load_n(&c->dead, __ATOMIC_SEQ_CST)) {
        return true; /* the reader only stops */
    }
    if (c->nreq >= SRV_CONN_MAX_REQS) {
        return false;
    }
    return !c->inflight || c->inflight + c->need <= srv->client_mem;
}

/* A request of c finished, releasing mem bytes of its budget. */
static void srv_request_done(vd_nbd_server *srv, srv_client *c, uint64_t mem)
{
    pthread_mutex_lock(&c->mlock);
    c->inflight -= mem;
    c->nreq--;
    bool resume = c->parked && srv_may_read(srv, c);
    if (resume) {
        c->parked = false;
    }
    bool last = c->reader_done && c->nreq == 0 && !c->finished;
    c->finished |= last;
    pthread_mutex_unlock(&c->mlock);
    if (resume) {
        srv_pool_push(srv, c);
    }
    if (last) {
        srv_client_finish(c);
    }
}

/*
 * Read what is available of c's next request without blocking.  1: a
 * whole request is in w->buf (c->req, c->plen; c->need bytes of budget
 * taken); 0: the client is done (EOF or NBD_CMD_DISC); -EAGAIN: wait for
 * the socket; -EBUSY: parked until the client's requests free memory;
 * other <0: protocol error or I/O failure (hang up).
 */
static int srv_read_request(srv_client *c, srv_worker *w)
{
    vd_nbd_server *srv = c->srv;
    size_t hl = c->extended ? NBD_EXT_REQUEST_LEN : NBD_REQUEST_LEN;
    vd_nbd_request *req = &c->req;
    while (c->rstate == RS_HEADER) {
        ssize_t n = vd_nbd_conn_read_some(&c->conn, c->hdr + c->hgot, hl - c->hgot);
        if (n == 0) {
            if (c->hgot) {
                return -ECONNRESET;
            }
            CLOG(c, VD_NBD_LOG_INFO, "client closed the connection");
            return 0;
        }
        if (n < 0) {
            return (int)n;
        }
        c->hgot += (size_t)n;
        if (c->hgot < hl) {
            continue;
        }
        c->hgot = 0;
        if (vd_nbd_request_decode(c->hdr, c->extended, req) < 0) {
            CLOG(c, VD_NBD_LOG_WARNING, "bad request magic 0x%08x", vd_ld_be32(c->hdr));
            return -EPROTO;
        }
        CLOG(c, VD_NBD_LOG_DEBUG, "%s flags 0x%x offset %llu length %llu cookie %llu",
             vd_nbd_cmd_name(req->type), req->flags, (unsigned long long)req->offset,
             (unsigned long long)req->length, (unsigned long long)req->cookie);
        if (req->type == NBD_CMD_DISC) {
            CLOG(c, VD_NBD_LOG_INFO, "disconnect requested");
            return 0;
        }
        uint64_t p = 0;
        if (c->extended ? (req->flags & NBD_CMD_FLAG_PAYLOAD_LEN) != 0
                        : req->type == NBD_CMD_WRITE) {
            p = req->length;
        }
        if (p > NBD_MAX_PAYLOAD) {
            /* cannot skip that much safely, and the spec allows hanging up */
            CLOG(c, VD_NBD_LOG_WARNING, "%s payload of %llu bytes exceeds %u",
                 vd_nbd_cmd_name(req->type), (unsigned long long)p, NBD_MAX_PAYLOAD);
            return -EPROTO;
        }
        c->plen = p;
        c->need = p;
        if (req->type == NBD_CMD_READ && req->length <= NBD_MAX_PAYLOAD) {
            c->need = req->length;
        }
        c->rstate = RS_MEM;
    }
    if (c->rstate == RS_MEM) {
        pthread_mutex_lock(&c->mlock);
        if (!srv_may_read(srv, c)) {
            c->parked = true;
            pthread_mutex_unlock(&c->mlock);
            return -EBUSY;
        }
        c->inflight += c->need;
        c->nreq++;
        pthread_mutex_unlock(&c->mlock);
        c->pgot = 0;
        c->rstate = RS_PAYLOAD;
        if (srv_worker_buf(w, c->need) < 0) {
            return -ENOMEM; /* the budget goes with the connection */
        }
    }
    if (c->pbuf) {
        /* the payload started arriving in another worker's turn */
        free(w->buf);
        w->buf = c->pbuf;
        w->cap = c->pcap;
        c->pbuf = NULL;
        c->pcap = 0;
    }
    while (c->pgot < c->plen) {
        ssize_t n = vd_nbd_conn_read_some(&c->conn, w->buf + c->pgot, c->plen - c->pgot);
        if (n == -EAGAIN) {
            c->pbuf = w->buf;
            c->pcap = w->cap;
            w->buf = NULL;
            w->cap = 0;
            return -EAGAIN;
        }
        if (n <= 0) {
            return n == 0 ? -ECONNRESET : (int)n;
        }
        c->pgot += (uint64_t)n;
    }
    c->rstate = RS_HEADER;
    return 1;
}

/* Room for one more worker?  Workers blocked sending to clients that do
 * not read do not count against the pool's size. */
static bool srv_pool_may_grow(srv_pool *p)
{
    unsigned started = __atomic_load_n(&p->started, __ATOMIC_RELAXED);
    unsigned sending = __atomic_load_n(&p->sending, __ATOMIC_RELAXED);
    return started < SRV_MAX_THREADS && started < p->max + sending;
}

/* Work on connection c, whose read side this worker now holds. */
static void srv_pool_serve(vd_nbd_server *srv, srv_worker *w, srv_client *c)
{
    srv_pool *p = &srv->pool;
    int r = __atomic_load_n(&c->dead, __ATOMIC_SEQ_CST) ? 0 : srv_read_request(c, w);
    if (r == -EAGAIN) {
        r = srv_arm(srv, c);
        if (r == 0) {
            return;
        }
        CLOG(c, VD_NBD_LOG_WARNING, "cannot watch the connection: %s", strerror(-r));
    }
    if (r == -EBUSY) {
        return; /* srv_request_done() queues it again */
    }
    if (r <= 0) {
        srv_reader_stop(c, r);
        return;
    }
    vd_nbd_request req = c->req;
    uint64_t plen = c->plen, mem = c->need;
    srv_pass_on(srv, c);

    /* keep a worker free for the next request while the pool may grow */
    if (!__atomic_load_n(&p->idle, __ATOMIC_RELAXED) && srv_pool_may_grow(p)) {
        pthread_mutex_lock(&p->lock);
        /* started changes only under the lock; idle also without */
        if (!__atomic_load_n(&p->idle, __ATOMIC_RELAXED) && srv_pool_may_grow(p) &&
            !p->stop &&
            pthread_create(&p->workers[p->started], NULL, srv_pool_worker_main, srv) == 0) {
            __atomic_store_n(&p->started, p->started + 1, __ATOMIC_RELAXED);
            /* until it waits for work, it counts as idle */
            __atomic_add_fetch(&p->idle, 1, __ATOMIC_RELAXED);
        }
        pthread_mutex_unlock(&p->lock);
    }
    srv_handle(c, w, &req, plen);
    srv_request_done(srv, c, mem);
}

static void *srv_pool_worker_main(void *opaque)
{
    vd_nbd_server *srv = opaque;
    srv_pool *p = &srv->pool;
    srv_worker w = {NULL, 0};
    /* counted as idle by whoever started us */
    __atomic_sub_fetch(&p->idle, 1, __ATOMIC_RELAXED);
    for (;;) {
        srv_client *c = NULL;
        pthread_mutex_lock(&p->lock);
        bool stop = p->stop, more = false;
        if (p->qhead) {
            c = p->qhead;
            p->qhead = c->qnext;
            if (!p->qhead) {
                p->qtail = NULL;
            }
            more = p->qhead != NULL;
        }
        pthread_mutex_unlock(&p->lock);
        if (more || (!c && stop)) {
            /* the eventfd is edge-triggered, one wake-up per edge: pass
             * it on to another worker for the rest of the queue (or for
             * stopping) */
            uint64_t one = 1;
            ssize_t r = write(p->evfd, &one, sizeof(one));
            (void)r;
        }
        if (!c) {
            if (stop) {
                break;
            }
            /* idle workers wait in epoll themselves: a readable socket
             * wakes one of them directly (one-shot), no thread between */
            struct epoll_event ev;
            __atomic_add_fetch(&p->idle, 1, __ATOMIC_RELAXED);
            int n = epoll_wait(p->epfd, &ev, 1, -1);
            __atomic_sub_fetch(&p->idle, 1, __ATOMIC_RELAXED);
            if (n < 0 && errno != EINTR) {
                srv_log(srv, VD_NBD_LOG_ERROR, "epoll_wait failed: %s", strerror(errno));
                break;
            }
            if (n <= 0) {
                continue;
            }
            c = ev.data.ptr;
            if (!c) {
                /* the queue's eventfd: reset it, then look at the queue */
                uint64_t v;
                ssize_t r = read(p->evfd, &v, sizeof(v));
                (void)r;
                continue;
            }
            (void)__atomic_load_n(&c->handoff, __ATOMIC_ACQUIRE);
        }
        srv_pool_serve(srv, &w, c);
        if (w.cap > SRV_RETAIN_BUF) {
            free(w.buf);
            w.buf = NULL;
            w.cap = 0;
        }
    }
    free(w.buf);
    return NULL;
}

/* Start the first worker (called with the pool lock). */
static int srv_pool_start(vd_nbd_server *srv)
{
    srv_pool *p = &srv->pool;
    if (p->running) {
        return 0;
    }
    if (p->stop) {
        return -ESHUTDOWN;
    }
    unsigned max = srv->threads;
    if (!max) {
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        max = cpus > 0 ? (unsigned)VD_MIN(cpus, 64L) * 8 : 16;
        max = VD_MAX(16u, VD_MIN(max, 48u));
    }
    p->workers = calloc(SRV_MAX_THREADS, sizeof(*p->workers));
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    p->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int r = -ENOMEM;
    if (p->epfd < 0 || p->evfd < 0) {
        r = -errno;
    }
    if (p->workers && p->epfd >= 0 && p->evfd >= 0) {
        /* edge-triggered: level would wake every idle worker in turn */
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.ptr = NULL};
        r = epoll_ctl(p->epfd, EPOLL_CTL_ADD, p->evfd, &ev) < 0 ? -errno : 0;
        if (r == 0) {
            p->max = max;
            p->started = 1;
            p->idle = 1;
            r = -pthread_create(&p->workers[0], NULL, srv_pool_worker_main, srv);
            if (r == 0) {
                p->running = true;
                return 0;
            }
            p->started = p->idle = 0;
        }
    }
    free(p->workers);
    p->workers = NULL;
    if (p->epfd >= 0) {
        close(p->epfd);
    }
    if (p->evfd >= 0) {
        close(p->evfd);
    }
    p->epfd = p->evfd = -1;
    return r;
}

/* Stop the pool once no client is left. */
static void srv_pool_stop(vd_nbd_server *srv)
{
    srv_pool *p = &srv->pool;
    pthread_mutex_lock(&p->lock);
    p->stop = true;
    bool running = p->running;
    p->running = false;
    unsigned started = p->started;
    pthread_mutex_unlock(&p->lock);
    if (!running) {
        return;
    }
    /* each worker that sees stop wakes the next */
    uint64_t n = 1;
    ssize_t wr = write(p->evfd, &n, sizeof(n));
    (void)wr;
    for (unsigned i = 0; i < started; i++) {
        pthread_join(p->workers[i], NULL);
    }
    free(p->workers);
    p->workers = NULL;
    close(p->epfd);
    close(p->evfd);
    p->epfd = p->evfd = -1;
}

/* A client entering transmission joins the pool; from here on it is the
 * pool's (it may be gone when this returns 0). */
static int srv_pool_add(vd_nbd_server *srv, srv_client *c)
{
    pthread_mutex_lock(&srv->pool.lock);
    int r = srv_pool_start(srv);
    pthread_mutex_unlock(&srv->pool.lock);
    if (r < 0) {
        return r;
    }
    srv_pass_on(srv, c);
    return 0;
}

/* --------------------------------------------------------------- clients */

static void srv_client_free(srv_client *c)
{
    vd_nbd_conn_close(&c->conn);
    free(c->meta_export);
    free(c->pbuf);
    pthread_mutex_destroy(&c->wlock);
    pthread_mutex_destroy(&c->mlock);
    free(c);
}

/* The client is done and nothing uses it any more: unregister and free. */
static void srv_client_finish(srv_client *c)
{
    vd_nbd_server *srv = c->srv;
    CLOG(c, VD_NBD_LOG_INFO, "disconnected");
    bool negotiated = c->transmission;
    bool *done = c->done_flag;
    if (c->registered) {
        epoll_ctl(srv->pool.epfd, EPOLL_CTL_DEL, c->conn.fd, NULL);
    }
    /* leave the list first, so that nobody shuts down our fd number after
     * we closed it; close before the count drops, as serve()'s caller may
     * exit as soon as it does */
    pthread_mutex_lock(&srv->lock);
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        srv->clients = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    pthread_mutex_unlock(&srv->lock);
    srv_client_free(c);
    pthread_mutex_lock(&srv->lock);
    if (negotiated) {
        srv->served_one = true;
    }
    srv->nclients--;
    if (done) {
        *done = true;
    }
    pthread_cond_broadcast(&srv->cond);
    srv_wake(srv);
    pthread_mutex_unlock(&srv->lock);
}

/* Runs one client's handshake, then hands it to the pool (or ends it). */
static void srv_client_run(srv_client *c)
{
    vd_nbd_server *srv = c->srv;
    CLOG(c, VD_NBD_LOG_INFO, "connected");
    if (srv->handshake_ms) {
        c->conn.deadline = vd_nbd_now_ms() + srv->handshake_ms;
    }
    int r = srv_handshake(c);
    c->conn.deadline = 0;
    if (r == 1 && !__atomic_load_n(&c->dead, __ATOMIC_SEQ_CST)) {
        CLOG(c, VD_NBD_LOG_INFO, "serving export '%s'%s%s", c->exp->name,
             c->extended     ? " with extended headers"
             : c->structured ? " with structured replies"
                             : "",
             c->tls_active ? " over TLS" : "");
        r = srv_pool_add(srv, c);
        if (r == 0) {
            return;
        }
        CLOG(c, VD_NBD_LOG_WARNING, "cannot serve the client: %s", strerror(-r));
    } else if (r < 0) {
        if (r == -ETIMEDOUT) {
            CLOG(c, VD_NBD_LOG_WARNING, "handshake not finished within %u ms, dropped",
                 srv->handshake_ms);
        } else if (r != -EPROTO && r != -ENOENT) {
            CLOG(c, VD_NBD_LOG_INFO, "handshake failed: %s", strerror(-r));
        }
    }
    srv_client_finish(c);
}

static void *srv_client_thread(void *opaque)
{
    srv_client_run(opaque);
    return NULL;
}

static srv_client *srv_client_new(vd_nbd_server *srv, int fd)
{
    srv_client *c = calloc(1, sizeof(*c));
    if (!c || vd_nbd_conn_init(&c->conn, fd) < 0) {
        free(c);
        close(fd);
        return NULL;
    }
    c->srv = srv;
    pthread_mutex_init(&c->wlock, NULL);
    pthread_mutex_init(&c->mlock, NULL);
    vd_nbd_peer_name(fd, c->peer, sizeof(c->peer));
    pthread_mutex_lock(&srv->lock);
    c->id = ++srv->next_id;
    c->next = srv->clients;
    if (srv->clients) {
        srv->clients->prev = c;
    }
    srv->clients = c;
    srv->nclients++;
    pthread_mutex_unlock(&srv->lock);
    return c;
}

int vd_nbd_server_handle_fd(vd_nbd_server *srv, int fd)
{
    srv_client *c = srv_client_new(srv, fd);
    if (!c) {
        vd_set_public_error(ENOMEM, "out of memory");
        return -1;
    }
    bool done = false;
    c->done_flag = &done;
    srv_client_run(c);
    pthread_mutex_lock(&srv->lock);
    while (!done) {
        pthread_cond_wait(&srv->cond, &srv->lock);
    }
    pthread_mutex_unlock(&srv->lock);
    return 0;
}

static void srv_flush_exports(vd_nbd_server *srv)
{
    for (size_t i = 0; i < srv->nexports; i++) {
        if (!srv->exports[i].read_only && vd_flush(srv->exports[i].img) < 0) {
            srv_log(srv, VD_NBD_LOG_ERROR, "%s", vd_get_error());
        }
    }
}

int vd_nbd_server_serve(vd_nbd_server *srv, const int *fds, size_t n)
{
    struct pollfd *p = calloc(n + 1, sizeof(*p));
    if (!p) {
        vd_set_public_error(ENOMEM, "out of memory");
        return -1;
    }
    unsigned limit =
        srv->max_conns ? VD_MIN(srv->max_conns, SRV_HARD_MAX_CONNS) : SRV_HARD_MAX_CONNS;
    int ret = 0;
    for (;;) {
        char drain[64];
        while (read(srv->wake[0], drain, sizeof(drain)) > 0) {
        }
        if (srv->stop_requested) {
            break;
        }
        pthread_mutex_lock(&srv->lock);
        unsigned nc = srv->nclients;
        bool done = !srv->persistent && srv->served_one && nc == 0;
        pthread_mutex_unlock(&srv->lock);
        if (done) {
            break;
        }
        p[0] = (struct pollfd){.fd = srv->wake[0], .events = POLLIN};
        size_t np = 1;
        if (nc < limit) {
            /* at the limit, new clients wait in the listen backlog */
            for (size_t i = 0; i < n; i++) {
                p[np++] = (struct pollfd){.fd = fds[i], .events = POLLIN};
            }
        }
        int r = poll(p, np, -1);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            vd_set_public_error(errno, "poll failed: %s", strerror(errno));
            ret = -1;
            break;
        }
        for (size_t i = 1; i < np; i++) {
            if (!(p[i].revents & (POLLIN | POLLERR | POLLHUP))) {
                continue;
            }
            int fd = accept4(p[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
                    srv_log(srv, VD_NBD_LOG_WARNING, "accept failed: %s", strerror(errno));
                    if (errno == EMFILE || errno == ENFILE) {
                        usleep(100 * 1000);
                    }
                }
                continue;
            }
            vd_nbd_socket_tune(fd);
            srv_client *c = srv_client_new(srv, fd);
            if (!c) {
                srv_log(srv, VD_NBD_LOG_WARNING, "out of memory for a new client");
                continue;
            }
            /* 18 bytes always fit in a new socket's buffer (this cannot
             * block): greeting here spares the client the wait for the
             * handshake thread to run; a failure shows in its first read */
            (void)srv_greet(c);
            pthread_attr_t attr;
            pthread_attr_init(&attr);
            pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
            pthread_t t;
            if (pthread_create(&t, &attr, srv_client_thread, c)) {
                srv_log(srv, VD_NBD_LOG_WARNING, "cannot start a thread for a new client");
                /* unregister without serving */
                pthread_mutex_lock(&srv->lock);
                if (c->prev) {
                    c->prev->next = c->next;
                } else {
                    srv->clients = c->next;
                }
                if (c->next) {
                    c->next->prev = c->prev;
                }
                srv->nclients--;
                pthread_mutex_unlock(&srv->lock);
                srv_client_free(c);
            }
            pthread_attr_destroy(&attr);
            pthread_mutex_lock(&srv->lock);
            nc = srv->nclients;
            pthread_mutex_unlock(&srv->lock);
            if (nc >= limit) {
                break;
            }
        }
    }
    free(p);
    srv_stop_clients(srv);
    srv_flush_exports(srv);
    return ret;
}
