/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * NBD client (see client.h) and the export listing of vdisk-nbd -L.
 * Everything the server sends is checked before it is used: lengths
 * against the request, chunk types against the command, option replies
 * against a size cap.  A server that breaks the protocol is dropped.
 */
#include "client.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conn.h"
#include "net.h"
#include "proto.h"
#include "tls.h"

#define CLI_SLOTS 64
/* option replies larger than this are an attack, not information */
#define CLI_MAX_REP_LEN (64u * 1024)

typedef struct cli_slot {
    bool busy;
    bool done;
    uint16_t gen;
    uint16_t type;
    uint64_t off, len;
    uint8_t *buf;
    int err;
    bool have_ext;
    uint64_t ext_len;
    uint32_t ext_flags;
    pthread_cond_t cond;
} cli_slot;

struct vd_nbd_client {
    vd_nbd_client_cfg cfg;
    char *host, *port, *path, *export_name, *tls_hostname, *context;

    vd_nbd_conn conn;
    bool conn_open;
    pthread_t reader;
    bool reader_running;

    pthread_mutex_t lock; /* slots, dead */
    pthread_cond_t slot_free;
    pthread_mutex_t wlock; /* one request on the wire at a time */
    pthread_rwlock_t link; /* requests: read; reconnect: write */
    cli_slot slots[CLI_SLOTS];
    bool dead;
    bool closing;

    /* negotiated */
    uint64_t size;
    uint16_t flags;
    bool structured, extended;
    uint32_t min_block, pref_block, max_block;
    bool has_ctx;
    uint32_t ctx_id;
};

/* --------------------------------------------------------- handshake */

static int cli_send_opt(vd_nbd_conn *conn, uint32_t opt, const void *data, uint32_t len)
{
    uint8_t hdr[NBD_OPT_HDR_LEN];
    vd_nbd_opt_encode(hdr, opt, len);
    struct iovec iov[2] = {{hdr, sizeof(hdr)}, {(void *)data, len}};
    return vd_nbd_conn_writev(conn, iov, len ? 2 : 1);
}

/* Read one option reply; *data (malloc'ed, NUL-terminated) holds *len bytes. */
static int cli_read_rep(vd_nbd_conn *conn, uint32_t opt, uint32_t *type, uint8_t **data,
                        uint32_t *len, vd_error **errp)
{
    uint8_t hdr[NBD_REP_HDR_LEN];
    *data = NULL;
    int r = vd_nbd_conn_read(conn, hdr, sizeof(hdr));
    if (r < 0) {
        return vd_error_set(errp, -r, "server closed the connection during the handshake");
    }
    if (vd_ld_be64(hdr) != NBD_REP_MAGIC || vd_ld_be32(hdr + 8) != opt) {
        return vd_error_set(errp, EPROTO, "bad option reply from the server");
    }
    *type = vd_ld_be32(hdr + 12);
    *len = vd_ld_be32(hdr + 16);
    if (*len > CLI_MAX_REP_LEN) {
        return vd_error_set(errp, EPROTO, "server sent a %u byte option reply", *len);
    }
    *data = malloc(*len + 1);
    if (!*data) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    r = vd_nbd_conn_read(conn, *data, *len);
    if (r < 0) {
        free(*data);
        *data = NULL;
        return vd_error_set(errp, -r, "server closed the connection during the handshake");
    }
    (*data)[*len] = 0;
    return 0;
}

/* An option's name as QEMU's messages give it: "go", "list meta context". */
static void opt_words(uint32_t opt, char *buf, size_t size)
{
    const char *name = vd_nbd_opt_name(opt);
    if (strncmp(name, "NBD_OPT_", 8) != 0) {
        snprintf(buf, size, "<unknown>");
        return;
    }
    size_t i = 0;
    for (name += 8; *name && i + 1 < size; name++) {
        buf[i++] = *name == '_' ? ' ' : (char)tolower((unsigned char)*name);
    }
    buf[i] = 0;
}

/* An error reply in QEMU's words (nbd/client.c), what the server said as
 * a hint line after them ("server reported: ...", iotests 140, 143, 233). */
