/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * NBD connection byte stream: plain socket or GnuTLS, buffered reads,
 * deadlines (see conn.h).
 */
#include "conn.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tls.h"

#define CONN_RBUF_SIZE (32u * 1024)

int64_t vd_nbd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int vd_nbd_conn_init(vd_nbd_conn *c, int fd)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->rcap = CONN_RBUF_SIZE;
    c->rbuf = malloc(c->rcap);
    if (!c->rbuf) {
        return -ENOMEM;
    }
    return 0;
}

/* Wait until fd is ready for events or the deadline passes. */
static int conn_wait(vd_nbd_conn *c, short events)
{
    if (!c->deadline) {
        return 0;
    }
    for (;;) {
        int64_t left = c->deadline - vd_nbd_now_ms();
        if (left <= 0) {
            c->timed_out = true;
            return -ETIMEDOUT;
        }
        struct pollfd p = {.fd = c->fd, .events = events};
        int r = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
        if (r > 0) {
            return 0;
        }
        if (r < 0 && errno != EINTR) {
            return -errno;
        }
    }
}

/* Raw receive of up to len bytes: >0, 0 at EOF, or -errno. */
static ssize_t conn_raw_recv(vd_nbd_conn *c, void *buf, size_t len)
{
    for (;;) {
        int w = c->nonblock ? 0 : conn_wait(c, POLLIN);
        if (w < 0) {
            return w;
        }
        ssize_t n = recv(c->fd, buf, len, c->nonblock ? MSG_DONTWAIT : 0);
        if (n >= 0) {
            return n;
        }
        if (c->nonblock && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return -EAGAIN;
        }
        if (errno != EINTR && errno != EAGAIN) {
            return -errno;
        }
    }
}

/* GnuTLS transport callbacks: our socket with the deadline applied. */
static ssize_t conn_tls_pull(gnutls_transport_ptr_t p, void *buf, size_t len)
{
    vd_nbd_conn *c = p;
    ssize_t n = conn_raw_recv(c, buf, len);
    if (n < 0) {
        gnutls_transport_set_errno(c->tls, (int)-n);
        return -1;
    }
    return n;
}

static ssize_t conn_tls_push(gnutls_transport_ptr_t p, const void *buf, size_t len)
{
    vd_nbd_conn *c = p;
    for (;;) {
        int w = conn_wait(c, POLLOUT);
        if (w < 0) {
            gnutls_transport_set_errno(c->tls, -w);
            return -1;
        }
        ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
        if (n >= 0) {
            return n;
        }
        if (errno != EINTR && errno != EAGAIN) {
            gnutls_transport_set_errno(c->tls, errno);
            return -1;
        }
    }
}

static ssize_t conn_tls_vec_push(gnutls_transport_ptr_t p, const giovec_t *iov, int n)
{
    vd_nbd_conn *c = p;
    for (;;) {
        int w = conn_wait(c, POLLOUT);
        if (w < 0) {
            gnutls_transport_set_errno(c->tls, -w);
            return -1;
        }
        struct msghdr m = {.msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)n};
        ssize_t r = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (r >= 0) {
            return r;
        }
        if (errno != EINTR && errno != EAGAIN) {
            gnutls_transport_set_errno(c->tls, errno);
            return -1;
        }
    }
}

/* Receive up to len bytes from the stream (TLS or plain): >0, 0 EOF, -errno. */
static ssize_t conn_recv_some(vd_nbd_conn *c, void *buf, size_t len)
{
    if (!c->tls) {
        return conn_raw_recv(c, buf, len);
    }
    for (;;) {
        ssize_t n = gnutls_record_recv(c->tls, buf, len);
        if (n >= 0) {
            return n;
        }
        if (n == GNUTLS_E_AGAIN && c->nonblock) {
            return -EAGAIN; /* GnuTLS keeps a partly received record */
        }
        if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN) {
            continue;
        }
        if (n == GNUTLS_E_PREMATURE_TERMINATION) {
            return 0;
        }
        if (n == GNUTLS_E_PULL_ERROR) {
            return c->timed_out ? -ETIMEDOUT : -ECONNRESET;
        }
        return -EIO;
    }
}

