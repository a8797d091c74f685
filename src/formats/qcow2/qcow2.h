/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qcow2 driver internals shared by qcow2.c (header, open, create, info),
 * cluster.c (guest->host mapping, allocation, COW, zero, discard),
 * refcount.c (refcount table and blocks, cluster allocation, overlap checks),
 * compress.c (compressed clusters), check.c (check and repair) and
 * measure.c.
 *
 * Specification: QEMU's docs/interop/qcow2.txt (versions 2 and 3).
 *
 * Locking: s->lock guards every field below marked (L), the caches and the
 * on-disk metadata.  Guest data I/O runs outside it; allocating writes are
 * serialised against each other per guest cluster by the in-flight list.
 */
#ifndef VD_QCOW2_H
#define VD_QCOW2_H

#include "cache.h"
#include "internal.h"

/* Announce a named event (events.h) on the image file, as QEMU's
 * BLKDBG_EVENT(bs->file, ...) does. */
#define QCOW2_EVENT(s, ev) vd_node_event((s)->bs->file, VD_EV_##ev)

#define QCOW2_MAGIC 0x514649fbu
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)
#define QCOW2_MAX_SNAPSHOTS 65536u
#define QCOW2_MAX_BACKING_NAME 1023u
#define QCOW2_MAX_BITMAPS 65535u
#define QCOW2_MAX_BITMAP_DIR_BYTES (64u << 20)
#define QCOW2_MAX_SNAPSHOT_EXTRA 1024u
#define QCOW2_V2_HEADER_LEN 72u
#define QCOW2_V3_HEADER_LEN 104u
#define QCOW2_HEADER_LEN_CREATE 112u

/* L1/L2/refcount table entries */
#define QCOW_OFLAG_COPIED (1ull << 63)
#define QCOW_OFLAG_COMPRESSED (1ull << 62)
#define QCOW_OFLAG_ZERO 1ull
#define L1E_OFFSET_MASK 0x00fffffffffffe00ull
#define L2E_OFFSET_MASK 0x00fffffffffffe00ull
#define L1E_RESERVED_MASK 0x7f000000000001ffull
#define L2E_STD_RESERVED_MASK 0x3f000000000001feull
#define REFT_OFFSET_MASK 0xfffffffffffffe00ull
#define REFT_RESERVED_MASK 0x1ffull
#define QCOW_MAX_CLUSTER_OFFSET ((1ull << 56) - 1)

/* feature bits */
#define QCOW2_INCOMPAT_DIRTY (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2 (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN 0x1full
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ull << 1)

/* header extensions */
#define QCOW2_EXT_END 0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE 0x6803f857u
#define QCOW2_EXT_BITMAPS 0x23852875u
#define QCOW2_EXT_CRYPTO 0x0537be77u
#define QCOW2_CRYPT_AES 1u
#define QCOW2_CRYPT_LUKS 2u
#define QCOW2_EXT_DATA_FILE 0x44415441u

#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

/* bitmap directory entry flags */
#define QCOW2_BME_IN_USE (1u << 0)
#define QCOW2_BME_AUTO (1u << 1)

typedef enum qcow2_cluster_type {
    QCOW2_CLUSTER_UNALLOCATED,
    QCOW2_CLUSTER_ZERO_PLAIN,
    QCOW2_CLUSTER_ZERO_ALLOC,
    QCOW2_CLUSTER_NORMAL,
    QCOW2_CLUSTER_COMPRESSED,
} qcow2_cluster_type;

/* Which freed clusters are passed down as discards (pass-discard-*). */
typedef enum qcow2_discard_type {
    QCOW2_DISCARD_NEVER,
    QCOW2_DISCARD_ALWAYS,
    QCOW2_DISCARD_REQUEST,
    QCOW2_DISCARD_SNAPSHOT,
    QCOW2_DISCARD_OTHER,
    QCOW2_DISCARD_MAX,
} qcow2_discard_type;

