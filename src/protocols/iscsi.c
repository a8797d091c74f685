/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The `iscsi` protocol driver: a logical unit of an iSCSI target as a
 * node, through libiscsi (never a hand-written iSCSI stack).
 *
 * Filenames, as QEMU 7.2 takes them:
 *   iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN
 * Options (driver=iscsi): transport (tcp), portal, target, lun, user,
 * password, password-secret, initiator-name, header-digest, timeout.
 * Without a user, LIBISCSI_CHAP_USERNAME / LIBISCSI_CHAP_PASSWORD from
 * the environment give the CHAP credentials, as libiscsi's URL parser does.
 *
 * Disk LUNs (READ/WRITE(16), SYNCHRONIZE CACHE(10), WRITE SAME(16) for
 * zeroes, UNMAP for discard, GET LBA STATUS for block status where the LUN
 * reports logical block provisioning) and CD-ROM LUNs (READ(10), read-only).
 * Requests are aligned to the LUN's block size by the core.
 *
 * Concurrency: one libiscsi context per node, used asynchronously.  A
 * service thread polls the socket and runs libiscsi's callbacks; callers
 * queue a task under the node's mutex and wait for its callback, so many
 * requests are in flight at once.  A lost connection fails every pending
 * and later request with EIO (no automatic reconnect).
 *
 * Secrets: the CHAP password never appears in a message or in the node's
 * filename (QEMU prints it in both).
 */
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>

#include "internal.h"

#define ISCSI_DEFAULT_INITIATOR "iqn.2008-11.org.linux-kvm"
#define ISCSI_MAX_LUN 16383
#define ISCSI_RETRIES 5

typedef struct iscsi_state {
    struct iscsi_context *ctx;
    int lun;
    int type; /* SCSI peripheral device type: 0 disk, 5 CD-ROM */
    uint32_t block_size;
    uint64_t num_blocks;
    uint64_t size;
    bool use_16;   /* READ/WRITE(16) (else 10) */
    bool lbpme;    /* logical block provisioning management enabled */
    bool lbprz;    /* unmapped blocks read as zeroes */
    bool lbpu;     /* UNMAP supported */
    bool lbpws;    /* WRITE SAME(16) with UNMAP supported */
    bool has_write_same;
    uint32_t max_xfer_len;  /* blocks, 0 unknown */
    uint32_t max_unmap;     /* blocks, 0 unknown */
    uint64_t max_ws_len;    /* blocks, 0 unknown */
    uint8_t *zero_block;

    /* the service thread */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
    bool thread_started;
    bool stop;
    bool dead; /* the connection is lost: every request fails */
    int wake_fd;
} iscsi_state;

static const vd_opt_desc iscsi_open_opts[] = {
    {"transport", VD_OPT_STRING, "transport type (tcp)", "tcp"},
    {"portal", VD_OPT_STRING, "HOST[:PORT] of the target portal", NULL},
    {"target", VD_OPT_STRING, "target IQN", NULL},
    {"lun", VD_OPT_NUMBER, "logical unit number", "0"},
    {"user", VD_OPT_STRING, "CHAP user name", NULL},
    {"password", VD_OPT_STRING, "CHAP password (password-secret keeps it off the command line)",
     NULL},
    {"password-secret", VD_OPT_STRING, "id of a secret object holding the CHAP password", NULL},
    {"initiator-name", VD_OPT_STRING, "initiator IQN", ISCSI_DEFAULT_INITIATOR},
    {"header-digest", VD_OPT_STRING, "crc32c, none, crc32c-none or none-crc32c", "none-crc32c"},
    {"timeout", VD_OPT_NUMBER, "request timeout in seconds (0: none)", "0"},
    /* vdisk's: bidirectional CHAP (QEMU 7.2 has no such option) */
    {"target-user", VD_OPT_STRING, "user name the target answers CHAP with (bidirectional)",
     NULL},
    {"target-password", VD_OPT_STRING, "the target's CHAP password", NULL},
    {"target-password-secret", VD_OPT_STRING,
     "id of a secret object holding the target's CHAP password", NULL},
    {NULL, 0, NULL, NULL},
};

static const char *const iscsi_protocols[] = {"iscsi", NULL};

/* ------------------------------------------------------------ filenames */

/*
 * filename without the password of its user part (USER%PASSWORD@ becomes
 * USER@): the form every message of this driver shows.
 */
static char *iscsi_redact(const char *filename)
{
    const char *auth = strstr(filename, "://");
    auth = auth ? auth + 3 : filename;
    size_t alen = strcspn(auth, "/");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++) {
        if (*p == '@') {
            at = p;
        }
    }
    const char *pct = at ? memchr(auth, '%', (size_t)(at - auth)) : NULL;
    if (!pct) {
        return strdup(filename);
    }
    return vd_asprintf("%.*s%s", (int)(pct - filename), filename, at);
}

static bool iscsi_valid_port(const char *p)
{
    if (!*p || strlen(p) > 5) {
        return false;
    }
    for (const char *q = p; *q; q++) {
        if (!isdigit((unsigned char)*q)) {
            return false;
        }
    }
    long v = strtol(p, NULL, 10);
    return v >= 1 && v <= 65535;
}

/* A host name or address: no spaces, controls or URL delimiters. */
static bool iscsi_valid_host(const char *h, size_t n)
{
    if (!n) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c <= ' ' || c >= 0x7f || strchr("/?#@%[]\\\"'<>", c)) {
            return false;
        }
    }
    return true;
}

