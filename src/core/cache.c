/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Generic write-back metadata table cache (see cache.h for the contract).
 *
 * Entries live in one aligned array allocated up front (the memory bound is
 * nb_entries * entry_size); a chained hash finds an entry by its offset and
 * a use counter approximates LRU for eviction.  Eviction scans the entries,
 * which only happens on a miss.
 */
#include <stdlib.h>

#include "cache.h"

#define CACHE_NONE SIZE_MAX

typedef struct cache_entry {
    uint64_t offset;
    uint64_t lru;   /* last use (c->clock) */
    size_t next;    /* hash chain */
    unsigned ref;   /* pins */
    bool used;
    bool dirty;
    bool discarded; /* drop without writing when unpinned */
    bool touched;   /* used since the last clean_unused */
} cache_entry;

struct vd_cache {
    vd_node *file;
    size_t entry_size;
    size_t nb;
    uint8_t *tables;
    cache_entry *e;
    size_t *buckets;
    size_t nb_buckets; /* power of two */
    uint64_t clock;
    vd_cache *depends;
    bool flush_before;
    bool unflushed; /* entries written since the last file flush */
    vd_cache_check_fn *check;
    void *check_opaque;
    bool has_write_event; /* announce write_event before each write-back */
    vd_event write_event;
    bool has_load_event; /* and load_event before each read from the file */
    vd_event load_event;
};

void vd_cache_set_write_event(vd_cache *c, vd_event ev)
{
    c->has_write_event = true;
    c->write_event = ev;
}

void vd_cache_set_load_event(vd_cache *c, vd_event ev)
{
    c->has_load_event = true;
    c->load_event = ev;
}

static size_t hash_of(const vd_cache *c, uint64_t offset)
{
    uint64_t h = offset * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17) & (c->nb_buckets - 1);
}

vd_cache *vd_cache_new(vd_node *file, size_t entry_size, size_t nb_entries)
{
    if (nb_entries == 0 || entry_size == 0) {
        return NULL;
    }
    vd_cache *c = calloc(1, sizeof(*c));
    if (!c) {
        return NULL;
    }
    size_t bytes;
    if (__builtin_mul_overflow(entry_size, nb_entries, &bytes)) {
        free(c);
        return NULL;
    }
    c->file = file;
    c->entry_size = entry_size;
    c->nb = nb_entries;
    c->nb_buckets = 1;
    while (c->nb_buckets < nb_entries * 2) {
        c->nb_buckets <<= 1;
    }
    c->tables = vd_aligned_alloc(4096, bytes);
    c->e = calloc(nb_entries, sizeof(*c->e));
    c->buckets = malloc(c->nb_buckets * sizeof(*c->buckets));
    if (!c->tables || !c->e || !c->buckets) {
        vd_cache_free(c);
        return NULL;
    }
    for (size_t i = 0; i < c->nb_buckets; i++) {
        c->buckets[i] = CACHE_NONE;
    }
    return c;
}

void vd_cache_free(vd_cache *c)
{
    if (!c) {
        return;
    }
    free(c->tables);
    free(c->e);
    free(c->buckets);
    free(c);
}

void vd_cache_set_check(vd_cache *c, vd_cache_check_fn *fn, void *opaque)
{
    c->check = fn;
    c->check_opaque = opaque;
}

size_t vd_cache_entry_size(const vd_cache *c)
{
    return c->entry_size;
}

size_t vd_cache_nb_entries(const vd_cache *c)
{
    return c->nb;
}

static void *table_of(const vd_cache *c, size_t i)
{
    return c->tables + i * c->entry_size;
}

static size_t index_of(const vd_cache *c, const void *table)
{
    return (size_t)((const uint8_t *)table - c->tables) / c->entry_size;
}

static size_t lookup(const vd_cache *c, uint64_t offset)
{
    for (size_t i = c->buckets[hash_of(c, offset)]; i != CACHE_NONE; i = c->e[i].next) {
        if (c->e[i].offset == offset && !c->e[i].discarded) {
            return i;
        }
    }
    return CACHE_NONE;
}

