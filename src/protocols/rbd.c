/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The `rbd` protocol driver: a Ceph RBD image as a node, through librados
 * and librbd (the libraries speak the Ceph protocol; nothing of it is here).
 *
 * Behaviour follows QEMU 7.2's block/rbd.c:
 *  - filenames rbd:POOL[/NAMESPACE]/IMAGE[@SNAP][:KEY=VALUE[:...]], where a
 *    backslash escapes the next character, `conf` names the Ceph
 *    configuration file, `id` the user, and every other KEY=VALUE is handed
 *    to rados_conf_set (mon_host, keyring, auth_supported,
 *    client_mount_timeout...), in order;
 *  - options pool, namespace, image, snapshot, conf, user, key-secret
 *    (an --object secret holding the key), password-secret (its legacy
 *    name), server.N.host/port (mon_host), auth-client-required (a list
 *    of cephx|none);
 *  - a snapshot opens read-only; writes past the end grow the image (RBD
 *    cannot grow on its own, and formats on top append); block status from
 *    rbd_diff_iterate2 on images with a valid fast-diff object map;
 *  - create with cluster_size as the object size (a power of two, >= 4 KiB).
 * I/O goes through librbd's aio calls, one completion per request, so that
 * the requests of many threads are in flight together.
 * Snapshots are listed (info, snapshot -l) but not made, applied or
 * deleted here (use `rbd snap`).
 * Not supported: RBD encryption (encrypt.*), QEMU's json: names in messages (the
 * node is named rbd:POOL/[NAMESPACE/]IMAGE[@SNAP], without keys).
 */
#include <json-c/json.h>
#include <rados/librados.h>
#include <rbd/librbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* the stop signal of the diff_iterate2 callback (any value no errno takes) */
#define RBD_DIFF_STOP (-9000)
/* discards and zero writes go to librbd in pieces of at most this */
#define RBD_MAX_DISCARD (1u << 30)

typedef struct rbd_state {
    rados_t cluster;
    rados_ioctx_t io_ctx;
    rbd_image_t image;
    uint64_t object_size;
    pthread_mutex_t lock; /* size changes (growth on write, truncate) */
    uint64_t size;        /* as far as this node knows, under lock */
    bool lock_init;
} rbd_state;

static const vd_opt_desc rbd_open_opts[] = {
    {"pool", VD_OPT_STRING, "Rados pool name", NULL},
    {"namespace", VD_OPT_STRING, "Rados namespace name in the pool", NULL},
    {"image", VD_OPT_STRING, "Image name in the pool", NULL},
    {"conf", VD_OPT_STRING, "Rados config file location", NULL},
    {"snapshot", VD_OPT_STRING, "Ceph snapshot name", NULL},
    {"user", VD_OPT_STRING, "Rados id name", NULL},
    {"key-secret", VD_OPT_STRING, "ID of secret providing the password", NULL},
    {"password-secret", VD_OPT_STRING, "ID of secret providing the password (legacy)", NULL},
    {NULL, 0, NULL, NULL},
};

/* keys the open parses itself: server.N.host/port, the auth list, and the
 * KEY=VALUE pairs of a filename (a name no option string can set) */
#define RBD_KEYPAIRS "=keyvalue-pairs"
static const char *const rbd_opt_prefixes[] = {
    "server",
    "auth-client-required",
    RBD_KEYPAIRS,
    NULL,
};

static const vd_opt_desc rbd_create_opts[] = {
    {"cluster_size", VD_OPT_SIZE, "RBD object size", NULL},
    {"password-secret", VD_OPT_STRING, "ID of secret providing the password", NULL},
    {NULL, 0, NULL, NULL},
};

static const char *const rbd_protocols[] = {"rbd", NULL};

/* The first delim in src that no backslash escapes, or NULL. */
static char *rbd_strchr(char *src, char delim)
{
    for (char *p = src; *p; p++) {
        if (*p == delim) {
            return p;
        }
        if (*p == '\\' && p[1] != '\0') {
            p++;
        }
    }
    return NULL;
}

/*
 * The token of src up to delim (not escaped by a backslash): cut there and
 * return it, *p after the delimiter or NULL when there was none.
 */