/* HOST[:PORT] or [V6ADDR][:PORT] */
static bool iscsi_valid_portal(const char *portal)
{
    if (*portal == '[') {
        const char *rb = strchr(portal, ']');
        if (!rb || rb == portal + 1) {
            return false;
        }
        for (const char *p = portal + 1; p < rb; p++) {
            if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.') {
                return false;
            }
        }
        return !rb[1] || (rb[1] == ':' && iscsi_valid_port(rb + 2));
    }
    const char *colon = strchr(portal, ':');
    if (!colon) {
        return iscsi_valid_host(portal, strlen(portal));
    }
    return iscsi_valid_host(portal, (size_t)(colon - portal)) && iscsi_valid_port(colon + 1);
}

/* A target name: printable, no '/' (iSCSI names are short ASCII). */
static bool iscsi_valid_target(const char *t)
{
    size_t n = strlen(t);
    if (!n || n > 223) {
        return false;
    }
    for (const char *p = t; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= ' ' || c >= 0x7f || c == '/') {
            return false;
        }
    }
    return true;
}

static bool iscsi_valid_lun(const char *s, long *lun)
{
    if (!*s || strlen(s) > 5) {
        return false;
    }
    for (const char *p = s; *p; p++) {
        if (!isdigit((unsigned char)*p)) {
            return false;
        }
    }
    *lun = strtol(s, NULL, 10);
    return *lun <= ISCSI_MAX_LUN;
}

static int iscsi_parse_filename(const char *filename, vd_opts *opts, vd_error **errp)
{
    static const char usage[] = "iscsi://[USER[%PASSWORD]@]HOST[:PORT]/TARGET-IQN/LUN";
    const char *why = NULL;
    char *work = NULL;
    long lun = 0;

    if (strncmp(filename, "iscsi://", 8) != 0) {
        why = "it does not start with iscsi://";
        goto bad;
    }
    work = strdup(filename + 8);
    if (!work) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    char *path = strchr(work, '/');
    if (!path) {
        why = "the target and LUN are missing";
        goto bad;
    }
    *path++ = 0;
    /* (a password may hold any character but '/') */
    if (strpbrk(path, "?#")) {
        why = "query strings and fragments are not supported";
        goto bad;
    }
    char *auth = work, *user = NULL, *password = NULL;
    char *at = strrchr(auth, '@');
    if (at) {
        *at = 0;
        user = auth;
        auth = at + 1;
        password = strchr(user, '%');
        if (password) {
            *password++ = 0;
        }
        if (!*user) {
            why = "the user name is empty";
            goto bad;
        }
        for (const char *p = user; *p; p++) {
            if ((unsigned char)*p < ' ' || *p == 0x7f) {
                why = "the user name has a control character";
                goto bad;
            }
        }
    }
    if (!iscsi_valid_portal(auth)) {
        why = "bad host or port";
        goto bad;
    }
    char *lunstr = strrchr(path, '/');
    if (!lunstr) {
        why = "the LUN is missing";
        goto bad;
    }
    *lunstr++ = 0;
    if (!iscsi_valid_target(path)) {
        why = "bad target name";
        goto bad;
    }
    if (!iscsi_valid_lun(lunstr, &lun)) {
        why = "the LUN must be a number from 0 to 16383";
        goto bad;
    }
    char lunbuf[24];
    snprintf(lunbuf, sizeof(lunbuf), "%ld", lun);
    vd_opts_set(opts, "transport", "tcp");
    vd_opts_set(opts, "portal", auth);
    vd_opts_set(opts, "target", path);
    vd_opts_set(opts, "lun", lunbuf);
    if (user) {
        vd_opts_set(opts, "user", user);
    }
    if (password) {
        vd_opts_set(opts, "password", password);
    }
    free(work);
    return 0;

bad:
    free(work);
    char *shown = iscsi_redact(filename);
    int r = vd_error_set(errp, EINVAL, "Failed to parse URL : %s (%s; expected %s)",
                         shown ? shown : "iscsi URL", why, usage);
    free(shown);
    return r;
}

/* ---------------------------------------------------------- the service */

typedef struct iscsi_req {
    bool done;
    int status;
} iscsi_req;

static void iscsi_req_cb(struct iscsi_context *ctx, int status, void *command_data,
                         void *opaque)
{
    iscsi_req *r = opaque;
    (void)ctx;
    (void)command_data;
    r->status = status;
    r->done = true;
}

static void iscsi_kick(iscsi_state *s)
{
    uint64_t one = 1;
    ssize_t n = write(s->wake_fd, &one, sizeof(one));
    (void)n; /* a full counter already wakes the thread */
}

/* Fail every queued task (their callbacks run with SCSI_STATUS_CANCELLED). */
static void iscsi_mark_dead(iscsi_state *s)
{
    s->dead = true;
    iscsi_scsi_cancel_all_tasks(s->ctx);
    pthread_cond_broadcast(&s->cond);
}

