/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * TLS credentials for NBD with GnuTLS, and the --object types
 * tls-creds-x509 / tls-creds-psk, registered with the core's object
 * registry in drivers.c (see tls.h).  Follows QEMU's file layout
 * so the same directories work with qemu-nbd, qemu-img and nbdkit.
 */
#include "tls.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define TLS_PRIORITY_X509 "NORMAL"
#define TLS_PRIORITY_PSK "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK"

static bool tls_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static void tls_creds_destroy(vd_nbd_tls_creds *c)
{
    if (c->x509) {
        gnutls_certificate_free_credentials(c->x509);
    }
    if (c->psk_server) {
        gnutls_psk_free_server_credentials(c->psk_server);
    }
    if (c->psk_client) {
        gnutls_psk_free_client_credentials(c->psk_client);
    }
    for (size_t i = 0; i < c->nkeys; i++) {
        free(c->keys[i].user);
        if (c->keys[i].key) {
            memset(c->keys[i].key, 0, c->keys[i].len);
        }
        free(c->keys[i].key);
    }
    free(c->keys);
    free(c->id);
    free(c->dir);
    free(c);
}

vd_nbd_tls_creds *vd_nbd_tls_creds_ref(vd_nbd_tls_creds *c)
{
    if (c) {
        __atomic_add_fetch(&c->refs, 1, __ATOMIC_SEQ_CST);
    }
    return c;
}

void vd_nbd_tls_creds_free(vd_nbd_tls_creds *c)
{
    if (c && __atomic_sub_fetch(&c->refs, 1, __ATOMIC_SEQ_CST) == 0) {
        tls_creds_destroy(c);
    }
}

int vd_nbd_tls_creds_type(const vd_nbd_tls_creds *c)
{
    return c ? c->type : 0;
}

bool vd_nbd_tls_creds_is_server(const vd_nbd_tls_creds *c)
{
    return c && c->server;
}

static int tls_x509_load(vd_nbd_tls_creds *c, const char *dir, vd_error **errp)
{
    char path[4096], key[4096];
    int r = gnutls_certificate_allocate_credentials(&c->x509);
    if (r < 0) {
        return vd_error_set(errp, ENOMEM, "cannot allocate TLS credentials: %s",
                            gnutls_strerror(r));
    }
    snprintf(path, sizeof(path), "%s/ca-cert.pem", dir);
    if (tls_file_exists(path)) {
        r = gnutls_certificate_set_x509_trust_file(c->x509, path, GNUTLS_X509_FMT_PEM);
        if (r < 0) {
            return vd_error_set(errp, EINVAL, "cannot load CA certificate %s: %s", path,
                                gnutls_strerror(r));
        }
        snprintf(path, sizeof(path), "%s/ca-crl.pem", dir);
        if (tls_file_exists(path)) {
            r = gnutls_certificate_set_x509_crl_file(c->x509, path, GNUTLS_X509_FMT_PEM);
            if (r < 0) {
                return vd_error_set(errp, EINVAL, "cannot load CRL %s: %s", path,
                                    gnutls_strerror(r));
            }
        }
    } else if (c->server && c->verify_peer) {
        return vd_error_set(errp, ENOENT, "%s is needed to verify client certificates", path);
    } else if (!c->server) {
        /* no private CA: trust the system's */
        gnutls_certificate_set_x509_system_trust(c->x509);
    }
    const char *who = c->server ? "server" : "client";
    snprintf(path, sizeof(path), "%s/%s-cert.pem", dir, who);
    snprintf(key, sizeof(key), "%s/%s-key.pem", dir, who);
    bool have_cert = tls_file_exists(path), have_key = tls_file_exists(key);
    if (c->server && (!have_cert || !have_key)) {
        return vd_error_set(errp, ENOENT, "TLS server needs %s and %s", path, key);
    }
    if (have_cert && have_key) {
        r = gnutls_certificate_set_x509_key_file(c->x509, path, key, GNUTLS_X509_FMT_PEM);
        if (r < 0) {
            return vd_error_set(errp, EINVAL, "cannot load certificate %s / key %s: %s", path,
                                key, gnutls_strerror(r));
        }
    }
    snprintf(path, sizeof(path), "%s/dh-params.pem", dir);
    if (c->server && tls_file_exists(path)) {
        gnutls_datum_t d;
        gnutls_dh_params_t dh;
        if (gnutls_load_file(path, &d) == 0) {
            if (gnutls_dh_params_init(&dh) == 0) {
                if (gnutls_dh_params_import_pkcs3(dh, &d, GNUTLS_X509_FMT_PEM) == 0) {
                    gnutls_certificate_set_dh_params(c->x509, dh);
                } else {
                    gnutls_dh_params_deinit(dh);
                }
            }
            gnutls_free(d.data);
        }
    } else if (c->server) {
        gnutls_certificate_set_known_dh_params(c->x509, GNUTLS_SEC_PARAM_MEDIUM);
    }
    return 0;
}

