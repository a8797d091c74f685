/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * libvdisk public API: open, create, read, write, check and convert virtual
 * disk images in QEMU's formats, byte-compatible with QEMU.
 *
 * Conventions:
 *  - Functions return 0 (or a non-negative value) on success and -1 (or NULL)
 *    on failure.  The failure's message and errno are kept per thread:
 *    vd_get_error() and vd_get_errno().  The library never prints or exits.
 *  - Every vd_image may be used from many threads at once for I/O
 *    (vd_pread, vd_pwrite, vd_pwrite_zeroes, vd_discard, vd_flush,
 *    vd_block_status).  Opening, closing, truncating, checking and the other
 *    whole-image operations must not run concurrently with anything else on
 *    the same image.
 *  - Options are flat string dictionaries with dotted keys ("file.locking"),
 *    the same keys QEMU's -drive / --image-opts use.
 */
#ifndef VDISK_H
#define VDISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#pragma GCC visibility push(default)
#endif

#define VD_VERSION_STRING "0.1.0"

const char *vd_version(void);

/* ------------------------------------------------------------------ errors */

/* Message of the last failure in this thread ("" when none). */
const char *vd_get_error(void);
/* errno of the last failure in this thread (0 when none). */
int vd_get_errno(void);
/*
 * Hint that goes with the last failure in this thread ("" when none): advice
 * to show on the lines after the message, as QEMU's error_append_hint does
 * ("You can use 'qemu-img rebase' instead.").  Each of its lines ends with
 * a newline, except maybe the last; it is printed as it is.
 */
const char *vd_get_error_hint(void);

/*
 * Warnings: conditions that do not fail an operation but that the user
 * should hear about (an ssh server that cannot fsync).  The library never
 * prints: without a handler warnings are dropped.  msg is one line without
 * a newline; the handler may be called from any thread, at any time while
 * an image is open.  fn NULL removes the handler.
 */
typedef void vd_warning_fn(void *opaque, const char *msg);
void vd_set_warning_handler(vd_warning_fn *fn, void *opaque);

/* ----------------------------------------------------------------- options */

typedef struct vd_opts vd_opts;

vd_opts *vd_opts_new(void);
void vd_opts_free(vd_opts *opts);
vd_opts *vd_opts_clone(const vd_opts *opts);
/* Set (replace) a key.  value NULL deletes the key. */
int vd_opts_set(vd_opts *opts, const char *key, const char *value);
/* Value of key, or NULL. */
const char *vd_opts_get(const vd_opts *opts, const char *key);
size_t vd_opts_count(const vd_opts *opts);
const char *vd_opts_key(const vd_opts *opts, size_t i);
const char *vd_opts_value(const vd_opts *opts, size_t i);
/*
 * Parse "k=v,k2=v2" (",," is a literal comma) into opts.  When implied_key
 * is not NULL, a first element without '=' is its value
 * ("file.img,format=raw" with implied_key "file").
 */
int vd_opts_parse(vd_opts *opts, const char *str, const char *implied_key);
/* Parse a JSON object (without the "json:" prefix), flattened to dotted keys. */
int vd_opts_parse_json(vd_opts *opts, const char *json);
/* Merge src into dst; existing keys in dst are replaced. */
int vd_opts_merge(vd_opts *dst, const vd_opts *src);

/*
 * Parse a size with an optional suffix: k/K, M, G, T, P, E (powers of 1024),
 * b/B for bytes.  Decimal fractions are allowed with a suffix ("1.5G").
 * Fails (EINVAL or ERANGE) on negative numbers, garbage and overflow.
 */
int vd_parse_size(const char *str, uint64_t *out);

/*
 * --object handling: "secret,id=ID,data=TEXT|file=PATH[,format=raw|base64]".
 * Secrets live for the life of the process and are looked up by id by
 * drivers (key-secret=ID, password-secret=ID).
 */
int vd_object_add(const char *spec);
int vd_object_add_opts(const vd_opts *opts);
/* Delete the object with this id (ENOENT when there is none).  Nothing may
 * be using it (an open image whose key it is, a running NBD server's TLS
 * credentials hold their own reference and are fine). */
