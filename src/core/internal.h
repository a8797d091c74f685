/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libvdisk internals: the node graph, the driver interface every protocol,
 * format and filter implements, and the small helpers all of them share
 * (errors, byte order, overflow-checked arithmetic, options).
 *
 * Read docs/design.md first.  The contract in one paragraph:
 *  - A driver never validates a request: the core (src/core/io.c) checks
 *    range, permission, splits to max_transfer and aligns to
 *    request_alignment before calling pread/pwrite/... .
 *  - I/O callbacks return 0 or -errno (no message; the core makes one).
 *    Open/create/truncate/check/info take vd_error **errp and set a
 *    message naming the file and the problem.
 *  - Drivers guard their own metadata with their own mutex; data I/O runs
 *    outside it.  Many threads call a node's I/O callbacks at once.
 */
#ifndef VD_INTERNAL_H
#define VD_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "vdisk.h"
#include "events.h"

#define VD_PRINTF(a, b) __attribute__((format(printf, a, b)))
#define VD_UNUSED __attribute__((unused))
#define VD_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define VD_MIN(a, b) ((a) < (b) ? (a) : (b))
#define VD_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ------------------------------------------------------------------ errors */

typedef struct vd_error {
    int err; /* positive errno */
    char msg[1024];
    char hint[1024]; /* lines shown after msg (vd_get_error_hint), "" when none */
} vd_error;

/* Set *errp (when errp and *errp is NULL) to a formatted message; err is a
 * positive or negative errno.  Returns -abs(err) for `return vd_error_set()`. */
/* One line of check output for vd_check_reported's callback (no newline). */
void vd_check_line(const char *fmt, ...) VD_PRINTF(1, 2);
/* Between these, on this thread, check lines (when no vd_check_reported
 * callback takes them) go to vd_set_repair_report's handler: a format's
 * automatic repair at open.  begin returns the state that end restores. */
bool vd_check_auto_begin(void);
/* A line QEMU prints bare on stderr outside any check (qcow2's "Marking
 * image as corrupt: ..."), to vd_set_repair_report's handler. */
void vd_report_line(const char *fmt, ...) VD_PRINTF(1, 2);
/* vd_set_image_tool_name's name ("vdisk" unless set) */
const char *vd_image_tool_name(void);
void vd_check_auto_end(bool was);
int vd_error_set(vd_error **errp, int err, const char *fmt, ...) VD_PRINTF(3, 4);
/* As vd_error_set, appending ": strerror(err)". */
int vd_error_setg_errno(vd_error **errp, int err, const char *fmt, ...) VD_PRINTF(3, 4);
/* Prefix an existing message: "prefix: old message". */
void vd_error_prepend(vd_error **errp, const char *fmt, ...) VD_PRINTF(2, 3);
/* Append to the hint of an existing error (QEMU's error_append_hint): text
 * the tools print as it is on the lines after the message, so each line
 * ends with "\n".  Does nothing when errp or *errp is NULL. */
void vd_error_append_hint(vd_error **errp, const char *fmt, ...) VD_PRINTF(2, 3);
void vd_error_free(vd_error *err);
/* Store err as this thread's public error (takes ownership) and free it. */
void vd_error_publish(vd_error *err);
/* Set this thread's public error directly. */
void vd_set_public_error(int err, const char *fmt, ...) VD_PRINTF(2, 3);
/* Pass a warning (one line, no newline) to the embedder's handler, if any. */
void vd_warn(const char *fmt, ...) VD_PRINTF(1, 2);

/* --------------------------------------------------------------- byte order */

static inline uint16_t vd_ld_be16(const void *p)
{
    const uint8_t *b = p;
    return (uint16_t)((b[0] << 8) | b[1]);
}
static inline uint32_t vd_ld_be32(const void *p)
{
    const uint8_t *b = p;
    return ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
}
static inline uint64_t vd_ld_be64(const void *p)
{
    return ((uint64_t)vd_ld_be32(p) << 32) | vd_ld_be32((const uint8_t *)p + 4);
}
static inline uint16_t vd_ld_le16(const void *p)
{
    const uint8_t *b = p;
    return (uint16_t)(b[0] | (b[1] << 8));
}
static inline uint32_t vd_ld_le32(const void *p)
{
    const uint8_t *b = p;
    return b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}
