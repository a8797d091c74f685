/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The two data loops every cluster-mapped format driver needs, written
 * once: qcow, qcow2, qed, vdi and vpc use them; vmdk, vhdx, parallels and
 * the like should too.
 *
 *  - vd_fmt_read(): the map-then-read loop of a driver's pread.  The driver
 *    answers "where do the guest bytes at this offset live?" through a map
 *    callback (host offset in a child node, zeroes, not allocated here so
 *    the backing chain, or "I copied them myself"); the helper does the I/O.
 *
 *  - vd_fmt_cow_write(): the data part of an allocating write.  The guest
 *    bytes go into clusters the driver has just allocated (or reuses), and
 *    the parts of the first and last cluster the write does not cover (the
 *    "head" and "tail") get their old content -- the backing file, zeroes,
 *    a decompressed cluster -- from a callback the driver supplies.
 *
 * Neither takes a lock nor touches metadata: the driver keeps its own
 * locking and updates its tables itself (after vd_fmt_cow_write() returns
 * 0, so that data always reaches the file before a table points at it).
 * Both return 0 or a negative errno, as the driver's I/O callbacks do, and
 * need no message.
 */
#ifndef VD_FORMAT_IO_H
#define VD_FORMAT_IO_H

#include "internal.h"

/* ------------------------------------------------------------------- read */

typedef enum vd_fmt_map_kind {
    /* the bytes are stored at ext->host in ext->file */
    VD_FMT_MAP_DATA,
    /* they read as zeroes (a zero cluster, a free block of a format
     * without backing files) */
    VD_FMT_MAP_ZERO,
    /* not allocated in this layer: they come from the backing chain
     * (vd_node_read_backing: zeroes without a backing file, or past its end) */
    VD_FMT_MAP_BACKING,
    /* the callback has already put the bytes into its buf argument (a
     * compressed cluster decompressed under the driver's lock, ...) */
    VD_FMT_MAP_FILLED,
} vd_fmt_map_kind;

/* One answer of a map callback. */
typedef struct vd_fmt_extent {
    vd_fmt_map_kind kind;
    /* bytes from offset that share this answer: 1..max; the helper asks
     * again for the rest, so a callback may answer one cluster at a time,
     * but merging runs (host-contiguous clusters, holes) saves I/Os */
    uint64_t len;
    /* VD_FMT_MAP_DATA: offset in file of the byte at guest offset */
    uint64_t host;
    /* VD_FMT_MAP_DATA: the node holding the data; NULL (the default) means
     * bs->file.  qcow2 with an external data file sets its data node. */
    vd_node *file;
} vd_fmt_extent;

/*
 * Map [offset, offset+max) of bs (max >= 1, the range inside the request the
 * core validated): fill *ext for the bytes from offset on.  *ext comes in
 * zeroed (kind VD_FMT_MAP_DATA, file NULL); buf points at where the bytes at
 * offset go (max bytes are writable), for VD_FMT_MAP_FILLED.  opaque is what
 * the driver passed to vd_fmt_read().
 *
 * Locking: the callback takes and drops the driver's metadata lock itself
 * when the data read may run outside it (the helper does the read after the
 * callback returns), or the driver holds a lock around the whole
 * vd_fmt_read() call when blocks can move under a reader (vdi's discard).
 * Return 0, or -errno to end the read with that error (an unreadable
 * table, a corrupt entry): nothing more is read.
 */
typedef int vd_fmt_map_fn(vd_node *bs, void *opaque, uint64_t offset, uint64_t max, void *buf,
                          vd_fmt_extent *ext);

/*
 * Read [offset, offset+len) of bs into buf, asking map where each run
 * lives.  Returns 0, the first error of map or of a read, or -EIO when map
 * answers an empty or too long extent (a driver bug must not loop forever
 * or overrun buf).
 */
int vd_fmt_read(vd_node *bs, uint64_t offset, uint64_t len, void *buf, vd_fmt_map_fn *map,
                void *opaque);

/* ------------------------------------------------------ copy-on-write */

/*
 * Old content of part of one guest cluster, for the head or tail of an
 * allocating write: fill buf[from, to) with what guest bytes
 * [cluster + from, cluster + to) read as before the write.  cluster is the
 * guest offset of the cluster's first byte; buf is a cluster_size buffer
 * (only [from, to) may be written); 0 <= from < to <= cluster_size.  It is
 * called once for the head of the first cluster, once for the tail of the
 * last one (both for a single cluster), never for covered bytes, and from
 * the thread (and under the lock) vd_fmt_cow_write() runs in.  Return 0 or
 * -errno; an error ends the write before the cluster holding it is written.
 */
typedef int vd_fmt_cow_read_fn(void *opaque, uint64_t cluster, uint64_t from, uint64_t to,
                               uint8_t *buf);

/* read_old for "the backing chain, zeroes where there is none": opaque is
 * the format's vd_node *. */
int vd_fmt_cow_backing(void *opaque, uint64_t cluster, uint64_t from, uint64_t to,
                       uint8_t *buf);
/* read_old for "zeroes" composed in memory (a zero cluster that gets data):
 * one write per partial cluster.  opaque is unused. */
int vd_fmt_cow_zeroes(void *opaque, uint64_t cluster, uint64_t from, uint64_t to, uint8_t *buf);

/*
 * Write len >= 1 bytes of data for guest offset `offset` into new clusters.
 * The guest clusters [first, end), first = offset rounded down and end =
 * offset + len rounded up to cluster_size (> 0, not necessarily a power of
 * two), are stored host-contiguously from `host` (a multiple of cluster_size
 * in practice) in `file`.  The head [first, offset) and the tail
 * [offset + len, end) get their old content from read_old:
 *
 *  - read_old != NULL: the first and the last cluster are composed in a
 *    buffer (old bytes from read_old, new ones from data) and written whole;
 *    the clusters in between go straight from data, in one write.  So every
 *    byte of [host, host + (end - first)) is written, in at most three writes.
 *  - read_old == NULL: the head and the tail become zeroes through
 *    vd_node_pwrite_zeroes() (no buffer: for large blocks, where the file
 *    can zero cheaply -- vdi's 1 MiB blocks), data in one write.
 *
 * The caller has allocated the clusters and holds whatever lock keeps
 * others from using them; it points its tables at them only after 0 is
 * returned.  On error some of the clusters may have been written: they are
 * not referenced yet, so the caller frees (or leaks) them as after any
 * failed allocation.  Returns 0, -ENOMEM, or the first error of read_old or
 * of a write (-EINVAL for len 0, cluster_size 0 or a range that overflows).
 */
int vd_fmt_cow_write(vd_node *file, uint64_t host, uint64_t cluster_size, uint64_t offset,
                     uint64_t len, const void *data, vd_fmt_cow_read_fn *read_old,
                     void *opaque);

#endif /* VD_FORMAT_IO_H */