int vd_nbd_conn_read(vd_nbd_conn *c, void *buf, size_t len)
{
    uint8_t *out = buf;
    size_t done = 0;
    while (done < len) {
        if (c->rpos < c->rlen) {
            size_t n = VD_MIN(len - done, c->rlen - c->rpos);
            memcpy(out + done, c->rbuf + c->rpos, n);
            c->rpos += n;
            done += n;
            continue;
        }
        if (c->eof) {
            return done ? -ECONNRESET : -ENODATA;
        }
        ssize_t n;
        if (len - done >= c->rcap) {
            /* big payloads go straight to the caller's buffer */
            n = conn_recv_some(c, out + done, len - done);
            if (n > 0) {
                done += (size_t)n;
                continue;
            }
        } else {
            n = conn_recv_some(c, c->rbuf, c->rcap);
            if (n > 0) {
                c->rpos = 0;
                c->rlen = (size_t)n;
                continue;
            }
        }
        if (n == 0) {
            c->eof = true;
            return done ? -ECONNRESET : -ENODATA;
        }
        return (int)n;
    }
    return 0;
}

ssize_t vd_nbd_conn_read_some(vd_nbd_conn *c, void *buf, size_t len)
{
    if (!len) {
        return 0;
    }
    if (c->rpos < c->rlen) {
        size_t n = VD_MIN(len, c->rlen - c->rpos);
        memcpy(buf, c->rbuf + c->rpos, n);
        c->rpos += n;
        return (ssize_t)n;
    }
    if (c->eof) {
        return 0;
    }
    c->nonblock = true;
    ssize_t n;
    if (len >= c->rcap) {
        /* big payloads go straight to the caller's buffer */
        n = conn_recv_some(c, buf, len);
    } else {
        n = conn_recv_some(c, c->rbuf, c->rcap);
        if (n > 0) {
            c->rpos = 0;
            c->rlen = (size_t)n;
            n = (ssize_t)VD_MIN(len, (size_t)n);
            memcpy(buf, c->rbuf, (size_t)n);
            c->rpos = (size_t)n;
        }
    }
    c->nonblock = false;
    if (n == 0) {
        c->eof = true;
    }
    return n;
}

int vd_nbd_conn_skip(vd_nbd_conn *c, uint64_t len)
{
    uint8_t tmp[4096];
    while (len) {
        size_t n = len > sizeof(tmp) ? sizeof(tmp) : (size_t)len;
        int r = vd_nbd_conn_read(c, tmp, n);
        if (r < 0) {
            return r == -ENODATA ? -ECONNRESET : r;
        }
        len -= n;
    }
    return 0;
}

bool vd_nbd_conn_pending(vd_nbd_conn *c)
{
    if (c->rpos < c->rlen) {
        return true;
    }
    return c->tls && gnutls_record_check_pending(c->tls) > 0;
}