static inline uint64_t vd_ld_le64(const void *p)
{
    return vd_ld_le32(p) | ((uint64_t)vd_ld_le32((const uint8_t *)p + 4) << 32);
}
static inline void vd_st_be16(void *p, uint16_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)(v >> 8);
    b[1] = (uint8_t)v;
}
static inline void vd_st_be32(void *p, uint32_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}
static inline void vd_st_be64(void *p, uint64_t v)
{
    vd_st_be32(p, (uint32_t)(v >> 32));
    vd_st_be32((uint8_t *)p + 4, (uint32_t)v);
}
static inline void vd_st_le16(void *p, uint16_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
}
static inline void vd_st_le32(void *p, uint32_t v)
{
    uint8_t *b = p;
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
}
static inline void vd_st_le64(void *p, uint64_t v)
{
    vd_st_le32(p, (uint32_t)v);
    vd_st_le32((uint8_t *)p + 4, (uint32_t)(v >> 32));
}

/* ------------------------------------------------- overflow-checked math */

/* Each returns true on overflow (and leaves *r unspecified). */
static inline bool vd_add_overflow(uint64_t a, uint64_t b, uint64_t *r)
{
    return __builtin_add_overflow(a, b, r);
}
static inline bool vd_mul_overflow(uint64_t a, uint64_t b, uint64_t *r)
{
    return __builtin_mul_overflow(a, b, r);
}
static inline bool vd_is_pow2(uint64_t v)
{
    return v && !(v & (v - 1));
}
static inline uint64_t vd_div_round_up(uint64_t n, uint64_t d)
{
    return n / d + (n % d != 0);
}
/* Round up to a multiple of a power of two; true on overflow. */
static inline bool vd_align_up_overflow(uint64_t v, uint64_t align, uint64_t *r)
{
    uint64_t t;
    if (__builtin_add_overflow(v, align - 1, &t)) {
        return true;
    }
    *r = t & ~(align - 1);
    return false;
}
static inline uint64_t vd_align_down(uint64_t v, uint64_t align)
{
    return v & ~(align - 1);
}
static inline bool vd_is_aligned(uint64_t v, uint64_t align)
{
    return (v & (align - 1)) == 0;
}
/* log2 of a power of two */
static inline int vd_ctz64(uint64_t v)
{
    return v ? __builtin_ctzll(v) : 64;
}
/* True when every byte of buf is zero. */
bool vd_buffer_is_zero(const void *buf, size_t len);

/* Allocation that fails cleanly (NULL) for huge sizes instead of aborting. */
void *vd_malloc(size_t n);
void *vd_calloc(size_t n, size_t size);
/* Percent-decode a URI component in place; %00 and bad escapes: -EINVAL. */
int vd_uri_unescape(char *s);
/* Aligned buffer for O_DIRECT-safe I/O (align: power of two >= sizeof(void*)). */
void *vd_aligned_alloc(size_t align, size_t size);
char *vd_strdup(const char *s);
char *vd_asprintf(const char *fmt, ...) VD_PRINTF(1, 2);

/* ----------------------------------------------------------------- options */

/*
 * vd_opts internals used by drivers.  Typed getters return 0 and set *out
 * (leaving the default when the key is absent, returning 1 then is not
 * needed: *out is set to def), or -EINVAL with a message naming the key.
 */
int vd_opts_get_bool(const vd_opts *opts, const char *key, bool def, bool *out,
                     vd_error **errp);
int vd_opts_get_u64(const vd_opts *opts, const char *key, uint64_t def, uint64_t *out,
                    vd_error **errp);
int vd_opts_get_size(const vd_opts *opts, const char *key, uint64_t def, uint64_t *out,
                     vd_error **errp);
/* Choose one of a NULL-terminated list of names; *out is its index. */
int vd_opts_get_enum(const vd_opts *opts, const char *key, const char *const *names,
                     int def, int *out, vd_error **errp);
/* New opts with the keys below "prefix." (prefix removed). */
vd_opts *vd_opts_extract_prefix(const vd_opts *opts, const char *prefix);
/* Delete the keys below "prefix." */
void vd_opts_remove_prefix(vd_opts *opts, const char *prefix);
/*
 * Check that every key of opts is described in one of the tables (each
 * terminated by name == NULL; a NULL table ends the list) or starts with one
 * of the child prefixes given ("file.", "backing." ...).  Error names the
 * first unknown key: "Invalid parameter 'x'".
 */
int vd_opts_validate(const vd_opts *opts, const vd_opt_desc *const *tables,
                     const char *const *child_prefixes, const char *what,
                     vd_error **errp);