/* Metadata kinds for overlap checks (QEMU's QCOW2_OL_* order). */
enum {
    QCOW2_OL_MAIN_HEADER = 1u << 0,
    QCOW2_OL_ACTIVE_L1 = 1u << 1,
    QCOW2_OL_ACTIVE_L2 = 1u << 2,
    QCOW2_OL_REFCOUNT_TABLE = 1u << 3,
    QCOW2_OL_REFCOUNT_BLOCK = 1u << 4,
    QCOW2_OL_SNAPSHOT_TABLE = 1u << 5,
    QCOW2_OL_INACTIVE_L1 = 1u << 6,
    QCOW2_OL_INACTIVE_L2 = 1u << 7,
    QCOW2_OL_BITMAP_DIRECTORY = 1u << 8,
    QCOW2_OL_ALL = 0x1ff,
    QCOW2_OL_CONSTANT = QCOW2_OL_MAIN_HEADER | QCOW2_OL_ACTIVE_L1 | QCOW2_OL_REFCOUNT_TABLE |
                        QCOW2_OL_SNAPSHOT_TABLE | QCOW2_OL_BITMAP_DIRECTORY,
    QCOW2_OL_CACHED = QCOW2_OL_CONSTANT | QCOW2_OL_ACTIVE_L2 | QCOW2_OL_REFCOUNT_BLOCK |
                      QCOW2_OL_INACTIVE_L1,
};

typedef struct qcow2_ext {
    uint32_t magic;
    uint32_t len;
    uint8_t *data;
} qcow2_ext;

typedef struct qcow2_snapshot {
    uint64_t l1_offset;
    uint32_t l1_size;
    char *id;
    char *name;
    uint32_t date_sec;
    uint32_t date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size;
    uint64_t icount; /* UINT64_MAX when absent */
    uint32_t extra_data_size; /* as read (snapshot.c writes at least 24) */
    uint8_t *unknown_extra;   /* extra data past the 24 known bytes */
} qcow2_snapshot;

typedef struct qcow2_bitmap {
    uint64_t table_offset;
    uint32_t table_size;
    uint32_t flags;
    uint8_t granularity_bits;
    char *name;
} qcow2_bitmap;

/* A guest cluster range being allocated (data written outside the lock). */
typedef struct qcow2_inflight {
    uint64_t start, end; /* guest bytes, cluster aligned */
    struct qcow2_inflight *next;
} qcow2_inflight;

/* A free of host clusters an unlocked read or write still uses (refcount.c). */
typedef struct qcow2_deferred_free {
    uint64_t offset, len;
    int type; /* qcow2_discard_type */
    struct qcow2_deferred_free *next;
} qcow2_deferred_free;