static int tls_hexval(int ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    ch = tolower(ch);
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    return -1;
}

/* Read a psktool keys file: "username:hexkey" lines. */
static int tls_psk_load(vd_nbd_tls_creds *c, const char *file, vd_error **errp)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        return vd_error_setg_errno(errp, errno, "cannot open PSK file %s", file);
    }
    char line[4096 + 256];
    int lineno = 0, ret = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        size_t n = strcspn(line, "\r\n");
        line[n] = 0;
        if (!n || line[0] == '#') {
            continue;
        }
        char *colon = strchr(line, ':');
        size_t hexlen = colon ? strlen(colon + 1) : 0;
        if (!colon || colon == line || !hexlen || hexlen % 2 || hexlen / 2 > 1024) {
            ret = vd_error_set(errp, EINVAL, "%s:%d: expected username:hexkey", file, lineno);
            break;
        }
        *colon = 0;
        vd_nbd_psk_key k = {.user = strdup(line), .len = hexlen / 2};
        k.key = malloc(k.len);
        vd_nbd_psk_key *nk = realloc(c->keys, (c->nkeys + 1) * sizeof(*nk));
        if (!k.user || !k.key || !nk) {
            free(k.user);
            free(k.key);
            if (nk) {
                c->keys = nk;
            }
            ret = vd_error_set(errp, ENOMEM, "out of memory");
            break;
        }
        c->keys = nk;
        bool bad = false;
        for (size_t i = 0; i < k.len; i++) {
            int hi = tls_hexval((unsigned char)colon[1 + 2 * i]);
            int lo = tls_hexval((unsigned char)colon[2 + 2 * i]);
            if (hi < 0 || lo < 0) {
                bad = true;
                break;
            }
            k.key[i] = (uint8_t)(hi << 4 | lo);
        }
        c->keys[c->nkeys++] = k;
        if (bad) {
            ret = vd_error_set(errp, EINVAL, "%s:%d: key is not hexadecimal", file, lineno);
            break;
        }
    }
    memset(line, 0, sizeof(line));
    fclose(f);
    if (!ret && !c->nkeys) {
        ret = vd_error_set(errp, EINVAL, "PSK file %s has no keys", file);
    }
    return ret;
}

static int tls_psk_server_cb(gnutls_session_t s, const char *user, gnutls_datum_t *key)
{
    vd_nbd_tls_creds *c = gnutls_session_get_ptr(s);
    for (size_t i = 0; c && i < c->nkeys; i++) {
        if (!strcmp(c->keys[i].user, user)) {
            key->data = gnutls_malloc(c->keys[i].len);
            if (!key->data) {
                return -1;
            }
            memcpy(key->data, c->keys[i].key, c->keys[i].len);
            key->size = (unsigned)c->keys[i].len;
            return 0;
        }
    }
    return -1;
}

static vd_nbd_tls_creds *tls_creds_alloc(int type, bool server, bool verify, const char *dir)
{
    vd_nbd_tls_creds *c = calloc(1, sizeof(*c));
    if (!c) {
        return NULL;
    }
    c->type = type;
    c->server = server;
    c->verify_peer = verify;
    c->refs = 1;
    c->dir = strdup(dir ? dir : "");
    if (!c->dir) {
        free(c);
        return NULL;
    }
    return c;
}

static vd_nbd_tls_creds *tls_new_x509(const char *dir, bool server, bool verify,
                                      vd_error **errp)
{
    vd_nbd_tls_creds *c = tls_creds_alloc(VD_NBD_TLS_X509, server, verify, dir);
    if (!c) {
        vd_error_set(errp, ENOMEM, "out of memory");
        return NULL;
    }
    if (tls_x509_load(c, dir, errp) < 0) {
        tls_creds_destroy(c);
        return NULL;
    }
    return c;
}

static vd_nbd_tls_creds *tls_new_psk(const char *file, const char *user, bool server,
                                     vd_error **errp)
{
    vd_nbd_tls_creds *c = tls_creds_alloc(VD_NBD_TLS_PSK, server, false, file);
    if (!c) {
        vd_error_set(errp, ENOMEM, "out of memory");
        return NULL;
    }
    if (tls_psk_load(c, file, errp) < 0) {
        tls_creds_destroy(c);
        return NULL;
    }
    int r;
    if (server) {
        r = gnutls_psk_allocate_server_credentials(&c->psk_server);
        if (r >= 0) {
            gnutls_psk_set_server_credentials_function(c->psk_server, tls_psk_server_cb);
            gnutls_psk_set_server_known_dh_params(c->psk_server, GNUTLS_SEC_PARAM_MEDIUM);
        }
    } else {
        if (!user) {
            user = "qemu";
        }
        size_t i;
        for (i = 0; i < c->nkeys && strcmp(c->keys[i].user, user); i++) {
        }
        if (i == c->nkeys) {
            vd_error_set(errp, ENOENT, "PSK file %s has no key for user '%s'", file, user);
            tls_creds_destroy(c);
            return NULL;
        }
        r = gnutls_psk_allocate_client_credentials(&c->psk_client);
        if (r >= 0) {
            gnutls_datum_t k = {.data = c->keys[i].key, .size = (unsigned)c->keys[i].len};
            r = gnutls_psk_set_client_credentials(c->psk_client, user, &k, GNUTLS_PSK_KEY_RAW);
        }
    }
    if (r < 0) {
        vd_error_set(errp, EINVAL, "cannot set up PSK credentials: %s", gnutls_strerror(r));
        tls_creds_destroy(c);
        return NULL;
    }
    return c;
}

