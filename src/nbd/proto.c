/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * NBD wire format encoding and decoding (see proto.h).  Every decoder
 * checks lengths before it reads: its input comes straight off a socket.
 */
#include "proto.h"

#include <errno.h>
#include <string.h>

#include "internal.h"

size_t vd_nbd_request_encode(uint8_t *buf, const vd_nbd_request *r, bool extended)
{
    vd_st_be32(buf, extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC);
    vd_st_be16(buf + 4, r->flags);
    vd_st_be16(buf + 6, r->type);
    vd_st_be64(buf + 8, r->cookie);
    vd_st_be64(buf + 16, r->offset);
    if (extended) {
        vd_st_be64(buf + 24, r->length);
        return NBD_EXT_REQUEST_LEN;
    }
    vd_st_be32(buf + 24, (uint32_t)r->length);
    return NBD_REQUEST_LEN;
}

int vd_nbd_request_decode(const uint8_t *buf, bool extended, vd_nbd_request *r)
{
    uint32_t magic = vd_ld_be32(buf);
    if (magic != (extended ? NBD_EXTENDED_REQUEST_MAGIC : NBD_REQUEST_MAGIC)) {
        return -EINVAL;
    }
    r->flags = vd_ld_be16(buf + 4);
    r->type = vd_ld_be16(buf + 6);
    r->cookie = vd_ld_be64(buf + 8);
    r->offset = vd_ld_be64(buf + 16);
    r->length = extended ? vd_ld_be64(buf + 24) : vd_ld_be32(buf + 24);
    return 0;
}

size_t vd_nbd_simple_reply_encode(uint8_t *buf, uint32_t error, uint64_t cookie)
{
    vd_st_be32(buf, NBD_SIMPLE_REPLY_MAGIC);
    vd_st_be32(buf + 4, error);
    vd_st_be64(buf + 8, cookie);
    return NBD_SIMPLE_REPLY_LEN;
}

size_t vd_nbd_chunk_encode(uint8_t *buf, bool extended, uint16_t flags, uint16_t type,
                           uint64_t cookie, uint64_t offset, uint64_t length)
{
    vd_st_be32(buf, extended ? NBD_EXTENDED_REPLY_MAGIC : NBD_STRUCTURED_REPLY_MAGIC);
    vd_st_be16(buf + 4, flags);
    vd_st_be16(buf + 6, type);
    vd_st_be64(buf + 8, cookie);
    if (extended) {
        vd_st_be64(buf + 16, offset);
        vd_st_be64(buf + 24, length);
        return NBD_EXT_CHUNK_LEN;
    }
    vd_st_be32(buf + 16, (uint32_t)length);
    return NBD_CHUNK_LEN;
}

int vd_nbd_reply_decode(const uint8_t *buf, size_t have, bool structured, bool extended,
                        vd_nbd_reply *r)
{
    if (have < 4) {
        return 4;
    }
    uint32_t magic = vd_ld_be32(buf);
    size_t need;
    if (extended) {
        /* with extended headers every reply is an extended chunk */
        if (magic != NBD_EXTENDED_REPLY_MAGIC) {
            return -EINVAL;
        }
        need = NBD_EXT_CHUNK_LEN;
    } else if (magic == NBD_SIMPLE_REPLY_MAGIC) {
        need = NBD_SIMPLE_REPLY_LEN;
    } else if (magic == NBD_STRUCTURED_REPLY_MAGIC && structured) {
        need = NBD_CHUNK_LEN;
    } else {
        return -EINVAL;
    }
    if (have < need) {
        return (int)need;
    }
    memset(r, 0, sizeof(*r));
    r->magic = magic;
    r->cookie = vd_ld_be64(buf + 8);
    if (magic == NBD_SIMPLE_REPLY_MAGIC) {
        r->error = vd_ld_be32(buf + 4);
        return 0;
    }
    r->flags = vd_ld_be16(buf + 4);
    r->type = vd_ld_be16(buf + 6);
    if (extended) {
        r->offset = vd_ld_be64(buf + 16);
        r->length = vd_ld_be64(buf + 24);
    } else {
        r->length = vd_ld_be32(buf + 16);
    }
    return 0;
}

