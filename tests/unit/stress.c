/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Concurrency stress: N threads issue random, overlapping reads, writes,
 * zero writes, discards and flushes on one image (qcow2, qcow2 with 4 KiB
 * clusters, qed, vdi, vpc), and every read is checked against a reference
 * model of what each 512-byte sector may hold at that moment.
 *
 * The model: every request gets a start tick before it is issued and an
 * end tick when it returns (one global logical clock).  Each sector keeps
 * the history of requests that wrote it.  A read R may see the value of a
 * request W when W started before R ended and no *definite* write (data or
 * zeroes; a discard is only a hint) both started after W ended and ended
 * before R started.  Data writes fill each sector with their unique 32-bit
 * id; zero writes and discards read as id 0, as does the initial image.
 * After the threads end, the whole image is read and checked again, then
 * once more after a close and reopen, and qcow2 must pass its check.
 *
 * Environment: VDISK_STRESS_SEED (default 1), VDISK_STRESS_OPS (requests
 * per thread, default 600), VDISK_STRESS_THREADS (default 4),
 * VDISK_STRESS_FORMATS (comma list, default all).  The seed and the
 * failing request are printed on failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

#define SECTOR 512u
#define IMG_SIZE (4u << 20)
#define NSECT (IMG_SIZE / SECTOR)
#define MAX_LEN (136u << 10)

typedef struct hist {
    uint32_t id;
    uint8_t kind; /* 'w' data, 'z' zeroes, 'd' discard */
    uint64_t s, e; /* e == UINT64_MAX while in flight */
} hist;

typedef struct sector {
    hist *h;
    uint32_t n, cap;
} sector;

static sector *model;
static uint64_t clock_tick;
static pthread_mutex_t model_lock = PTHREAD_MUTEX_INITIALIZER;
static int failures;
static uint64_t total_ops[6];
static const char *kind_names[6] = {"read", "write", "zero", "discard", "flush", "unmap-zero"};

static uint64_t rnd(uint64_t *st)
{
    uint64_t x = *st;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *st = x;
}

/* Register a request on its sectors; returns its start tick.  Lock held. */
static uint64_t model_begin(uint64_t first, uint64_t n, uint32_t id, uint8_t kind, uint32_t *slots)
{
    uint64_t s = ++clock_tick;
    for (uint64_t i = 0; i < n; i++) {
        sector *sc = &model[first + i];
        if (sc->n == sc->cap) {
            sc->cap = sc->cap ? 2 * sc->cap : 8;
            sc->h = realloc(sc->h, sc->cap * sizeof(*sc->h));
            if (!sc->h) {
                abort();
            }
        }
        sc->h[sc->n] = (hist){id, kind, s, UINT64_MAX};
        slots[i] = sc->n; /* an index: realloc may move the array */
        sc->n++;
    }
    return s;
}

static void model_end(uint64_t first, uint64_t n, const uint32_t *slots)
{
    pthread_mutex_lock(&model_lock);
    uint64_t e = ++clock_tick;
    for (uint64_t i = 0; i < n; i++) {
        model[first + i].h[slots[i]].e = e;
    }
    pthread_mutex_unlock(&model_lock);
}

/* May a read with ticks [rs, re] see value v in sector i?  Lock held. */
static bool legal(uint64_t i, uint32_t v, uint64_t rs, uint64_t re)
{
    const sector *sc = &model[i];
    /* candidates: requests of value v, and the initial zeroes (tick 0) */
    for (int64_t c = -1; c < (int64_t)sc->n; c++) {
        uint64_t ws, we;
        if (c < 0) {
            if (v != 0) {
                continue;
            }
            ws = we = 0;
        } else {
            const hist *w = &sc->h[c];
            uint32_t wv = w->kind == 'w' ? w->id : 0;
            if (wv != v) {
                continue;
            }
            ws = w->s;
            we = w->e;
        }
        if (ws >= re) {
            continue; /* started after the read ended */
        }
        bool overwritten = false;
        if (we != UINT64_MAX) {
            for (uint32_t k = 0; k < sc->n && !overwritten; k++) {
                const hist *o = &sc->h[k];
                overwritten = o->kind != 'd' && o->s > we && o->e < rs;
            }
        }
        if (!overwritten) {
            return true;
        }
    }
    return false;
}