vd_nbd_tls_creds *vd_nbd_tls_creds_new_x509(const char *dir, bool server, bool verify_peer)
{
    vd_error *err = NULL;
    vd_nbd_tls_creds *c = tls_new_x509(dir, server, verify_peer, &err);
    if (!c) {
        vd_error_publish(err);
    }
    return c;
}

vd_nbd_tls_creds *vd_nbd_tls_creds_new_psk(const char *keys_file, const char *username,
                                           bool server)
{
    vd_error *err = NULL;
    vd_nbd_tls_creds *c = tls_new_psk(keys_file, username, server, &err);
    if (!c) {
        vd_error_publish(err);
    }
    return c;
}

static bool tls_is_ip_literal(const char *h)
{
    uint8_t buf[16];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1;
}

int vd_nbd_tls_session_setup(gnutls_session_t s, vd_nbd_tls_creds *c, const char *hostname,
                             vd_error **errp)
{
    const char *prio = c->type == VD_NBD_TLS_PSK ? TLS_PRIORITY_PSK : TLS_PRIORITY_X509;
    int r = gnutls_priority_set_direct(s, prio, NULL);
    if (r < 0) {
        return vd_error_set(errp, EINVAL, "cannot set TLS priorities: %s", gnutls_strerror(r));
    }
    gnutls_session_set_ptr(s, c);
    if (c->type == VD_NBD_TLS_PSK) {
        r = gnutls_credentials_set(s, GNUTLS_CRD_PSK,
                                   c->server ? (void *)c->psk_server : (void *)c->psk_client);
    } else {
        r = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c->x509);
        if (r >= 0 && c->server && c->verify_peer) {
            gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUIRE);
            gnutls_session_set_verify_cert(s, NULL, 0);
        } else if (r >= 0 && !c->server) {
            if (hostname && *hostname && !tls_is_ip_literal(hostname)) {
                gnutls_server_name_set(s, GNUTLS_NAME_DNS, hostname, strlen(hostname));
            }
            gnutls_session_set_verify_cert(s, hostname && *hostname ? hostname : NULL, 0);
        }
    }
    if (r < 0) {
        return vd_error_set(errp, EINVAL, "cannot set TLS credentials: %s", gnutls_strerror(r));
    }
    return 0;
}

/* ------------------------------------------------------ --object types */

static bool tls_is_type(const vd_object_type *t)
{
    return t == &vd_obj_tls_creds_x509 || t == &vd_obj_tls_creds_psk;
}

/* A registered TLS object by id, with a new reference, or NULL. */
static vd_nbd_tls_creds *tls_find(const char *id, bool *other_type)
{
    const vd_object_type *t = NULL;
    void *obj = vd_object_find(id, &t, true);
    *other_type = false;
    if (!obj) {
        return NULL;
    }
    if (!tls_is_type(t)) {
        if (t->ref) {
            t->del(obj);
        }
        *other_type = true;
        return NULL;
    }
    return obj;
}

vd_nbd_tls_creds *vd_nbd_tls_creds_lookup(const char *id)
{
    bool other = false;
    vd_nbd_tls_creds *c = id ? tls_find(id, &other) : NULL;
    if (!c) {
        vd_set_public_error(ENOENT, "No TLS credentials with id '%s'", id ? id : "");
        return NULL;
    }
    /* borrowed, as documented: the registry keeps its own reference */
    vd_nbd_tls_creds_free(c);
    return c;
}

