/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The NBD wire format, shared by the server (server.c) and the client
 * (client.c, used by the `nbd` protocol driver and `vdisk-nbd -L`).
 *
 * Follows doc/proto.md of the NBD project, including the EXTENDED_HEADERS
 * extension (branch extension-ext-header: 32-byte requests and replies,
 * 64-bit lengths, NBD_REPLY_TYPE_BLOCK_STATUS_EXT), and QEMU's
 * docs/interop/nbd.rst for the "qemu:" metadata namespace.  Oldstyle
 * negotiation is not supported.
 *
 * Everything here is pure encoding/decoding of byte buffers: no I/O, no
 * allocation, so it is easy to fuzz and to reuse on both sides.
 */
#ifndef VD_NBD_PROTO_H
#define VD_NBD_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------- magics */

#define NBD_MAGIC UINT64_C(0x4e42444d41474943)    /* "NBDMAGIC" */
#define NBD_IHAVEOPT UINT64_C(0x49484156454F5054) /* "IHAVEOPT" */
#define NBD_OLDSTYLE_MAGIC UINT64_C(0x00420281861253)
#define NBD_REP_MAGIC UINT64_C(0x3e889045565a9)
#define NBD_REQUEST_MAGIC 0x25609513u
#define NBD_EXTENDED_REQUEST_MAGIC 0x21e41c71u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu
#define NBD_EXTENDED_REPLY_MAGIC 0x6e8a278cu

#define NBD_DEFAULT_PORT 10809

/* ------------------------------------------------------------ handshake */

/* handshake flags (server, 16 bits) */
#define NBD_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_NO_ZEROES (1u << 1)
/* client flags (32 bits) */
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES (1u << 1)

/* transmission flags (16 bits) */
#define NBD_FLAG_HAS_FLAGS (1u << 0)
#define NBD_FLAG_READ_ONLY (1u << 1)
#define NBD_FLAG_SEND_FLUSH (1u << 2)
#define NBD_FLAG_SEND_FUA (1u << 3)
#define NBD_FLAG_ROTATIONAL (1u << 4)
#define NBD_FLAG_SEND_TRIM (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_SEND_DF (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN (1u << 8)
#define NBD_FLAG_SEND_RESIZE (1u << 9)
#define NBD_FLAG_SEND_CACHE (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO (1u << 11)
#define NBD_FLAG_BLOCK_STATUS_PAYLOAD (1u << 12)

/* options */
#define NBD_OPT_EXPORT_NAME 1u
#define NBD_OPT_ABORT 2u
#define NBD_OPT_LIST 3u
#define NBD_OPT_PEEK_EXPORT 4u
#define NBD_OPT_STARTTLS 5u
#define NBD_OPT_INFO 6u
#define NBD_OPT_GO 7u
#define NBD_OPT_STRUCTURED_REPLY 8u
#define NBD_OPT_LIST_META_CONTEXT 9u
#define NBD_OPT_SET_META_CONTEXT 10u
#define NBD_OPT_EXTENDED_HEADERS 11u

/* option replies */
#define NBD_REP_ERR_BIT 0x80000000u
#define NBD_REP_ACK 1u
#define NBD_REP_SERVER 2u
#define NBD_REP_INFO 3u
#define NBD_REP_META_CONTEXT 4u
#define NBD_REP_ERR_UNSUP (NBD_REP_ERR_BIT | 1u)
#define NBD_REP_ERR_POLICY (NBD_REP_ERR_BIT | 2u)
#define NBD_REP_ERR_INVALID (NBD_REP_ERR_BIT | 3u)
#define NBD_REP_ERR_PLATFORM (NBD_REP_ERR_BIT | 4u)
#define NBD_REP_ERR_TLS_REQD (NBD_REP_ERR_BIT | 5u)
#define NBD_REP_ERR_UNKNOWN (NBD_REP_ERR_BIT | 6u)
#define NBD_REP_ERR_SHUTDOWN (NBD_REP_ERR_BIT | 7u)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_ERR_BIT | 8u)
#define NBD_REP_ERR_TOO_BIG (NBD_REP_ERR_BIT | 9u)
#define NBD_REP_ERR_EXT_HEADER_REQD (NBD_REP_ERR_BIT | 10u)

/* NBD_REP_INFO types */
#define NBD_INFO_EXPORT 0u
#define NBD_INFO_NAME 1u
#define NBD_INFO_DESCRIPTION 2u
#define NBD_INFO_BLOCK_SIZE 3u

/* ---------------------------------------------------------- transmission */

/* commands */
#define NBD_CMD_READ 0u
#define NBD_CMD_WRITE 1u
#define NBD_CMD_DISC 2u
#define NBD_CMD_FLUSH 3u
#define NBD_CMD_TRIM 4u
#define NBD_CMD_CACHE 5u
#define NBD_CMD_WRITE_ZEROES 6u
#define NBD_CMD_BLOCK_STATUS 7u

/* command flags */
#define NBD_CMD_FLAG_FUA (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)
#define NBD_CMD_FLAG_DF (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO (1u << 4)
#define NBD_CMD_FLAG_PAYLOAD_LEN (1u << 5)

/* reply flags and chunk types */
#define NBD_REPLY_FLAG_DONE (1u << 0)
#define NBD_REPLY_TYPE_NONE 0u
#define NBD_REPLY_TYPE_OFFSET_DATA 1u
#define NBD_REPLY_TYPE_OFFSET_HOLE 2u
#define NBD_REPLY_TYPE_BLOCK_STATUS 5u
#define NBD_REPLY_TYPE_BLOCK_STATUS_EXT 6u
#define NBD_REPLY_TYPE_ERROR_BIT (1u << 15)
#define NBD_REPLY_TYPE_ERROR (NBD_REPLY_TYPE_ERROR_BIT | 1u)
#define NBD_REPLY_TYPE_ERROR_OFFSET (NBD_REPLY_TYPE_ERROR_BIT | 2u)

