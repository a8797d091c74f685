/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * TLS credentials for NBD (GnuTLS): X.509 certificate directories laid out
 * as QEMU's tls-creds-x509 objects (ca-cert.pem, server-cert.pem,
 * server-key.pem, client-cert.pem, client-key.pem, dh-params.pem) and
 * pre-shared keys files as psktool writes them ("username:hexkey" lines,
 * QEMU's DIR/keys.psk or nbdkit's --tls-psk=FILE).
 */
#ifndef VD_NBD_TLS_H
#define VD_NBD_TLS_H

#include <gnutls/gnutls.h>
#include <pthread.h>

#include "internal.h"
#include "vdisk-nbd.h"

typedef struct vd_nbd_psk_key {
    char *user;
    uint8_t *key;
    size_t len;
} vd_nbd_psk_key;

struct vd_nbd_tls_creds {
    int type; /* VD_NBD_TLS_X509 / VD_NBD_TLS_PSK */
    bool server;
    bool verify_peer;
    char *id;  /* object id, or NULL */
    char *dir; /* for messages */
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk_server;
    gnutls_psk_client_credentials_t psk_client;
    vd_nbd_psk_key *keys;
    size_t nkeys;
    int refs;
};

/* Set up a session's credentials and priorities for creds. */
int vd_nbd_tls_session_setup(gnutls_session_t s, vd_nbd_tls_creds *creds, const char *hostname,
                             vd_error **errp);

/* New reference. */
vd_nbd_tls_creds *vd_nbd_tls_creds_ref(vd_nbd_tls_creds *c);

/* The --object types (registered in src/core/drivers.c). */
extern const vd_object_type vd_obj_tls_creds_x509;
extern const vd_object_type vd_obj_tls_creds_psk;

/*
 * Add a tls-creds-x509 / tls-creds-psk object from its options (through
 * the core's object registry).  Returns 0, or -errno with a message.
 */
int vd_nbd_tls_object_add_opts(const vd_opts *opts, vd_error **errp);

/*
 * Credentials the client driver's "tls-creds" option names: a registered
 * object id, else a directory of X.509 client files.  New reference.
 */
vd_nbd_tls_creds *vd_nbd_tls_creds_get(const char *id_or_dir, bool server, vd_error **errp);

#endif