static void *iscsi_service_thread(void *opaque)
{
    iscsi_state *s = opaque;
    pthread_mutex_lock(&s->lock);
    while (!s->stop) {
        struct pollfd pfd[2] = {
            {.fd = s->dead ? -1 : iscsi_get_fd(s->ctx),
             .events = s->dead ? 0 : (short)iscsi_which_events(s->ctx)},
            {.fd = s->wake_fd, .events = POLLIN},
        };
        pthread_mutex_unlock(&s->lock);
        /* one second at most: libiscsi scans for timed-out tasks */
        int n = poll(pfd, 2, 1000);
        if (n > 0 && (pfd[1].revents & POLLIN)) {
            uint64_t v;
            ssize_t k = read(s->wake_fd, &v, sizeof(v));
            (void)k;
        }
        pthread_mutex_lock(&s->lock);
        if (s->dead || s->stop) {
            continue;
        }
        int revents = n > 0 ? pfd[0].revents : 0;
        if (iscsi_service(s->ctx, revents) < 0) {
            iscsi_mark_dead(s);
        }
        pthread_cond_broadcast(&s->cond);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* With s->lock held: wait for the task queued with r. */
static void iscsi_wait(iscsi_state *s, iscsi_req *r)
{
    iscsi_kick(s);
    while (!r->done) {
        pthread_cond_wait(&s->cond, &s->lock);
    }
}

/* -errno for a finished task (QEMU's sense translation). */
static int iscsi_task_errno(int status, struct scsi_task *t)
{
    if (status == SCSI_STATUS_GOOD) {
        return 0;
    }
    if (status == SCSI_STATUS_TIMEOUT) {
        return -ETIMEDOUT;
    }
    if (status == SCSI_STATUS_CHECK_CONDITION && t) {
        switch (t->sense.key) {
        case SCSI_SENSE_NOT_READY:
            return -EBUSY;
        case SCSI_SENSE_DATA_PROTECTION:
            return -EACCES;
        case SCSI_SENSE_COMMAND_ABORTED:
            return -ECANCELED;
        case SCSI_SENSE_ILLEGAL_REQUEST:
            switch (t->sense.ascq) {
            case SCSI_SENSE_ASCQ_INVALID_OPERATION_CODE:
            case SCSI_SENSE_ASCQ_INVALID_FIELD_IN_CDB:
                return -ENOTSUP;
            case SCSI_SENSE_ASCQ_LBA_OUT_OF_RANGE:
                return -EINVAL;
            default:
                return -EINVAL;
            }
        default:
            return -EIO;
        }
    }
    return -EIO;
}

/* Whether a failed task is worth sending again (QEMU retries these). */
static bool iscsi_retryable(int status, struct scsi_task *t)
{
    return status == SCSI_STATUS_BUSY || status == SCSI_STATUS_TASK_SET_FULL ||
           (status == SCSI_STATUS_CHECK_CONDITION && t &&
            t->sense.key == SCSI_SENSE_UNIT_ATTENTION);
}

typedef enum iscsi_op {
    ISCSI_OP_READ,
    ISCSI_OP_WRITE,
    ISCSI_OP_FLUSH,
    ISCSI_OP_WRITE_SAME,
    ISCSI_OP_UNMAP,
    ISCSI_OP_LBA_STATUS,
} iscsi_op;

typedef struct iscsi_cmd {
    iscsi_op op;
    uint64_t lba;
    uint32_t nblocks;
    void *buf;   /* read / write data */
    bool unmap;  /* WRITE SAME with UNMAP */
    struct scsi_iovec iov; /* lives until the task completes */
    struct scsi_lba_status_descriptor desc;
    bool have_desc;
} iscsi_cmd;

static struct scsi_task *iscsi_queue(iscsi_state *s, iscsi_cmd *c, iscsi_req *r)
{
    uint32_t bytes = c->nblocks * s->block_size;
    struct scsi_iovec *iov = &c->iov;
    iov->iov_base = c->buf;
    iov->iov_len = bytes;
    switch (c->op) {
    case ISCSI_OP_READ:
        if (s->use_16) {
            return iscsi_read16_iov_task(s->ctx, s->lun, c->lba, bytes, (int)s->block_size, 0, 0,
                                         0, 0, 0, iscsi_req_cb, r, iov, 1);
        }
        return iscsi_read10_iov_task(s->ctx, s->lun, (uint32_t)c->lba, bytes,
                                     (int)s->block_size, 0, 0, 0, 0, 0, iscsi_req_cb, r, iov, 1);
    case ISCSI_OP_WRITE:
        if (s->use_16) {
            return iscsi_write16_iov_task(s->ctx, s->lun, c->lba, NULL, bytes,
                                          (int)s->block_size, 0, 0, 0, 0, 0, iscsi_req_cb, r,
                                          iov, 1);
        }
        return iscsi_write10_iov_task(s->ctx, s->lun, (uint32_t)c->lba, NULL, bytes,
                                      (int)s->block_size, 0, 0, 0, 0, 0, iscsi_req_cb, r, iov,
                                      1);
    case ISCSI_OP_FLUSH:
        return iscsi_synchronizecache10_task(s->ctx, s->lun, 0, 0, 0, 0, iscsi_req_cb, r);
    case ISCSI_OP_WRITE_SAME:
        return iscsi_writesame16_task(s->ctx, s->lun, c->lba, s->zero_block, s->block_size,
                                      c->nblocks, 0, c->unmap ? 1 : 0, 0, 0, iscsi_req_cb, r);
    case ISCSI_OP_UNMAP: {
        struct unmap_list l = {.lba = c->lba, .num = c->nblocks};
        return iscsi_unmap_task(s->ctx, s->lun, 0, 0, &l, 1, iscsi_req_cb, r);
    }
    case ISCSI_OP_LBA_STATUS:
        return iscsi_get_lba_status_task(s->ctx, s->lun, c->lba, 8 + 16, iscsi_req_cb, r);
    }
    return NULL;
}

/* Send one command and wait for it (retrying unit attentions and busy). */
static int iscsi_run(iscsi_state *s, iscsi_cmd *c)
{
    int ret = -EIO;
    pthread_mutex_lock(&s->lock);
    for (int attempt = 0; attempt <= ISCSI_RETRIES; attempt++) {
        if (s->dead) {
            ret = -EIO;
            break;
        }
        iscsi_req r = {0};
        struct scsi_task *t = iscsi_queue(s, c, &r);
        if (!t) {
            ret = -ENOMEM;
            break;
        }
        iscsi_wait(s, &r);
        if (r.status == SCSI_STATUS_CANCELLED || r.status == SCSI_STATUS_ERROR) {
            scsi_free_scsi_task(t);
            ret = -EIO;
            break;
        }
        if (iscsi_retryable(r.status, t) && attempt < ISCSI_RETRIES) {
            scsi_free_scsi_task(t);
            continue;
        }
        ret = iscsi_task_errno(r.status, t);
        if (!ret && c->op == ISCSI_OP_LBA_STATUS) {
            struct scsi_get_lba_status *st = scsi_datain_unmarshall(t);
            if (st && st->num_descriptors > 0 && st->descriptors) {
                c->desc = st->descriptors[0];
                c->have_desc = true;
            }
        }
        scsi_free_scsi_task(t);
        break;
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/*
 * Send n commands together (the target works on them in parallel) and wait
 * for all; one that asks to be retried is sent again on its own.  Returns
 * the first error.
 */
#define ISCSI_BATCH 16
static int iscsi_run_batch(iscsi_state *s, iscsi_cmd *c, int n)
{
    iscsi_req r[ISCSI_BATCH];
    struct scsi_task *t[ISCSI_BATCH];
    bool again[ISCSI_BATCH];
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < n; i++) {
        r[i] = (iscsi_req){0};
        t[i] = s->dead ? NULL : iscsi_queue(s, &c[i], &r[i]);
        if (!t[i]) {
            r[i].done = true;
            r[i].status = SCSI_STATUS_ERROR;
        }
    }
    iscsi_kick(s);
    for (int i = 0; i < n; i++) {
        while (!r[i].done) {
            pthread_cond_wait(&s->cond, &s->lock);
        }
    }
    for (int i = 0; i < n; i++) {
        int e;
        again[i] = t[i] && iscsi_retryable(r[i].status, t[i]);
        if (!t[i] || r[i].status == SCSI_STATUS_CANCELLED || r[i].status == SCSI_STATUS_ERROR) {
            e = -EIO;
        } else {
            e = again[i] ? 0 : iscsi_task_errno(r[i].status, t[i]);
        }
        if (e < 0 && !ret) {
            ret = e;
        }
        if (t[i]) {
            scsi_free_scsi_task(t[i]);
        }
    }
    pthread_mutex_unlock(&s->lock);
    for (int i = 0; i < n && !ret; i++) {
        if (again[i]) {
            ret = iscsi_run(s, &c[i]);
        }
    }
    return ret;
}

/* ------------------------------------------------- open: probing the LUN */

/* A synchronous INQUIRY (before the service thread runs); NULL on failure. */
static struct scsi_task *iscsi_inquiry(iscsi_state *s, int evpd, int page)
{
    struct scsi_task *t = iscsi_inquiry_sync(s->ctx, s->lun, evpd, page, 255);
    if (t && t->status != SCSI_STATUS_GOOD) {
        scsi_free_scsi_task(t);
        t = NULL;
    }
    return t;
}

static int iscsi_read_capacity(iscsi_state *s, vd_error **errp)
{
    struct scsi_task *t = NULL;
    bool ok = false;
    for (int attempt = 0; attempt <= ISCSI_RETRIES && !ok; attempt++) {
        if (t) {
            scsi_free_scsi_task(t);
        }
        t = NULL;
        if (s->type == SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS) {
            t = iscsi_readcapacity16_sync(s->ctx, s->lun);
            if (t && t->status == SCSI_STATUS_GOOD) {
                struct scsi_readcapacity16 *rc = scsi_datain_unmarshall(t);
                if (!rc) {
                    scsi_free_scsi_task(t);
                    return vd_error_set(errp, EIO,
                                        "iSCSI: Failed to unmarshall readcapacity16 data.");
                }
                s->block_size = rc->block_length;
                s->num_blocks = rc->returned_lba + 1;
                s->lbpme = rc->lbpme != 0;
                s->lbprz = rc->lbprz != 0;
                ok = true;
                break;
            }
            if (t && t->status == SCSI_STATUS_CHECK_CONDITION &&
                t->sense.key == SCSI_SENSE_UNIT_ATTENTION) {
                continue;
            }
            if (t) {
                scsi_free_scsi_task(t);
            }
        }
        /* CD-ROMs, and disks without READ CAPACITY(16) */
        t = iscsi_readcapacity10_sync(s->ctx, s->lun, 0, 0);
        if (t && t->status == SCSI_STATUS_GOOD) {
            struct scsi_readcapacity10 *rc = scsi_datain_unmarshall(t);
            if (!rc) {
                scsi_free_scsi_task(t);
                return vd_error_set(errp, EIO,
                                    "iSCSI: Failed to unmarshall readcapacity10 data.");
            }
            s->block_size = rc->block_size;
            s->num_blocks = rc->lba ? (uint64_t)rc->lba + 1 : 0; /* 0: no medium */
            ok = true;
            break;
        }
        if (!(t && t->status == SCSI_STATUS_CHECK_CONDITION &&
              t->sense.key == SCSI_SENSE_UNIT_ATTENTION)) {
            break;
        }
    }
    if (t) {
        scsi_free_scsi_task(t);
    }
    if (!ok) {
        return vd_error_set(errp, EIO, "iSCSI: failed to send readcapacity10/16 command");
    }
    if (!s->block_size || s->block_size % 512 || s->block_size > 65536) {
        return vd_error_set(errp, EIO, "iSCSI: the target returned an invalid block size of %u.",
                            s->block_size);
    }
    if (s->num_blocks > UINT64_MAX / s->block_size / 2) {
        return vd_error_set(errp, EIO, "iSCSI: the target reports an impossible size");
    }
    s->size = s->num_blocks * s->block_size;
    return 0;
}

/* The Block Limits and Logical Block Provisioning VPD pages, if offered. */
static void iscsi_read_vpd(iscsi_state *s)
{
    bool has_bl = false, has_lbp = false;
    struct scsi_task *t = iscsi_inquiry(s, 1, SCSI_INQUIRY_PAGECODE_SUPPORTED_VPD_PAGES);
    if (t) {
        struct scsi_inquiry_supported_pages *sp = scsi_datain_unmarshall(t);
        for (int i = 0; sp && i < sp->num_pages; i++) {
            has_bl |= sp->pages[i] == SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS;
            has_lbp |= sp->pages[i] == SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING;
        }
        scsi_free_scsi_task(t);
    }
    if (has_bl && (t = iscsi_inquiry(s, 1, SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS))) {
        struct scsi_inquiry_block_limits *bl = scsi_datain_unmarshall(t);
        if (bl) {
            s->max_xfer_len = bl->max_xfer_len;
            s->max_unmap = bl->max_unmap;
            s->max_ws_len = bl->max_ws_len;
        }
        scsi_free_scsi_task(t);
    }
    if (s->lbpme && has_lbp &&
        (t = iscsi_inquiry(s, 1, SCSI_INQUIRY_PAGECODE_LOGICAL_BLOCK_PROVISIONING))) {
        struct scsi_inquiry_logical_block_provisioning *lbp = scsi_datain_unmarshall(t);
        if (lbp) {
            s->lbpu = lbp->lbpu != 0;
            s->lbpws = lbp->lbpws != 0;
        }
        scsi_free_scsi_task(t);
    }
}

static int iscsi_header_digest(const char *d, enum iscsi_header_digest *out)
{
    static const struct {
        const char *name;
        enum iscsi_header_digest v;
    } tab[] = {
        {"crc32c", ISCSI_HEADER_DIGEST_CRC32C},
        {"none", ISCSI_HEADER_DIGEST_NONE},
        {"crc32c-none", ISCSI_HEADER_DIGEST_CRC32C_NONE},
        {"none-crc32c", ISCSI_HEADER_DIGEST_NONE_CRC32C},
    };
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++) {
        if (!strcmp(d, tab[i].name)) {
            *out = tab[i].v;
            return 0;
        }
    }
    return -EINVAL;
}

/* Clears and frees a password. */
static void iscsi_wipe(char **password)
{
    if (*password) {
        memset(*password, 0, strlen(*password));
        free(*password);
        *password = NULL;
    }
}

/*
 * The user and password from PREFIXuser and PREFIXpassword or
 * PREFIXpassword-secret; for the initiator's ("" prefix) also from the
 * environment.
 */
static int iscsi_credentials(vd_opts *opts, const char *prefix, const char **user,
                             char **password, vd_error **errp)
{
    char k_user[32], k_pw[32], k_secret[40];
    bool initiator = !*prefix;
    snprintf(k_user, sizeof(k_user), "%suser", prefix);
    snprintf(k_pw, sizeof(k_pw), "%spassword", prefix);
    snprintf(k_secret, sizeof(k_secret), "%spassword-secret", prefix);
    const char *pw = vd_opts_get(opts, k_pw);
    const char *secret = vd_opts_get(opts, k_secret);
    *user = vd_opts_get(opts, k_user);
    *password = NULL;
    if (!*user && initiator) {
        /* libiscsi's convention for URLs without credentials */
        const char *eu = getenv("LIBISCSI_CHAP_USERNAME");
        if (eu && *eu && !pw && !secret) {
            *user = eu;
            pw = getenv("LIBISCSI_CHAP_PASSWORD");
        }
    }
    if (!*user) {
        if (pw || secret) {
            return vd_error_set(errp, EINVAL, "CHAP password given without a user name%s%s",
                                initiator ? "" : " (", initiator ? "" : k_user);
        }
        return 0;
    }
    if (pw && secret) {
        return vd_error_set(errp, EINVAL, "'%s' and '%s' are mutually exclusive", k_pw,
                            k_secret);
    }
    if (secret) {
        uint8_t *data;
        size_t len;
        if (vd_secret_lookup_utf8(secret, &data, &len, errp) < 0) {
            return -EINVAL;
        }
        *password = malloc(len + 1);
        if (!*password) {
            free(data);
            return vd_error_set(errp, ENOMEM, "out of memory");
        }
        memcpy(*password, data, len);
        (*password)[len] = 0;
        free(data);
        if (strlen(*password) != len) {
            free(*password);
            *password = NULL;
            return vd_error_set(errp, EINVAL, "the CHAP secret '%s' contains a NUL byte",
                                secret);
        }
        return 0;
    }
    if (!pw) {
        return vd_error_set(errp, EINVAL, "%sCHAP username specified but no password was given",
                            initiator ? "" : "target ");
    }
    *password = strdup(pw);
    return *password ? 0 : vd_error_set(errp, ENOMEM, "out of memory");
}

/* QEMU's name for the node: a json: filename of its options (no secrets). */
static char *iscsi_json_name(const char *portal, const char *target, uint64_t lun,
                             const char *user)
{
    /* names were checked to be printable ASCII; escape the JSON specials */
    char *p = NULL, *t = NULL, *u = NULL, *out = NULL;
    const char *src[3] = {portal, target, user ? user : ""};
    char **dst[3] = {&p, &t, &u};
    for (int i = 0; i < 3; i++) {
        size_t n = strlen(src[i]);
        char *e = malloc(n * 6 + 1), *o = e;
        if (!e) {
            goto out;
        }
        for (const char *c = src[i]; *c; c++) {
            if (*c == '"' || *c == '\\') {
                *o++ = '\\';
                *o++ = *c;
            } else if ((unsigned char)*c < 0x20) {
                o += sprintf(o, "\\u%04x", (unsigned char)*c);
            } else {
                *o++ = *c;
            }
        }
        *o = 0;
        *dst[i] = e;
    }
    if (user) {
        out = vd_asprintf("json:{\"lun\": \"%llu\", \"portal\": \"%s\", \"driver\": \"iscsi\", "
                          "\"transport\": \"tcp\", \"user\": \"%s\", \"target\": \"%s\"}",
                          (unsigned long long)lun, p, u, t);
    } else {
        out = vd_asprintf("json:{\"lun\": \"%llu\", \"portal\": \"%s\", \"driver\": \"iscsi\", "
                          "\"transport\": \"tcp\", \"target\": \"%s\"}",
                          (unsigned long long)lun, p, t);
    }
out:
    free(p);
    free(t);
    free(u);
    return out;
}

static void iscsi_teardown(iscsi_state *s)
{
    if (s->thread_started) {
        pthread_mutex_lock(&s->lock);
        s->stop = true;
        pthread_mutex_unlock(&s->lock);
        iscsi_kick(s);
        pthread_join(s->thread, NULL);
        s->thread_started = false;
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
    }
    if (s->ctx) {
        if (!s->dead && iscsi_is_logged_in(s->ctx)) {
            /* a target that stopped answering must not hold up the close */
            iscsi_set_timeout(s->ctx, 3);
            iscsi_logout_sync(s->ctx);
        }
        iscsi_destroy_context(s->ctx);
        s->ctx = NULL;
    }
    if (s->wake_fd >= 0) {
        close(s->wake_fd);
        s->wake_fd = -1;
    }
    free(s->zero_block);
    s->zero_block = NULL;
}

static int iscsi_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    iscsi_state *s = bs->opaque;
    const char *transport = vd_opts_get(opts, "transport");
    const char *portal = vd_opts_get(opts, "portal");
    const char *target = vd_opts_get(opts, "target");
    const char *initiator = vd_opts_get(opts, "initiator-name");
    const char *digest = vd_opts_get(opts, "header-digest");
    const char *user = NULL, *tuser = NULL;
    char *password = NULL, *tpassword = NULL;
    uint64_t lun, timeout;
    enum iscsi_header_digest hd = ISCSI_HEADER_DIGEST_NONE_CRC32C;
    int ret;

    s->wake_fd = -1;
    if (vd_opts_get_u64(opts, "lun", 0, &lun, errp) < 0 ||
        vd_opts_get_u64(opts, "timeout", 0, &timeout, errp) < 0) {
        return -EINVAL;
    }
    if (transport && strcmp(transport, "tcp") != 0) {
        if (!strcmp(transport, "iser")) {
            return vd_error_set(errp, ENOTSUP, "iSCSI: the iser transport is not supported");
        }
        return vd_error_set(errp, EINVAL, "Invalid transport type '%s'", transport);
    }
    if (!portal) {
        return vd_error_set(errp, EINVAL, "Parameter 'portal' is missing");
    }
    if (!target) {
        return vd_error_set(errp, EINVAL, "Parameter 'target' is missing");
    }
    if (!iscsi_valid_portal(portal)) {
        return vd_error_set(errp, EINVAL, "iSCSI: invalid portal '%s' (expected HOST[:PORT])",
                            portal);
    }
    if (!iscsi_valid_target(target)) {
        return vd_error_set(errp, EINVAL, "iSCSI: invalid target name");
    }
    if (lun > ISCSI_MAX_LUN) {
        return vd_error_set(errp, EINVAL, "iSCSI: the LUN must be at most %d", ISCSI_MAX_LUN);
    }
    if (timeout > 86400) {
        return vd_error_set(errp, EINVAL, "iSCSI: timeout must be at most 86400 seconds");
    }
    if (!initiator) {
        initiator = ISCSI_DEFAULT_INITIATOR;
    }
    if (digest && iscsi_header_digest(digest, &hd) < 0) {
        return vd_error_set(errp, EINVAL, "Invalid header-digest setting : %s", digest);
    }
    if (iscsi_credentials(opts, "", &user, &password, errp) < 0) {
        return -EINVAL;
    }
    if (iscsi_credentials(opts, "target-", &tuser, &tpassword, errp) < 0) {
        iscsi_wipe(&password);
        return -EINVAL;
    }
    if (tuser && !user) {
        iscsi_wipe(&tpassword);
        return vd_error_set(errp, EINVAL,
                            "target-user needs a CHAP user as well (bidirectional CHAP)");
    }
    s->lun = (int)lun;

    /* what messages and `info` show: the URL without its password, or
     * QEMU's json: form of the options */
    char *name = !strncmp(bs->filename, "iscsi://", 8) ? iscsi_redact(bs->filename)
                                                        : iscsi_json_name(portal, target, lun, user);
    if (name) {
        free(bs->filename);
        bs->filename = name;
    }

    s->ctx = iscsi_create_context(initiator);
    if (!s->ctx) {
        iscsi_wipe(&password);
        iscsi_wipe(&tpassword);
        return vd_error_set(errp, ENOMEM, "iSCSI: Failed to create iSCSI context.");
    }
    iscsi_set_log_level(s->ctx, 0);
    if (iscsi_set_targetname(s->ctx, target) != 0 ||
        iscsi_set_session_type(s->ctx, ISCSI_SESSION_NORMAL) != 0 ||
        iscsi_set_header_digest(s->ctx, hd) != 0) {
        iscsi_wipe(&password);
        iscsi_wipe(&tpassword);
        ret = vd_error_set(errp, EINVAL, "iSCSI: Failed to set up the session: %s",
                           iscsi_get_error(s->ctx));
        goto fail;
    }
    if (user && iscsi_set_initiator_username_pwd(s->ctx, user, password) != 0) {
        iscsi_wipe(&password);
        iscsi_wipe(&tpassword);
        ret = vd_error_set(errp, EINVAL, "Failed to set initiator username and password");
        goto fail;
    }
    if (tuser && iscsi_set_target_username_pwd(s->ctx, tuser, tpassword) != 0) {
        iscsi_wipe(&password);
        iscsi_wipe(&tpassword);
        ret = vd_error_set(errp, EINVAL, "Failed to set target username and password");
        goto fail;
    }
    iscsi_wipe(&password);
    iscsi_wipe(&tpassword);
    iscsi_set_timeout(s->ctx, (int)timeout);
    iscsi_set_noautoreconnect(s->ctx, 1);
    if (iscsi_full_connect_sync(s->ctx, portal, s->lun) != 0) {
        ret = vd_error_set(errp, EIO, "iSCSI: Failed to connect to LUN : %s",
                           iscsi_get_error(s->ctx));
        goto fail;
    }

    struct scsi_task *t = iscsi_inquiry(s, 0, 0);
    struct scsi_inquiry_standard *inq = t ? scsi_datain_unmarshall(t) : NULL;
    if (!inq) {
        if (t) {
            scsi_free_scsi_task(t);
        }
        ret = vd_error_set(errp, EIO, "iSCSI: failed to send inquiry command: %s",
                           iscsi_get_error(s->ctx));
        goto fail;
    }
    int qualifier = inq->qualifier;
    s->type = inq->device_type;
    scsi_free_scsi_task(t);
    if (qualifier != SCSI_INQUIRY_PERIPHERAL_QUALIFIER_CONNECTED) {
        ret = vd_error_set(errp, ENOENT, "iSCSI: no logical unit %d on the target", s->lun);
        goto fail;
    }
    if (s->type != SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS &&
        s->type != SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_MMC) {
        ret = vd_error_set(errp, ENOTSUP,
                           "iSCSI: LUN %d is neither a disk nor a CD-ROM (SCSI type %d)", s->lun,
                           s->type);
        goto fail;
    }
    if (s->type == SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_MMC && !bs->read_only) {
        ret = vd_error_set(errp, EACCES, "iSCSI: LUN %d is a CD-ROM: it opens read-only",
                           s->lun);
        goto fail;
    }
    if ((ret = iscsi_read_capacity(s, errp)) < 0) {
        goto fail;
    }
    s->use_16 = s->type == SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS ||
                s->num_blocks > 0xffffffffull;
    s->has_write_same = s->type == SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS;
    if (s->type == SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS) {
        iscsi_read_vpd(s);
    }
    s->zero_block = calloc(1, s->block_size);
    if (!s->zero_block) {
        ret = vd_error_set(errp, ENOMEM, "out of memory");
        goto fail;
    }

    /* limits: one command carries at most 0xffff blocks (QEMU's cap for
     * the 10-byte commands), less when the target says so */
    uint64_t max_blocks = s->use_16 ? 0xffffffffu : 0xffffu;
    if (s->max_xfer_len && s->max_xfer_len < max_blocks) {
        max_blocks = s->max_xfer_len;
    }
    max_blocks = VD_MIN(max_blocks, (32u << 20) / s->block_size);
    bs->request_alignment = s->block_size;
    bs->max_transfer = max_blocks * s->block_size;
    bs->has_zero_init = false;
    bs->supports_fua = false;

    s->wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->wake_fd < 0) {
        ret = vd_error_setg_errno(errp, errno, "iSCSI: eventfd");
        goto fail;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    if (pthread_create(&s->thread, NULL, iscsi_service_thread, s) != 0) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->cond);
        ret = vd_error_set(errp, EAGAIN, "iSCSI: cannot start the service thread");
        goto fail;
    }
    s->thread_started = true;
    return 0;