static char *rbd_next_tok(char *src, char delim, char **p)
{
    char *end = rbd_strchr(src, delim);
    *p = NULL;
    if (end) {
        *p = end + 1;
        *end = '\0';
    }
    return src;
}

static void rbd_unescape(char *s)
{
    char *o = s;
    for (; *s; s++, o++) {
        if (*s == '\\' && s[1] != '\0') {
            s++;
        }
        *o = *s;
    }
    *o = '\0';
}

/* rbd:POOL[/NAMESPACE]/IMAGE[@SNAP][:KEY=VALUE...] into options */
static int rbd_parse_filename(const char *filename, vd_opts *opts, vd_error **errp)
{
    if (strncmp(filename, "rbd:", 4) != 0) {
        return vd_error_set(errp, EINVAL, "File name must start with 'rbd:'");
    }
    char *buf = strdup(filename + 4);
    json_object *pairs = NULL;
    if (!buf) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    int ret = 0;
    char *p = buf;
    char *tok = rbd_next_tok(p, '/', &p);
    if (!p) {
        ret = vd_error_set(errp, EINVAL, "Pool name is required");
        goto out;
    }
    rbd_unescape(tok);
    vd_opts_set(opts, "pool", tok);

    /* as QEMU: an unescaped '@' anywhere after the pool starts the
     * snapshot name, even one inside a later KEY=VALUE */
    char *image;
    if (rbd_strchr(p, '@')) {
        image = rbd_next_tok(p, '@', &p);
        tok = rbd_next_tok(p, ':', &p);
        rbd_unescape(tok);
        vd_opts_set(opts, "snapshot", tok);
    } else {
        image = rbd_next_tok(p, ':', &p);
    }
    if (rbd_strchr(image, '/')) {
        tok = rbd_next_tok(image, '/', &image);
        rbd_unescape(tok);
        vd_opts_set(opts, "namespace", tok);
    } else {
        vd_opts_set(opts, "namespace", "");
    }
    rbd_unescape(image);
    vd_opts_set(opts, "image", image);

    while (p) {
        char *name = rbd_next_tok(p, '=', &p);
        if (!p) {
            ret = vd_error_set(errp, EINVAL, "conf option %s has no value", name);
            goto out;
        }
        rbd_unescape(name);
        char *value = rbd_next_tok(p, ':', &p);
        rbd_unescape(value);
        if (!strcmp(name, "conf")) {
            vd_opts_set(opts, "conf", value);
        } else if (!strcmp(name, "id")) {
            vd_opts_set(opts, "user", value);
        } else {
            if (!pairs && !(pairs = json_object_new_array())) {
                ret = vd_error_set(errp, ENOMEM, "out of memory");
                goto out;
            }
            json_object_array_add(pairs, json_object_new_string(name));
            json_object_array_add(pairs, json_object_new_string(value));
        }
    }
    if (pairs) {
        vd_opts_set(opts, RBD_KEYPAIRS,
                    json_object_to_json_string_ext(pairs, JSON_C_TO_STRING_PLAIN));
    }
out:
    json_object_put(pairs);
    free(buf);
    return ret;
}

/* standard base64 of len bytes (rados takes the key in this form) */
static char *rbd_base64(const uint8_t *d, size_t len)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = vd_malloc((len + 2) / 3 * 4 + 1);
    if (!out) {
        return NULL;
    }
    char *o = out;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < len) {
            v |= (uint32_t)d[i + 1] << 8;
        }
        if (i + 2 < len) {
            v |= d[i + 2];
        }
        *o++ = tab[(v >> 18) & 63];
        *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < len ? tab[(v >> 6) & 63] : '=';
        *o++ = i + 2 < len ? tab[v & 63] : '=';
    }
    *o = 0;
    return out;
}

