/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The `nbd` protocol driver: an export of an NBD server as a node.
 *
 * Specification: the NBD protocol (doc/proto.md of the NBD project) and
 * QEMU's docs/interop/nbd.rst; the wire format and the client live in
 * src/nbd/.  Filenames, as QEMU and libnbd write them:
 *   nbd://HOST[:PORT]/EXPORT, nbd+tcp://..., nbd+unix:///EXPORT?socket=PATH,
 *   nbds://... and nbds+unix://... (TLS; query tls-certificates=DIR,
 *   tls-psk-file=FILE, tls-username=USER as libnbd takes them),
 *   nbd:HOST:PORT[:exportname=NAME], nbd:unix:PATH[:exportname=NAME].
 * Options: server.type (inet|unix), server.host, server.port,
 * server.path, export, tls-creds (an --object id or an X.509 directory),
 * tls-hostname, reconnect-delay, x-dirty-bitmap.
 * Not supported: oldstyle servers, NBD_CMD_RESIZE, vsock.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../nbd/client.h"
#include "../nbd/proto.h"
#include "../nbd/tls.h"
#include "internal.h"

typedef struct nbd_state {
    vd_nbd_client *client;
    uint64_t size;
    uint16_t flags;
    uint32_t min_block;
    bool alloc_depth; /* x-dirty-bitmap=qemu:allocation-depth */
} nbd_state;

static const vd_opt_desc nbd_open_opts[] = {
    {"server.type", VD_OPT_STRING, "inet or unix", NULL},
    {"server.host", VD_OPT_STRING, "server host name or address", NULL},
    {"server.port", VD_OPT_STRING, "server port", "10809"},
    {"server.path", VD_OPT_STRING, "unix socket path", NULL},
    {"export", VD_OPT_STRING, "export name", ""},
    {"tls-creds", VD_OPT_STRING, "TLS credentials: an --object id or an X.509 directory", NULL},
    {"tls-hostname", VD_OPT_STRING, "name the server certificate must carry", NULL},
    {"tls", VD_OPT_BOOL, "use TLS (nbds://)", "off"},
    {"tls-psk-file", VD_OPT_STRING, "pre-shared keys file (psktool)", NULL},
    {"tls-username", VD_OPT_STRING, "user name for TLS-PSK", "qemu"},
    {"reconnect-delay", VD_OPT_NUMBER, "seconds to retry a lost server", "0"},
    {"open-timeout", VD_OPT_NUMBER, "accepted for compatibility", "0"},
    {"x-dirty-bitmap", VD_OPT_STRING, "report this dirty bitmap as block status", NULL},
    {"host", VD_OPT_STRING, "legacy: server host (server.host)", NULL},
    {"port", VD_OPT_STRING, "legacy: server port (server.port)", NULL},
    {"path", VD_OPT_STRING, "legacy: unix socket path (server.path)", NULL},
    {NULL, 0, NULL, NULL},
};

static const char *const nbd_protocols[] = {
    "nbd", "nbd+tcp", "nbd+unix", "nbds", "nbds+tcp", "nbds+unix", NULL,
};