fail:
    iscsi_teardown(s);
    return ret < 0 ? ret : -EIO;
}

static void iscsi_close(vd_node *bs)
{
    iscsi_teardown(bs->opaque);
}

static int64_t iscsi_get_length(vd_node *bs)
{
    iscsi_state *s = bs->opaque;
    return (int64_t)s->size;
}

/* ------------------------------------------------------------------ I/O */

static int iscsi_rw(vd_node *bs, iscsi_op op, uint64_t offset, uint64_t len, void *buf)
{
    iscsi_state *s = bs->opaque;
    uint64_t max = bs->max_transfer;
    while (len) {
        uint64_t n = VD_MIN(len, max);
        iscsi_cmd c = {
            .op = op,
            .lba = offset / s->block_size,
            .nblocks = (uint32_t)(n / s->block_size),
            .buf = buf,
        };
        int r = iscsi_run(s, &c);
        if (r < 0) {
            return r;
        }
        offset += n;
        len -= n;
        buf = (uint8_t *)buf + n;
    }
    return 0;
}

static int iscsi_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    iscsi_state *s = bs->opaque;
    (void)flags;
    /* like a short file, bytes past the end read as zeroes */
    if (offset >= s->size) {
        memset(buf, 0, len);
        return 0;
    }
    if (len > s->size - offset) {
        uint64_t keep = s->size - offset;
        memset((uint8_t *)buf + keep, 0, len - keep);
        len = keep;
    }
    if (offset % s->block_size || len % s->block_size) {
        return -EINVAL;
    }
    return iscsi_rw(bs, ISCSI_OP_READ, offset, len, buf);
}