static int tls_object_add(const char *id, const vd_opts *opts, void **obj, vd_error **errp)
{
    const char *type = vd_opts_get(opts, "qom-type");
    const char *dir = vd_opts_get(opts, "dir");
    bool psk = type && !strcmp(type, "tls-creds-psk");
    if (!dir || !*dir) {
        return vd_error_set(errp, EINVAL, "%s '%s': parameter 'dir' is missing", type, id);
    }
    const char *ep = vd_opts_get(opts, "endpoint");
    bool server;
    if (!ep || !strcmp(ep, "client")) {
        server = false; /* QEMU's default */
    } else if (!strcmp(ep, "server")) {
        server = true;
    } else {
        return vd_error_set(errp, EINVAL, "Parameter 'endpoint' does not accept value '%s'",
                            ep);
    }
    const char *vp = vd_opts_get(opts, "verify-peer");
    bool verify = true;
    if (vp) {
        int b = vd_parse_bool(vp);
        if (b < 0) {
            return vd_error_set(errp, EINVAL, "Parameter 'verify-peer' expects on or off");
        }
        verify = b;
    }
    vd_nbd_tls_creds *c;
    if (psk) {
        char *file = vd_asprintf("%s/keys.psk", dir);
        if (!file) {
            return vd_error_set(errp, ENOMEM, "out of memory");
        }
        c = tls_new_psk(file, vd_opts_get(opts, "username"), server, errp);
        free(file);
    } else {
        c = tls_new_x509(dir, server, verify, errp);
    }
    if (!c) {
        vd_error_prepend(errp, "%s '%s': ", type, id);
        return -EINVAL;
    }
    c->id = strdup(id);
    if (!c->id) {
        tls_creds_destroy(c);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    *obj = c;
    return 0;
}

static void tls_object_del(void *obj)
{
    vd_nbd_tls_creds_free(obj);
}

static void *tls_object_ref(void *obj)
{
    return vd_nbd_tls_creds_ref(obj);
}

/* QEMU's properties; priority, sanity-check and loaded are accepted and
 * have no effect here. */
static const vd_opt_desc tls_x509_props[] = {
    {"dir", VD_OPT_STRING, "directory of ca-cert.pem, server-cert.pem, ...", NULL},
    {"endpoint", VD_OPT_STRING, "server or client", "client"},
    {"verify-peer", VD_OPT_BOOL, "check the peer's certificate", "on"},
    {"priority", VD_OPT_STRING, "GnuTLS priority string (ignored)", NULL},
    {"sanity-check", VD_OPT_BOOL, "check the certificates at load time (ignored)", NULL},
    {"loaded", VD_OPT_BOOL, "(ignored)", NULL},
    {"username", VD_OPT_STRING, "PSK user name (tls-creds-psk)", NULL},
    {NULL, 0, NULL, NULL},
};

const vd_object_type vd_obj_tls_creds_x509 = {
    .type = "tls-creds-x509",
    .props = tls_x509_props,
    .add = tls_object_add,
    .del = tls_object_del,
    .ref = tls_object_ref,
};

const vd_object_type vd_obj_tls_creds_psk = {
    .type = "tls-creds-psk",
    .props = tls_x509_props,
    .add = tls_object_add,
    .del = tls_object_del,
    .ref = tls_object_ref,
};

int vd_nbd_tls_object_add_opts(const vd_opts *opts, vd_error **errp)
{
    const char *type = vd_opts_get(opts, "qom-type");
    if (!type || (strcmp(type, "tls-creds-x509") && strcmp(type, "tls-creds-psk"))) {
        return vd_error_set(errp, EINVAL, "'%s' is not a TLS credentials object",
                            type ? type : "");
    }
    return vd_object_add_parsed(opts, errp);
}

int vd_nbd_tls_object_add(const char *spec)
{
    /* only look at the type here; vd_object_add registers it */
    vd_opts *o = vd_opts_new();
    if (!o) {
        vd_set_public_error(ENOMEM, "out of memory");
        return -1;
    }
    vd_error *err = NULL;
    if (vd_opts_parse_err(o, spec, "qom-type", &err) < 0) {
        vd_opts_free(o);
        vd_error_publish(err);
        return -1;
    }
    const char *type = vd_opts_get(o, "qom-type");
    bool tls = type && (!strcmp(type, "tls-creds-x509") || !strcmp(type, "tls-creds-psk"));
    vd_opts_free(o);
    if (!tls) {
        return 0;
    }
    return vd_object_add(spec) < 0 ? -1 : 1;
}

vd_nbd_tls_creds *vd_nbd_tls_creds_get(const char *id_or_dir, bool server, vd_error **errp)
{
    bool other = false;
    vd_nbd_tls_creds *found = tls_find(id_or_dir, &other);
    if (found) {
        if (found->server != server) {
            vd_nbd_tls_creds_free(found);
            vd_error_set(errp, EINVAL, "Expecting TLS credentials with a %s endpoint",
                         server ? "server" : "client");
            return NULL;
        }
        return found;
    }
    struct stat st;
    if (stat(id_or_dir, &st) == 0 && S_ISDIR(st.st_mode)) {
        return tls_new_x509(id_or_dir, server, !server, errp);
    }
    vd_error_set(errp, ENOENT, "No TLS credentials with id '%s'", id_or_dir);
    return NULL;
}