static int cli_rep_error(uint32_t opt, uint32_t type, const uint8_t *data, uint32_t len,
                         vd_error **errp)
{
    int err = type == NBD_REP_ERR_UNKNOWN                                  ? ENOENT
              : type == NBD_REP_ERR_TLS_REQD || type == NBD_REP_ERR_POLICY ? EACCES
              : type == NBD_REP_ERR_UNSUP                                  ? ENOTSUP
                                                                           : EINVAL;
    char w[64];
    opt_words(opt, w, sizeof(w));
    int r;
    switch (type) {
    case NBD_REP_ERR_UNSUP:
        r = vd_error_set(errp, err, "%s (reply to %s)", vd_nbd_rep_name(type),
                         vd_nbd_opt_name(opt));
        break;
    case NBD_REP_ERR_POLICY:
        r = vd_error_set(errp, err, "Denied by server for option %u (%s)", opt, w);
        break;
    case NBD_REP_ERR_INVALID:
        r = vd_error_set(errp, err, "Invalid parameters for option %u (%s)", opt, w);
        break;
    case NBD_REP_ERR_PLATFORM:
        r = vd_error_set(errp, err, "Server lacks support for option %u (%s)", opt, w);
        break;
    case NBD_REP_ERR_TLS_REQD:
        r = vd_error_set(errp, err, "TLS negotiation required before option %u (%s)", opt, w);
        vd_error_append_hint(errp, "Did you forget a valid tls-creds?\n");
        break;
    case NBD_REP_ERR_UNKNOWN:
        r = vd_error_set(errp, err, "Requested export not available");
        break;
    case NBD_REP_ERR_SHUTDOWN:
        r = vd_error_set(errp, err, "Server shutting down before option %u (%s)", opt, w);
        break;
    case NBD_REP_ERR_BLOCK_SIZE_REQD:
        r = vd_error_set(errp, err, "Server requires INFO_BLOCK_SIZE for option %u (%s)", opt,
                         w);
        break;
    default:
        r = vd_error_set(errp, err, "Unknown error code when asking for option %u (%s)", opt, w);
        break;
    }
    if (len && vd_nbd_valid_string((const char *)data, len)) {
        vd_error_append_hint(errp, "server reported: %.*s\n", (int)VD_MIN(len, 512u),
                             (const char *)data);
    }
    return r;
}

/* Send an option with no data and expect ACK.  1 ACK, 0 unsupported. */
static int cli_simple_opt(vd_nbd_conn *conn, uint32_t opt, vd_error **errp)
{
    int r = cli_send_opt(conn, opt, NULL, 0);
    if (r < 0) {
        return vd_error_set(errp, -r, "cannot send %s", vd_nbd_opt_name(opt));
    }
    uint32_t type, len;
    uint8_t *data;
    r = cli_read_rep(conn, opt, &type, &data, &len, errp);
    if (r < 0) {
        return r;
    }
    if (type == NBD_REP_ACK) {
        free(data);
        return 1;
    }
    if (type == NBD_REP_ERR_TLS_REQD) {
        r = cli_rep_error(opt, type, data, len, errp);
        free(data);
        return r;
    }
    free(data);
    if (!(type & NBD_REP_ERR_BIT)) {
        return vd_error_set(errp, EPROTO, "unexpected reply %u to %s", type,
                            vd_nbd_opt_name(opt));
    }
    return 0;
}