static int iscsi_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                        unsigned flags)
{
    iscsi_state *s = bs->opaque;
    (void)flags;
    if (offset > s->size || len > s->size - offset) {
        return -ENOSPC; /* a LUN cannot grow */
    }
    if (offset % s->block_size || len % s->block_size) {
        return -EINVAL;
    }
    return iscsi_rw(bs, ISCSI_OP_WRITE, offset, len, (void *)buf);
}

static int iscsi_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    iscsi_state *s = bs->opaque;
    bool unmap = (flags & VD_REQ_MAY_UNMAP) && s->lbpws && s->lbprz;
    /* VD_REQ_NO_FALLBACK: WRITE SAME is the target's own zeroing, which
     * QEMU takes as a fast one */
    if (!__atomic_load_n(&s->has_write_same, __ATOMIC_RELAXED) || offset % s->block_size ||
        len % s->block_size) {
        return -ENOTSUP;
    }
    if (offset > s->size || len > s->size - offset) {
        return -ENOSPC;
    }
    /* commands of 4 MiB at most, 16 in flight: targets such as tgtd write
     * the blocks of one WRITE SAME one by one, on one thread */
    uint64_t max = s->max_ws_len ? VD_MIN(s->max_ws_len, 0xffffffffu) : 0xffffffffu;
    max = VD_MAX(VD_MIN(max, (4ull << 20) / s->block_size), 1);
    uint64_t lba = offset / s->block_size, n = len / s->block_size;
    while (n) {
        iscsi_cmd c[ISCSI_BATCH];
        int m = 0;
        uint64_t done = 0;
        while (m < ISCSI_BATCH && done < n) {
            uint64_t k = VD_MIN(n - done, max);
            c[m++] = (iscsi_cmd){.op = ISCSI_OP_WRITE_SAME, .lba = lba + done,
                                 .nblocks = (uint32_t)k, .unmap = unmap};
            done += k;
        }
        int r = iscsi_run_batch(s, c, m);
        uint64_t k = done;
        if (r == -ENOTSUP) {
            /* the target has no WRITE SAME: fall back from now on */
            __atomic_store_n(&s->has_write_same, false, __ATOMIC_RELAXED);
            return -ENOTSUP;
        }
        if (r < 0) {
            return r;
        }
        lba += k;
        n -= k;
    }
    return 0;
}

