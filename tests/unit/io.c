/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Request path tests (src/core/io.c) on an in-memory protocol driver that
 * insists on alignment and max_transfer: every request the driver sees must
 * be valid, unaligned writes from many threads into shared blocks must not
 * lose each other's bytes, zero writes fall back, reads past the end of a
 * format node read zeroes.
 */
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#define DISK_SIZE (1u << 20)

typedef struct mem_state {
    uint8_t *data;
    uint64_t size;
    int violations;
    int zero_calls;
    bool zeroes_supported;
    pthread_mutex_t lock;
} mem_state;

static bool valid(vd_node *bs, uint64_t off, uint64_t len)
{
    mem_state *s = bs->opaque;
    uint32_t a = bs->request_alignment;
    bool ok = len > 0 && off % a == 0 && len % a == 0 && off + len <= s->size &&
              (!bs->max_transfer || len <= bs->max_transfer);
    if (!ok) {
        __atomic_add_fetch(&s->violations, 1, __ATOMIC_SEQ_CST);
        fprintf(stderr, "invalid request off=%llu len=%llu\n", (unsigned long long)off,
                (unsigned long long)len);
    }
    return ok;
}

static int mem_pread(vd_node *bs, uint64_t off, uint64_t len, void *buf, unsigned flags)
{
    mem_state *s = bs->opaque;
    if (!valid(bs, off, len)) {
        return -EINVAL;
    }
    /* copy slowly, in pieces, to widen race windows */
    for (uint64_t i = 0; i < len; i += 64) {
        memcpy((uint8_t *)buf + i, s->data + off + i, VD_MIN(64, len - i));
        if ((i & 255) == 0) {
            sched_yield();
        }
    }
    return 0;
}

static int mem_pwrite(vd_node *bs, uint64_t off, uint64_t len, const void *buf, unsigned flags)
{
    mem_state *s = bs->opaque;
    if (!valid(bs, off, len)) {
        return -EINVAL;
    }
    for (uint64_t i = 0; i < len; i += 64) {
        memcpy(s->data + off + i, (const uint8_t *)buf + i, VD_MIN(64, len - i));
        if ((i & 255) == 0) {
            sched_yield();
        }
    }
    return 0;
}

static int mem_pwrite_zeroes(vd_node *bs, uint64_t off, uint64_t len, unsigned flags)
{
    mem_state *s = bs->opaque;
    if (!s->zeroes_supported) {
        return -ENOTSUP;
    }
    if (!valid(bs, off, len)) {
        return -EINVAL;
    }
    __atomic_add_fetch(&s->zero_calls, 1, __ATOMIC_SEQ_CST);
    memset(s->data + off, 0, len);
    return 0;
}

static int64_t mem_get_length(vd_node *bs)
{
    return (int64_t)((mem_state *)bs->opaque)->size;
}

static const vd_driver mem_drv = {
    .name = "test-mem",
    .kind = VD_DRV_PROTOCOL,
    .state_size = sizeof(mem_state),
    .pread = mem_pread,
    .pwrite = mem_pwrite,
    .pwrite_zeroes = mem_pwrite_zeroes,
    .get_length = mem_get_length,
};

static int failures;
#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);          \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

static vd_node *mem_node(uint32_t align, uint64_t max_transfer)
{
    vd_node *bs = calloc(1, sizeof(*bs));
    bs->drv = &mem_drv;
    bs->opaque = calloc(1, sizeof(mem_state));
    mem_state *s = bs->opaque;
    s->size = DISK_SIZE;
    s->data = calloc(1, DISK_SIZE);
    s->zeroes_supported = true;
    bs->request_alignment = align;
    bs->max_transfer = max_transfer;
    bs->flags = VD_NODE_RDWR;
    bs->filename = strdup("mem");
    pthread_mutex_init(&bs->req_lock, NULL);
    pthread_cond_init(&bs->req_cond, NULL);
    return bs;
}

static void mem_free(vd_node *bs)
{
    mem_state *s = bs->opaque;
    free(s->data);
    free(s);
    free(bs->filename);
    pthread_mutex_destroy(&bs->req_lock);
    pthread_cond_destroy(&bs->req_cond);
    free(bs);
}

/* xorshift: seeded, reproducible */
static uint64_t rnd(uint64_t *st)
{
    uint64_t x = *st;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *st = x;
}

/* Byte i of the disk belongs to thread (i / 3) % NTHREADS: owners interleave
 * inside every 512-byte block, so any lost read-modify-write shows. */
#define NTHREADS 8
#define ROUNDS 400

struct worker {
    vd_node *bs;
    int id;
    uint8_t *expect; /* shared, each thread writes only its own bytes */
};

static int owner(uint64_t i)
{
    return (int)((i / 3) % NTHREADS);
}

static void *worker_fn(void *arg)
{
    struct worker *w = arg;
    uint64_t st = 0x9e3779b97f4a7c15ull * (uint64_t)(w->id + 1);
    uint8_t buf[600];
    for (int r = 0; r < ROUNDS; r++) {
        /* a run of this thread's bytes: write them via many tiny writes,
         * each covering one owned triple (unaligned by construction) */
        uint64_t base = (rnd(&st) % (DISK_SIZE / 3 - 1)) * 3;
        uint64_t first = base + (uint64_t)((w->id - owner(base) + NTHREADS) % NTHREADS) * 3;
        if (first + 3 > DISK_SIZE) {
            continue;
        }
        uint8_t v = (uint8_t)(rnd(&st) | 1);
        memset(buf, v, 3);
        int ret;
        if (r % 5 == 4) {
            ret = vd_node_pwrite_zeroes(w->bs, first, 3, 0);
            v = 0;
        } else {
            ret = vd_node_pwrite(w->bs, first, 3, buf, 0);
        }
        if (ret < 0) {
            fprintf(stderr, "write failed: %d\n", ret);
            __atomic_add_fetch(&failures, 1, __ATOMIC_SEQ_CST);
        }
        memset(w->expect + first, v, 3);
        if (r % 7 == 0) {
            /* an unaligned read of someone's area must not crash or tear
             * our own bytes */
            uint64_t off = rnd(&st) % (DISK_SIZE - sizeof(buf));
            vd_node_pread(w->bs, off, sizeof(buf), buf, 0);
        }
    }
    return NULL;
}