/*
 * QEMU's json: filename of a node that no plain name describes: the options
 * (flattened keys nested again, numbered members as arrays) with "driver"
 * first; child_key/child_json (a "json:{...}" or plain filename, may be NULL)
 * add a child's description under that key.  Malloc'ed, NULL without memory.
 */
char *vd_opts_json_filename(const vd_opts *opts, const char *driver, const char *child_key,
                            const char *child_json);
/* Whether KEY, or its tail after a '.', is one of the generic options the
 * core passes from a node down to its children (read-only, discard,
 * force-share, cache.*): such keys do not describe the node (node.c). */
bool vd_opt_is_inherited(const char *key);
/* Parse a json:{...} filename (with the "json:" prefix) into flat opts. */
int vd_opts_parse_json_filename(vd_opts *opts, const char *filename, vd_error **errp);
/* Same as vd_opts_parse but with an error message. */
int vd_opts_parse_err(vd_opts *opts, const char *str, const char *implied_key,
                      vd_error **errp);

/* ----------------------------------------------------------------- objects */

/*
 * Object types for --object (QEMU's user-creatable objects: secret,
 * tls-creds-x509, tls-creds-psk, later LUKS/RBD keys), listed in
 * drivers.c's vd_object_types[] the way drivers are.  The core
 * (src/core/object.c) parses the definition, checks qom-type, id and
 * that ids are unique across all types, then calls add; lookups find the
 * object by id.  Objects live until vd_object_del (or the process ends).
 */
typedef struct vd_object_type {
    const char *type; /* qom-type: "secret", "tls-creds-x509" */
    /*
     * Properties besides qom-type and id, NULL-name terminated: the core
     * refuses others ("Invalid parameter 'x' for object type 't'").  NULL:
     * add checks them itself.
     */
    const vd_opt_desc *props;
    /*
     * Create the object from its properties (qom-type and id included).
     * *obj is what lookups return.  Runs without the registry lock held
     * (it may look other objects up); -errno with a message on failure.
     */
    int (*add)(const char *id, const vd_opts *props, void **obj, vd_error **errp);
    /* Drop the registry's hold on obj (free it, or release a reference). */
    void (*del)(void *obj);
    /*
     * Optional: return obj with a new reference for a caller of
     * vd_object_find(..., ref = true), called with the registry lock held
     * so a concurrent vd_object_del cannot free obj in between.
     */
    void *(*ref)(void *obj);
} vd_object_type;

/* The object type table (drivers.c), NULL-terminated. */
extern const vd_object_type *const vd_object_types[];

/*
 * Register an object from parsed properties (qom-type, id, ...).
 * Messages as QEMU's: missing qom-type/id, unknown type, taken id.
 */
int vd_object_add_parsed(const vd_opts *props, vd_error **errp);
/*
 * The object with this id: its pointer (with a new reference from the
 * type's ref callback when ref and the type has one, else borrowed) and
 * its type in *type (may be NULL).  NULL with ENOENT when there is none.
 * Messages are left to the caller (errp is not set).
 */
void *vd_object_find(const char *id, const vd_object_type **type, bool ref);

/* Secrets registered with --object secret. */
int vd_secret_lookup(const char *id, uint8_t **data, size_t *len, vd_error **errp);
/*
 * A secret used as text (passphrases, passwords), as QEMU's
 * qcrypto_secret_lookup_as_utf8: fails with "Data from secret ID is not
 * valid UTF-8" unless its bytes are UTF-8 without a NUL.
 */
int vd_secret_lookup_utf8(const char *id, uint8_t **data, size_t *len, vd_error **errp);

/* ------------------------------------------------------------ permissions */

/* Same bit numbers as QEMU's BLK_PERM_*: image locking uses them as byte
 * offsets, so they are part of the on-disk (lock) format. */
enum {
    VD_PERM_CONSISTENT_READ = 1u << 0,
    VD_PERM_WRITE = 1u << 1,
    VD_PERM_WRITE_UNCHANGED = 1u << 2,
    VD_PERM_RESIZE = 1u << 3,
    VD_PERM_ALL = 0xf,
    VD_PERM_COUNT = 4,
};

/*
 * Permissions the protocol node under an image takes and shares, from the
 * VD_NODE_* open flags and whether a format sits on top (node.c; the core
 * stores the result in the protocol node's perm/shared_perm before calling
 * its open, and a driver with image locking, such as file, takes them).
 */
void vd_lock_perms(unsigned node_flags, bool under_format, unsigned *perm, unsigned *shared);

/* ------------------------------------------------------------------- nodes */

