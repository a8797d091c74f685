/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * One NBD connection's byte stream: a socket, optionally wrapped in a
 * GnuTLS session after NBD_OPT_STARTTLS, with a small read buffer (many
 * request headers per recv) and an optional deadline that bounds every
 * read and write (the handshake limit).
 *
 * Threads: one reader at a time (the caller serialises reads) and one
 * writer at a time (the caller serialises writes); a reader and a writer
 * may run concurrently, GnuTLS allows that on one session.
 */
#ifndef VD_NBD_CONN_H
#define VD_NBD_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <gnutls/gnutls.h>

#include "internal.h"

typedef struct vd_nbd_tls_creds vd_nbd_tls_creds;

typedef struct vd_nbd_conn {
    int fd;
    gnutls_session_t tls; /* NULL while plain */
    /* CLOCK_MONOTONIC milliseconds after which I/O fails with ETIMEDOUT;
     * 0 = no deadline.  Only changed while no other thread uses the conn. */
    int64_t deadline;
    uint8_t *rbuf;
    size_t rpos, rlen, rcap;
    bool eof;
    bool timed_out; /* the deadline passed (TLS errors hide errno) */
    bool nonblock;  /* set by vd_nbd_conn_read_some() while it reads */
} vd_nbd_conn;

/* Monotonic clock in milliseconds. */
int64_t vd_nbd_now_ms(void);

int vd_nbd_conn_init(vd_nbd_conn *c, int fd);
/* Say goodbye to TLS (bounded wait), close the socket, free buffers. */
void vd_nbd_conn_close(vd_nbd_conn *c);
/* Wake threads blocked in reads/writes (shutdown(2)); the fd stays open. */
void vd_nbd_conn_shutdown(vd_nbd_conn *c);

/*
 * Read exactly len bytes.  0, or -errno: -ECONNRESET when the peer closed
 * (-ENODATA when it closed cleanly before the first byte), -ETIMEDOUT
 * past the deadline, -EIO for TLS errors.
 */
int vd_nbd_conn_read(vd_nbd_conn *c, void *buf, size_t len);
/*
 * Read up to len bytes without waiting (the socket may stay blocking for
 * writes): >0 bytes read, 0 at EOF, -EAGAIN when nothing is available
 * yet (a TLS record may be partly received: GnuTLS keeps it), or -errno.
 * After it returns, vd_nbd_conn_pending() tells whether more bytes are
 * already buffered; when not, wait for the socket to become readable.
 */
ssize_t vd_nbd_conn_read_some(vd_nbd_conn *c, void *buf, size_t len);
/* Read and discard len bytes (64-bit: option/payload lengths). */
int vd_nbd_conn_skip(vd_nbd_conn *c, uint64_t len);
/* True when bytes are already buffered (ours or GnuTLS's). */
bool vd_nbd_conn_pending(vd_nbd_conn *c);

/* Write everything.  0 or -errno. */
int vd_nbd_conn_writev(vd_nbd_conn *c, const struct iovec *iov, int n);
int vd_nbd_conn_write(vd_nbd_conn *c, const void *buf, size_t len);

/*
 * Upgrade to TLS.  Fails (-EPROTO) when plaintext bytes are already
 * buffered: they were sent before the upgrade and must not be trusted.
 * hostname (client): name the server certificate must carry, or NULL.
 */
int vd_nbd_conn_starttls(vd_nbd_conn *c, vd_nbd_tls_creds *creds, bool server,
                         const char *hostname, vd_error **errp);

#endif