static void unhash(vd_cache *c, size_t i)
{
    size_t *p = &c->buckets[hash_of(c, c->e[i].offset)];
    while (*p != CACHE_NONE) {
        if (*p == i) {
            *p = c->e[i].next;
            break;
        }
        p = &c->e[*p].next;
    }
    c->e[i].used = false;
    c->e[i].dirty = false;
    c->e[i].discarded = false;
}

static void hash_in(vd_cache *c, size_t i, uint64_t offset)
{
    size_t h = hash_of(c, offset);
    c->e[i].offset = offset;
    c->e[i].used = true;
    c->e[i].dirty = false;
    c->e[i].discarded = false;
    c->e[i].next = c->buckets[h];
    c->buckets[h] = i;
}

bool vd_cache_is_dirty(const vd_cache *c)
{
    for (size_t i = 0; i < c->nb; i++) {
        if (c->e[i].used && c->e[i].dirty) {
            return true;
        }
    }
    return false;
}

/* Honour the one-shot ordering requests before writing any entry. */
static int before_writeback(vd_cache *c)
{
    int ret;
    if (c->depends) {
        vd_cache *dep = c->depends;
        c->depends = NULL;
        ret = vd_cache_flush(dep);
        if (ret < 0) {
            c->depends = dep;
            return ret;
        }
    }
    if (c->flush_before) {
        ret = vd_node_flush(c->file);
        if (ret < 0) {
            return ret;
        }
        c->flush_before = false;
    }
    return 0;
}

static int write_entry(vd_cache *c, size_t i)
{
    cache_entry *e = &c->e[i];
    if (!e->used || !e->dirty) {
        return 0;
    }
    int ret = before_writeback(c);
    if (ret < 0) {
        return ret;
    }
    if (c->check) {
        ret = c->check(c->check_opaque, e->offset, c->entry_size);
        if (ret < 0) {
            return ret;
        }
    }
    if (c->has_write_event) {
        vd_node_event(c->file, c->write_event);
    }
    ret = vd_node_pwrite(c->file, e->offset, c->entry_size, table_of(c, i), 0);
    if (ret < 0) {
        return ret;
    }
    e->dirty = false;
    c->unflushed = true;
    return 0;
}

int vd_cache_write(vd_cache *c)
{
    /* ascending offsets make the write-back mostly sequential */
    for (;;) {
        size_t best = CACHE_NONE;
        for (size_t i = 0; i < c->nb; i++) {
            if (c->e[i].used && c->e[i].dirty &&
                (best == CACHE_NONE || c->e[i].offset < c->e[best].offset)) {
                best = i;
            }
        }
        if (best == CACHE_NONE) {
            break;
        }
        int ret = write_entry(c, best);
        if (ret < 0) {
            return ret; /* the entry stays dirty for a later retry */
        }
    }
    return 0;
}

int vd_cache_flush(vd_cache *c)
{
    int ret = vd_cache_write(c);
    /* nothing of ours can be in flight to the disk otherwise */
    if (ret == 0 && c->unflushed) {
        ret = vd_node_flush(c->file);
        if (ret == 0) {
            c->unflushed = false;
        }
    }
    return ret;
}

int vd_cache_set_dependency(vd_cache *c, vd_cache *dep)
{
    int ret;
    /* Only one level of ordering is kept: settle dep's own dependency and
     * any other dependency of c now, so that two caches never wait on each
     * other (L2 after refcounts for allocation, refcounts after L2 for
     * freeing). */
    if (dep->depends) {
        vd_cache *d = dep->depends;
        dep->depends = NULL;
        if ((ret = vd_cache_flush(d)) < 0) {
            dep->depends = d;
            return ret;
        }
    }
    if (c->depends && c->depends != dep) {
        vd_cache *d = c->depends;
        c->depends = NULL;
        if ((ret = vd_cache_flush(d)) < 0) {
            c->depends = d;
            return ret;
        }
    }
    c->depends = dep;
    return 0;
}