static int nbd_parse_uri(const char *filename, vd_opts *opts, vd_error **errp)
{
    const char *sep = strstr(filename, "://");
    size_t sl = (size_t)(sep - filename);
    bool tls = !strncmp(filename, "nbds", 4);
    bool is_unix = sl >= 5 && !strncmp(filename + sl - 5, "+unix", 5);
    char *work = strdup(sep + 3);
    if (!work) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    int ret = 0;
    char *query = strchr(work, '?');
    if (query) {
        *query++ = 0;
    }
    char *frag = query ? strchr(query, '#') : strchr(work, '#');
    if (frag) {
        *frag = 0;
    }
    char *path = strchr(work, '/');
    char *exp = NULL;
    if (path) {
        *path = 0;
        exp = path + 1;
    }
    char *auth = work;
    char *at = strrchr(auth, '@');
    if (at) {
        /* nbds://USER@host/: the TLS-PSK user name, as libnbd takes it */
        *at = 0;
        if (!tls || !*auth || vd_uri_unescape(auth) < 0) {
            ret =
                vd_error_set(errp, EINVAL, "NBD URI '%s': a user name needs nbds://", filename);
            goto out;
        }
        vd_opts_set(opts, "tls-username", auth);
        auth = at + 1;
    }
    if (exp && *exp) {
        if (vd_uri_unescape(exp) < 0) {
            ret = vd_error_set(errp, EINVAL, "invalid escape in NBD URI '%s'", filename);
            goto out;
        }
        vd_opts_set(opts, "export", exp);
    }
    if (is_unix) {
        if (*auth) {
            ret = vd_error_set(errp, EINVAL, "NBD URI '%s': a unix socket URI has no host",
                               filename);
            goto out;
        }
        vd_opts_set(opts, "server.type", "unix");
    } else {
        char *port = NULL;
        if (*auth == '[') {
            char *rb = strchr(auth, ']');
            if (!rb) {
                ret = vd_error_set(errp, EINVAL, "NBD URI '%s': bad IPv6 address", filename);
                goto out;
            }
            *rb = 0;
            if (rb[1] == ':') {
                port = rb + 2;
            } else if (rb[1]) {
                ret = vd_error_set(errp, EINVAL, "NBD URI '%s': bad address", filename);
                goto out;
            }
            auth++;
        } else {
            port = strchr(auth, ':');
            if (port) {
                *port++ = 0;
            }
        }
        if (!*auth) {
            auth = (char *)"localhost";
        }
        vd_opts_set(opts, "server.type", "inet");
        vd_opts_set(opts, "server.host", auth);
        if (port && *port) {
            vd_opts_set(opts, "server.port", port);
        }
    }
    if (tls) {
        vd_opts_set(opts, "tls", "on");
    }
    bool have_socket = false;
    for (char *q = query; q && *q;) {
        char *amp = strchr(q, '&');
        if (amp) {
            *amp = 0;
        }
        char *eq = strchr(q, '=');
        if (!eq || vd_uri_unescape(eq + 1) < 0) {
            ret = vd_error_set(errp, EINVAL, "NBD URI '%s': bad query '%s'", filename, q);
            goto out;
        }
        *eq = 0;
        const char *v = eq + 1;
        if (!strcmp(q, "socket") && is_unix) {
            vd_opts_set(opts, "server.path", v);
            have_socket = true;
        } else if (!strcmp(q, "tls-certificates") && tls) {
            vd_opts_set(opts, "tls-creds", v);
        } else if (!strcmp(q, "tls-psk-file") && tls) {
            vd_opts_set(opts, "tls-psk-file", v);
        } else if (!strcmp(q, "tls-username") && tls) {
            vd_opts_set(opts, "tls-username", v);
        } else if (!strcmp(q, "tls-hostname") && tls) {
            vd_opts_set(opts, "tls-hostname", v);
        } else {
            ret = vd_error_set(errp, EINVAL, "NBD URI '%s': unexpected query parameter '%s'",
                               filename, q);
            goto out;
        }
        q = amp ? amp + 1 : NULL;
    }
    if (is_unix && !have_socket) {
        ret = vd_error_set(errp, EINVAL, "NBD URI '%s' needs ?socket=PATH", filename);
    }
out:
    free(work);
    return ret;
}

/* nbd:HOST:PORT[:exportname=NAME] and nbd:unix:PATH[:exportname=NAME] */
static int nbd_parse_legacy(const char *filename, vd_opts *opts, vd_error **errp)
{
    char *work = strdup(filename + 4);
    if (!work) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    int ret = 0;
    char *exp = strstr(work, ":exportname=");
    if (exp) {
        *exp = 0;
        vd_opts_set(opts, "export", exp + strlen(":exportname="));
    }
    if (!strncmp(work, "unix:", 5)) {
        if (!work[5]) {
            ret = vd_error_set(errp, EINVAL, "'%s': missing socket path", filename);
        } else {
            vd_opts_set(opts, "server.type", "unix");
            vd_opts_set(opts, "server.path", work + 5);
        }
    } else {
        char *host = work, *port;
        if (*host == '[') {
            char *rb = strchr(host, ']');
            port = rb && rb[1] == ':' ? rb + 2 : NULL;
            if (rb) {
                *rb = 0;
            }
            host++;
        } else {
            port = strrchr(host, ':');
            if (port) {
                *port++ = 0;
            }
        }
        if (!*host || (port && strchr(port, ':'))) {
            ret = vd_error_set(errp, EINVAL, "'%s': expected nbd:HOST:PORT[:exportname=NAME]",
                               filename);
        } else {
            vd_opts_set(opts, "server.type", "inet");
            vd_opts_set(opts, "server.host", host);
            if (port && *port) {
                vd_opts_set(opts, "server.port", port);
            }
        }
    }
    free(work);
    return ret;
}