int vd_object_del(const char *id);
/* Number of object types --object takes, and the name of the i-th
 * ("secret", "tls-creds-x509", ...; NULL past the end). */
size_t vd_object_type_count(void);
const char *vd_object_type_name(size_t i);

/* ----------------------------------------------------------------- drivers */

typedef enum vd_opt_type {
    VD_OPT_STRING,
    VD_OPT_BOOL,
    VD_OPT_NUMBER,
    VD_OPT_SIZE,
} vd_opt_type;

/* One option a driver accepts (for `-o help`, info and validation). */
typedef struct vd_opt_desc {
    const char *name;
    vd_opt_type type;
    const char *help;
    const char *def_value; /* NULL when none */
} vd_opt_desc;

/* Number of registered drivers, and the name and kind of the i-th one. */
size_t vd_driver_count(void);
const char *vd_driver_name(size_t i);
/* "protocol", "format" or "filter"; NULL for an unknown driver name. */
const char *vd_driver_type(const char *name);
/*
 * Create options of a driver (for `create -o help`), terminated by an entry
 * with name == NULL.  For a format, the options of the protocol that would
 * hold the file (filename's protocol, "file" when NULL) are appended when
 * filename is given.  Returns NULL (ENOENT) for an unknown driver.
 * The array stays valid until the next call in this thread.
 */
const vd_opt_desc *vd_driver_create_opts(const char *driver, const char *filename);

/*
 * What a driver can do, so that programs need no list of format names
 * (`vdisk convert -c` asks can_compress, `-o help` prints create_opts).
 * Owned by the library, valid for the life of the process; fields are
 * only ever appended.
 */
typedef struct vd_driver_info {
    const char *name;
    const char *kind;      /* "protocol", "format" or "filter" */
    bool can_create;       /* vd_create */
    bool can_compress;     /* vd_pwrite_compressed (convert -c) */
    bool has_bitmaps;      /* persistent dirty bitmaps (some images of the
                              format may still lack them, e.g. qcow2 v2:
                              vd_image_supports_bitmaps) */
    bool has_snapshots;    /* internal snapshots */
    bool read_only;        /* no writes at all */
    bool supports_backing; /* backing files */
    bool can_amend;        /* vd_amend */
    bool can_check;        /* vd_check */
    bool can_measure;      /* vd_measure */
    bool can_resize;       /* vd_truncate */
    bool is_raw;           /* the bytes of its file, unchanged */
    /* Filename prefixes it answers ("nbd", "nbd+unix"), NULL-terminated;
     * never NULL (empty list). */
    const char *const *protocols;
    /* Options of create (with "size"), of amend (only the amendable ones;
     * empty when !can_amend) and of open; each NULL-name terminated, in
     * the driver's order, never NULL. */
    const vd_opt_desc *create_opts;
    const vd_opt_desc *amend_opts;
    const vd_opt_desc *open_opts;
} vd_driver_info;

/* The capabilities of driver `name`; NULL (ENOENT) for an unknown name. */
const vd_driver_info *vd_driver_get_info(const char *name);

/* ------------------------------------------------------------------ create */

/*
 * Create an image.  opts holds the create options ("size" plus the
 * format's, e.g. "cluster_size", "backing_file", "preallocation").
 * When "size" is absent and a backing file is given, the backing file's
 * size is used, as qemu-img does.
 */
int vd_create(const char *filename, const char *format, const vd_opts *opts);

/* -------------------------------------------------------------------- open */

typedef struct vd_image vd_image;

enum {
    VD_OPEN_RDWR = 1u << 0,        /* open for writing */
    VD_OPEN_NO_BACKING = 1u << 1,  /* do not open backing files */
    VD_OPEN_FORCE_SHARE = 1u << 2, /* -U: read-only, ignore others' locks */
    VD_OPEN_NO_PROBE_RAW = 1u << 3 /* fail instead of probing raw */,
    VD_OPEN_NO_IO = 1u << 4,       /* metadata only (info of broken images) */
    VD_OPEN_RESIZE = 1u << 5,      /* take the resize permission too */
    VD_OPEN_NO_SHARE = 1u << 6,    /* let others only read (convert source) */
    VD_OPEN_EXPORT = 1u << 7,      /* never let others resize (NBD export) */
    VD_OPEN_CHECK = 1u << 8,       /* for vd_check: no automatic repair at open */
};