typedef struct qcow2_state {
    vd_node *bs;
    pthread_mutex_t lock;
    pthread_cond_t inflight_cond;

    /* header (L) */
    uint32_t version;
    uint32_t cluster_bits;
    uint32_t cluster_size;
    uint32_t l2_bits;   /* log2 of entries per L2 table */
    uint32_t l2_size;   /* entries per L2 table */
    uint64_t size;      /* virtual size */
    uint32_t crypt_method;
    uint32_t l1_size;
    uint64_t l1_table_offset;
    uint64_t *l1_table; /* host byte order, l1_size entries (may be NULL when 0) */
    uint64_t refcount_table_offset;
    uint32_t refcount_table_clusters;
    uint64_t refcount_table_size; /* entries */
    uint64_t *refcount_table;     /* host byte order */
    uint64_t max_refcount_table_index;
    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t snapshots_size; /* bytes of the snapshot table */
    uint64_t incompatible_features;
    uint64_t compatible_features;
    uint64_t autoclear_features;
    uint32_t refcount_order;
    uint32_t refcount_bits;
    uint64_t refcount_max;
    uint32_t refcount_block_bits; /* log2 of entries per refcount block */
    uint32_t header_length;
    uint8_t compression_type;
    uint8_t *header_tail; /* header bytes [112, header_length) preserved */
    uint32_t header_tail_len;

    /* compressed cluster descriptors */
    uint32_t csize_shift;
    uint64_t csize_mask;
    uint64_t cluster_offset_mask;

    char *backing_file;
    char *backing_format;
    qcow2_ext *unknown_ext; /* preserved on header rewrite */
    size_t nb_unknown_ext;
    size_t cap_unknown_ext; /* entries allocated (grows by doubling) */
    char **feature_names;   /* "type:bit:name" from the image's table */
    size_t nb_feature_names;

    /* bitmaps extension (kept as read) */
    bool has_bitmaps_ext;
    uint32_t nb_bitmaps;
    uint64_t bitmap_directory_size;
    uint64_t bitmap_directory_offset;
    qcow2_bitmap *bitmaps; /* bitmap.c's view of its directory (sync_state) */
    bool bitmaps_loaded;

    qcow2_snapshot *snapshots;
    struct qcow2_bitmaps *bm; /* bitmap.c: bitmaps in memory (NULL until open) */
    /* datafile.c: where guest data lives (bs->file, or the external data
     * file at host offset = guest offset, without refcounts) */
    vd_node *data;
    char *data_file_name; /* from the header extension, or NULL */
    /* subcluster.c: extended L2 entries (16 bytes: entry + bitmap) */
    bool extended_l2;
    uint32_t sc_bits; /* log2 of the subcluster size */

    /* caches (L) */
    vd_cache *l2_cache;
    vd_cache *refcount_cache;
    uint64_t l2_slice_size;    /* bytes */
    uint32_t l2_slice_entries;
    uint64_t cache_clean_interval;
    uint64_t free_cluster_index;
    uint64_t free_byte_offset; /* compressed cluster packing */

    /* options */
    bool use_lazy_refcounts;
    bool discard_passthrough[QCOW2_DISCARD_MAX];
    /* host ranges freed while a discard or zero request runs, punched
     * merged at its end (as QEMU's s->discards): refcount.c */
    struct qcow2_range { uint64_t start, end; } *discq;
    size_t discq_n, discq_cap;
    unsigned discq_depth;
    unsigned overlap_check;

    /* state (L) */
    bool dirty_lazy;      /* we set the dirty bit for lazy refcounts */
    bool needs_repair;    /* opened read-write with the dirty bit set */
    bool signaled_corruption; /* the corruption notice went out */
    bool broken;          /* fatal corruption found: no more I/O */
    bool data_unflushed;  /* (L) guest data linked into L2 since s->data was last synced */
    bool corrupt_ro;      /* corrupt bit set at open: writes refused */
    bool metadata_prealloc_checked;
    bool metadata_prealloc;
    qcow2_inflight *inflight;
    qcow2_inflight *held;             /* (L) host bytes unlocked data I/O uses */
    qcow2_deferred_free *deferred;    /* (L) frees waiting for those to finish */
    int nb_compress_threads;
    uint64_t last_clean; /* seconds, for cache-clean-interval */
    struct qcow2_crypto *crypto; /* crypto.c: NULL when not encrypted */
} qcow2_state;

typedef struct qcow2_create_params {
    uint64_t size;
    int version;
    uint64_t cluster_size;
    int refcount_order;
    bool lazy;
    int compression_type;
    vd_prealloc prealloc;
    const char *backing_file;
    const char *backing_fmt;
    const char *data_file; /* datafile.c */
    bool data_file_raw;
    bool extended_l2; /* subcluster.c */
} qcow2_create_params;

/* ------------------------------------------------------------- qcow2.c */

int qcow2_update_header(qcow2_state *s);
int qcow2_write_l1_fields(qcow2_state *s); /* l1_size + l1_table_offset */
int qcow2_write_reftable_fields(qcow2_state *s);
int qcow2_mark_dirty(qcow2_state *s);
int qcow2_mark_clean(qcow2_state *s);
/* Report corrupt metadata; fatal marks the image corrupt and stops I/O. */
void qcow2_signal_corruption(qcow2_state *s, bool fatal, const char *fmt, ...)
    VD_PRINTF(3, 4);
/* Checks before changing metadata: corrupt state, repair on first write,
 * lazy refcounts' dirty bit.  Lock held. */
int qcow2_begin_metadata_change(qcow2_state *s);
uint64_t qcow2_size_to_l1(const qcow2_state *s, uint64_t size);
/* Parse the snapshot table (bounds-checked).  Lock held or at open. */
int qcow2_read_snapshots(qcow2_state *s, vd_error **errp);
void qcow2_free_snapshots(qcow2_state *s);
/* "0.10"/"v2" -> 2, "1.1"/"v3" (or NULL) -> 3. */
int qcow2_parse_version(const char *compat, int *version, vd_error **errp);
/* Parse and validate create options (shared by create and measure). */
int qcow2_parse_create_opts(const vd_opts *opts, qcow2_create_params *p, bool need_size,
                            vd_error **errp);