static int nbd_parse_filename(const char *filename, vd_opts *opts, vd_error **errp)
{
    if (strstr(filename, "://")) {
        return nbd_parse_uri(filename, opts, errp);
    }
    if (!strncmp(filename, "nbd:", 4)) {
        return nbd_parse_legacy(filename, opts, errp);
    }
    return vd_error_set(errp, EINVAL, "'%s' is not an NBD filename", filename);
}

/* QEMU's canonical name for the export (what `info` shows). */
static char *nbd_canonical_name(const char *type, const char *host, const char *port,
                                const char *path, const char *exp, bool tls)
{
    const char *s = tls ? "s" : "";
    if (!strcmp(type, "unix")) {
        return *exp ? vd_asprintf("nbd%s+unix:///%s?socket=%s", s, exp, path)
                    : vd_asprintf("nbd%s+unix://?socket=%s", s, path);
    }
    bool v6 = strchr(host, ':') != NULL;
    return vd_asprintf("nbd%s://%s%s%s:%s%s%s", s, v6 ? "[" : "", host, v6 ? "]" : "", port,
                       *exp ? "/" : "", exp);
}

/* QEMU's legacy host=, port=, path= options become server.* ones. */
static int nbd_legacy_options(vd_opts *opts, vd_error **errp)
{
    const char *path = vd_opts_get(opts, "path");
    const char *host = vd_opts_get(opts, "host");
    const char *port = vd_opts_get(opts, "port");
    if (!path && !host && !port) {
        return 0;
    }
    for (size_t i = 0; i < vd_opts_count(opts); i++) {
        if (!strncmp(vd_opts_key(opts, i), "server.", 7)) {
            return vd_error_set(errp, EINVAL,
                                "Cannot use 'server' and path/host/port at the same time");
        }
    }
    if (path && host) {
        return vd_error_set(errp, EINVAL, "path and host may not be used at the same time");
    }
    if (path && port) {
        return vd_error_set(errp, EINVAL, "port may not be used without host");
    }
    if (path) {
        vd_opts_set(opts, "server.type", "unix");
        vd_opts_set(opts, "server.path", path);
    } else if (host) {
        vd_opts_set(opts, "server.type", "inet");
        vd_opts_set(opts, "server.host", host);
        vd_opts_set(opts, "server.port", port ? port : "10809");
    }
    return 0;
}