void vd_nbd_opt_encode(uint8_t *buf, uint32_t opt, uint32_t len)
{
    vd_st_be64(buf, NBD_IHAVEOPT);
    vd_st_be32(buf + 8, opt);
    vd_st_be32(buf + 12, len);
}

void vd_nbd_rep_encode(uint8_t *buf, uint32_t opt, uint32_t type, uint32_t len)
{
    vd_st_be64(buf, NBD_REP_MAGIC);
    vd_st_be32(buf + 8, opt);
    vd_st_be32(buf + 12, type);
    vd_st_be32(buf + 16, len);
}

uint32_t vd_nbd_errno_to_wire(int err)
{
    if (err < 0) {
        err = -err;
    }
    switch (err) {
    case 0:
        return 0;
    case EPERM:
    case EROFS:
    case EACCES:
        return NBD_EPERM;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
    case ERANGE:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
#if EOPNOTSUPP != ENOTSUP
    case EOPNOTSUPP:
#endif
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EIO;
    }
}

int vd_nbd_wire_to_errno(uint32_t err)
{
    switch (err) {
    case NBD_EPERM:
        return EPERM;
    case NBD_EIO:
        return EIO;
    case NBD_ENOMEM:
        return ENOMEM;
    case NBD_ENOSPC:
        return ENOSPC;
    case NBD_EOVERFLOW:
        return EOVERFLOW;
    case NBD_ENOTSUP:
        return ENOTSUP;
    case NBD_ESHUTDOWN:
        return ESHUTDOWN;
    default:
        /* the spec: treat unknown values as EINVAL */
        return EINVAL;
    }
}

const char *vd_nbd_opt_name(uint32_t opt)
{
    static const char *const names[] = {
        [NBD_OPT_EXPORT_NAME] = "NBD_OPT_EXPORT_NAME",
        [NBD_OPT_ABORT] = "NBD_OPT_ABORT",
        [NBD_OPT_LIST] = "NBD_OPT_LIST",
        [NBD_OPT_PEEK_EXPORT] = "NBD_OPT_PEEK_EXPORT",
        [NBD_OPT_STARTTLS] = "NBD_OPT_STARTTLS",
        [NBD_OPT_INFO] = "NBD_OPT_INFO",
        [NBD_OPT_GO] = "NBD_OPT_GO",
        [NBD_OPT_STRUCTURED_REPLY] = "NBD_OPT_STRUCTURED_REPLY",
        [NBD_OPT_LIST_META_CONTEXT] = "NBD_OPT_LIST_META_CONTEXT",
        [NBD_OPT_SET_META_CONTEXT] = "NBD_OPT_SET_META_CONTEXT",
        [NBD_OPT_EXTENDED_HEADERS] = "NBD_OPT_EXTENDED_HEADERS",
    };
    if (opt < VD_ARRAY_SIZE(names) && names[opt]) {
        return names[opt];
    }
    return "unknown option";
}

const char *vd_nbd_rep_name(uint32_t rep)
{
    switch (rep) {
    case NBD_REP_ACK:
        return "NBD_REP_ACK";
    case NBD_REP_SERVER:
        return "NBD_REP_SERVER";
    case NBD_REP_INFO:
        return "NBD_REP_INFO";
    case NBD_REP_META_CONTEXT:
        return "NBD_REP_META_CONTEXT";
    case NBD_REP_ERR_UNSUP:
        return "option not supported";
    case NBD_REP_ERR_POLICY:
        return "denied by server policy";
    case NBD_REP_ERR_INVALID:
        return "invalid option";
    case NBD_REP_ERR_PLATFORM:
        return "not supported on this platform";
    case NBD_REP_ERR_TLS_REQD:
        return "TLS required";
    case NBD_REP_ERR_UNKNOWN:
        return "export unknown";
    case NBD_REP_ERR_SHUTDOWN:
        return "server shutting down";
    case NBD_REP_ERR_BLOCK_SIZE_REQD:
        return "block size negotiation required";
    case NBD_REP_ERR_TOO_BIG:
        return "option too big";
    case NBD_REP_ERR_EXT_HEADER_REQD:
        return "extended headers required";
    default:
        return "unknown reply";
    }
}

