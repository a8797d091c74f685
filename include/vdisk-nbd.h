/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libvdisk NBD server API: export open images over the NBD protocol
 * (fixed newstyle, structured replies, extended headers, block status,
 * TLS), and list the exports of a remote server.
 *
 * Same conventions as vdisk.h: 0 / pointer on success, -1 / NULL on
 * failure with the message in vd_get_error() and errno in vd_get_errno().
 * The library never prints: the server reports through a log callback.
 */
#ifndef VDISK_NBD_H
#define VDISK_NBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vdisk.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

/* ------------------------------------------------------ TLS credentials */

typedef struct vd_nbd_tls_creds vd_nbd_tls_creds;

enum {
    VD_NBD_TLS_X509 = 1,
    VD_NBD_TLS_PSK = 2,
};

/*
 * X.509 credentials from a directory laid out as QEMU's tls-creds-x509:
 * ca-cert.pem, and server-cert.pem + server-key.pem (server) or optional
 * client-cert.pem + client-key.pem (client).  verify_peer: a server
 * requires and checks a client certificate; a client checks the server's
 * (always, when ca-cert.pem exists; with system CAs otherwise).
 */
vd_nbd_tls_creds *vd_nbd_tls_creds_new_x509(const char *dir, bool server, bool verify_peer);
/*
 * Pre-shared keys from a psktool file ("username:hexkey" per line).  A
 * client uses username's key (NULL: "qemu", as QEMU does); a server
 * accepts every user in the file.
 */
vd_nbd_tls_creds *vd_nbd_tls_creds_new_psk(const char *keys_file, const char *username,
                                           bool server);
/* Drop a reference (NULL is fine). */
void vd_nbd_tls_creds_free(vd_nbd_tls_creds *creds);
/* VD_NBD_TLS_X509 or VD_NBD_TLS_PSK. */
int vd_nbd_tls_creds_type(const vd_nbd_tls_creds *creds);

/*
 * QEMU's --object for TLS: "tls-creds-x509,id=ID,dir=DIR[,endpoint=server|
 * client][,verify-peer=on|off]" or "tls-creds-psk,id=ID,dir=DIR
 * [,endpoint=..][,username=U]" (DIR/keys.psk).  Returns 1 when spec was a
 * TLS object and was registered, 0 when it is another kind of object
 * (nothing done), -1 on error.
 */
int vd_nbd_tls_object_add(const char *spec);
/* A registered object by id (borrowed reference), or NULL (ENOENT). */
vd_nbd_tls_creds *vd_nbd_tls_creds_lookup(const char *id);
/* Whether a registered object is for the server endpoint. */
bool vd_nbd_tls_creds_is_server(const vd_nbd_tls_creds *creds);

/* ---------------------------------------------------------------- server */

typedef struct vd_nbd_server vd_nbd_server;

/*
 * One export.  Zero-initialise, then set what you need; fields are only
 * ever appended.
 */
typedef struct vd_nbd_export_opts {
    const char *name;        /* NULL or "" = the default export */
    const char *description; /* NULL = none */
    vd_image *image;         /* not taken over; must outlive the server */
    uint64_t offset;         /* the export starts here in the image */
    uint64_t size;           /* 0 = up to the end of the image */
    bool read_only;
    bool writethrough;     /* every write is made durable before its reply */
    bool allocation_depth; /* offer "qemu:allocation-depth" */
    const char *bitmap;    /* offer "qemu:dirty-bitmap:NAME", or NULL */
    int multi_conn;        /* 1 advertise, 0 do not, -1 auto (when the
                              server allows more than one connection) */
} vd_nbd_export_opts;

typedef enum vd_nbd_log_level {
    VD_NBD_LOG_ERROR,   /* the server itself cannot go on */
    VD_NBD_LOG_WARNING, /* a client misbehaved and was dropped */
    VD_NBD_LOG_INFO,    /* connections, negotiation (-v) */
    VD_NBD_LOG_DEBUG,   /* every option and request (-v -v) */
} vd_nbd_log_level;

typedef void vd_nbd_log_fn(void *opaque, vd_nbd_log_level level, const char *msg);

vd_nbd_server *vd_nbd_server_new(void);
/* Stops serving (if needed) and frees; the images stay open. */
void vd_nbd_server_free(vd_nbd_server *srv);

int vd_nbd_server_add_export(vd_nbd_server *srv, const vd_nbd_export_opts *opts);
/* Require TLS (takes a new reference; NULL turns TLS off). */
int vd_nbd_server_set_tls(vd_nbd_server *srv, vd_nbd_tls_creds *creds);
/* Simultaneous connections (qemu-nbd -e); 0 = unlimited.  Default 1. */
void vd_nbd_server_set_max_connections(vd_nbd_server *srv, unsigned n);
/* Keep serving after the last client left (qemu-nbd -t).  Default off. */
void vd_nbd_server_set_persistent(vd_nbd_server *srv, bool persistent);
/* Drop clients that have not finished the handshake after ms; 0 = never.
 * Default 10000. */
void vd_nbd_server_set_handshake_limit(vd_nbd_server *srv, unsigned ms);
/* Worker threads shared by all connections (requests served in parallel);
 * started as needed.  0 (default) = automatic: 8 per core, 16 to 48. */
void vd_nbd_server_set_threads(vd_nbd_server *srv, unsigned n);
/* Payload bytes one connection may hold in flight.  Default 64 MiB. */
void vd_nbd_server_set_client_memory(vd_nbd_server *srv, uint64_t bytes);
void vd_nbd_server_set_log(vd_nbd_server *srv, vd_nbd_log_level max_level, vd_nbd_log_fn *fn,
                           void *opaque);

/*
 * Accept and serve clients on the listening sockets until
 * vd_nbd_server_stop(), or, when not persistent, until a client that
 * reached the transmission phase disconnected and no other is left.
 * Returns 0, or -1 when accepting failed.  Flushes the exports on return.
 */
int vd_nbd_server_serve(vd_nbd_server *srv, const int *listen_fds, size_t n);
/* Ask serve() to return; async-signal-safe. */
void vd_nbd_server_stop(vd_nbd_server *srv);
/* Serve one already connected socket (fd is taken over) and return when
 * the client is gone.  For tests, fuzzing and inetd-style use. */
int vd_nbd_server_handle_fd(vd_nbd_server *srv, int fd);

/* Listening sockets.  TCP: every address host resolves to (NULL = any). */
int vd_nbd_listen_tcp(const char *host, const char *port, int **fds, size_t *nfds);
/* Unix socket at path (an existing socket file is replaced). */
int vd_nbd_listen_unix(const char *path);

/* ---------------------------------------------------------------- client */

typedef struct vd_nbd_export_info {
    char *name;
    char *description; /* NULL when the server gave none */
    uint64_t size;
    uint16_t flags;                            /* transmission flags */
    uint32_t min_block, pref_block, max_block; /* 0 = not advertised */
    char **contexts;                           /* metadata contexts the server offers */
    size_t ncontexts;
    bool info_failed; /* the server refused NBD_OPT_INFO on it */
} vd_nbd_export_info;

/*
 * List a remote server's exports with their details (qemu-nbd -L).
 * Connects to path (a unix socket) when not NULL, else host:port (NULL =
 * localhost:10809).  tls may be NULL.
 */
int vd_nbd_list_exports(const char *host, const char *port, const char *path,
                        vd_nbd_tls_creds *tls, const char *tls_hostname,
                        vd_nbd_export_info **list, size_t *count);
void vd_nbd_export_info_free(vd_nbd_export_info *list, size_t count);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* VDISK_NBD_H */