void vd_cache_set_flush_before(vd_cache *c)
{
    c->flush_before = true;
}

/* A free or evictable entry index, or CACHE_NONE. */
static int find_victim(vd_cache *c, size_t *out)
{
    size_t best = CACHE_NONE;
    for (size_t i = 0; i < c->nb; i++) {
        if (!c->e[i].used) {
            *out = i;
            return 0;
        }
        if (c->e[i].ref == 0 && (best == CACHE_NONE || c->e[i].lru < c->e[best].lru)) {
            best = i;
        }
    }
    if (best == CACHE_NONE) {
        return -ENOSPC;
    }
    int ret = write_entry(c, best);
    if (ret < 0) {
        return ret;
    }
    unhash(c, best);
    *out = best;
    return 0;
}

static int do_get(vd_cache *c, uint64_t offset, void **table, bool read)
{
    size_t i = lookup(c, offset);
    if (i == CACHE_NONE) {
        int ret = find_victim(c, &i);
        if (ret < 0) {
            return ret;
        }
        if (read) {
            if (c->has_load_event) {
                vd_node_event(c->file, c->load_event);
            }
            ret = vd_node_pread(c->file, offset, c->entry_size, table_of(c, i), 0);
            if (ret < 0) {
                return ret;
            }
        }
        hash_in(c, i, offset);
    }
    c->e[i].ref++;
    c->e[i].lru = ++c->clock;
    c->e[i].touched = true;
    *table = table_of(c, i);
    return 0;
}

int vd_cache_get(vd_cache *c, uint64_t offset, void **table)
{
    return do_get(c, offset, table, true);
}

int vd_cache_get_empty(vd_cache *c, uint64_t offset, void **table)
{
    return do_get(c, offset, table, false);
}

void vd_cache_put(vd_cache *c, void **table)
{
    if (!*table) {
        return;
    }
    size_t i = index_of(c, *table);
    if (c->e[i].ref > 0) {
        c->e[i].ref--;
    }
    if (c->e[i].ref == 0 && c->e[i].discarded) {
        unhash(c, i);
    }
    *table = NULL;
}

void vd_cache_mark_dirty(vd_cache *c, void *table)
{
    c->e[index_of(c, table)].dirty = true;
}

uint64_t vd_cache_offset(const vd_cache *c, const void *table)
{
    return c->e[index_of(c, table)].offset;
}

void vd_cache_discard(vd_cache *c, uint64_t offset)
{
    size_t i = lookup(c, offset);
    if (i == CACHE_NONE) {
        return;
    }
    if (c->e[i].ref) {
        c->e[i].dirty = false;
        c->e[i].discarded = true;
    } else {
        unhash(c, i);
    }
}

void vd_cache_drop_all(vd_cache *c)
{
    for (size_t i = 0; i < c->nb; i++) {
        if (!c->e[i].used) {
            continue;
        }
        if (c->e[i].ref) {
            c->e[i].dirty = false;
            c->e[i].discarded = true;
        } else {
            unhash(c, i);
        }
    }
    c->depends = NULL;
    c->flush_before = false;
}

int vd_cache_empty(vd_cache *c)
{
    int ret = vd_cache_write(c);
    if (ret < 0) {
        return ret;
    }
    for (size_t i = 0; i < c->nb; i++) {
        if (c->e[i].used && c->e[i].ref == 0) {
            unhash(c, i);
        }
    }
    return 0;
}

void vd_cache_clean_unused(vd_cache *c)
{
    for (size_t i = 0; i < c->nb; i++) {
        cache_entry *e = &c->e[i];
        if (e->used && !e->dirty && e->ref == 0 && !e->touched) {
            unhash(c, i);
        }
        e->touched = false;
    }
}