/* mon_host from server.N.host / server.N.port, or NULL with *err 0 */
static char *rbd_mon_host(const vd_opts *opts, vd_error **errp, int *err)
{
    *err = 0;
    vd_opts *srv = vd_opts_extract_prefix(opts, "server");
    if (!srv) {
        *err = vd_error_set(errp, ENOMEM, "out of memory");
        return NULL;
    }
    char *acc = NULL;
    for (unsigned i = 0;; i++) {
        char key[48];
        snprintf(key, sizeof(key), "%u.host", i);
        const char *host = vd_opts_get(srv, key);
        snprintf(key, sizeof(key), "%u.port", i);
        const char *port = vd_opts_get(srv, key);
        if (!host && !port) {
            break;
        }
        if (!host || !port) {
            *err = vd_error_set(errp, EINVAL, "Parameter 'server.%u.%s' is missing", i,
                                host ? "port" : "host");
            break;
        }
        bool v6 = strchr(host, ':') != NULL;
        char *n = vd_asprintf("%s%s%s%s%s:%s", acc ? acc : "", acc ? ";" : "", v6 ? "[" : "",
                              host, v6 ? "]" : "", port);
        free(acc);
        acc = n;
        if (!acc) {
            *err = vd_error_set(errp, ENOMEM, "out of memory");
            break;
        }
    }
    /* keys below server. that are not N.host / N.port */
    for (size_t i = 0; !*err && i < vd_opts_count(srv); i++) {
        const char *k = vd_opts_key(srv, i);
        char *end;
        unsigned long n = strtoul(k, &end, 10);
        (void)n;
        if (end == k || (strcmp(end, ".host") && strcmp(end, ".port"))) {
            *err = vd_error_set(errp, EINVAL, "Invalid parameter 'server.%s'", k);
        }
    }
    vd_opts_free(srv);
    if (*err) {
        free(acc);
        return NULL;
    }
    return acc;
}

/* auth_client_required from auth-client-required (a list, or one value) */
static int rbd_auth_list(const vd_opts *opts, char **out, vd_error **errp)
{
    *out = NULL;
    const char *one = vd_opts_get(opts, "auth-client-required");
    vd_opts *l = vd_opts_extract_prefix(opts, "auth-client-required");
    if (!l) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    char *acc = one ? vd_strdup(one) : NULL;
    int ret = 0;
    for (unsigned i = 0; i < vd_opts_count(l); i++) {
        char key[24];
        snprintf(key, sizeof(key), "%u", i);
        const char *v = vd_opts_get(l, key);
        if (!v) {
            ret = vd_error_set(errp, EINVAL, "Invalid parameter 'auth-client-required.%s'",
                               vd_opts_key(l, i));
            break;
        }
        char *n = vd_asprintf("%s%s%s", acc ? acc : "", acc ? ";" : "", v);
        free(acc);
        acc = n;
    }
    vd_opts_free(l);
    for (char *p = acc; !ret && p && *p;) {
        size_t n = strcspn(p, ";");
        if (!((n == 5 && !strncmp(p, "cephx", 5)) || (n == 4 && !strncmp(p, "none", 4)))) {
            ret = vd_error_set(errp, EINVAL,
                               "Parameter 'auth-client-required' does not accept value '%.*s'",
                               (int)n, p);
        }
        p += n + (p[n] == ';');
    }
    if (ret) {
        free(acc);
        return ret;
    }
    *out = acc;
    return 0;
}

/* The KEY=VALUE pairs of a filename, in order, to rados_conf_set. */
static int rbd_set_keypairs(rados_t cluster, const char *json, vd_error **errp)
{
    json_object *a = json_tokener_parse(json);
    int ret = 0;
    if (!a || !json_object_is_type(a, json_type_array) || json_object_array_length(a) % 2) {
        ret = vd_error_set(errp, EINVAL, "Invalid key/value pairs");
        goto out;
    }
    for (size_t i = 0; i + 1 < json_object_array_length(a); i += 2) {
        const char *name = json_object_get_string(json_object_array_get_idx(a, i));
        const char *value = json_object_get_string(json_object_array_get_idx(a, i + 1));
        int r = rados_conf_set(cluster, name, value);
        if (r < 0) {
            ret = vd_error_setg_errno(errp, r, "invalid conf option %s", name);
            ret = -EINVAL;
            goto out;
        }
    }
out:
    json_object_put(a);
    return ret;
}

/*
 * Connect to the cluster and open the pool (and namespace) named in opts,
 * in QEMU's order: conf file, KEY=VALUE pairs, mon_host, key, auth modes.
 */