static int nbd_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    nbd_state *s = bs->opaque;
    if (nbd_legacy_options(opts, errp) < 0) {
        return -EINVAL;
    }
    const char *type = vd_opts_get(opts, "server.type");
    const char *host = vd_opts_get(opts, "server.host");
    const char *port = vd_opts_get(opts, "server.port");
    const char *path = vd_opts_get(opts, "server.path");
    const char *exp = vd_opts_get(opts, "export");
    const char *creds_id = vd_opts_get(opts, "tls-creds");
    const char *psk = vd_opts_get(opts, "tls-psk-file");
    const char *bitmap = vd_opts_get(opts, "x-dirty-bitmap");
    bool tls;
    uint64_t delay;
    if (vd_opts_get_bool(opts, "tls", false, &tls, errp) < 0 ||
        vd_opts_get_u64(opts, "reconnect-delay", 0, &delay, errp) < 0) {
        return -EINVAL;
    }
    if (!type) {
        type = path ? "unix" : host ? "inet" : NULL;
    }
    if (!type) {
        return vd_error_set(errp, EINVAL, "NBD server address missing");
    }
    if (!strcmp(type, "unix")) {
        if (!path) {
            return vd_error_set(errp, EINVAL, "Parameter 'server.path' is missing");
        }
    } else if (!strcmp(type, "inet")) {
        if (!host) {
            return vd_error_set(errp, EINVAL, "Parameter 'server.host' is missing");
        }
        path = NULL;
    } else {
        return vd_error_set(errp, EINVAL, "Parameter 'server.type' does not accept value '%s'",
                            type);
    }
    if (!port) {
        port = "10809";
    }
    if (!exp) {
        exp = "";
    }
    if (delay > 3600) {
        return vd_error_set(errp, EINVAL, "reconnect-delay must be at most 3600 seconds");
    }

    vd_nbd_tls_creds *creds = NULL;
    if (psk) {
        creds = vd_nbd_tls_creds_new_psk(psk, vd_opts_get(opts, "tls-username"), false);
        if (!creds) {
            return vd_error_set(errp, vd_get_errno() ? vd_get_errno() : EINVAL, "%s",
                                vd_get_error());
        }
    } else if (creds_id) {
        creds = vd_nbd_tls_creds_get(creds_id, false, errp);
        if (!creds) {
            return -EINVAL;
        }
    } else if (tls) {
        /* nbds:// without credentials: the system's CAs vouch for the server */
        creds = vd_nbd_tls_creds_new_x509("/nonexistent", false, true);
        if (!creds) {
            return vd_error_set(errp, EINVAL, "%s", vd_get_error());
        }
    }

    /* x-dirty-bitmap names the whole context, as QEMU's
     * ("qemu:dirty-bitmap:NAME", "qemu:allocation-depth") */
    const char *ctx = bitmap;
    s->alloc_depth = bitmap && !strcmp(bitmap, "qemu:allocation-depth");
    vd_nbd_client_cfg cfg = {
        .host = host,
        .port = port,
        .path = path,
        .export_name = exp,
        .tls = creds,
        .tls_hostname = vd_opts_get(opts, "tls-hostname"),
        .context = ctx ? ctx : "base:allocation",
        .reconnect_delay = (unsigned)delay,
    };
    char *name =
        nbd_canonical_name(type, host ? host : "", port, path ? path : "", exp, creds != NULL);
    int r = vd_nbd_client_connect(&cfg, &s->client, errp);
    vd_nbd_tls_creds_free(creds);
    if (r < 0) {
        /* the tools lead with "Could not open 'NAME': " themselves (QEMU's
         * words, iotest 162) */
        free(name);
        return r;
    }
    if (name) {
        free(bs->filename);
        bs->filename = name;
    }
    if (bitmap && !vd_nbd_client_has_context(s->client)) {
        vd_nbd_client_close(s->client);
        s->client = NULL;
        return vd_error_set(errp, EINVAL, "requested x-dirty-bitmap %s not found", bitmap);
    }
    s->size = vd_nbd_client_size(s->client);
    s->flags = vd_nbd_client_flags(s->client);
    if ((s->flags & NBD_FLAG_READ_ONLY) && !bs->read_only) {
        vd_nbd_client_close(s->client);
        s->client = NULL;
        return vd_error_set(errp, EACCES, "Could not open '%s': the NBD export is read-only",
                            bs->filename);
    }
    uint32_t mn, pref, mx;
    vd_nbd_client_block_sizes(s->client, &mn, &pref, &mx);
    s->min_block = mn;
    bs->request_alignment = mn;
    bs->max_transfer = vd_align_down(mx, mn);
    bs->supports_fua = (s->flags & NBD_FLAG_SEND_FUA) != 0;
    bs->has_zero_init = false;
    return 0;
}

static void nbd_close(vd_node *bs)
{
    nbd_state *s = bs->opaque;
    vd_nbd_client_close(s->client);
    s->client = NULL;
}

static int64_t nbd_get_length(vd_node *bs)
{
    nbd_state *s = bs->opaque;
    return (int64_t)s->size;
}

/* As QEMU's: an export keeps its size; a smaller inexact size is fine. */
static int nbd_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                        vd_error **errp)
{
    nbd_state *s = bs->opaque;
    (void)prealloc;
    if (size != s->size && exact) {
        return vd_error_set(errp, ENOTSUP, "Cannot resize NBD nodes");
    }
    if (size > s->size) {
        return vd_error_set(errp, ENOTSUP, "Cannot grow NBD nodes");
    }
    return 0;
}

static int nbd_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    nbd_state *s = bs->opaque;
    /* like a short file read, bytes past the end read as zeroes */
    if (offset >= s->size) {
        memset(buf, 0, len);
        return 0;
    }
    if (len > s->size - offset) {
        uint64_t keep = s->size - offset;
        memset((uint8_t *)buf + keep, 0, len - keep);
        len = keep;
    }
    return vd_nbd_client_read(s->client, offset, len, buf);
}

static int nbd_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                      unsigned flags)
{
    nbd_state *s = bs->opaque;
    if (offset > s->size || len > s->size - offset) {
        return -ENOSPC; /* an export cannot grow */
    }
    uint16_t f = (flags & VD_REQ_FUA) && (s->flags & NBD_FLAG_SEND_FUA) ? NBD_CMD_FLAG_FUA : 0;
    return vd_nbd_client_write(s->client, offset, len, buf, f);
}