static void test_concurrent_rmw(uint32_t align)
{
    vd_node *bs = mem_node(align, 8192);
    uint8_t *expect = calloc(1, DISK_SIZE);
    pthread_t th[NTHREADS];
    struct worker w[NTHREADS];
    for (int i = 0; i < NTHREADS; i++) {
        w[i] = (struct worker){bs, i, expect};
        pthread_create(&th[i], NULL, worker_fn, &w[i]);
    }
    for (int i = 0; i < NTHREADS; i++) {
        pthread_join(th[i], NULL);
    }
    mem_state *s = bs->opaque;
    CHECK(s->violations == 0);
    CHECK(memcmp(s->data, expect, DISK_SIZE) == 0);
    CHECK(bs->reqs == NULL);
    free(expect);
    mem_free(bs);
}

static void test_unaligned_and_split(void)
{
    vd_node *bs = mem_node(512, 4096);
    mem_state *s = bs->opaque;
    uint8_t *buf = malloc(100000), *back = malloc(100000);
    uint64_t st = 42;
    for (int i = 0; i < 100000; i++) {
        buf[i] = (uint8_t)rnd(&st);
    }
    /* unaligned offset and length, memory unaligned too, crossing many
     * max_transfer chunks */
    CHECK(vd_node_pwrite(bs, 1001, 99999, buf + 1, 0) == 0);
    CHECK(memcmp(s->data + 1001, buf + 1, 99999) == 0);
    CHECK(s->data[1000] == 0 && s->data[1001 + 99999] == 0);
    CHECK(vd_node_pread(bs, 1001, 99999, back + 1, 0) == 0);
    CHECK(memcmp(back + 1, buf + 1, 99999) == 0);
    /* zero write: aligned middle through the driver, unaligned ends by RMW */
    int calls = s->zero_calls;
    CHECK(vd_node_pwrite_zeroes(bs, 1500, 20000, 0) == 0);
    CHECK(s->zero_calls > calls);
    CHECK(vd_buffer_is_zero(s->data + 1500, 20000));
    CHECK(s->data[1499] == buf[1 + 1499 - 1001]);
    CHECK(s->data[21500] == buf[1 + 21500 - 1001]);
    /* fallback when the driver can't */
    s->zeroes_supported = false;
    CHECK(vd_node_pwrite_zeroes(bs, 30000, 50000, 0) == 0);
    CHECK(vd_buffer_is_zero(s->data + 30000, 50000));
    CHECK(vd_node_pwrite_zeroes(bs, 30000, 50000, VD_REQ_NO_FALLBACK) == -ENOTSUP);
    /* detect-zeroes turns a zero buffer into a zero write */
    s->zeroes_supported = true;
    bs->detect_zeroes = VD_DETECT_ZEROES_ON;
    memset(back, 0, 8192);
    calls = s->zero_calls;
    CHECK(vd_node_pwrite(bs, 4096, 8192, back, 0) == 0);
    CHECK(s->zero_calls > calls);
    /* read-only refuses writes; overflow refused */
    bs->read_only = true;
    CHECK(vd_node_pwrite(bs, 0, 512, buf, 0) == -EPERM);
    bs->read_only = false;
    CHECK(vd_node_pread(bs, UINT64_MAX - 10, 100, back, 0) == -EINVAL);
    CHECK(s->violations == 0);
    free(buf);
    free(back);
    mem_free(bs);
}

/* A pass-through format over the memory node: reads past its end are zero. */
static int64_t short_len(vd_node *bs)
{
    return 10000;
}
static int short_pread(vd_node *bs, uint64_t off, uint64_t len, void *buf, unsigned flags)
{
    if (off + len > 10000) {
        failures++;
    }
    return vd_node_pread(bs->file, off, len, buf, flags);
}
static const vd_driver short_drv = {
    .name = "test-short",
    .kind = VD_DRV_FORMAT,
    .pread = short_pread,
    .get_length = short_len,
};

static void test_format_eof(void)
{
    vd_node *file = mem_node(1, 0);
    mem_state *s = file->opaque;
    memset(s->data, 0xaa, DISK_SIZE);
    vd_node fmt = {0};
    fmt.drv = &short_drv;
    fmt.file = file;
    fmt.request_alignment = 1;
    pthread_mutex_init(&fmt.req_lock, NULL);
    pthread_cond_init(&fmt.req_cond, NULL);
    uint8_t buf[4000];
    CHECK(vd_node_pread(&fmt, 8000, sizeof(buf), buf, 0) == 0);
    CHECK(buf[0] == 0xaa && buf[1999] == 0xaa);
    CHECK(vd_buffer_is_zero(buf + 2000, 2000));
    pthread_mutex_destroy(&fmt.req_lock);
    pthread_cond_destroy(&fmt.req_cond);
    mem_free(file);
}

int main(void)
{
    test_unaligned_and_split();
    test_concurrent_rmw(512);
    test_concurrent_rmw(4096);
    test_format_eof();
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("io: all passed\n");
    return 0;
}