static int rbd_connect(const vd_opts *opts, bool cache, rados_t *cluster, rados_ioctx_t *io_ctx,
                       vd_error **errp)
{
    const char *pool = vd_opts_get(opts, "pool");
    const char *ns = vd_opts_get(opts, "namespace");
    const char *conf = vd_opts_get(opts, "conf");
    const char *user = vd_opts_get(opts, "user");
    const char *keypairs = vd_opts_get(opts, RBD_KEYPAIRS);
    const char *secret = vd_opts_get(opts, "key-secret");
    const char *legacy = vd_opts_get(opts, "password-secret");
    char *mon_host = NULL, *auth = NULL, *key = NULL;
    int r;

    if (!pool) {
        return vd_error_set(errp, EINVAL, "Parameter 'pool' is missing");
    }
    if (legacy) {
        if (secret) {
            return vd_error_set(errp, EINVAL,
                                "Legacy 'password-secret' clashes with 'key-secret'");
        }
        secret = legacy;
    }
    mon_host = rbd_mon_host(opts, errp, &r);
    if (r < 0) {
        return r;
    }
    r = rbd_auth_list(opts, &auth, errp);
    if (r < 0) {
        free(mon_host);
        return r;
    }
    if (secret) {
        uint8_t *data;
        size_t len;
        r = vd_secret_lookup(secret, &data, &len, errp);
        if (r < 0) {
            goto out;
        }
        key = rbd_base64(data, len);
        memset(data, 0, len);
        free(data);
        if (!key) {
            r = vd_error_set(errp, ENOMEM, "out of memory");
            goto out;
        }
    }

    r = rados_create(cluster, user);
    if (r < 0) {
        vd_error_setg_errno(errp, r, "error initializing");
        goto out;
    }
    /* the default locations when there is no conf=, failure ignored */
    r = rados_conf_read_file(*cluster, conf);
    if (conf && r < 0) {
        vd_error_setg_errno(errp, r, "error reading conf file %s", conf);
        goto fail_shutdown;
    }
    r = 0;
    if (keypairs && (r = rbd_set_keypairs(*cluster, keypairs, errp)) < 0) {
        goto fail_shutdown;
    }
    if (mon_host && (r = rados_conf_set(*cluster, "mon_host", mon_host)) < 0) {
        vd_error_setg_errno(errp, r, "invalid mon_host");
        goto fail_shutdown;
    }
    if (key && (r = rados_conf_set(*cluster, "key", key)) < 0) {
        vd_error_setg_errno(errp, r, "Could not set 'key'");
        goto fail_shutdown;
    }
    if (auth && (r = rados_conf_set(*cluster, "auth_client_required", auth)) < 0) {
        vd_error_setg_errno(errp, r, "Could not set 'auth_client_required'");
        goto fail_shutdown;
    }
    /* only fails when the option does not exist: librbd then does not cache */
    rados_conf_set(*cluster, "rbd_cache", cache ? "true" : "false");

    r = rados_connect(*cluster);
    if (r < 0) {
        vd_error_setg_errno(errp, r, "error connecting");
        goto fail_shutdown;
    }
    r = rados_ioctx_create(*cluster, pool, io_ctx);
    if (r < 0) {
        vd_error_setg_errno(errp, r, "error opening pool %s", pool);
        goto fail_shutdown;
    }
    if (ns && *ns) {
        bool exists = false;
        r = rbd_namespace_exists(*io_ctx, ns, &exists);
        if (r < 0) {
            vd_error_setg_errno(errp, r, "error checking namespace");
            goto fail_ioctx;
        }
        if (!exists) {
            r = vd_error_set(errp, ENOENT, "namespace '%s' does not exist", ns);
            goto fail_ioctx;
        }
    }
    rados_ioctx_set_namespace(*io_ctx, ns && *ns ? ns : NULL);
    r = 0;
    goto out;

fail_ioctx:
    rados_ioctx_destroy(*io_ctx);
fail_shutdown:
    rados_shutdown(*cluster);
    *cluster = NULL;
out:
    if (key) {
        memset(key, 0, strlen(key));
        free(key);
    }
    free(mon_host);
    free(auth);
    return r < 0 ? r : 0;
}