static uint32_t sector_value(const uint8_t *p, bool *uniform)
{
    uint32_t v = vd_ld_le32(p);
    *uniform = true;
    for (unsigned k = 4; k < SECTOR; k += 4) {
        if (vd_ld_le32(p + k) != v) {
            *uniform = false;
        }
    }
    return v;
}

/* Check a read of sectors [first, first+n) done between ticks rs and re. */
static void check_read(const char *fmt, uint64_t seed, const uint8_t *buf, uint64_t first,
                       uint64_t n, uint64_t rs, uint64_t re)
{
    pthread_mutex_lock(&model_lock);
    for (uint64_t i = 0; i < n; i++) {
        bool uniform;
        uint32_t v = sector_value(buf + i * SECTOR, &uniform);
        bool ok = legal(first + i, v, rs, re);
        /* A read that overlaps a write still in flight may see the sector
         * torn between two legal contents: neither QEMU nor the kernel's
         * page cache makes a sector atomic against a concurrent write.
         * Every word must still hold a legal value (a lost or misplaced
         * write never passes). */
        for (unsigned k = 4; ok && !uniform && k < SECTOR; k += 4) {
            ok = legal(first + i, vd_ld_le32(buf + i * SECTOR + k), rs, re);
        }
        if (!ok) {
            if (failures++ < 10) {
                fprintf(stderr,
                        "%s seed %llu: sector %llu read %s%08x (ticks %llu..%llu), history:",
                        fmt, (unsigned long long)seed, (unsigned long long)(first + i),
                        uniform ? "" : "mixed ", v, (unsigned long long)rs,
                        (unsigned long long)re);
                const sector *sc = &model[first + i];
                for (uint32_t k = 0; k < sc->n; k++) {
                    fprintf(stderr, " %c%08x[%llu,%lld]", sc->h[k].kind, sc->h[k].id,
                            (unsigned long long)sc->h[k].s,
                            sc->h[k].e == UINT64_MAX ? -1LL : (long long)sc->h[k].e);
                }
                fprintf(stderr, "\n");
            }
        }
    }
    pthread_mutex_unlock(&model_lock);
}

typedef struct worker {
    vd_node *bs;
    const char *fmt;
    uint64_t seed;
    unsigned tid;
    unsigned ops;
    int io_errors;
    uint64_t counts[6];
} worker;