int qcow2_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                   vd_error **errp);

static inline uint64_t qcow2_offset_into_cluster(const qcow2_state *s, uint64_t off)
{
    return off & (s->cluster_size - 1);
}
static inline uint64_t qcow2_start_of_cluster(const qcow2_state *s, uint64_t off)
{
    return off & ~((uint64_t)s->cluster_size - 1);
}
static inline uint64_t qcow2_size_to_clusters(const qcow2_state *s, uint64_t size)
{
    return (size + s->cluster_size - 1) >> s->cluster_bits;
}
static inline uint32_t qcow2_l1_index(const qcow2_state *s, uint64_t off)
{
    return (uint32_t)(off >> (s->l2_bits + s->cluster_bits));
}
static inline uint32_t qcow2_l2_index(const qcow2_state *s, uint64_t off)
{
    return (uint32_t)((off >> s->cluster_bits) & (s->l2_size - 1));
}
qcow2_cluster_type qcow2_get_cluster_type(const qcow2_state *s, uint64_t l2_entry);

/* ------------------------------------------------------------ cluster.c */

int qcow2_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags);
int qcow2_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf, unsigned flags);
int qcow2_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags);
int qcow2_discard(vd_node *bs, uint64_t offset, uint64_t len);
int qcow2_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                       uint64_t *pnum, uint64_t *map, vd_node **file);
/* Mapping of [offset, offset+*bytes): first entry's type and host offset
 * (for NORMAL/ZERO_ALLOC; the raw L2 entry for COMPRESSED), *bytes shortened
 * to what shares it.  Lock held. */
int qcow2_get_host_offset(qcow2_state *s, uint64_t offset, uint64_t *bytes,
                          uint64_t *host, qcow2_cluster_type *type);
/* L2 slice holding guest offset, ready to be modified (L2 table allocated
 * or copied when needed).  *index is the entry in the slice.  Lock held. */
int qcow2_get_l2_for_write(qcow2_state *s, uint64_t offset, uint64_t **slice,
                           uint32_t *index);
int qcow2_get_l2_slice(qcow2_state *s, uint64_t l2_offset, uint32_t l2_index,
                       uint64_t **slice);
int qcow2_grow_l1_table(qcow2_state *s, uint64_t min_size, bool exact);
int qcow2_shrink_l1_table(qcow2_state *s, uint64_t new_size);
int qcow2_write_l1_entry(qcow2_state *s, uint32_t index);
/* Discard (full: fall through to backing) or zero whole clusters. Lock held. */
int qcow2_cluster_discard(qcow2_state *s, uint64_t offset, uint64_t bytes,
                          qcow2_discard_type type, bool full_discard);
int qcow2_cluster_zeroize(qcow2_state *s, uint64_t offset, uint64_t bytes, unsigned flags);
/* Wait until no allocation is in flight over the guest range.  Lock held. */
void qcow2_wait_inflight(qcow2_state *s, uint64_t start, uint64_t end);
void qcow2_inflight_add(qcow2_state *s, qcow2_inflight *f, uint64_t start, uint64_t end);
void qcow2_inflight_remove(qcow2_state *s, qcow2_inflight *f);
/* Preallocate host clusters for [offset, offset+bytes) (metadata, falloc,
 * full).  Lock held. */
int qcow2_preallocate(qcow2_state *s, uint64_t offset, uint64_t bytes, vd_prealloc mode,
                      vd_error **errp);

/* ----------------------------------------------------------- refcount.c */

int qcow2_refcount_init(qcow2_state *s, vd_error **errp);
int qcow2_get_refcount(qcow2_state *s, uint64_t cluster_index, uint64_t *refcount);
/* Add addend (may be negative) to the refcount of every cluster touching
 * [offset, offset+len). */
int qcow2_update_refcount(qcow2_state *s, uint64_t offset, uint64_t len, int64_t addend,
                          qcow2_discard_type type);
