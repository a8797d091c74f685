/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * A write-back cache of fixed-size metadata tables (qcow2 L2 slices and
 * refcount blocks; qed, qcow and vdi tables later) read from and written to
 * a node, with bounded memory.
 *
 * Contract:
 *  - Not thread-safe: the format driver calls it under its metadata mutex.
 *  - vd_cache_get() pins an entry until vd_cache_put(); pinned entries are
 *    never evicted.  Only unpinned entries are evicted, least recently used
 *    first, dirty ones written back first.  A get fails with -ENOSPC when
 *    every entry is pinned (a cache must be sized for the most tables one
 *    operation holds at once).
 *  - Ordering for crash safety: vd_cache_set_dependency(c, dep) makes the
 *    next write-back of any entry of c first write back all of dep and flush
 *    the file; vd_cache_set_flush_before(c) asks for a file flush before
 *    the next write-back of c.  Both are one-shot (cleared once honoured).
 *  - An optional check callback runs before every write-back so the driver
 *    can refuse writes that would overlap other metadata.
 */
#ifndef VD_CACHE_H
#define VD_CACHE_H

#include "internal.h"

typedef struct vd_cache vd_cache;

/* Return 0 to allow writing [offset, offset+len), or -errno to refuse. */
typedef int vd_cache_check_fn(void *opaque, uint64_t offset, uint64_t len);

/* nb_entries >= 1 tables of entry_size bytes each, read from/written to file. */
vd_cache *vd_cache_new(vd_node *file, size_t entry_size, size_t nb_entries);
/* Frees without writing back (call vd_cache_flush first). */
void vd_cache_free(vd_cache *c);
void vd_cache_set_check(vd_cache *c, vd_cache_check_fn *fn, void *opaque);
/* Announce ev on the file before each write-back (blkdebug events). */
void vd_cache_set_write_event(vd_cache *c, vd_event ev);
/* Announce ev on the file before each read of a table from it. */
void vd_cache_set_load_event(vd_cache *c, vd_event ev);

size_t vd_cache_entry_size(const vd_cache *c);
size_t vd_cache_nb_entries(const vd_cache *c);

/* Pin the table at offset, reading it from the file when not cached. */
int vd_cache_get(vd_cache *c, uint64_t offset, void **table);
/* Pin a table for offset without reading it (a new table the caller fills). */
int vd_cache_get_empty(vd_cache *c, uint64_t offset, void **table);
/* Unpin; *table is set to NULL. */
void vd_cache_put(vd_cache *c, void **table);
void vd_cache_mark_dirty(vd_cache *c, void *table);
/* Offset of a pinned table. */
uint64_t vd_cache_offset(const vd_cache *c, const void *table);

/* Write back every dirty entry (dependencies first), without a file flush. */
int vd_cache_write(vd_cache *c);
/* vd_cache_write, then flush the file if any entry was written since the
 * last such flush. */
int vd_cache_flush(vd_cache *c);
bool vd_cache_is_dirty(const vd_cache *c);

int vd_cache_set_dependency(vd_cache *c, vd_cache *dep);
void vd_cache_set_flush_before(vd_cache *c);

/*
 * Forget the entry for offset without writing it (its cluster was freed).
 * A pinned entry is only marked clean and dropped when put.
 */
void vd_cache_discard(vd_cache *c, uint64_t offset);
/* Drop every unpinned entry without writing it back (the tables were
 * replaced on disk). */
void vd_cache_drop_all(vd_cache *c);
/* Write back everything and drop all unpinned entries. */
int vd_cache_empty(vd_cache *c);
/* Drop clean, unpinned entries not used since the previous call (memory
 * trimming for cache-clean-interval). */
void vd_cache_clean_unused(vd_cache *c);

#endif /* VD_CACHE_H */