static void *work(void *opaque)
{
    worker *w = opaque;
    uint64_t st = w->seed * 0x9e3779b97f4a7c15ull + w->tid + 1;
    uint8_t *buf = vd_aligned_alloc(4096, MAX_LEN);
    uint32_t *slots = malloc((MAX_LEN / SECTOR) * sizeof(*slots));
    uint32_t serial = 0;
    for (unsigned op = 0; op < w->ops; op++) {
        uint64_t r = rnd(&st);
        unsigned kind = (unsigned)(r % 100);
        /* 40% reads, 35% writes, 8% zeroes, 5% unmapping zeroes, 8% discards, 4% flushes */
        int k = kind < 40 ? 0 : kind < 75 ? 1 : kind < 83 ? 2 : kind < 88 ? 5 : kind < 96 ? 3 : 4;
        /* sizes and offsets: sectors, often cluster-ish aligned to collide */
        uint64_t nsec = 1 + rnd(&st) % (MAX_LEN / SECTOR);
        if (rnd(&st) % 2) {
            nsec = (nsec + 7) & ~7ull;
        }
        uint64_t first = rnd(&st) % NSECT;
        if (rnd(&st) % 3 == 0) {
            first &= ~127ull; /* 64 KiB aligned */
        }
        if (first + nsec > NSECT) {
            nsec = NSECT - first;
        }
        uint64_t off = first * SECTOR, len = nsec * SECTOR;
        int ret = 0;
        w->counts[k]++;
        if (k == 4) {
            ret = vd_node_flush(w->bs);
        } else if (k == 0) {
            pthread_mutex_lock(&model_lock);
            uint64_t rs = ++clock_tick;
            pthread_mutex_unlock(&model_lock);
            ret = vd_node_pread(w->bs, off, len, buf, 0);
            pthread_mutex_lock(&model_lock);
            uint64_t re = ++clock_tick;
            pthread_mutex_unlock(&model_lock);
            if (ret == 0) {
                check_read(w->fmt, w->seed, buf, first, nsec, rs, re);
            }
        } else {
            uint32_t id = ((w->tid + 1) << 24) | (++serial & 0xffffff);
            uint8_t hk = k == 1 ? 'w' : (k == 2 || k == 5) ? 'z' : 'd';
            if (k == 1) {
                for (uint64_t i = 0; i < len; i += 4) {
                    vd_st_le32(buf + i, id);
                }
            }
            pthread_mutex_lock(&model_lock);
            model_begin(first, nsec, id, hk, slots);
            pthread_mutex_unlock(&model_lock);
            if (k == 1) {
                ret = vd_node_pwrite(w->bs, off, len, buf, 0);
            } else if (k == 2) {
                ret = vd_node_pwrite_zeroes(w->bs, off, len, 0);
            } else if (k == 5) {
                ret = vd_node_pwrite_zeroes(w->bs, off, len, VD_REQ_MAY_UNMAP);
            } else {
                ret = vd_node_discard(w->bs, off, len);
                if (ret == -ENOTSUP) {
                    ret = 0; /* a hint the format may not take */
                }
            }
            model_end(first, nsec, slots);
        }
        if (ret < 0) {
            if (w->io_errors++ < 5) {
                fprintf(stderr, "%s seed %llu thread %u: %s %llu+%llu failed: %s\n", w->fmt,
                        (unsigned long long)w->seed, w->tid, kind_names[k],
                        (unsigned long long)off, (unsigned long long)len, strerror(-ret));
            }
        }
    }
    free(slots);
    free(buf);
    return NULL;
}

/* Read the whole image once, single-threaded, and check it. */
static void check_all(vd_node *bs, const char *fmt, uint64_t seed)
{
    uint8_t *buf = vd_aligned_alloc(4096, MAX_LEN);
    for (uint64_t off = 0; off < IMG_SIZE; off += MAX_LEN) {
        uint64_t len = VD_MIN(MAX_LEN, IMG_SIZE - off);
        uint64_t rs = ++clock_tick;
        if (vd_node_pread(bs, off, len, buf, 0) < 0) {
            fprintf(stderr, "%s: final read at %llu failed\n", fmt, (unsigned long long)off);
            failures++;
            break;
        }
        check_read(fmt, seed, buf, off / SECTOR, len / SECTOR, rs, ++clock_tick);
    }
    free(buf);
}

static vd_node *open_img(const char *fn, const char *fmt)
{
    vd_opts *o = vd_opts_new();
    vd_opts_set(o, "discard", "unmap");
    vd_error *err = NULL;
    vd_node *bs = vd_node_open(fn, fmt, o, VD_NODE_RDWR, &err);
    vd_opts_free(o);
    if (!bs) {
        fprintf(stderr, "open %s: %s\n", fn, err ? err->msg : "?");
        vd_error_free(err);
    }
    return bs;
}