const char *vd_nbd_cmd_name(uint32_t cmd)
{
    static const char *const names[] = {
        [NBD_CMD_READ] = "NBD_CMD_READ",
        [NBD_CMD_WRITE] = "NBD_CMD_WRITE",
        [NBD_CMD_DISC] = "NBD_CMD_DISC",
        [NBD_CMD_FLUSH] = "NBD_CMD_FLUSH",
        [NBD_CMD_TRIM] = "NBD_CMD_TRIM",
        [NBD_CMD_CACHE] = "NBD_CMD_CACHE",
        [NBD_CMD_WRITE_ZEROES] = "NBD_CMD_WRITE_ZEROES",
        [NBD_CMD_BLOCK_STATUS] = "NBD_CMD_BLOCK_STATUS",
    };
    if (cmd < VD_ARRAY_SIZE(names) && names[cmd]) {
        return names[cmd];
    }
    return "unknown command";
}

const char *vd_nbd_info_name(uint32_t info)
{
    switch (info) {
    case NBD_INFO_EXPORT:
        return "NBD_INFO_EXPORT";
    case NBD_INFO_NAME:
        return "NBD_INFO_NAME";
    case NBD_INFO_DESCRIPTION:
        return "NBD_INFO_DESCRIPTION";
    case NBD_INFO_BLOCK_SIZE:
        return "NBD_INFO_BLOCK_SIZE";
    default:
        return "unknown info";
    }
}

bool vd_nbd_valid_string(const char *s, size_t len)
{
    return len <= NBD_MAX_STRING && !memchr(s, 0, len);
}

int vd_nbd_parse_meta_body(const uint8_t *buf, size_t len, const char **name, size_t *name_len,
                           uint32_t *nqueries, vd_nbd_query_fn *fn, void *opaque)
{
    if (len < 4) {
        return -EINVAL;
    }
    uint32_t nl = vd_ld_be32(buf);
    /* name length plus the query count must fit */
    if (nl > len - 4 || len - 4 - nl < 4 || nl > NBD_MAX_STRING) {
        return -EINVAL;
    }
    *name = (const char *)buf + 4;
    *name_len = nl;
    if (!vd_nbd_valid_string(*name, nl)) {
        return -EINVAL;
    }
    size_t pos = 4 + (size_t)nl;
    uint32_t nq = vd_ld_be32(buf + pos);
    pos += 4;
    *nqueries = nq;
    /* each query needs at least its 4-byte length: reject counts that
     * cannot fit before walking them */
    if (nq > (len - pos) / 4) {
        return -EINVAL;
    }
    for (uint32_t i = 0; i < nq; i++) {
        if (len - pos < 4) {
            return -EINVAL;
        }
        uint32_t ql = vd_ld_be32(buf + pos);
        pos += 4;
        if (ql > len - pos) {
            return -EINVAL;
        }
        const char *q = (const char *)buf + pos;
        pos += ql;
        if (!vd_nbd_valid_string(q, ql)) {
            return -EINVAL;
        }
        if (fn) {
            int r = fn(opaque, q, ql);
            if (r) {
                return r;
            }
        }
    }
    if (pos != len) {
        return -EINVAL;
    }
    return 0;
}

int vd_nbd_parse_info_body(const uint8_t *buf, size_t len, const char **name, size_t *name_len,
                           const uint8_t **reqs, uint16_t *nreqs)
{
    if (len < 6) {
        return -EINVAL;
    }
    uint32_t nl = vd_ld_be32(buf);
    if (nl > len - 6) {
        return -EINVAL;
    }
    *name = (const char *)buf + 4;
    *name_len = nl;
    if (!vd_nbd_valid_string(*name, nl)) {
        return -EINVAL;
    }
    size_t pos = 4 + (size_t)nl;
    uint16_t n = vd_ld_be16(buf + pos);
    pos += 2;
    if ((size_t)n * 2 != len - pos) {
        return -EINVAL;
    }
    *nreqs = n;
    *reqs = buf + pos;
    return 0;
}