/* Allocate n contiguous clusters (refcount 1); returns the host offset or
 * -errno. */
int64_t qcow2_alloc_clusters(qcow2_state *s, uint64_t n);
/* Allocate bytes (< one cluster) for compressed data; host byte offset. */
int64_t qcow2_alloc_bytes(qcow2_state *s, uint32_t size);
void qcow2_free_clusters(qcow2_state *s, uint64_t offset, uint64_t len,
                         qcow2_discard_type type);
void qcow2_free_any_cluster(qcow2_state *s, uint64_t l2_entry, qcow2_discard_type type);
/*
 * Between begin and end, discards of freed host clusters queue and merge;
 * end (and any allocation meanwhile, so a cluster is never punched after its
 * reuse) passes them down as few large requests.  Nests.
 */
void qcow2_discard_queue_begin(qcow2_state *s);
void qcow2_discard_queue_end(qcow2_state *s);
/*
 * Host bytes [start, end) are read or written outside the lock: a free of
 * clusters there (discard, overwrite of a compressed cluster) waits until
 * qcow2_hold_release, so no new allocation can reuse them meanwhile.
 * Lock held for both.
 */
void qcow2_hold(qcow2_state *s, qcow2_inflight *h, uint64_t start, uint64_t end);
void qcow2_hold_release(qcow2_state *s, qcow2_inflight *h);
/* Refcount entry accessors for a block of any width. */
uint64_t qcow2_rc_get(const qcow2_state *s, const void *block, uint64_t index);
void qcow2_rc_set(const qcow2_state *s, void *block, uint64_t index, uint64_t value);
/* Index one past the last cluster with a non-zero refcount. */
int64_t qcow2_get_last_cluster(qcow2_state *s, int64_t size);
int qcow2_shrink_reftable(qcow2_state *s);

/* Metadata overlap: the QCOW2_OL_* kinds [offset, offset+size) overlaps,
 * ignoring those in ign. */
unsigned qcow2_check_metadata_overlap(qcow2_state *s, unsigned ign, uint64_t offset,
                                      uint64_t size);
/* Refuse (and mark the image corrupt) writes onto metadata. */
int qcow2_pre_write_overlap_check(qcow2_state *s, unsigned ign, uint64_t offset,
                                  uint64_t size);
int qcow2_cache_check_l2(void *opaque, uint64_t offset, uint64_t len);
int qcow2_cache_check_refblock(void *opaque, uint64_t offset, uint64_t len);

/* ----------------------------------------------------------- compress.c */

/* Compress a cluster; returns compressed bytes, or -ENOSPC if it would not
 * fit in dest_size. */
ssize_t qcow2_compress(int type, void *dest, size_t dest_size, const void *src,
                       size_t src_size);
/* Decompress exactly dest_size bytes. */
int qcow2_decompress(int type, void *dest, size_t dest_size, const void *src,
                     size_t src_size);
/* Read and decompress the compressed cluster described by l2_entry into
 * a cluster-size buffer.  Lock not held. */
int qcow2_read_compressed(qcow2_state *s, uint64_t l2_entry, uint8_t *cluster);
void qcow2_parse_compressed(const qcow2_state *s, uint64_t l2_entry, uint64_t *coffset,
                            uint64_t *csize);
int qcow2_pwrite_compressed(vd_node *bs, uint64_t offset, uint64_t len, const void *buf);

/* -------------------------------------------------------------- check.c */

int qcow2_check(vd_node *bs, vd_check_res *res, unsigned fix, vd_error **errp);
/* The check/repair of a dirty image (lock held). */
int qcow2_check_locked(qcow2_state *s, vd_check_res *res, unsigned fix, vd_error **errp);

/* ------------------------------------------------------------ measure.c */

int qcow2_measure(const vd_opts *opts, vd_node *src, uint64_t size, vd_measure_info *out,
                  vd_error **errp);
int64_t qcow2_refcount_metadata_size(int64_t clusters, uint64_t cluster_size,
                                     int refcount_order, bool generous,
                                     uint64_t *refblock_count);
int64_t qcow2_calc_prealloc_size(int64_t total_size, uint64_t cluster_size,
                                 int refcount_order, bool extended_l2);