typedef struct vd_node vd_node;
typedef struct vd_driver vd_driver;

typedef enum vd_driver_kind {
    VD_DRV_PROTOCOL,
    VD_DRV_FORMAT,
    VD_DRV_FILTER,
} vd_driver_kind;

typedef enum vd_detect_zeroes {
    VD_DETECT_ZEROES_OFF,
    VD_DETECT_ZEROES_ON,
    VD_DETECT_ZEROES_UNMAP,
} vd_detect_zeroes;

/* Flags a node is opened with (internal superset of VD_OPEN_*). */
enum {
    VD_NODE_RDWR = 1u << 0,
    VD_NODE_NO_BACKING = 1u << 1,
    VD_NODE_FORCE_SHARE = 1u << 2,
    VD_NODE_NO_PROBE_RAW = 1u << 3,
    VD_NODE_NO_IO = 1u << 4,
    VD_NODE_RESIZE = 1u << 5,
    VD_NODE_NO_SHARE = 1u << 6, /* share only reads (qemu-img convert source) */
    VD_NODE_EXPORT = 1u << 7,   /* never share resize (qemu-nbd) */
    VD_NODE_PROTOCOL = 1u << 8, /* opening as a protocol (file) child */
    VD_NODE_UNDER_FORMAT = 1u << 9, /* a non-raw format sits on top */
    VD_NODE_CHECK = 1u << 10,   /* opened to be checked: no repair at open */
};

/*
 * Request flag of the request path only (never reaches a driver): a read
 * past the end of the node fails with -ERANGE instead of reading zeroes
 * (the public API asks for it, as QEMU's BlockBackend; internal readers,
 * e.g. of a shorter backing file, get zeroes).  Writes past the end of a
 * node that cannot grow always fail with -ERANGE.
 */
#define VD_REQ_STRICT_RANGE (1u << 16)

/* Block status flags a driver returns (same values as the public ones). */
enum {
    VD_BLOCK_DATA = VD_BS_DATA,
    VD_BLOCK_ZERO = VD_BS_ZERO,
    VD_BLOCK_OFFSET_VALID = VD_BS_OFFSET_VALID,
    VD_BLOCK_ALLOCATED = VD_BS_ALLOCATED,
    VD_BLOCK_COMPRESSED = VD_BS_COMPRESSED,
    /* the answer is *file's at *map, verbatim (raw, filters): the core asks
     * *file and returns what it says (QEMU's BDRV_BLOCK_RAW) */
    VD_BLOCK_RECURSE = 1u << 8,
    /* DATA at *map in *file may be a host hole: with want_zero the core asks
     * *file and adds ZERO (QEMU's BDRV_BLOCK_RECURSE, used for metadata
     * preallocation) */
    VD_BLOCK_PROBE_ZERO = 1u << 9,
};

typedef struct vd_req vd_req; /* an in-flight request (io.c) */

struct vd_node {
    const vd_driver *drv;
    void *opaque;        /* driver state, drv->state_size bytes, zeroed */
    char *filename;      /* what messages name */
    char *exact_filename; /* protocol filename when it is plain */
    vd_opts *options;    /* the options the node was opened with */
    unsigned flags;      /* VD_NODE_* */
    bool read_only;
    bool probed_raw;     /* format was probed and found raw */
    unsigned perm;       /* VD_PERM_* this node needs */
    unsigned shared_perm; /* VD_PERM_* it lets others have */

    vd_node *file;       /* child role "file" (protocol) */
    vd_node *backing;    /* child role "backing" */
    vd_node *data_file;  /* child role "data-file" */
    vd_node *parent;     /* NULL for the root */

    /* Set by a format's open (malloc'ed): the core opens the backing file. */
    char *backing_file;      /* as stored in the header */
    char *backing_format;    /* as stored, or NULL */
    char *full_backing_filename; /* resolved (set by the core) */

    /* Limits, set by the driver's open (0 means "the default"). */
    uint32_t request_alignment; /* bytes; default 1 */
    uint64_t max_transfer;      /* bytes; default unlimited */
    uint32_t pwrite_zeroes_alignment; /* hint; 0 = none */
    bool has_zero_init;          /* a new node of this driver reads zeroes */
    bool supports_fua;           /* pwrite honours VD_REQ_FUA itself */

    vd_detect_zeroes detect_zeroes;
    bool discard_unmap; /* discard=unmap: discards reach the protocol */

    /* io.c: in-flight tracking and serialisation of unaligned writes */
    pthread_mutex_t req_lock;
    pthread_cond_t req_cond;
    vd_req *reqs;