/* what messages name: rbd:POOL/[NAMESPACE/]IMAGE[@SNAP], no keys */
static char *rbd_display_name(const vd_opts *opts)
{
    const char *ns = vd_opts_get(opts, "namespace");
    const char *snap = vd_opts_get(opts, "snapshot");
    const char *pool = vd_opts_get(opts, "pool");
    const char *image = vd_opts_get(opts, "image");
    return vd_asprintf("rbd:%s/%s%s%s%s%s", pool ? pool : "", ns && *ns ? ns : "",
                       ns && *ns ? "/" : "", image ? image : "", snap ? "@" : "",
                       snap ? snap : "");
}

static int rbd_node_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    rbd_state *s = bs->opaque;
    const char *image = vd_opts_get(opts, "image");
    const char *snap = vd_opts_get(opts, "snapshot");
    int r;

    if (!image) {
        return vd_error_set(errp, EINVAL, "Parameter 'image' is missing");
    }
    if (snap && !bs->read_only) {
        return vd_error_set(errp, EACCES, "rbd snapshots are read-only");
    }
    r = rbd_connect(opts, true, &s->cluster, &s->io_ctx, errp);
    if (r < 0) {
        return r;
    }
    /* rbd_open is always read-write; a snapshot is read-only by librbd */
    r = rbd_open(s->io_ctx, image, &s->image, snap);
    if (r < 0) {
        vd_error_setg_errno(errp, r, "error reading header from %s", image);
        goto fail;
    }
    rbd_image_info_t info;
    r = rbd_stat(s->image, &info, sizeof(info));
    if (r < 0) {
        vd_error_setg_errno(errp, r, "error getting image info from %s", image);
        rbd_close(s->image);
        goto fail;
    }
    s->size = info.size;
    s->object_size = info.obj_size;
    pthread_mutex_init(&s->lock, NULL);
    s->lock_init = true;

    char *name = rbd_display_name(opts);
    if (name) {
        free(bs->filename);
        bs->filename = name;
    }
    bs->request_alignment = 1;
    if (s->object_size && !(s->object_size & (s->object_size - 1)) &&
        s->object_size <= UINT32_MAX) {
        bs->pwrite_zeroes_alignment = (uint32_t)s->object_size;
    }
    bs->has_zero_init = true;
    return 0;

fail:
    rados_ioctx_destroy(s->io_ctx);
    rados_shutdown(s->cluster);
    s->cluster = NULL;
    return r;
}

static void rbd_close_node(vd_node *bs)
{
    rbd_state *s = bs->opaque;
    if (!s->cluster) {
        return;
    }
    rbd_close(s->image);
    rados_ioctx_destroy(s->io_ctx);
    rados_shutdown(s->cluster);
    s->cluster = NULL;
    if (s->lock_init) {
        pthread_mutex_destroy(&s->lock);
    }
}

static int64_t rbd_get_length(vd_node *bs)
{
    rbd_state *s = bs->opaque;
    uint64_t size;
    /* asked each time, as QEMU does: a resize elsewhere shows (under the
     * lock, so that a growth in flight is not undone by an older answer) */
    pthread_mutex_lock(&s->lock);
    int r = rbd_get_size(s->image, &size);
    if (r == 0) {
        s->size = size;
    }
    pthread_mutex_unlock(&s->lock);
    return r < 0 ? r : (int64_t)size;
}

enum rbd_op { RBD_OP_READ, RBD_OP_WRITE, RBD_OP_DISCARD, RBD_OP_ZERO, RBD_OP_FLUSH };

/* One request through librbd's aio API: issue, then wait for it. */
static int rbd_node_aio(rbd_state *s, enum rbd_op op, uint64_t off, uint64_t len, void *buf,
                        int zero_flags)
{
    rbd_completion_t c;
    int r = rbd_aio_create_completion(NULL, NULL, &c);
    if (r < 0) {
        return r;
    }
    switch (op) {
    case RBD_OP_READ:
        r = rbd_aio_read(s->image, off, len, buf, c);
        break;
    case RBD_OP_WRITE:
        r = rbd_aio_write(s->image, off, len, buf, c);
        break;
    case RBD_OP_DISCARD:
        r = rbd_aio_discard(s->image, off, len, c);
        break;
    case RBD_OP_ZERO:
        r = rbd_aio_write_zeroes(s->image, off, len, c, zero_flags, 0);
        break;
    case RBD_OP_FLUSH:
        r = rbd_aio_flush(s->image, c);
        break;
    }
    if (r < 0) {
        rbd_aio_release(c);
        return r;
    }
    rbd_aio_wait_for_complete(c);
    ssize_t ret = rbd_aio_get_return_value(c);
    rbd_aio_release(c);
    if (ret < 0) {
        return (int)ret;
    }
    if (op == RBD_OP_READ && (uint64_t)ret < len) {
        /* a short read (the image shrank meanwhile): the rest is zeroes */
        memset((uint8_t *)buf + ret, 0, len - (uint64_t)ret);
    }
    return 0;
}