/*
 * Open an image.  filename may be a plain path, a protocol URI
 * ("nbd://host/exp"), a prefixed name ("nbd:host:port") or "json:{...}";
 * it may be NULL when opts names everything ("driver", "file.filename" ...).
 * format NULL probes.  opts (may be NULL) adds or overrides options and is
 * not taken over.
 */
vd_image *vd_open(const char *filename, const char *format, const vd_opts *opts,
                  unsigned flags);
void vd_close(vd_image *img);

/* The backing image of img, owned by img (NULL and ENOENT when none). */
vd_image *vd_image_backing(vd_image *img);
/* The file child (protocol) of img, owned by img (NULL and ENOENT when none). */
vd_image *vd_image_file(vd_image *img);

/*
 * The options to reopen img with, as QEMU's bdrv_reopen joins them: old (the
 * options img was opened with) updated by changes, where the format's rules
 * drop old options a change replaces (qcow2: a new overlap-check template
 * drops the old per-structure ones, a new cache-size the old partial cache
 * sizes).  Fails (NULL, EINVAL: "Cannot change the option 'driver'") when
 * changes name another driver or node-name for a node than it has.  The
 * result is the caller's to free.
 */
vd_opts *vd_reopen_options(vd_image *img, const vd_opts *old, const vd_opts *changes);
const char *vd_image_filename(const vd_image *img);
const char *vd_image_format(const vd_image *img); /* driver name */
/* True when the format was probed and the result is raw. */
bool vd_image_probed_raw(const vd_image *img);
bool vd_image_is_read_only(const vd_image *img);
/* Cluster size, or 0 when the format has none. */
uint32_t vd_image_cluster_size(vd_image *img);
/* True when plain writes must be whole compressed clusters (vmdk
 * streamOptimized): write with vd_pwrite_compressed then. */
bool vd_image_needs_compressed_writes(vd_image *img);
/* Smallest request size that needs no read-modify-write. */
uint32_t vd_image_alignment(const vd_image *img);
/* True when a newly created image of this driver reads as zeroes. */
bool vd_image_has_zero_init(vd_image *img);
/* True when the format supports backing files. */
bool vd_image_supports_backing(const vd_image *img);
/* True when this image can store persistent dirty bitmaps (a qcow2 v3
 * image can, a v2 one or a raw image cannot). */
bool vd_image_supports_bitmaps(vd_image *img);

/* --------------------------------------------------------------------- I/O */

enum {
    VD_REQ_FUA = 1u << 0,         /* write through to stable storage */
    VD_REQ_MAY_UNMAP = 1u << 1,   /* zero write may deallocate */
    VD_REQ_NO_FALLBACK = 1u << 2, /* zero write fails (ENOTSUP) unless fast */
};

int64_t vd_get_length(vd_image *img);
int vd_pread(vd_image *img, void *buf, size_t len, uint64_t offset);
int vd_pwrite(vd_image *img, const void *buf, size_t len, uint64_t offset,
              unsigned flags);
int vd_pwrite_zeroes(vd_image *img, uint64_t offset, uint64_t len, unsigned flags);
/* Write compressed data; offset and len must be cluster aligned (len may be
 * shorter only at the end of the image).  ENOTSUP when the format can't. */
int vd_pwrite_compressed(vd_image *img, const void *buf, size_t len, uint64_t offset);
/* Copy offload (qemu-img convert -C): copy len bytes at src_off of src to
 * dst_off of dst in the kernel (copy_file_range).  Raw images on the file
 * protocol only; -1 with errno ENOTSUP when it cannot, then copy plainly. */
int vd_copy_range(vd_image *src, uint64_t src_off, vd_image *dst, uint64_t dst_off, uint64_t len);
int vd_discard(vd_image *img, uint64_t offset, uint64_t len);
int vd_flush(vd_image *img);

typedef enum vd_prealloc {
    VD_PREALLOC_OFF,
    VD_PREALLOC_METADATA,
    VD_PREALLOC_FALLOC,
    VD_PREALLOC_FULL,
} vd_prealloc;