    /* public handles pointing at this node (api.c) */
    vd_image *handle;

    /* io.c: writes completed / flushed (QEMU's write_gen, flushed_gen): a
     * protocol node with nothing written since its last flush is not
     * flushed again (atomic accesses) */
    uint64_t write_gen;
    uint64_t flushed_gen;
};

/* ---------------------------------------------------------------- drivers */

/* What vd_check callbacks fill; the same struct as the public one. */
typedef vd_check_result vd_check_res;

typedef struct vd_measure_info {
    uint64_t required;
    uint64_t fully_allocated;
    uint64_t bitmaps;
    bool has_bitmaps; /* report a bitmaps size (QEMU's has_bitmaps) */
} vd_measure_info;

struct vd_driver {
    const char *name;
    vd_driver_kind kind;
    /*
     * Filename prefixes the driver answers, each without the colon:
     * {"nbd", "nbd+unix", NULL}.  A filename "prefix:..." or
     * "prefix://..." selects the driver.
     */
    const char *const *protocols;
    size_t state_size;
    const vd_opt_desc *create_opts; /* NULL-name terminated, may be NULL */
    const vd_opt_desc *open_opts;   /* NULL-name terminated, may be NULL */
    bool supports_backing;          /* format can have a backing file */
    bool is_filter;                 /* passes everything to bs->file */

    /* Score 0..100 that buf (the first len bytes, len may be short) is
     * this format.  filename may be used for raw-like heuristics. */
    int (*probe)(const uint8_t *buf, size_t len, const char *filename);

    /* Protocols: turn a filename into options ("nbd://h/e" -> server.host..). */
    int (*parse_filename)(const char *filename, vd_opts *opts, vd_error **errp);

    /*
     * Open.  For a format, the core has opened bs->file already (from
     * opts' "file.*" or the filename) unless the driver sets
     * opens_own_file.  opts are the node's options minus child prefixes.
     * Must set what it knows of the limits in bs.  A format with a backing
     * file sets bs->backing_file (and backing_format); the core opens it
     * after open returns, unless VD_NODE_NO_BACKING.
     */
    int (*open)(vd_node *bs, vd_opts *opts, vd_error **errp);
    void (*close)(vd_node *bs);

    /*
     * Create.  opts: "size" and the create options (validated against
     * create_opts).  A format creates its protocol file with
     * vd_create_file() and opens it with vd_node_open_file().
     */
    int (*create)(const char *filename, const vd_opts *opts, vd_error **errp);
    /*
     * Delete the file filename names (after a failed create; as create,
     * without the protocol prefix).  NULL: the protocol cannot (QEMU's
     * bdrv_co_delete_file, which only its file protocol has).
     */
    int (*delete_file)(const char *filename, vd_error **errp);

    /* Virtual size in bytes, or -errno. */
    int64_t (*get_length)(vd_node *bs);
    /* Bytes the node occupies on the host, or -errno / -ENOTSUP. */
    int64_t (*get_allocated_size)(vd_node *bs);

    /*
     * I/O.  The core guarantees: offset+len within the node (for formats)
     * or within what the caller may address (protocols), both aligned to
     * request_alignment, len <= max_transfer, write permission held, len > 0.
     * flags: VD_REQ_*.
     */
    int (*pread)(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags);
    int (*pwrite)(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                  unsigned flags);
    /* -ENOTSUP lets the core fall back to writing zero buffers (unless the
     * caller passed VD_REQ_NO_FALLBACK). */
    int (*pwrite_zeroes)(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags);
    int (*pwrite_compressed)(vd_node *bs, uint64_t offset, uint64_t len, const void *buf);
    int (*discard)(vd_node *bs, uint64_t offset, uint64_t len);
    int (*flush)(vd_node *bs);

    /*
     * Status of [offset, offset+len) (want_zero: spend effort to find
     * zeroes).  Returns VD_BLOCK_* flags and sets *pnum (1..len bytes that
     * share the answer).  With VD_BLOCK_OFFSET_VALID, *map is the offset in
     * *file (a node); with VD_BLOCK_PROBE_ZERO and want_zero the core then
     * asks *file whether the range is a hole and adds VD_BLOCK_ZERO.  Return 0
     * (neither DATA nor ZERO) for "not allocated in this layer".
     * VD_BLOCK_RECURSE makes the core return *file's answer at *map verbatim.
     * The core adds ALLOCATED to DATA/ZERO answers.  NULL callback: the
     * core answers DATA|ALLOCATED for formats, passes through for filters.
     */
    int (*block_status)(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                        uint64_t *pnum, uint64_t *map, vd_node **file);