static int conn_tls_send(vd_nbd_conn *c, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len) {
        ssize_t n = gnutls_record_send(c->tls, p, len);
        if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN) {
            continue;
        }
        if (n < 0) {
            return c->timed_out ? -ETIMEDOUT : -EPIPE;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int vd_nbd_conn_writev(vd_nbd_conn *c, const struct iovec *iov, int n)
{
    if (c->tls) {
        /* coalesce the pieces into as few records as possible */
        gnutls_record_cork(c->tls);
        for (int i = 0; i < n; i++) {
            if (iov[i].iov_len) {
                int r = conn_tls_send(c, iov[i].iov_base, iov[i].iov_len);
                if (r < 0) {
                    gnutls_record_uncork(c->tls, 0);
                    return r;
                }
            }
        }
        for (;;) {
            int r = gnutls_record_uncork(c->tls, GNUTLS_RECORD_WAIT);
            if (r >= 0) {
                return 0;
            }
            if (r != GNUTLS_E_INTERRUPTED && r != GNUTLS_E_AGAIN) {
                return -EPIPE;
            }
        }
    }
    struct iovec local[64];
    struct iovec *heap = NULL;
    struct iovec *v = local;
    if (n > (int)VD_ARRAY_SIZE(local)) {
        heap = malloc(sizeof(*iov) * (size_t)n);
        if (!heap) {
            return -ENOMEM;
        }
        v = heap;
    }
    memcpy(v, iov, sizeof(*iov) * (size_t)n);
    int ret = 0;
    while (n > 0) {
        int w = conn_wait(c, POLLOUT);
        if (w < 0) {
            ret = w;
            break;
        }
        struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)(n > 1024 ? 1024 : n)};
        ssize_t r = sendmsg(c->fd, &m, MSG_NOSIGNAL);
        if (r < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            ret = -errno;
            break;
        }
        size_t done = (size_t)r;
        while (n > 0 && done >= v->iov_len) {
            done -= v->iov_len;
            v++;
            n--;
        }
        if (n > 0) {
            v->iov_base = (uint8_t *)v->iov_base + done;
            v->iov_len -= done;
        }
    }
    free(heap);
    return ret;
}

int vd_nbd_conn_write(vd_nbd_conn *c, const void *buf, size_t len)
{
    struct iovec v = {.iov_base = (void *)buf, .iov_len = len};
    return vd_nbd_conn_writev(c, &v, 1);
}

int vd_nbd_conn_starttls(vd_nbd_conn *c, vd_nbd_tls_creds *creds, bool server,
                         const char *hostname, vd_error **errp)
{
    if (c->rpos < c->rlen) {
        /* bytes sent before the upgrade could be injected by anyone on
         * the path: refuse rather than interpret them after TLS starts */
        return vd_error_set(errp, EPROTO, "data received before the TLS handshake");
    }
    if (creds->server != server) {
        return vd_error_set(errp, EINVAL, "TLS credentials are for the %s endpoint",
                            creds->server ? "server" : "client");
    }
    gnutls_session_t s;
    int r = gnutls_init(&s, server ? GNUTLS_SERVER : GNUTLS_CLIENT);
    if (r < 0) {
        return vd_error_set(errp, ENOMEM, "cannot start TLS: %s", gnutls_strerror(r));
    }
    r = vd_nbd_tls_session_setup(s, creds, hostname, errp);
    if (r < 0) {
        gnutls_deinit(s);
        return r;
    }
    c->tls = s;
    gnutls_transport_set_ptr(s, c);
    gnutls_transport_set_pull_function(s, conn_tls_pull);
    gnutls_transport_set_push_function(s, conn_tls_push);
    gnutls_transport_set_vec_push_function(s, conn_tls_vec_push);
    for (;;) {
        r = gnutls_handshake(s);
        if (r >= 0) {
            break;
        }
        if (!gnutls_error_is_fatal(r)) {
            continue;
        }
        const char *why = gnutls_strerror(r);
        if (c->timed_out) {
            why = "timed out";
        }
        c->tls = NULL;
        gnutls_deinit(s);
        return vd_error_set(errp, EPROTO, "TLS handshake failed: %s", why);
    }
    return 0;
}

void vd_nbd_conn_shutdown(vd_nbd_conn *c)
{
    if (c->fd >= 0) {
        shutdown(c->fd, SHUT_RDWR);
    }
}

void vd_nbd_conn_close(vd_nbd_conn *c)
{
    if (c->tls) {
        /* best effort, never long: the peer may be gone or hostile */
        c->deadline = vd_nbd_now_ms() + 1000;
        gnutls_bye(c->tls, GNUTLS_SHUT_WR);
        gnutls_deinit(c->tls);
        c->tls = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
    free(c->rbuf);
    c->rbuf = NULL;
    c->rpos = c->rlen = 0;
}