/* "off", "metadata", "falloc", "full" -> value; -1 when unknown. */
int vd_prealloc_parse(const char *s);
const char *vd_prealloc_name(vd_prealloc p);

/*
 * Change the virtual size.  Shrinking needs allow_shrink.  The image must be
 * opened with VD_OPEN_RDWR | VD_OPEN_RESIZE.
 */
int vd_truncate(vd_image *img, uint64_t size, bool allow_shrink, vd_prealloc prealloc);

/* ------------------------------------------------------------ block status */

enum {
    VD_BS_DATA = 1u << 0,         /* reads come from stored data */
    VD_BS_ZERO = 1u << 1,         /* reads return zeroes */
    VD_BS_OFFSET_VALID = 1u << 2, /* offset/file name the host location */
    VD_BS_ALLOCATED = 1u << 3,    /* the layer itself defines the content */
    VD_BS_COMPRESSED = 1u << 4,   /* stored compressed (no host offset) */
};

typedef struct vd_extent {
    uint64_t length;      /* bytes this answer covers (> 0) */
    unsigned flags;       /* VD_BS_* */
    uint64_t offset;      /* host offset in `file` when VD_BS_OFFSET_VALID */
    int depth;            /* chain layer that defined it (0 = top); for an
                             extent allocated nowhere, the chain length */
    const char *file;     /* filename of the node holding the data, or NULL;
                             owned by the image */
} vd_extent;

/*
 * Status of [offset, offset+len), clipped to the image length.
 * above: true walks the backing chain as `qemu-img map` does (depth,
 * ALLOCATED meaning "present in some layer"), false asks the top layer only
 * (ALLOCATED meaning "this layer defines it", as qemu-io's alloc).
 */
int vd_block_status(vd_image *img, uint64_t offset, uint64_t len, bool above,
                    vd_extent *ext);

/* -------------------------------------------------------------------- info */

typedef struct vd_snapshot_info {
    char *id;
    char *name;
    uint64_t vm_state_size;
    uint64_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t icount; /* UINT64_MAX when absent */
    uint64_t disk_size;
} vd_snapshot_info;

typedef struct vd_info {
    char *filename;
    char *format;
    uint64_t virtual_size;
    int64_t actual_size;   /* bytes used on the host, -1 when unknown */
    uint32_t cluster_size; /* 0 when the format has none */
    bool encrypted;
    bool dirty_flag;
    bool has_dirty_flag; /* the format has such a flag */
    bool corrupt;
    char *backing_filename;      /* as stored in the image */
    char *full_backing_filename; /* resolved */
    char *backing_format;
    /* {"type": "...", "data": {...}} as qemu-img prints it, or NULL */
    char *format_specific_json;
    vd_snapshot_info *snapshots;
    size_t nb_snapshots;
    /* Where the format stores VM state (qcow2), 0 when it has none. */
    uint64_t vm_state_offset;
    /* The driver describes the image itself (QEMU's bdrv_get_info: qemu-io
     * info prints cluster size and VM state offset); raw and filters pass
     * their file's answer on. */
    bool has_block_info;
    /* false for formats that report nothing beyond their size (bochs, cloop,
     * dmg, parallels): qemu-img then prints no dirty-flag */
    bool has_driver_info;
    /* The image uses a legacy, flawed encryption (qcow/qcow2 AES-CBC): fit
     * only for getting the data out; tools warn about it. */
    bool weak_encryption;
} vd_info;

int vd_get_info(vd_image *img, vd_info **out);
void vd_info_free(vd_info *info);

/* ------------------------------------------------------------------- check */

typedef struct vd_check_result {
    int corruptions;
    int leaks;
    int check_errors;
    int corruptions_fixed;
    int leaks_fixed;
    int64_t image_end_offset; /* 0 when not known */
    uint64_t total_clusters;
    uint64_t allocated_clusters;
    uint64_t fragmented_clusters;
    uint64_t compressed_clusters;
} vd_check_result;

enum {
    VD_CHECK_FIX_LEAKS = 1u << 0,
    VD_CHECK_FIX_ERRORS = 1u << 1,
};

/* Check (and repair) image metadata.  -1 with ENOTSUP when the format has
 * no check. */