static void run_format(const char *name, const char *fmt, const char *create_opts,
                       uint64_t seed, unsigned nthreads, unsigned ops)
{
    char fn[64];
    snprintf(fn, sizeof(fn), "stress-%s.img", name);
    unlink(fn);
    vd_opts *o = vd_opts_new();
    char size[32];
    snprintf(size, sizeof(size), "%u", IMG_SIZE);
    vd_opts_set(o, "size", size);
    if (create_opts && vd_opts_parse(o, create_opts, NULL) < 0) {
        fprintf(stderr, "bad create options %s\n", create_opts);
        exit(1);
    }
    if (vd_create(fn, fmt, o) < 0) {
        fprintf(stderr, "create %s: %s\n", fn, vd_get_error());
        failures++;
        vd_opts_free(o);
        return;
    }
    vd_opts_free(o);
    vd_node *bs = open_img(fn, fmt);
    if (!bs) {
        failures++;
        return;
    }
    model = calloc(NSECT, sizeof(*model));
    clock_tick = 0;
    int before = failures;

    worker *w = calloc(nthreads, sizeof(*w));
    pthread_t *t = calloc(nthreads, sizeof(*t));
    for (unsigned i = 0; i < nthreads; i++) {
        w[i] = (worker){bs, name, seed, i, ops, 0, {0}};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    uint64_t counts[6] = {0};
    for (unsigned i = 0; i < nthreads; i++) {
        pthread_join(t[i], NULL);
        failures += w[i].io_errors;
        for (int k = 0; k < 6; k++) {
            counts[k] += w[i].counts[k];
            total_ops[k] += w[i].counts[k];
        }
    }
    check_all(bs, name, seed);
    vd_node_close(bs);

    bs = open_img(fn, fmt);
    if (!bs) {
        failures++;
    } else {
        check_all(bs, name, seed);
        if (bs->drv->check) {
            vd_check_res r;
            memset(&r, 0, sizeof(r));
            vd_error *err = NULL;
            if (bs->drv->check(bs, &r, 0, &err) < 0 || r.corruptions || r.check_errors) {
                fprintf(stderr, "%s seed %llu: check found %d corruptions, %d errors%s%s\n",
                        name, (unsigned long long)seed, r.corruptions, r.check_errors,
                        err ? ": " : "", err ? err->msg : "");
                failures++;
            }
            vd_error_free(err);
        }
        vd_node_close(bs);
    }
    printf("%-10s seed %llu, %u threads: %llu reads, %llu writes, %llu zero writes, "
           "%llu unmapping zero writes, %llu discards, %llu flushes: %s\n",
           name, (unsigned long long)seed, nthreads, (unsigned long long)counts[0],
           (unsigned long long)counts[1], (unsigned long long)counts[2],
           (unsigned long long)counts[5], (unsigned long long)counts[3],
           (unsigned long long)counts[4], failures == before ? "ok" : "FAILED");
    for (uint64_t i = 0; i < NSECT; i++) {
        free(model[i].h);
    }
    free(model);
    free(w);
    free(t);
    unlink(fn);
}

static unsigned env_uint(const char *name, unsigned def)
{
    const char *v = getenv(name);
    return v && *v ? (unsigned)strtoul(v, NULL, 0) : def;
}

int main(void)
{
    uint64_t seed = env_uint("VDISK_STRESS_SEED", 1);
    unsigned ops = env_uint("VDISK_STRESS_OPS", 600);
    unsigned nthreads = env_uint("VDISK_STRESS_THREADS", 4);
    const char *only = getenv("VDISK_STRESS_FORMATS");
    static const struct {
        const char *name, *fmt, *opts;
    } fmts[] = {
        {"qcow2", "qcow2", NULL},
        {"qcow2-4k", "qcow2", "cluster_size=4096"},
        {"qcow2-lazy", "qcow2", "lazy_refcounts=on,cluster_size=16384"},
        {"qed", "qed", NULL},
        {"vdi", "vdi", NULL},
        {"vpc", "vpc", NULL},
    };
    for (size_t i = 0; i < sizeof(fmts) / sizeof(fmts[0]); i++) {
        if (only && *only) {
            char pat[64];
            snprintf(pat, sizeof(pat), ",%s,", fmts[i].name);
            size_t l = strlen(only);
            char *list = malloc(l + 3);
            snprintf(list, l + 3, ",%s,", only);
            bool sel = strstr(list, pat) != NULL;
            free(list);
            if (!sel) {
                continue;
            }
        }
        run_format(fmts[i].name, fmts[i].fmt, fmts[i].opts, seed, nthreads, ops);
    }
    printf("total: %llu reads, %llu writes, %llu zero writes, %llu unmapping zero writes, "
           "%llu discards, %llu flushes\n",
           (unsigned long long)total_ops[0], (unsigned long long)total_ops[1],
           (unsigned long long)total_ops[2], (unsigned long long)total_ops[5],
           (unsigned long long)total_ops[3], (unsigned long long)total_ops[4]);
    if (failures) {
        fprintf(stderr, "%d failures (seed %llu)\n", failures, (unsigned long long)seed);
        return 1;
    }
    return 0;
}