/* ----------------------------------------------------------- snapshot.c */

int qcow2_snapshot_create(vd_node *bs, const char *name, vd_error **errp);
int qcow2_snapshot_apply(vd_node *bs, const char *name_or_id, vd_error **errp);
int qcow2_snapshot_delete(vd_node *bs, const char *name_or_id, vd_error **errp);
int qcow2_snapshot_load_tmp(vd_node *bs, const char *name, const char *id, vd_error **errp);
/* Add addend (-1, 0 or 1) to the refcount of every cluster reachable from
 * the L1 table at l1_offset (the in-memory active table when it is the
 * active one) and recompute the COPIED flags.  Lock held. */
int qcow2_update_snapshot_refcount(qcow2_state *s, uint64_t l1_offset, uint32_t l1_size,
                                   int addend);
/* Write s->snapshots as a new table and point the header to it.  Lock held. */
int qcow2_write_snapshots(qcow2_state *s);

/* ------------------------------------------------------------- bitmap.c */

typedef struct qcow2_bitmaps qcow2_bitmaps;
/* a read-write open marks every consistent bitmap in_use, as QEMU */
int qcow2_bitmaps_mark_open(qcow2_state *s);
/* Parse and validate the bitmap directory (the only parser of it: it also
 * fills s->bitmaps) and set up dirty tracking (end of open). */
int qcow2_bitmaps_open(qcow2_state *s, vd_error **errp);
/* Store pending bitmap changes (close, lock held or single-threaded). */
int qcow2_bitmaps_close(qcow2_state *s);
void qcow2_bitmaps_free(qcow2_state *s);
/* Mark guest bytes [offset, offset+len) dirty in the enabled bitmaps;
 * called before a guest write changes data.  Takes the lock. */
int qcow2_bitmaps_dirty(qcow2_state *s, uint64_t offset, uint64_t len);
/* Before the virtual size changes (lock held); -ENOTSUP when a bitmap is
 * inconsistent. */
int qcow2_bitmaps_resize(qcow2_state *s, uint64_t new_size);
int qcow2_bitmap_add(vd_node *bs, const char *name, uint32_t granularity, bool disabled,
                     vd_error **errp);
int qcow2_bitmap_remove(vd_node *bs, const char *name, vd_error **errp);
int qcow2_bitmap_clear(vd_node *bs, const char *name, vd_error **errp);
int qcow2_bitmap_enable(vd_node *bs, const char *name, bool enable, vd_error **errp);
int qcow2_bitmap_merge(vd_node *bs, const char *name, vd_node *src, const char *src_name,
                       vd_error **errp);
/* The driver's bitmap_status: -ENOENT no such bitmap, -EBUSY inconsistent. */
int qcow2_bitmap_status(vd_node *bs, const char *name, uint64_t offset, uint64_t len,
                        uint64_t *pnum, bool *dirty);

/* ----------------------------------------------------------- datafile.c */

static inline bool qcow2_has_data_file(const qcow2_state *s)
{
    return (s->incompatible_features & QCOW2_INCOMPAT_DATA_FILE) != 0;
}
static inline bool qcow2_data_file_is_raw(const qcow2_state *s)
{
    return qcow2_has_data_file(s) && (s->autoclear_features & QCOW2_AUTOCLEAR_DATA_FILE_RAW);
}
int qcow2_data_file_parse_ext(qcow2_state *s, const uint8_t *data, uint32_t len,
                              vd_error **errp);
/* Open the data file child (or point s->data at bs->file). */
int qcow2_data_file_open(vd_node *bs, vd_opts *opts, vd_error **errp);
void qcow2_data_file_free(qcow2_state *s);
int qcow2_data_file_create_opts(const vd_opts *opts, int version, const char *backing_file,
                                const char **name, bool *raw, vd_error **errp);
/* Create the data file (relative names next to image) of size bytes. */
int qcow2_data_file_create(const char *image, const char *name, uint64_t size,
                           vd_prealloc prealloc, vd_error **errp);