    /* Resize to size bytes.  exact: the protocol size must become exactly
     * this (create/resize), else it may be larger. */
    int (*truncate)(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                    vd_error **errp);

    int (*check)(vd_node *bs, vd_check_res *res, unsigned fix, vd_error **errp);
    /* Fill format-specific info as a JSON object text ({"type":..,"data":..})
     * plus the common fields of info the core cannot know. */
    int (*get_info)(vd_node *bs, vd_info *info, vd_error **errp);
    int (*measure)(const vd_opts *opts, vd_node *src, uint64_t size,
                   vd_measure_info *out, vd_error **errp);
    int (*amend)(vd_node *bs, const vd_opts *opts, bool force, vd_progress_fn *progress,
                 void *opaque, vd_error **errp);
    int (*change_backing_file)(vd_node *bs, const char *backing_file,
                               const char *backing_fmt, vd_error **errp);
    int (*make_empty)(vd_node *bs, vd_error **errp);
    /* Returns the format's cluster size (0 none). */
    uint32_t (*cluster_size)(vd_node *bs);

    /* Snapshots (NULL: not supported). */
    int (*snapshot_list)(vd_node *bs, vd_snapshot_info **list, size_t *count,
                         vd_error **errp);
    int (*snapshot_create)(vd_node *bs, const char *name, vd_error **errp);
    int (*snapshot_apply)(vd_node *bs, const char *name_or_id, vd_error **errp);
    int (*snapshot_delete)(vd_node *bs, const char *name_or_id, vd_error **errp);
    /* Switch bs (opened read-only) to present the snapshot's content. */
    int (*snapshot_load_tmp)(vd_node *bs, const char *name, const char *id,
                             vd_error **errp);

    /* Dirty bitmaps (NULL: not supported). */
    int (*bitmap_add)(vd_node *bs, const char *name, uint32_t granularity, bool disabled,
                      vd_error **errp);
    int (*bitmap_remove)(vd_node *bs, const char *name, vd_error **errp);
    int (*bitmap_clear)(vd_node *bs, const char *name, vd_error **errp);
    int (*bitmap_enable)(vd_node *bs, const char *name, bool enable, vd_error **errp);
    int (*bitmap_merge)(vd_node *bs, const char *name, vd_node *src, const char *src_name,
                        vd_error **errp);

    /* The driver opens bs->file itself (protocol-like formats, vmdk). */
    bool opens_own_file;

    /*
     * Dirty state of [offset, offset+len) in the persistent bitmap `name`
     * (NBD's qemu:dirty-bitmap:NAME): sets *pnum (1..len bytes sharing the
     * answer) and *dirty.  -ENOENT when there is no such bitmap.  Called
     * from many threads at once.
     */
    int (*bitmap_status)(vd_node *bs, const char *name, uint64_t offset, uint64_t len,
                         uint64_t *pnum, bool *dirty);

    /*
     * ---- Appended for issue 9.  Zero (the default) keeps the behaviour a
     * driver had before these fields existed. ----
     */

    /*
     * Protocols: how sure the driver is (0..100) that a filename without a
     * "prefix:" names one of its objects (QEMU's probe_device:
     * host_cdrom for a drive answering the CD-ROM ioctl, host_device for
     * other devices).  The core takes the highest score; when no driver
     * scores, the protocol flagged VD_DRV_DEFAULT_PROTOCOL (file).  Called
     * for every plain filename: cheap, no side effects, never fails.
     */
    int (*probe_device)(const char *filename);

    /*
     * Change the permissions (VD_PERM_*) the node holds and shares, e.g.
     * image locks, as a transaction: on failure the old ones stay held and
     * bs->perm / bs->shared_perm are unchanged; on success the driver
     * stores the new ones there.  NULL: the core just stores them.  Used
     * when the core learns after open that a format sits on the node.
     */
    int (*set_perm)(vd_node *bs, unsigned perm, unsigned shared, vd_error **errp);

    /* VD_DRV_* flags below. */
    unsigned flags;

    /*
     * Options amend accepts (`amend -o help` lists them, QEMU's
     * amend_opts), NULL-name terminated.  NULL with an amend callback:
     * create_opts is listed instead.
     */
    const vd_opt_desc *amend_opts;