static int iscsi_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    iscsi_state *s = bs->opaque;
    if (!s->lbpu) {
        return 0; /* a hint the LUN does not take */
    }
    if (offset > s->size || len > s->size - offset) {
        return -EINVAL;
    }
    /* only whole blocks are unmapped */
    uint64_t start = (offset + s->block_size - 1) / s->block_size * s->block_size;
    uint64_t end = vd_align_down(offset + len, s->block_size);
    if (end <= start) {
        return 0;
    }
    uint64_t max = s->max_unmap ? s->max_unmap : 0xffffffffu;
    max = VD_MIN(max, (1ull << 30) / s->block_size);
    uint64_t lba = start / s->block_size, n = (end - start) / s->block_size;
    while (n) {
        uint64_t k = VD_MIN(n, max);
        iscsi_cmd c = {.op = ISCSI_OP_UNMAP, .lba = lba, .nblocks = (uint32_t)k};
        int r = iscsi_run(s, &c);
        if (r == -ENOTSUP || r == -EINVAL) {
            return 0; /* QEMU ignores ILLEGAL REQUEST for UNMAP */
        }
        if (r < 0) {
            return r;
        }
        lba += k;
        n -= k;
    }
    return 0;
}

static int iscsi_flush(vd_node *bs)
{
    iscsi_state *s = bs->opaque;
    if (bs->read_only || s->type != SCSI_INQUIRY_PERIPHERAL_DEVICE_TYPE_DIRECT_ACCESS) {
        return 0;
    }
    iscsi_cmd c = {.op = ISCSI_OP_FLUSH};
    return iscsi_run(s, &c);
}