/* Greeting, client flags and STARTTLS.  *fixed, *no_zeroes out. */
static int cli_greeting(vd_nbd_conn *conn, vd_nbd_tls_creds *tls, const char *tls_host,
                        bool *fixed, bool *no_zeroes, vd_error **errp)
{
    uint8_t buf[18];
    int r = vd_nbd_conn_read(conn, buf, 16);
    if (r < 0) {
        return vd_error_set(errp, -r, "server closed the connection before the greeting");
    }
    if (vd_ld_be64(buf) != NBD_MAGIC) {
        return vd_error_set(errp, EPROTO, "not an NBD server (bad magic)");
    }
    if (vd_ld_be64(buf + 8) == NBD_OLDSTYLE_MAGIC) {
        return vd_error_set(errp, ENOTSUP, "oldstyle NBD servers are not supported");
    }
    if (vd_ld_be64(buf + 8) != NBD_IHAVEOPT) {
        return vd_error_set(errp, EPROTO, "not an NBD server (bad magic)");
    }
    r = vd_nbd_conn_read(conn, buf, 2);
    if (r < 0) {
        return vd_error_set(errp, -r, "server closed the connection during the greeting");
    }
    uint16_t hflags = vd_ld_be16(buf);
    *fixed = hflags & NBD_FLAG_FIXED_NEWSTYLE;
    *no_zeroes = hflags & NBD_FLAG_NO_ZEROES;
    uint32_t cflags =
        (*fixed ? NBD_FLAG_C_FIXED_NEWSTYLE : 0) | (*no_zeroes ? NBD_FLAG_C_NO_ZEROES : 0);
    vd_st_be32(buf, cflags);
    r = vd_nbd_conn_write(conn, buf, 4);
    if (r < 0) {
        return vd_error_set(errp, -r, "cannot send client flags");
    }
    if (tls) {
        if (!*fixed) {
            return vd_error_set(errp, ENOTSUP,
                                "server does not support TLS (no fixed newstyle)");
        }
        r = cli_simple_opt(conn, NBD_OPT_STARTTLS, errp);
        if (r < 0) {
            return r;
        }
        if (r == 0) {
            return vd_error_set(errp, ENOTSUP, "server does not support TLS");
        }
        r = vd_nbd_conn_starttls(conn, tls, false, tls_host, errp);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

static int cli_set_meta(vd_nbd_client *c, vd_error **errp)
{
    size_t nl = strlen(c->export_name), ql = strlen(c->context);
    size_t total = 4 + nl + 4 + 4 + ql;
    uint8_t *b = malloc(total);
    if (!b) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    vd_st_be32(b, (uint32_t)nl);
    memcpy(b + 4, c->export_name, nl);
    vd_st_be32(b + 4 + nl, 1);
    vd_st_be32(b + 8 + nl, (uint32_t)ql);
    memcpy(b + 12 + nl, c->context, ql);
    int r = cli_send_opt(&c->conn, NBD_OPT_SET_META_CONTEXT, b, (uint32_t)total);
    free(b);
    if (r < 0) {
        return vd_error_set(errp, -r, "cannot send NBD_OPT_SET_META_CONTEXT");
    }
    for (;;) {
        uint32_t type, len;
        uint8_t *data;
        r = cli_read_rep(&c->conn, NBD_OPT_SET_META_CONTEXT, &type, &data, &len, errp);
        if (r < 0) {
            return r;
        }
        if (type == NBD_REP_META_CONTEXT && len >= 4) {
            if (len - 4 == ql && !memcmp(data + 4, c->context, ql)) {
                c->has_ctx = true;
                c->ctx_id = vd_ld_be32(data);
            }
            free(data);
            continue;
        }
        free(data);
        if (type != NBD_REP_ACK) {
            /* no usable context: block status falls back to "all data" */
            c->has_ctx = false;
        }
        return 0;
    }
}

static int cli_go(vd_nbd_client *c, bool fixed, bool no_zeroes, vd_error **errp)
{
    size_t nl = strlen(c->export_name);
    if (nl > NBD_MAX_STRING) {
        return vd_error_set(errp, EINVAL, "export name longer than %u bytes", NBD_MAX_STRING);
    }
    int r;
    if (fixed) {
        uint8_t b[4 + NBD_MAX_STRING + 2 + 4];
        vd_st_be32(b, (uint32_t)nl);
        memcpy(b + 4, c->export_name, nl);
        vd_st_be16(b + 4 + nl, 1);
        vd_st_be16(b + 6 + nl, NBD_INFO_BLOCK_SIZE);
        r = cli_send_opt(&c->conn, NBD_OPT_GO, b, (uint32_t)(8 + nl));
        if (r < 0) {
            return vd_error_set(errp, -r, "cannot send NBD_OPT_GO");
        }
        bool have_export = false;
        for (;;) {
            uint32_t type, len;
            uint8_t *data;
            r = cli_read_rep(&c->conn, NBD_OPT_GO, &type, &data, &len, errp);
            if (r < 0) {
                return r;
            }
            if (type == NBD_REP_INFO && len >= 2) {
                uint16_t info = vd_ld_be16(data);
                if (info == NBD_INFO_EXPORT && len == 12) {
                    c->size = vd_ld_be64(data + 2);
                    c->flags = vd_ld_be16(data + 10);
                    have_export = true;
                } else if (info == NBD_INFO_BLOCK_SIZE && len == 14) {
                    uint32_t mn = vd_ld_be32(data + 2), pr = vd_ld_be32(data + 6),
                             mx = vd_ld_be32(data + 10);
                    if (vd_is_pow2(mn) && mn <= 65536 && vd_is_pow2(pr) && pr >= mn &&
                        mx >= pr) {
                        c->min_block = mn;
                        c->pref_block = pr;
                        c->max_block = mx;
                    }
                }
                free(data);
                continue;
            }
            if (type == NBD_REP_ACK) {
                free(data);
                if (!have_export) {
                    return vd_error_set(errp, EPROTO, "server sent no export information");
                }
                return 0;
            }
            if (type == NBD_REP_ERR_UNSUP && !c->extended) {
                free(data);
                break; /* an old server: fall back to NBD_OPT_EXPORT_NAME */
            }
            if (type & NBD_REP_ERR_BIT) {
                r = cli_rep_error(NBD_OPT_GO, type, data, len, errp);
                free(data);
                return r;
            }
            free(data);
            return vd_error_set(errp, EPROTO, "unexpected reply %u to NBD_OPT_GO", type);
        }
    }
    r = cli_send_opt(&c->conn, NBD_OPT_EXPORT_NAME, c->export_name, (uint32_t)nl);
    if (r < 0) {
        return vd_error_set(errp, -r, "cannot send NBD_OPT_EXPORT_NAME");
    }
    uint8_t b[134];
    r = vd_nbd_conn_read(&c->conn, b, no_zeroes ? 10 : 134);
    if (r < 0) {
        return vd_error_set(errp, ENOENT,
                            "Requested export not available: server closed "
                            "the connection on export '%s'",
                            c->export_name);
    }
    c->size = vd_ld_be64(b);
    c->flags = vd_ld_be16(b + 8);
    return 0;
}

/* Connect and negotiate into c->conn. */
static int cli_open_link(vd_nbd_client *c, vd_error **errp)
{
    int fd = c->path ? vd_nbd_connect_unix(c->path, errp)
                     : vd_nbd_connect_tcp(c->host, c->port, errp);
    if (fd < 0) {
        return fd;
    }
    int r = vd_nbd_conn_init(&c->conn, fd);
    if (r < 0) {
        close(fd);
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    c->conn_open = true;
    c->structured = c->extended = c->has_ctx = false;
    c->min_block = c->pref_block = c->max_block = 0;
    bool fixed = false, no_zeroes = false;
    const char *tls_host = c->tls_hostname ? c->tls_hostname : c->path ? NULL : c->host;
    r = cli_greeting(&c->conn, c->cfg.tls, tls_host, &fixed, &no_zeroes, errp);
    if (r >= 0 && fixed && !c->cfg.no_extended && !c->cfg.no_structured) {
        r = cli_simple_opt(&c->conn, NBD_OPT_EXTENDED_HEADERS, errp);
        if (r > 0) {
            c->extended = c->structured = true;
        }
    }
    if (r >= 0 && fixed && !c->structured && !c->cfg.no_structured) {
        r = cli_simple_opt(&c->conn, NBD_OPT_STRUCTURED_REPLY, errp);
        c->structured = r > 0;
    }
    if (r >= 0 && c->structured && c->context) {
        r = cli_set_meta(c, errp);
    }
    if (r >= 0) {
        r = cli_go(c, fixed, no_zeroes, errp);
    }
    if (r < 0) {
        if (fixed && !c->conn.eof) {
            /* tell the server we are leaving rather than just hanging up */
            c->conn.deadline = vd_nbd_now_ms() + 1000;
            cli_send_opt(&c->conn, NBD_OPT_ABORT, NULL, 0);
        }
        vd_nbd_conn_close(&c->conn);
        c->conn_open = false;
        return r;
    }
    if (!c->min_block) {
        c->min_block = 1;
        c->pref_block = 4096;
        c->max_block = NBD_MAX_PAYLOAD;
    }
    c->max_block = VD_MIN(c->max_block, (uint32_t)NBD_MAX_PAYLOAD);
    return 0;
}

/* ---------------------------------------------------------- transmission */

/* Fail every request in flight; the connection is gone.  Under c->lock. */
static void cli_fail_all_locked(vd_nbd_client *c)
{
    c->dead = true;
    for (int i = 0; i < CLI_SLOTS; i++) {
        cli_slot *s = &c->slots[i];
        if (s->busy && !s->done) {
            s->err = -ECONNRESET;
            s->done = true;
            pthread_cond_signal(&s->cond);
        }
    }
    pthread_cond_broadcast(&c->slot_free);
}

static void cli_fail_all(vd_nbd_client *c)
{
    pthread_mutex_lock(&c->lock);
    cli_fail_all_locked(c);
    pthread_mutex_unlock(&c->lock);
    vd_nbd_conn_shutdown(&c->conn);
}

static void cli_set_err(cli_slot *s, int err)
{
    if (!s->err) {
        s->err = err;
    }
}

/* Handle one structured/extended chunk for slot s.  0 or -EPROTO/-errno. */
static int cli_chunk(vd_nbd_client *c, cli_slot *s, const vd_nbd_reply *r)
{
    vd_nbd_conn *conn = &c->conn;
    uint8_t b[16];
    uint64_t len = r->length;
    int ret;
    switch (r->type) {
    case NBD_REPLY_TYPE_NONE:
        if (len || !(r->flags & NBD_REPLY_FLAG_DONE)) {
            return -EPROTO;
        }
        return 0;
    case NBD_REPLY_TYPE_OFFSET_DATA: {
        if (s->type != NBD_CMD_READ || len < 9) {
            return -EPROTO;
        }
        if ((ret = vd_nbd_conn_read(conn, b, 8)) < 0) {
            return ret;
        }
        uint64_t off = vd_ld_be64(b), dl = len - 8;
        if (off < s->off || off - s->off > s->len || dl > s->len - (off - s->off)) {
            return -EPROTO;
        }
        return vd_nbd_conn_read(conn, s->buf + (off - s->off), dl);
    }
    case NBD_REPLY_TYPE_OFFSET_HOLE: {
        if (s->type != NBD_CMD_READ || len != 12) {
            return -EPROTO;
        }
        if ((ret = vd_nbd_conn_read(conn, b, 12)) < 0) {
            return ret;
        }
        uint64_t off = vd_ld_be64(b), hl = vd_ld_be32(b + 8);
        if (!hl || off < s->off || off - s->off > s->len || hl > s->len - (off - s->off)) {
            return -EPROTO;
        }
        memset(s->buf + (off - s->off), 0, hl);
        return 0;
    }
    case NBD_REPLY_TYPE_BLOCK_STATUS:
    case NBD_REPLY_TYPE_BLOCK_STATUS_EXT: {
        bool ext = r->type == NBD_REPLY_TYPE_BLOCK_STATUS_EXT;
        size_t head = ext ? 8 : 4, per = ext ? 16 : 8;
        if (s->type != NBD_CMD_BLOCK_STATUS || ext != c->extended || len < head + per ||
            (len - head) % per || (len - head) / per > NBD_MAX_EXTENTS) {
            return -EPROTO;
        }
        if ((ret = vd_nbd_conn_read(conn, b, head)) < 0) {
            return ret;
        }
        uint32_t id = vd_ld_be32(b);
        if ((ret = vd_nbd_conn_read(conn, b, per)) < 0) {
            return ret;
        }
        uint64_t el = ext ? vd_ld_be64(b) : vd_ld_be32(b);
        uint32_t ef = ext ? (uint32_t)vd_ld_be64(b + 8) : vd_ld_be32(b + 4);
        if (!el) {
            return -EPROTO;
        }
        if (id == c->ctx_id && !s->have_ext) {
            s->have_ext = true;
            s->ext_len = el;
            s->ext_flags = ef;
        }
        return vd_nbd_conn_skip(conn, len - head - per);
    }
    default:
        if (r->type & NBD_REPLY_TYPE_ERROR_BIT) {
            if (len < 6 || len > 6 + NBD_MAX_STRING + 8) {
                return -EPROTO;
            }
            if ((ret = vd_nbd_conn_read(conn, b, 6)) < 0) {
                return ret;
            }
            uint32_t e = vd_ld_be32(b);
            uint16_t ml = vd_ld_be16(b + 4);
            if (ml > len - 6) {
                return -EPROTO;
            }
            cli_set_err(s, e ? -vd_nbd_wire_to_errno(e) : -EINVAL);
            return vd_nbd_conn_skip(conn, len - 6);
        }
        return -EPROTO;
    }
}

static void *cli_reader_main(void *opaque)
{
    vd_nbd_client *c = opaque;
    for (;;) {
        uint8_t hdr[NBD_EXT_CHUNK_LEN];
        size_t have = c->extended ? NBD_EXT_CHUNK_LEN : NBD_SIMPLE_REPLY_LEN;
        vd_nbd_reply r;
        int ret = vd_nbd_conn_read(&c->conn, hdr, have);
        if (ret < 0) {
            break;
        }
        int need = vd_nbd_reply_decode(hdr, have, c->structured, c->extended, &r);
        if (need > 0) {
            ret = vd_nbd_conn_read(&c->conn, hdr + have, (size_t)need - have);
            if (ret < 0) {
                break;
            }
            need = vd_nbd_reply_decode(hdr, (size_t)need, c->structured, c->extended, &r);
        }
        if (need != 0) {
            break; /* bad magic */
        }
        unsigned idx = (unsigned)(r.cookie & 0xffff);
        uint16_t gen = (uint16_t)(r.cookie >> 16);
        pthread_mutex_lock(&c->lock);
        cli_slot *s = idx < CLI_SLOTS ? &c->slots[idx] : NULL;
        bool valid = s && s->busy && !s->done && s->gen == gen && (r.cookie >> 32) == 0;
        pthread_mutex_unlock(&c->lock);
        if (!valid) {
            break;
        }
        bool done;
        if (r.magic == NBD_SIMPLE_REPLY_MAGIC) {
            done = true;
            if (r.error) {
                cli_set_err(s, -vd_nbd_wire_to_errno(r.error));
            } else if (s->type == NBD_CMD_READ && s->len) {
                if (vd_nbd_conn_read(&c->conn, s->buf, s->len) < 0) {
                    break;
                }
            }
        } else {
            if (cli_chunk(c, s, &r) < 0) {
                break;
            }
            done = r.flags & NBD_REPLY_FLAG_DONE;
        }
        if (done) {
            pthread_mutex_lock(&c->lock);
            s->done = true;
            pthread_cond_signal(&s->cond);
            pthread_mutex_unlock(&c->lock);
        }
    }
    cli_fail_all(c);
    return NULL;
}

static int cli_start_reader(vd_nbd_client *c)
{
    c->dead = false;
    if (pthread_create(&c->reader, NULL, cli_reader_main, c)) {
        c->dead = true;
        return -EAGAIN;
    }
    c->reader_running = true;
    return 0;
}

static void cli_stop_link(vd_nbd_client *c)
{
    if (c->reader_running) {
        vd_nbd_conn_shutdown(&c->conn);
        pthread_join(c->reader, NULL);
        c->reader_running = false;
    }
    if (c->conn_open) {
        vd_nbd_conn_close(&c->conn);
        c->conn_open = false;
    }
}

/* Reconnect after the server went away, for up to reconnect_delay s. */
static int cli_reconnect(vd_nbd_client *c)
{
    pthread_rwlock_wrlock(&c->link);
    int ret = 0;
    if (c->dead && !c->closing) {
        cli_stop_link(c);
        int64_t deadline = vd_nbd_now_ms() + (int64_t)c->cfg.reconnect_delay * 1000;
        ret = -ECONNRESET;
        while (vd_nbd_now_ms() < deadline) {
            vd_error *err = NULL;
            uint64_t old_size = c->size;
            if (cli_open_link(c, &err) == 0) {
                vd_error_free(err);
                if (c->size != old_size) {
                    /* a different export now: do not write into it */
                    cli_stop_link(c);
                    ret = -EIO;
                    break;
                }
                ret = cli_start_reader(c);
                break;
            }
            vd_error_free(err);
            usleep(200 * 1000);
        }
    } else if (c->dead) {
        ret = -ECONNRESET;
    }
    pthread_rwlock_unlock(&c->link);
    return ret;
}

static int cli_request_once(vd_nbd_client *c, uint16_t type, uint16_t flags, uint64_t off,
                            uint64_t len, const void *wbuf, void *rbuf, cli_slot *out)
{
    pthread_rwlock_rdlock(&c->link);
    pthread_mutex_lock(&c->lock);
    cli_slot *s = NULL;
    unsigned idx = 0;
    while (!c->dead) {
        for (idx = 0; idx < CLI_SLOTS && c->slots[idx].busy; idx++) {
        }
        if (idx < CLI_SLOTS) {
            s = &c->slots[idx];
            break;
        }
        pthread_cond_wait(&c->slot_free, &c->lock);
    }
    if (!s) {
        pthread_mutex_unlock(&c->lock);
        pthread_rwlock_unlock(&c->link);
        return -ECONNRESET;
    }
    s->busy = true;
    s->done = false;
    s->gen++;
    s->type = type;
    s->off = off;
    s->len = len;
    s->buf = rbuf;
    s->err = 0;
    s->have_ext = false;
    pthread_mutex_unlock(&c->lock);

    vd_nbd_request req = {
        .flags = flags,
        .type = type,
        .cookie = ((uint64_t)s->gen << 16) | idx,
        .offset = off,
        .length = len,
    };
    bool payload = type == NBD_CMD_WRITE;
    if (payload && c->extended) {
        req.flags |= NBD_CMD_FLAG_PAYLOAD_LEN;
    }
    uint8_t hdr[NBD_EXT_REQUEST_LEN];
    size_t hl = vd_nbd_request_encode(hdr, &req, c->extended);
    struct iovec iov[2] = {{hdr, hl}, {(void *)wbuf, payload ? len : 0}};
    pthread_mutex_lock(&c->wlock);
    int r = vd_nbd_conn_writev(&c->conn, iov, payload && len ? 2 : 1);
    pthread_mutex_unlock(&c->wlock);
    if (r < 0) {
        cli_fail_all(c);
    }

    pthread_mutex_lock(&c->lock);
    while (!s->done) {
        pthread_cond_wait(&s->cond, &c->lock);
    }
    int err = s->err;
    if (out) {
        out->have_ext = s->have_ext;
        out->ext_len = s->ext_len;
        out->ext_flags = s->ext_flags;
    }
    s->busy = false;
    pthread_cond_signal(&c->slot_free);
    pthread_mutex_unlock(&c->lock);
    pthread_rwlock_unlock(&c->link);
    return err;
}

static int cli_request(vd_nbd_client *c, uint16_t type, uint16_t flags, uint64_t off,
                       uint64_t len, const void *wbuf, void *rbuf, cli_slot *out)
{
    int r = cli_request_once(c, type, flags, off, len, wbuf, rbuf, out);
    if (r == -ECONNRESET && c->cfg.reconnect_delay && cli_reconnect(c) == 0) {
        r = cli_request_once(c, type, flags, off, len, wbuf, rbuf, out);
    }
    return r == -ECONNRESET ? -EIO : r;
}

/* ------------------------------------------------------------- public */

static char *cli_dup(const char *s)
{
    return s ? strdup(s) : NULL;
}

int vd_nbd_client_connect(const vd_nbd_client_cfg *cfg, vd_nbd_client **out, vd_error **errp)
{
    vd_nbd_client *c = calloc(1, sizeof(*c));
    if (!c) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    c->cfg = *cfg;
    c->host = cli_dup(cfg->host);
    c->port = cli_dup(cfg->port);
    c->path = cli_dup(cfg->path);
    c->export_name = strdup(cfg->export_name ? cfg->export_name : "");
    c->tls_hostname = cli_dup(cfg->tls_hostname);
    c->context = cli_dup(cfg->context);
    c->cfg.tls = vd_nbd_tls_creds_ref(cfg->tls);
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->slot_free, NULL);
    pthread_mutex_init(&c->wlock, NULL);
    pthread_rwlock_init(&c->link, NULL);
    for (int i = 0; i < CLI_SLOTS; i++) {
        pthread_cond_init(&c->slots[i].cond, NULL);
    }
    c->dead = true;
    int r =
        c->export_name ? cli_open_link(c, errp) : vd_error_set(errp, ENOMEM, "out of memory");
    if (r == 0) {
        r = cli_start_reader(c);
        if (r < 0) {
            vd_error_set(errp, -r, "cannot start the NBD reader thread");
        }
    }
    if (r < 0) {
        c->closing = true;
        vd_nbd_client_close(c);
        return r;
    }
    *out = c;
    return 0;
}

void vd_nbd_client_close(vd_nbd_client *c)
{
    if (!c) {
        return;
    }
    pthread_rwlock_wrlock(&c->link);
    c->closing = true;
    if (c->conn_open && !c->dead) {
        vd_nbd_request req = {.type = NBD_CMD_DISC};
        uint8_t hdr[NBD_EXT_REQUEST_LEN];
        size_t hl = vd_nbd_request_encode(hdr, &req, c->extended);
        pthread_mutex_lock(&c->wlock);
        vd_nbd_conn_write(&c->conn, hdr, hl);
        pthread_mutex_unlock(&c->wlock);
    }
    cli_stop_link(c);
    pthread_rwlock_unlock(&c->link);
    for (int i = 0; i < CLI_SLOTS; i++) {
        pthread_cond_destroy(&c->slots[i].cond);
    }
    pthread_mutex_destroy(&c->lock);
    pthread_cond_destroy(&c->slot_free);
    pthread_mutex_destroy(&c->wlock);
    pthread_rwlock_destroy(&c->link);
    vd_nbd_tls_creds_free(c->cfg.tls);
    free(c->host);
    free(c->port);
    free(c->path);
    free(c->export_name);
    free(c->tls_hostname);
    free(c->context);
    free(c);
}

uint64_t vd_nbd_client_size(vd_nbd_client *c)
{
    return c->size;
}

uint16_t vd_nbd_client_flags(vd_nbd_client *c)
{
    return c->flags;
}

void vd_nbd_client_block_sizes(vd_nbd_client *c, uint32_t *min, uint32_t *pref, uint32_t *max)
{
    *min = c->min_block;
    *pref = c->pref_block;
    *max = c->max_block;
}

bool vd_nbd_client_has_context(vd_nbd_client *c)
{
    return c->has_ctx;
}

bool vd_nbd_client_extended(vd_nbd_client *c)
{
    return c->extended;
}

int vd_nbd_client_read(vd_nbd_client *c, uint64_t off, uint64_t len, void *buf)
{
    return cli_request(c, NBD_CMD_READ, 0, off, len, NULL, buf, NULL);
}

int vd_nbd_client_write(vd_nbd_client *c, uint64_t off, uint64_t len, const void *buf,
                        uint16_t flags)
{
    return cli_request(c, NBD_CMD_WRITE, flags, off, len, buf, NULL, NULL);
}

int vd_nbd_client_zero(vd_nbd_client *c, uint64_t off, uint64_t len, uint16_t flags)
{
    return cli_request(c, NBD_CMD_WRITE_ZEROES, flags, off, len, NULL, NULL, NULL);
}

int vd_nbd_client_trim(vd_nbd_client *c, uint64_t off, uint64_t len, uint16_t flags)
{
    return cli_request(c, NBD_CMD_TRIM, flags, off, len, NULL, NULL, NULL);
}

int vd_nbd_client_flush(vd_nbd_client *c)
{
    return cli_request(c, NBD_CMD_FLUSH, 0, 0, 0, NULL, NULL, NULL);
}

int vd_nbd_client_cache(vd_nbd_client *c, uint64_t off, uint64_t len)
{
    return cli_request(c, NBD_CMD_CACHE, 0, off, len, NULL, NULL, NULL);
}

int vd_nbd_client_block_status(vd_nbd_client *c, uint64_t off, uint64_t len, uint64_t *ext_len,
                               uint32_t *ext_flags)
{
    cli_slot res = {0};
    if (!c->extended) {
        len = VD_MIN(len, (uint64_t)UINT32_MAX & ~(uint64_t)(c->min_block - 1));
    }
    int r =
        cli_request(c, NBD_CMD_BLOCK_STATUS, NBD_CMD_FLAG_REQ_ONE, off, len, NULL, NULL, &res);
    if (r < 0) {
        return r;
    }
    if (!res.have_ext) {
        return -EPROTO;
    }
    *ext_len = VD_MIN(res.ext_len, len);
    *ext_flags = res.ext_flags;
    return 0;
}

/* ------------------------------------------------------------- listing */

static int list_add(vd_nbd_export_info **list, size_t *n, const uint8_t *data, uint32_t len)
{
    if (len < 4) {
        return -EPROTO;
    }
    uint32_t nl = vd_ld_be32(data);
    if (nl > len - 4) {
        return -EPROTO;
    }
    vd_nbd_export_info *nlst = realloc(*list, (*n + 1) * sizeof(*nlst));
    if (!nlst) {
        return -ENOMEM;
    }
    *list = nlst;
    vd_nbd_export_info *e = &nlst[*n];
    memset(e, 0, sizeof(*e));
    e->name = strndup((const char *)data + 4, nl);
    if (len - 4 > nl) {
        e->description = strndup((const char *)data + 4 + nl, len - 4 - nl);
    }
    (*n)++;
    return e->name ? 0 : -ENOMEM;
}

static int list_info(vd_nbd_conn *conn, vd_nbd_export_info *e, bool structured, vd_error **errp)
{
    size_t nl = strlen(e->name);
    uint8_t b[4 + NBD_MAX_STRING + 2 + 6];
    vd_st_be32(b, (uint32_t)nl);
    memcpy(b + 4, e->name, nl);
    vd_st_be16(b + 4 + nl, 3);
    vd_st_be16(b + 6 + nl, NBD_INFO_NAME);
    vd_st_be16(b + 8 + nl, NBD_INFO_DESCRIPTION);
    vd_st_be16(b + 10 + nl, NBD_INFO_BLOCK_SIZE);
    int r = cli_send_opt(conn, NBD_OPT_INFO, b, (uint32_t)(12 + nl));
    if (r < 0) {
        return vd_error_set(errp, -r, "cannot send NBD_OPT_INFO");
    }
    for (;;) {
        uint32_t type, len;
        uint8_t *data;
        if ((r = cli_read_rep(conn, NBD_OPT_INFO, &type, &data, &len, errp)) < 0) {
            return r;
        }
        if (type == NBD_REP_INFO && len >= 2) {
            uint16_t info = vd_ld_be16(data);
            if (info == NBD_INFO_EXPORT && len == 12) {
                e->size = vd_ld_be64(data + 2);
                e->flags = vd_ld_be16(data + 10);
            } else if (info == NBD_INFO_BLOCK_SIZE && len == 14) {
                e->min_block = vd_ld_be32(data + 2);
                e->pref_block = vd_ld_be32(data + 6);
                e->max_block = vd_ld_be32(data + 10);
            } else if (info == NBD_INFO_DESCRIPTION && !e->description) {
                e->description = strndup((const char *)data + 2, len - 2);
            }
            free(data);
            continue;
        }
        free(data);
        if (type != NBD_REP_ACK) {
            e->info_failed = true;
        }
        break;
    }
    if (!structured || e->info_failed) {
        return 0;
    }
    vd_st_be32(b, (uint32_t)nl);
    memcpy(b + 4, e->name, nl);
    vd_st_be32(b + 4 + nl, 0);
    r = cli_send_opt(conn, NBD_OPT_LIST_META_CONTEXT, b, (uint32_t)(8 + nl));
    if (r < 0) {
        return vd_error_set(errp, -r, "cannot send NBD_OPT_LIST_META_CONTEXT");
    }
    for (;;) {
        uint32_t type, len;
        uint8_t *data;
        if ((r = cli_read_rep(conn, NBD_OPT_LIST_META_CONTEXT, &type, &data, &len, errp)) < 0) {
            return r;
        }
        if (type == NBD_REP_META_CONTEXT && len >= 4 && e->ncontexts < 1024) {
            char **nc = realloc(e->contexts, (e->ncontexts + 1) * sizeof(*nc));
            if (nc) {
                e->contexts = nc;
                nc[e->ncontexts] = strndup((const char *)data + 4, len - 4);
                if (nc[e->ncontexts]) {
                    e->ncontexts++;
                }
            }
            free(data);
            continue;
        }
        free(data);
        return 0;
    }
}

int vd_nbd_list_exports(const char *host, const char *port, const char *path,
                        vd_nbd_tls_creds *tls, const char *tls_hostname,
                        vd_nbd_export_info **list, size_t *count)
{
    vd_error *err = NULL;
    *list = NULL;
    *count = 0;
    if (tls && tls->server) {
        vd_set_public_error(EINVAL, "Expecting TLS credentials with a client endpoint");
        return -1;
    }
    int fd = path ? vd_nbd_connect_unix(path, &err) : vd_nbd_connect_tcp(host, port, &err);
    if (fd < 0) {
        vd_error_publish(err);
        return -1;
    }
    vd_nbd_conn conn;
    if (vd_nbd_conn_init(&conn, fd) < 0) {
        close(fd);
        vd_set_public_error(ENOMEM, "out of memory");
        return -1;
    }
    bool fixed, no_zeroes, structured = false;
    int r = cli_greeting(&conn, tls,
                         tls_hostname ? tls_hostname
                         : path       ? NULL
                                      : host,
                         &fixed, &no_zeroes, &err);
    if (r >= 0 && !fixed) {
        r = vd_error_set(&err, ENOTSUP, "server does not support listing exports");
    }
    if (r >= 0) {
        r = cli_send_opt(&conn, NBD_OPT_LIST, NULL, 0);
        if (r < 0) {
            vd_error_set(&err, -r, "cannot send NBD_OPT_LIST");
        }
    }
    while (r >= 0) {
        uint32_t type, len;
        uint8_t *data;
        r = cli_read_rep(&conn, NBD_OPT_LIST, &type, &data, &len, &err);
        if (r < 0) {
            break;
        }
        if (type == NBD_REP_SERVER) {
            r = list_add(list, count, data, len);
            free(data);
            if (r < 0) {
                vd_error_set(&err, -r, "bad NBD_REP_SERVER reply");
            }
            continue;
        }
        if (type != NBD_REP_ACK) {
            r = cli_rep_error(NBD_OPT_LIST, type, data, len, &err);
        }
        free(data);
        break;
    }
    if (r >= 0) {
        r = cli_simple_opt(&conn, NBD_OPT_STRUCTURED_REPLY, &err);
        structured = r > 0;
    }
    for (size_t i = 0; r >= 0 && i < *count; i++) {
        r = list_info(&conn, &(*list)[i], structured, &err);
    }
    if (r >= 0) {
        /* polite goodbye; the reply does not matter */
        cli_send_opt(&conn, NBD_OPT_ABORT, NULL, 0);
        uint32_t type, len;
        uint8_t *data = NULL;
        conn.deadline = vd_nbd_now_ms() + 1000;
        vd_error *ignored = NULL;
        if (cli_read_rep(&conn, NBD_OPT_ABORT, &type, &data, &len, &ignored) == 0) {
            free(data);
        }
        vd_error_free(ignored);
    }
    vd_nbd_conn_close(&conn);
    if (r < 0) {
        vd_nbd_export_info_free(*list, *count);
        *list = NULL;
        *count = 0;
        vd_error_publish(err);
        return -1;
    }
    vd_error_free(err);
    return 0;
}

void vd_nbd_export_info_free(vd_nbd_export_info *list, size_t count)
{
    for (size_t i = 0; list && i < count; i++) {
        free(list[i].name);
        free(list[i].description);
        for (size_t j = 0; j < list[i].ncontexts; j++) {
            free(list[i].contexts[j]);
        }
        free(list[i].contexts);
    }
    free(list);
}