    /*
     * Whether this image can store persistent bitmaps (qcow2: version 3).
     * NULL: it can when the driver has bitmap_add.
     */
    bool (*supports_bitmaps)(vd_node *bs);
    /* Filters that test formats (blkdebug): a named event reached this node
     * (see events.h and vd_node_event).  May run on many threads at once. */
    void (*debug_event)(vd_node *bs, vd_event ev);
    /* Option key prefixes the driver's open parses itself besides its
     * open_opts ("image.", "inject-error."), accepted by validation. */
    const char *const *opt_prefixes;
    /* Plain writes must be whole compressed clusters (vmdk streamOptimized):
     * convert then writes as with -c (QEMU's needs_compressed_writes). */
    bool (*needs_compressed_writes)(vd_node *bs);
    /* Reopen: drop from old (the node's own options, no child prefixes)
     * what changes replaces beyond the keys it names (QEMU's
     * bdrv_join_options); called before changes are merged in. */
    void (*join_options)(vd_opts *old, const vd_opts *changes);
};

/* vd_driver.flags */
enum {
    /*
     * A raw format: the node's bytes are its file's bytes.  A probe that
     * lands on it is "probed raw" (the caller may refuse that), and its
     * file takes the plain locks of an image user rather than a format's.
     */
    VD_DRV_RAW_FORMAT = 1u << 0,
    /*
     * A protocol whose filename is a plain host path: its prefix may be
     * followed when an image names a backing file with it ("file:x"), and
     * relative names found in images on it resolve against its directory.
     */
    VD_DRV_PLAIN_FILENAME = 1u << 1,
    /* The protocol for filenames no probe_device claims (file). */
    VD_DRV_DEFAULT_PROTOCOL = 1u << 2,
    /*
     * Describes its images (QEMU's bdrv_get_info: qemu-io's info prints a
     * cluster size and VM state offset) though it has no cluster_size
     * callback (the file protocols).  Formats with cluster_size do anyway;
     * raw formats and filters pass their file's answer on.
     */
    VD_DRV_BLOCK_INFO = 1u << 3,
    /*
     * The node has no one directory (quorum): names relative to it cannot
     * be resolved (QEMU's "Cannot generate a base directory for X nodes").
     */
    VD_DRV_NO_DIRNAME = 1u << 4,
    /*
     * Stands for a driver whose module (drivers.c, module.h) is missing or
     * cannot be loaded: opening or creating through it fails with the
     * reason (vd_module_missing_error).
     */
    VD_DRV_MODULE_MISSING = 1u << 5,
};

/* Whether the node can store persistent bitmaps (api.c: bitmap_add and
 * the driver's supports_bitmaps). */
bool vd_node_supports_bitmaps(vd_node *bs);

/* The node behind a public handle (api.c), for library code such as NBD. */
vd_node *vd_image_node(vd_image *img);

/* The driver table (drivers.c). */
extern const vd_driver *const vd_drivers[];
const vd_driver *vd_driver_find(const char *name);
/* Driver for "prefix:..." filenames, or NULL when filename has no known prefix. */
const vd_driver *vd_driver_find_protocol(const char *filename);
/*
 * The protocol driver for filename, as QEMU's bdrv_find_protocol: its
 * prefix, else the highest probe_device score, else the default protocol.
 * NULL only when the table has no default protocol.
 */
const vd_driver *vd_protocol_for(const char *filename);
/* The first format flagged VD_DRV_RAW_FORMAT (vd_create's default). */
const vd_driver *vd_driver_raw_format(void);
/* For a driver flagged VD_DRV_MODULE_MISSING: "Unknown protocol 'ssh':
 * module vdisk-ssh.so not found (...)" in errp; returns -ENOTSUP. */
int vd_module_missing_error(const vd_driver *drv, vd_error **errp);
/* The driver modules' names, in --help order after the linked-in
 * protocols, whether or not their file is there (NULL past the end). */
const char *vd_driver_module_name(size_t i);

/* --------------------------------------------------- node open / create */

/*
 * Open a node.  filename may be NULL when opts has everything; driver may
 * be NULL (probe for formats / pick by prefix for protocols).
 * flags: VD_NODE_*.  The node's parent is NULL.
 */
vd_node *vd_node_open(const char *filename, const char *driver, const vd_opts *opts,
                      unsigned flags, vd_error **errp);
/* Open a protocol node for a file name ("file" unless it has a prefix). */
vd_node *vd_node_open_file(const char *filename, const vd_opts *opts, unsigned flags,
                           vd_error **errp);
void vd_node_close(vd_node *bs);