int vd_check(vd_image *img, unsigned fix, vd_check_result *res);
/* vd_check that also hands each problem found or repaired to fn as one line
 * in QEMU's words ("Leaked cluster 5 refcount=2 reference=1"), as
 * qemu-img check prints them on stderr. */
typedef void (*vd_check_report_fn)(void *opaque, const char *line);
int vd_check_reported(vd_image *img, unsigned fix, vd_check_result *res, vd_check_report_fn fn,
                      void *opaque);
/* Where the lines of an automatic repair go: a qcow2 image left dirty (lazy
 * refcounts, not closed) is checked and repaired when opened read-write
 * without VD_OPEN_CHECK, and QEMU prints that repair's lines ("Repairing
 * cluster 1 refcount=1 reference=0") on stderr; so do a format's notices
 * that an image is corrupt ("qcow2: Marking image as corrupt: ...; further
 * corruption events will be suppressed").  The library never prints:
 * without a handler the lines are dropped.  fn may be called from any thread
 * that opens an image; fn NULL removes the handler. */
void vd_set_repair_report(vd_check_report_fn fn, void *opaque);
/* The image tool that advice in messages names ("To replay the log, run:
 * vdisk check -r all 'X'", "Use vdisk amend to ..."): "vdisk" unless set.
 * The tools set "qemu-img" when started under QEMU's names, whose words
 * these are.  At most 31 bytes are kept; set it before opening images. */
void vd_set_image_tool_name(const char *name);

/* ----------------------------------------------------------------- measure */

/*
 * Space needed to create an image of `format` with create options opts:
 * either for a copy of src (when not NULL) or for an empty image of
 * opts' "size".
 */
int vd_measure(const char *format, const vd_opts *opts, vd_image *src,
               uint64_t *required, uint64_t *fully_allocated, uint64_t *bitmaps);

/* vd_measure's answers, with whether the format reports a bitmaps size
 * at all (qemu-img measure prints "bitmaps size" then).  Zero-initialise;
 * fields are only ever appended. */
typedef struct vd_measure_result {
    uint64_t required;
    uint64_t fully_allocated;
    uint64_t bitmaps;
    bool has_bitmaps; /* the target stores bitmaps and src may have some */
} vd_measure_result;
int vd_measure_get(const char *format, const vd_opts *opts, vd_image *src,
                   vd_measure_result *out);

/* ------------------------------------------------ whole-image operations */

typedef void vd_progress_fn(void *opaque, double percent);

/* Change amendable create options of an open (read-write) image. */
int vd_amend(vd_image *img, const vd_opts *opts, bool force, vd_progress_fn *progress,
             void *opaque);

/* Rewrite the backing file reference (no data is copied: unsafe rebase). */
int vd_change_backing_file(vd_image *img, const char *backing_file,
                           const char *backing_format);

/* Drop all data of the top layer so it reads through to its backing file. */
int vd_make_empty(vd_image *img);

/* Internal snapshots.  ENOTSUP when the format has none. */
int vd_snapshot_list(vd_image *img, vd_snapshot_info **list, size_t *count);
void vd_snapshot_list_free(vd_snapshot_info *list, size_t count);
int vd_snapshot_create(vd_image *img, const char *name);
/* name_or_id: a name, or "id=N" / a bare id as qemu-img accepts */
int vd_snapshot_apply(vd_image *img, const char *name_or_id);
int vd_snapshot_delete(vd_image *img, const char *name_or_id);
/* Open the named snapshot of img read-only, for convert -l. */
vd_image *vd_snapshot_open(vd_image *img, const char *name, const char *id);

/* Persistent dirty bitmaps.  ENOTSUP when the format has none. */
int vd_bitmap_add(vd_image *img, const char *name, uint32_t granularity, bool disabled);
int vd_bitmap_remove(vd_image *img, const char *name);
int vd_bitmap_clear(vd_image *img, const char *name);
int vd_bitmap_enable(vd_image *img, const char *name, bool enable);
int vd_bitmap_merge(vd_image *img, const char *name, vd_image *src, const char *src_name);

#if defined(__GNUC__)
#pragma GCC visibility pop
#endif

#ifdef __cplusplus
}
#endif

#endif /* VDISK_H */