static uint64_t rbd_cur_size(rbd_state *s)
{
    pthread_mutex_lock(&s->lock);
    uint64_t v = s->size;
    pthread_mutex_unlock(&s->lock);
    return v;
}

/* RBD cannot grow on its own: a write past the end resizes first. */
static int rbd_grow_for(rbd_state *s, uint64_t end)
{
    uint64_t cur;
    pthread_mutex_lock(&s->lock);
    /* librbd's own idea of the size: never shrink what another grew */
    int r = rbd_get_size(s->image, &cur);
    if (r == 0) {
        s->size = cur;
        if (end > cur) {
            r = rbd_resize(s->image, end);
            if (r == 0) {
                s->size = end;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return r;
}

static int rbd_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    rbd_state *s = bs->opaque;
    (void)flags;
    uint64_t size = rbd_cur_size(s);
    /* like a short file read, bytes past the end read as zeroes */
    if (offset >= size) {
        memset(buf, 0, len);
        return 0;
    }
    if (len > size - offset) {
        uint64_t keep = size - offset;
        memset((uint8_t *)buf + keep, 0, len - keep);
        len = keep;
    }
    return rbd_node_aio(s, RBD_OP_READ, offset, len, buf, 0);
}

static int rbd_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                      unsigned flags)
{
    rbd_state *s = bs->opaque;
    (void)flags;
    if (offset + len > rbd_cur_size(s)) {
        int r = rbd_grow_for(s, offset + len);
        if (r < 0) {
            return r;
        }
    }
    return rbd_node_aio(s, RBD_OP_WRITE, offset, len, (void *)buf, 0);
}

static int rbd_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    rbd_state *s = bs->opaque;
    if (flags & VD_REQ_NO_FALLBACK) {
        return -ENOTSUP; /* librbd does not say whether zeroing is fast */
    }
    int zf = (flags & VD_REQ_MAY_UNMAP) ? 0 : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
    if (offset + len > rbd_cur_size(s)) {
        int r = rbd_grow_for(s, offset + len);
        if (r < 0) {
            return r;
        }
    }
    while (len) {
        uint64_t n = VD_MIN(len, RBD_MAX_DISCARD);
        int r = rbd_node_aio(s, RBD_OP_ZERO, offset, n, NULL, zf);
        if (r < 0) {
            return r;
        }
        offset += n;
        len -= n;
    }
    return 0;
}

static int rbd_discard_node(vd_node *bs, uint64_t offset, uint64_t len)
{
    rbd_state *s = bs->opaque;
    uint64_t size = rbd_cur_size(s);
    if (offset >= size) {
        return 0;
    }
    len = VD_MIN(len, size - offset);
    while (len) {
        uint64_t n = VD_MIN(len, RBD_MAX_DISCARD);
        int r = rbd_node_aio(s, RBD_OP_DISCARD, offset, n, NULL, 0);
        if (r < 0) {
            return r;
        }
        offset += n;
        len -= n;
    }
    return 0;
}

static int rbd_flush_node(vd_node *bs)
{
    rbd_state *s = bs->opaque;
    return rbd_node_aio(s, RBD_OP_FLUSH, 0, 0, NULL, 0);
}

static int rbd_truncate_node(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                             vd_error **errp)
{
    rbd_state *s = bs->opaque;
    (void)exact;
    if (prealloc != VD_PREALLOC_OFF) {
        return vd_error_set(errp, ENOTSUP, "Unsupported preallocation mode '%s'",
                            prealloc == VD_PREALLOC_METADATA ? "metadata"
                            : prealloc == VD_PREALLOC_FALLOC ? "falloc"
                                                             : "full");
    }
    pthread_mutex_lock(&s->lock);
    int r = rbd_resize(s->image, size);
    if (r == 0) {
        s->size = size;
    }
    pthread_mutex_unlock(&s->lock);
    if (r < 0) {
        return vd_error_setg_errno(errp, r, "Failed to resize file");
    }
    return 0;
}