/*
 * The format the first len bytes of an image (filename: its name, "" for
 * content only) are taken for: the highest probe score, the first driver
 * on ties; NULL when no driver claims them.
 */
const vd_driver *vd_probe_buffer(const uint8_t *buf, size_t len, const char *filename);

/* Create the protocol file for filename with opts (preallocation, nocow,
 * size...). Used by formats' create. */
int vd_create_file(const char *filename, const vd_opts *opts, vd_error **errp);
/*
 * For a format's create: create the protocol file empty, with the protocol
 * options of opts (preallocation, nocow...), and open it read-write and
 * resizable for writing the metadata.  On success *filep is the node.
 */
int vd_create_open_file(const char *filename, const vd_opts *opts, vd_node **filep,
                        vd_error **errp);
/*
 * The end of a format's create: flush the file unless ret (the metadata
 * writes' result) is already a failure, report a failure that errp does
 * not hold yet as "what: strerror", close the file.  Returns ret.
 */
int vd_create_close_file(vd_node *file, int ret, const char *what, vd_error **errp);
/*
 * Delete what a failed create left at filename, as QEMU's
 * bdrv_co_delete_file_noerr: silently nothing when its protocol cannot
 * delete files, a warning when deleting fails.  QEMU does it for luks and
 * qcow2 (the image and its data file), even for a file that existed
 * before the create: it was truncated anyway.
 */
void vd_create_delete_file(const char *filename);
/* The name a protocol driver without parse_filename is given: filename
 * without its "proto:" prefix when it has one naming drv. */
const char *vd_protocol_local_name(const vd_driver *drv, const char *filename);

/*
 * Resolve a backing file name found in an image header relative to the
 * image's own directory.  Refuses "json:" and protocol prefixes unless the
 * image itself is not a plain file.  Returns a malloc'ed string or NULL.
 */
char *vd_resolve_backing_name(const vd_node *bs, const char *name, vd_error **errp);

/* -------------------------------------------------------------- node I/O */

/*
 * The request path (io.c): range/permission checks, max_transfer
 * splitting, alignment (RMW + serialisation), detect-zeroes, zero fallback.
 * Used by formats on their children and by the public API: the one place
 * requests are checked.  Reads past the end of a format node read zeroes
 * (-ERANGE with VD_REQ_STRICT_RANGE); writes, zero writes, discards and
 * compressed writes past the end fail with -ERANGE unless the node is a
 * file child (VD_NODE_PROTOCOL), which its format may grow.  Return 0 or
 * -errno.
 */
int vd_node_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags);
int vd_node_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                   unsigned flags);
int vd_node_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags);
int vd_node_pwrite_compressed(vd_node *bs, uint64_t offset, uint64_t len, const void *buf);
int vd_node_discard(vd_node *bs, uint64_t offset, uint64_t len);
/* copy_file_range between two regular files of the file protocol (file.c);
 * -ENOTSUP when the kernel or the nodes cannot, for a plain copy instead */
int vd_file_copy_range(vd_node *src, uint64_t src_off, vd_node *dst, uint64_t dst_off,
                       uint64_t len);
int vd_node_flush(vd_node *bs);
int64_t vd_node_get_length(vd_node *bs);
int vd_node_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                     vd_error **errp);
/* Block status of one node (the driver's answer, recursing into file when
 * the driver asks); see the driver callback for the meaning. */
int vd_node_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                         uint64_t *pnum, uint64_t *map, vd_node **file);
/* Announce event ev on bs: the first node from bs down the file chain whose
 * driver handles events gets it; a cheap no-op when there is none. */
void vd_node_event(vd_node *bs, vd_event ev);
/* Read [offset, offset+len) of bs's backing chain (zeroes where there is no
 * backing file or past its end). */
int vd_node_read_backing(vd_node *bs, uint64_t offset, uint64_t len, void *buf);

/* --------------------------------------------------------- small helpers */

/* Parse a boolean word: on/off, true/false, yes/no, 1/0. -1 when neither. */
int vd_parse_bool(const char *s);
/* Directory part of a path (malloc'ed, "." when none). */
char *vd_path_dirname(const char *path);
/* Join a relative name to the directory of base ("dir/name"); absolute
 * names are returned as they are. malloc'ed. */
char *vd_path_combine(const char *base, const char *name);
/* A random (version 4, RFC 4122) UUID, in the RFC's big-endian byte order. */
void vd_uuid_generate(uint8_t out[16]);

#endif /* VD_INTERNAL_H */
