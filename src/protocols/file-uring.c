/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * aio=io_uring for the file protocols: a small pool of io_uring instances,
 * each guarded by its own mutex.  A request takes a free ring, submits one
 * SQE and waits for its completion; with several rings, as many requests
 * as there are rings are in flight at once, which is what a synchronous,
 * thread-per-request API can use.  A thread remembers the ring it used
 * last so that it normally finds it free again without contention.
 * Rings are set up when first used (a tool may open many images, most of
 * them used by one thread), except the first, whose failure tells at open
 * time that io_uring is not available.
 */
#include <liburing.h>
#include <stdlib.h>

#include "file.h"

#define URING_RINGS 8
#define URING_DEPTH 4
/* One SQE transfers at most this much; the caller loops on short I/O. */
#define URING_MAX_IO (1u << 30)

struct vd_uring_ring {
    pthread_mutex_t lock;
    bool ready; /* ring set up (under lock) */
    struct io_uring ring;
};

struct vd_uring_pool {
    unsigned n;
    struct vd_uring_ring rings[URING_RINGS];
};

static _Thread_local unsigned uring_hint;

int vd_uring_pool_new(vd_uring_pool **out)
{
    vd_uring_pool *p = calloc(1, sizeof(*p));
    if (!p) {
        return -ENOMEM;
    }
    p->n = URING_RINGS;
    for (unsigned i = 0; i < URING_RINGS; i++) {
        pthread_mutex_init(&p->rings[i].lock, NULL);
    }
    int ret = io_uring_queue_init(URING_DEPTH, &p->rings[0].ring, 0);
    if (ret < 0) {
        vd_uring_pool_free(p);
        return ret;
    }
    p->rings[0].ready = true;
    *out = p;
    return 0;
}

void vd_uring_pool_free(vd_uring_pool *p)
{
    if (!p) {
        return;
    }
    for (unsigned i = 0; i < p->n; i++) {
        if (p->rings[i].ready) {
            io_uring_queue_exit(&p->rings[i].ring);
        }
        pthread_mutex_destroy(&p->rings[i].lock);
    }
    free(p);
}

static struct vd_uring_ring *ring_get(vd_uring_pool *p)
{
    unsigned start = uring_hint % p->n;
    for (unsigned k = 0; k < p->n; k++) {
        unsigned i = (start + k) % p->n;
        if (pthread_mutex_trylock(&p->rings[i].lock) == 0) {
            uring_hint = i;
            return &p->rings[i];
        }
    }
    pthread_mutex_lock(&p->rings[start].lock);
    return &p->rings[start];
}

ssize_t vd_uring_submit(vd_uring_pool *p, int op, int fd, void *buf, size_t len,
                        uint64_t offset)
{
    struct vd_uring_ring *r = ring_get(p);
    struct io_uring_sqe *sqe;
    struct io_uring_cqe *cqe = NULL;
    ssize_t res;
    int ret;

    if (!r->ready) {
        ret = io_uring_queue_init(URING_DEPTH, &r->ring, 0);
        if (ret < 0) {
            pthread_mutex_unlock(&r->lock);
            return ret;
        }
        r->ready = true;
    }
    sqe = io_uring_get_sqe(&r->ring);
    if (!sqe) {
        /* cannot happen: a ring only ever has one request at a time */
        pthread_mutex_unlock(&r->lock);
        return -EBUSY;
    }
    if (len > URING_MAX_IO) {
        len = URING_MAX_IO;
    }
    switch (op) {
    case VD_URING_READ:
        io_uring_prep_read(sqe, fd, buf, (unsigned)len, offset);
        break;
    case VD_URING_WRITE:
        io_uring_prep_write(sqe, fd, buf, (unsigned)len, offset);
        break;
    default:
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        break;
    }
    do {
        ret = io_uring_submit(&r->ring);
    } while (ret == -EINTR);
    if (ret < 0) {
        pthread_mutex_unlock(&r->lock);
        return ret;
    }
    do {
        ret = io_uring_wait_cqe(&r->ring, &cqe);
    } while (ret == -EINTR);
    if (ret < 0) {
        /* only -EINTR is expected, handled above */
        pthread_mutex_unlock(&r->lock);
        return ret;
    }
    res = cqe->res;
    io_uring_cqe_seen(&r->ring, cqe);
    pthread_mutex_unlock(&r->lock);
    return res;
}