static int iscsi_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                              uint64_t *pnum, uint64_t *map, vd_node **file)
{
    iscsi_state *s = bs->opaque;
    (void)want_zero;
    *map = offset;
    *file = bs;
    if (offset >= s->size) {
        *pnum = len;
        return VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID;
    }
    len = VD_MIN(len, s->size - offset);
    uint64_t bsz = s->block_size;
    if (!s->lbpme || offset % bsz) {
        *pnum = offset % bsz ? VD_MIN(len, bsz - offset % bsz) : len;
        return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
    }
    iscsi_cmd c = {.op = ISCSI_OP_LBA_STATUS, .lba = offset / bsz};
    int r = iscsi_run(s, &c);
    if (r < 0 || !c.have_desc) {
        /* QEMU reports the failure and answers "data" */
        *pnum = len;
        return r == -EIO ? r : VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
    }
    if (c.desc.lba != c.lba || !c.desc.num_blocks) {
        return -EIO;
    }
    *pnum = VD_MIN((uint64_t)c.desc.num_blocks * bsz, len);
    if (c.desc.provisioning == SCSI_PROVISIONING_TYPE_DEALLOCATED ||
        c.desc.provisioning == SCSI_PROVISIONING_TYPE_ANCHORED) {
        return (s->lbprz ? VD_BLOCK_ZERO : 0) | VD_BLOCK_OFFSET_VALID;
    }
    return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
}

const vd_driver vd_drv_iscsi = {
    .name = "iscsi",
    .kind = VD_DRV_PROTOCOL,
    /* QEMU's iscsi answers bdrv_get_info: info shows dirty-flag */
    .flags = VD_DRV_BLOCK_INFO,
    .protocols = iscsi_protocols,
    .state_size = sizeof(iscsi_state),
    .open_opts = iscsi_open_opts,
    .parse_filename = iscsi_parse_filename,
    .open = iscsi_open,
    .close = iscsi_close,
    .get_length = iscsi_get_length,
    .pread = iscsi_pread,
    .pwrite = iscsi_pwrite,
    .pwrite_zeroes = iscsi_pwrite_zeroes,
    .discard = iscsi_discard,
    .flush = iscsi_flush,
    .block_status = iscsi_block_status,
};