/* Largest aligned length one compact request can carry. */
static uint64_t nbd_max_len(nbd_state *s)
{
    if (vd_nbd_client_extended(s->client)) {
        return UINT64_MAX - s->min_block + 1;
    }
    return vd_align_down(UINT32_MAX, s->min_block ? s->min_block : 1);
}

static int nbd_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    nbd_state *s = bs->opaque;
    if (!(s->flags & NBD_FLAG_SEND_WRITE_ZEROES)) {
        return -ENOTSUP;
    }
    if (offset > s->size || len > s->size - offset) {
        return -ENOSPC;
    }
    uint16_t f = 0;
    if ((flags & VD_REQ_FUA) && (s->flags & NBD_FLAG_SEND_FUA)) {
        f |= NBD_CMD_FLAG_FUA;
    }
    if (!(flags & VD_REQ_MAY_UNMAP)) {
        f |= NBD_CMD_FLAG_NO_HOLE;
    }
    if (flags & VD_REQ_NO_FALLBACK) {
        if (!(s->flags & NBD_FLAG_SEND_FAST_ZERO)) {
            return -ENOTSUP;
        }
        f |= NBD_CMD_FLAG_FAST_ZERO;
    }
    uint64_t max = nbd_max_len(s);
    while (len) {
        uint64_t n = VD_MIN(len, max);
        int r = vd_nbd_client_zero(s->client, offset, n, f);
        if (r < 0) {
            return r;
        }
        offset += n;
        len -= n;
    }
    return 0;
}

static int nbd_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    nbd_state *s = bs->opaque;
    if (!(s->flags & NBD_FLAG_SEND_TRIM)) {
        return 0; /* a hint the server does not take */
    }
    if (offset > s->size || len > s->size - offset) {
        return -EINVAL;
    }
    uint64_t max = nbd_max_len(s);
    while (len) {
        uint64_t n = VD_MIN(len, max);
        int r = vd_nbd_client_trim(s->client, offset, n, 0);
        if (r < 0) {
            return r;
        }
        offset += n;
        len -= n;
    }
    return 0;
}

static int nbd_flush(vd_node *bs)
{
    nbd_state *s = bs->opaque;
    if (!(s->flags & NBD_FLAG_SEND_FLUSH)) {
        return 0;
    }
    return vd_nbd_client_flush(s->client);
}

static int nbd_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                            uint64_t *pnum, uint64_t *map, vd_node **file)
{
    nbd_state *s = bs->opaque;
    *map = offset;
    *file = bs;
    if (offset >= s->size) {
        *pnum = len;
        return VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID;
    }
    len = VD_MIN(len, s->size - offset);
    uint64_t a = s->min_block ? s->min_block : 1;
    if (!vd_nbd_client_has_context(s->client) || !vd_is_aligned(offset, a)) {
        *pnum = vd_is_aligned(offset, a) ? len : VD_MIN(len, a - offset % a);
        return VD_BLOCK_DATA | VD_BLOCK_OFFSET_VALID;
    }
    if (len >= a) {
        len = vd_align_down(len, a);
    }
    uint64_t el;
    uint32_t ef;
    int r = vd_nbd_client_block_status(s->client, offset, len, &el, &ef);
    if (r < 0) {
        return r;
    }
    *pnum = el;
    if (s->alloc_depth && ef > 2) {
        ef = 2; /* as QEMU: depths past 2 read as 2 (the low two bits) */
    }
    return (ef & NBD_STATE_HOLE ? 0 : VD_BLOCK_DATA) |
           (ef & NBD_STATE_ZERO ? VD_BLOCK_ZERO : 0) | VD_BLOCK_OFFSET_VALID;
}

const vd_driver vd_drv_nbd = {
    .name = "nbd",
    .kind = VD_DRV_PROTOCOL,
    .protocols = nbd_protocols,
    .state_size = sizeof(nbd_state),
    .open_opts = nbd_open_opts,
    .parse_filename = nbd_parse_filename,
    .open = nbd_open,
    .close = nbd_close,
    .get_length = nbd_get_length,
    .pread = nbd_pread,
    .pwrite = nbd_pwrite,
    .pwrite_zeroes = nbd_pwrite_zeroes,
    .discard = nbd_discard,
    .flush = nbd_flush,
    .block_status = nbd_block_status,
    .truncate = nbd_truncate,
};