/* base:allocation flags */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)
/* qemu:dirty-bitmap: flag */
#define NBD_STATE_DIRTY (1u << 0)

/* wire error values */
#define NBD_EPERM 1u
#define NBD_EIO 5u
#define NBD_ENOMEM 12u
#define NBD_EINVAL 22u
#define NBD_ENOSPC 28u
#define NBD_EOVERFLOW 75u
#define NBD_ENOTSUP 95u
#define NBD_ESHUTDOWN 108u

/* ---------------------------------------------------------------- limits */

/* Longest string the protocol allows (export names, messages, queries). */
#define NBD_MAX_STRING 4096u
/* Largest read/write payload we serve or send (the protocol's portable
 * maximum; QEMU uses the same). */
#define NBD_MAX_PAYLOAD (32u * 1024 * 1024)
/* Largest option payload a server accepts before calling it an attack. */
#define NBD_MAX_OPTION_LEN (1u * 1024 * 1024)
/* Most extents we put in (or accept from) one block status chunk. */
#define NBD_MAX_EXTENTS (1u << 20)

/* Header sizes. */
#define NBD_OPT_HDR_LEN 16u
#define NBD_REP_HDR_LEN 20u
#define NBD_REQUEST_LEN 28u
#define NBD_EXT_REQUEST_LEN 32u
#define NBD_SIMPLE_REPLY_LEN 16u
#define NBD_CHUNK_LEN 20u
#define NBD_EXT_CHUNK_LEN 32u

/* --------------------------------------------------------------- structs */

typedef struct vd_nbd_request {
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint64_t length; /* 32 bits in compact requests */
} vd_nbd_request;

/* A reply header as decoded (simple, structured or extended). */
typedef struct vd_nbd_reply {
    uint32_t magic;
    uint32_t error; /* simple replies */
    uint16_t flags; /* chunks */
    uint16_t type;  /* chunks */
    uint64_t cookie;
    uint64_t offset; /* extended chunks */
    uint64_t length; /* chunk payload length */
} vd_nbd_reply;

/* ------------------------------------------------------------- functions */

/* Encode a request header; returns its size (28 or 32). */
size_t vd_nbd_request_encode(uint8_t *buf, const vd_nbd_request *r, bool extended);
/* Decode a request header of the given style; -EINVAL on a bad magic. */
int vd_nbd_request_decode(const uint8_t *buf, bool extended, vd_nbd_request *r);

/* Reply headers; each returns its size. */
size_t vd_nbd_simple_reply_encode(uint8_t *buf, uint32_t error, uint64_t cookie);
/* A structured (20 bytes) or extended (32 bytes) chunk header. */
size_t vd_nbd_chunk_encode(uint8_t *buf, bool extended, uint16_t flags, uint16_t type,
                           uint64_t cookie, uint64_t offset, uint64_t length);
/*
 * Decode the start of a reply.  buf holds `have` bytes (at least 4).
 * Returns the full header length this magic needs (16, 20 or 32) when
 * have is smaller, 0 when decoded, or -EINVAL for an unknown magic or a
 * magic not allowed in this mode.
 */
int vd_nbd_reply_decode(const uint8_t *buf, size_t have, bool structured, bool extended,
                        vd_nbd_reply *r);

/* Option request header (16 bytes) and option reply header (20 bytes). */
void vd_nbd_opt_encode(uint8_t *buf, uint32_t opt, uint32_t len);
void vd_nbd_rep_encode(uint8_t *buf, uint32_t opt, uint32_t type, uint32_t len);

/* errno (positive) -> wire error, and back. */
uint32_t vd_nbd_errno_to_wire(int err);
int vd_nbd_wire_to_errno(uint32_t err);

/* Names for logs and messages ("NBD_OPT_GO", "NBD_CMD_READ" ...). */
const char *vd_nbd_opt_name(uint32_t opt);
const char *vd_nbd_rep_name(uint32_t rep);
const char *vd_nbd_cmd_name(uint32_t cmd);
const char *vd_nbd_info_name(uint32_t info);

/* True when s (len bytes) is a valid protocol string: no NUL, at most
 * NBD_MAX_STRING bytes. */
bool vd_nbd_valid_string(const char *s, size_t len);

/*
 * Parse the body of NBD_OPT_LIST/SET_META_CONTEXT: export name, query
 * count, queries.  The callback sees each query (not NUL-terminated);
 * returning non-zero stops the walk with that value.  Returns 0, the
 * callback's value, or -EINVAL when the body is malformed (the reply is
 * then NBD_REP_ERR_INVALID).  name/name_len point into buf.
 */
typedef int vd_nbd_query_fn(void *opaque, const char *query, size_t len);
int vd_nbd_parse_meta_body(const uint8_t *buf, size_t len, const char **name, size_t *name_len,
                           uint32_t *nqueries, vd_nbd_query_fn *fn, void *opaque);

/*
 * Parse the body of NBD_OPT_INFO/GO: export name and information
 * requests.  *reqs points into buf (nreqs big-endian 16-bit values).
 */
int vd_nbd_parse_info_body(const uint8_t *buf, size_t len, const char **name, size_t *name_len,
                           const uint8_t **reqs, uint16_t *nreqs);

#endif /* VD_NBD_PROTO_H */