/* Delete it again after a failed create (vd_create_delete_file). */
void qcow2_data_file_delete(const char *image, const char *name);
/* ",\"data-file\":..,\"data-file-raw\":.." for info ("" without one). */
char *qcow2_data_file_info_json(const qcow2_state *s);
int qcow2_data_file_put_ext(uint8_t *buf, size_t cap, size_t *pos, const char *name);
/* Change (or with "" drop) the data file name in the header extension. */
int qcow2_set_data_file_name(qcow2_state *s, const char *name, vd_error **errp);

/* --------------------------------------------------------- subcluster.c */

/* Entry i of an L2 slice (either entry size), host byte order. */
static inline uint64_t qcow2_l2_entry(const qcow2_state *s, const uint64_t *slice, uint32_t i)
{
    return vd_ld_be64(&slice[s->extended_l2 ? 2 * (size_t)i : i]);
}
static inline void qcow2_l2_entry_set(const qcow2_state *s, uint64_t *slice, uint32_t i,
                                      uint64_t v)
{
    vd_st_be64(&slice[s->extended_l2 ? 2 * (size_t)i : i], v);
}
/* Bytes per L2 entry. */
static inline uint32_t qcow2_l2_entry_size(const qcow2_state *s)
{
    return s->extended_l2 ? 16 : 8;
}
int qcow2_sc_pread(qcow2_state *s, uint64_t offset, uint64_t len, uint8_t *p);
int qcow2_sc_pwrite(qcow2_state *s, uint64_t offset, uint64_t len, const uint8_t *data);
int qcow2_sc_pwrite_zeroes(qcow2_state *s, uint64_t offset, uint64_t len, unsigned flags);
int qcow2_sc_discard(qcow2_state *s, uint64_t offset, uint64_t len);
int qcow2_sc_block_status(qcow2_state *s, uint64_t offset, uint64_t len, uint64_t *pnum,
                          uint64_t *map, vd_node **file);
/* As the cluster.c functions of the same names (lock held). */
int qcow2_sc_cluster_discard(qcow2_state *s, uint64_t offset, uint64_t bytes,
                             qcow2_discard_type type, bool full_discard);
int qcow2_sc_zeroize(qcow2_state *s, uint64_t offset, uint64_t bytes, unsigned flags);
int qcow2_sc_preallocate(qcow2_state *s, uint64_t offset, uint64_t bytes, vd_prealloc mode,
                         vd_error **errp);

/* -------------------------------------------------------------- amend.c */

int qcow2_amend(vd_node *bs, const vd_opts *opts, bool force, vd_progress_fn *progress,
                void *opaque, vd_error **errp);

/* ------------------------------------------------------------- crypto.c */

typedef struct qcow2_crypto qcow2_crypto;
/* After the data file is open: set up decryption (key from encrypt.key-secret). */
int qcow2_crypto_open(vd_node *bs, qcow2_state *s, vd_opts *opts, vd_error **errp);
void qcow2_crypto_free(qcow2_state *s);
/* The driver's I/O callbacks: encryption around cluster.c's. */
int qcow2_crypto_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags);
int qcow2_crypto_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                        unsigned flags);
int qcow2_crypto_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags);
int qcow2_crypto_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                              uint64_t *pnum, uint64_t *map, vd_node **file);
/* ",\"encrypt\":{...}" for info, "" when not encrypted; malloc'ed. */
char *qcow2_crypto_info_json(qcow2_state *s);
/* Encrypt a just-created image as its create options say. */
int qcow2_crypto_create(vd_node *bs, const vd_opts *opts, vd_error **errp);
/* encrypt.* key slot amend: 0 none given, 1 done, -errno. */
int qcow2_crypto_amend(vd_node *bs, const vd_opts *opts, bool force, vd_error **errp);
/* Bytes of clusters the LUKS header of new image with opts takes (0 none). */
int qcow2_crypto_measure(const vd_opts *opts, uint64_t cluster_size, uint64_t *bytes,
                         vd_error **errp);
/* The LUKS header's clusters (from the extension); false when none. */
bool qcow2_crypto_hdr_range(const qcow2_state *s, uint64_t *off, uint64_t *len);
/* qcow2.c: record the crypto header extension (16 bytes). Lock held. */
int qcow2_add_crypto_ext(qcow2_state *s, const uint8_t *ext);

#endif /* VD_QCOW2_H */