/* rbd_diff_iterate2's callback: the first run of allocated or unallocated
 * objects from the start (whole objects, as asked) */
typedef struct rbd_diff_req {
    uint64_t offs;
    uint64_t bytes;
    bool exists;
} rbd_diff_req;

static int rbd_diff_cb(uint64_t offs, size_t len, int exists, void *opaque)
{
    rbd_diff_req *req = opaque;
    if (!exists) {
        return 0; /* a hole counts as unallocated */
    }
    if (!req->exists && offs > req->offs) {
        /* unallocated up to here, then data: the answer is the gap */
        req->bytes = offs - req->offs;
        return RBD_DIFF_STOP;
    }
    if (req->exists && offs > req->offs + req->bytes) {
        return RBD_DIFF_STOP; /* data, then a gap */
    }
    req->bytes += len;
    req->exists = true;
    return 0;
}

static int rbd_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                            uint64_t *pnum, uint64_t *map, vd_node **file)
{
    rbd_state *s = bs->opaque;
    (void)want_zero;
    int status = VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
    *map = offset;
    *file = bs;
    uint64_t size = rbd_cur_size(s);
    if (offset >= size) {
        *pnum = len;
        return VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID;
    }
    len = VD_MIN(len, size - offset);
    *pnum = len;

    /* only a fast-diff object map that is valid answers quickly and truly */
    uint64_t features, flags;
    if (rbd_get_features(s->image, &features) < 0 || !(features & RBD_FEATURE_FAST_DIFF) ||
        rbd_get_flags(s->image, &flags) < 0 || (flags & RBD_FLAG_FAST_DIFF_INVALID)) {
        return status;
    }
    uint64_t head = 0;
    rbd_diff_req req = {.offs = offset};
#if LIBRBD_VERSION_CODE < LIBRBD_VERSION(1, 17, 0)
    /*
     * librbd before 1.17 (Ceph bug 53784) reports wrong offsets when the
     * start is not object aligned: start at the object, which only works
     * for plain striping and images that are not clones.
     */
    if (features & RBD_FEATURE_STRIPINGV2) {
        return status;
    }
    {
        rbd_linked_image_spec_t parent;
        rbd_snap_spec_t psnap;
        int pr = rbd_get_parent(s->image, &parent, &psnap);
        if (pr == 0) {
            rbd_linked_image_spec_cleanup(&parent);
            rbd_snap_spec_cleanup(&psnap);
        }
        if (pr != -ENOENT) {
            return status;
        }
    }
    if (!s->object_size || (s->object_size & (s->object_size - 1))) {
        return status;
    }
    head = req.offs & (s->object_size - 1);
    req.offs -= head;
    len += head;
#endif
    int r = rbd_diff_iterate2(s->image, NULL, req.offs, len, 1, 1, rbd_diff_cb, &req);
    if (r < 0 && r != RBD_DIFF_STOP) {
        return status;
    }
    if (!req.exists) {
        if (r == 0) {
            req.bytes = len; /* no callback at all: all of it unallocated */
        }
        status = VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID;
    }
    if (req.bytes > len) {
        req.bytes = len; /* whole objects may reach past the range */
    }
    if (req.bytes <= head) {
        /* cannot happen with sane answers; fall back to "data" */
        *pnum = len - head;
        return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
    }
    *pnum = req.bytes - head;
    return status;
}

/* The image's rbd snapshots, as QEMU lists them: the name is the id too,
 * the size is the image's at the snapshot, no dates. */
static int rbd_snapshot_list(vd_node *bs, vd_snapshot_info **list, size_t *count,
                             vd_error **errp)
{
    rbd_state *s = bs->opaque;
    int max = 16, n;
    rbd_snap_info_t *snaps;
    for (;;) {
        snaps = vd_calloc((size_t)max, sizeof(*snaps));
        if (!snaps) {
            return vd_error_set(errp, ENOMEM, "out of memory");
        }
        n = rbd_snap_list(s->image, snaps, &max);
        if (n >= 0) {
            break;
        }
        free(snaps);
        if (n != -ERANGE || max > (1 << 20)) {
            return vd_error_setg_errno(errp, n, "error listing snapshots");
        }
    }
    vd_snapshot_info *out = n ? vd_calloc((size_t)n, sizeof(*out)) : NULL;
    int ret = 0;
    if (n && !out) {
        ret = vd_error_set(errp, ENOMEM, "out of memory");
    }
    for (int i = 0; !ret && i < n; i++) {
        out[i].id = vd_strdup(snaps[i].name);
        out[i].name = vd_strdup(snaps[i].name);
        out[i].vm_state_size = snaps[i].size;
        if (!out[i].id || !out[i].name) {
            ret = vd_error_set(errp, ENOMEM, "out of memory");
        }
    }
    rbd_snap_list_end(snaps);
    free(snaps);
    if (ret < 0) {
        vd_snapshot_list_free(out, (size_t)n);
        return ret;
    }
    *list = out;
    *count = (size_t)n;
    return 0;
}

static uint32_t rbd_cluster_size(vd_node *bs)
{
    rbd_state *s = bs->opaque;
    return s->object_size <= UINT32_MAX ? (uint32_t)s->object_size : 0;
}

static int rbd_node_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    vd_opts *loc = vd_opts_new();
    if (!loc) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    int r;
    if (!strncmp(filename, "json:", 5)) {
        r = vd_opts_parse_json_filename(loc, filename, errp);
        vd_opts_set(loc, "driver", NULL);
    } else {
        r = rbd_parse_filename(filename, loc, errp);
    }
    if (r < 0) {
        goto out;
    }
    uint64_t size, objsize;
    if ((r = vd_opts_get_size(opts, "size", 0, &size, errp)) < 0 ||
        (r = vd_opts_get_size(opts, "cluster_size", 0, &objsize, errp)) < 0) {
        goto out;
    }
    int order = 0;
    if (vd_opts_get(opts, "cluster_size")) {
        if (objsize & (objsize - 1)) {
            r = vd_error_set(errp, EINVAL, "obj size needs to be power of 2");
            goto out;
        }
        if (objsize < 4096) {
            r = vd_error_set(errp, EINVAL, "obj size too small");
            goto out;
        }
        order = vd_ctz64(objsize);
    }
    if (vd_opts_get(loc, "snapshot")) {
        r = vd_error_set(errp, EINVAL, "Can't use snapshot name for image creation");
        goto out;
    }
    if (vd_opts_get(opts, "password-secret")) {
        vd_opts_set(loc, "password-secret", vd_opts_get(opts, "password-secret"));
    }
    const char *image = vd_opts_get(loc, "image");
    if (!image) {
        r = vd_error_set(errp, EINVAL, "Parameter 'image' is missing");
        goto out;
    }
    rados_t cluster;
    rados_ioctx_t io_ctx;
    r = rbd_connect(loc, false, &cluster, &io_ctx, errp);
    if (r < 0) {
        goto out;
    }
    r = rbd_create(io_ctx, image, size, &order);
    if (r < 0) {
        vd_error_setg_errno(errp, r, "error rbd create");
    }
    rados_ioctx_destroy(io_ctx);
    rados_shutdown(cluster);
out:
    vd_opts_free(loc);
    return r < 0 ? r : 0;
}

const vd_driver vd_drv_rbd = {
    .name = "rbd",
    .kind = VD_DRV_PROTOCOL,
    .protocols = rbd_protocols,
    .state_size = sizeof(rbd_state),
    .create_opts = rbd_create_opts,
    .open_opts = rbd_open_opts,
    .opt_prefixes = rbd_opt_prefixes,
    .parse_filename = rbd_parse_filename,
    .open = rbd_node_open,
    .close = rbd_close_node,
    .create = rbd_node_create,
    .get_length = rbd_get_length,
    .pread = rbd_pread,
    .pwrite = rbd_pwrite,
    .pwrite_zeroes = rbd_pwrite_zeroes,
    .discard = rbd_discard_node,
    .flush = rbd_flush_node,
    .block_status = rbd_block_status,
    .truncate = rbd_truncate_node,
    .cluster_size = rbd_cluster_size,
    .snapshot_list = rbd_snapshot_list,
};
