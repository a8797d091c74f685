/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The nvme protocol's controller and queue logic (src/protocols/nvme/
 * queue.c) against the software controller of nvme-model.c: bring-up,
 * identify, random workloads checked against a shadow copy, PRP lists,
 * MDTS and LBA formats, phase bits over many queue wraps, a full queue
 * with many threads and with asynchronous submission, error statuses,
 * missing optional commands, a controller that stops answering, one that
 * never becomes ready, bogus completions.
 *
 * `unit-nvme-queue bench [N]`: 4 KiB random reads per second at queue depth
 * 1 and 32 against the model (bench/nvme.sh).
 */
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "nvme-model.h"

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                    \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static uint64_t rng_state;
static uint64_t rnd(void)
{
    /* xorshift64*, seeded per test so failures repeat */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1Dull;
}

static vd_nvme_ctrl *open_model(nvme_model *m, const vd_nvme_params *p)
{
    vd_nvme_hw hw;
    vd_nvme_ctrl *c = NULL;
    vd_error *err = NULL;
    nvme_model_hw(m, &hw);
    int ret = vd_nvme_open(&hw, p, &c, &err);
    CHECK(ret == 0, "open: %s", err ? err->msg : "?");
    return c;
}

/* open must fail with a message containing want, leaving no DMA memory */
static void expect_open_fail(const nvme_model_cfg *cfg, const vd_nvme_params *p,
                             void (*setup)(nvme_model *), const char *want)
{
    nvme_model *m = nvme_model_new(cfg);
    CHECK(m, "model");
    if (setup) {
        setup(m);
    }
    vd_nvme_hw hw;
    vd_nvme_ctrl *c = NULL;
    vd_error *err = NULL;
    nvme_model_hw(m, &hw);
    int ret = vd_nvme_open(&hw, p, &c, &err);
    CHECK(ret < 0 && err && strstr(err->msg, want), "want '%s', got %d '%s'", want, ret,
          err ? err->msg : "");
    printf("  open refused: %s\n", err->msg);
    vd_error_free(err);
    CHECK(nvme_model_get_stats(m).allocated_bytes == 0, "DMA memory left after failed open");
    nvme_model_free(m);
}

static const nvme_model_cfg default_cfg = {
    .mdts = 5, .oncs = 0xc, .dlfeat = 9, .vwc = true,
};

/* A random workload of every request type, checked against a shadow copy. */
static void random_workload(vd_nvme_ctrl *c, nvme_model *m, uint8_t *shadow, int ops)
{
    const vd_nvme_info *in = vd_nvme_get_info(c);
    uint64_t size = in->nblocks * in->block_size;
    uint8_t *buf = malloc(in->max_transfer), *rb = malloc(in->max_transfer);
    CHECK(buf && rb, "malloc");
    for (int i = 0; i < ops; i++) {
        uint64_t max_blocks = in->max_transfer / in->block_size;
        uint64_t nb = 1 + rnd() % max_blocks;
        uint64_t len = nb * in->block_size;
        uint64_t off = (rnd() % (in->nblocks - nb + 1)) * in->block_size;
        int op = (int)(rnd() % 10);
        int ret;
        if (op < 4) {
            for (uint64_t k = 0; k < len; k++) {
                buf[k] = (uint8_t)rnd();
            }
            bool fua = rnd() & 1;
            ret = vd_nvme_write(c, off, len, buf, fua);
            CHECK(ret == 0, "write %d", ret);
            CHECK(!!(nvme_model_get_stats(m).last_cdw12 & (1u << 30)) == fua, "FUA bit");
            memcpy(shadow + off, buf, len);
        } else if (op < 8) {
            ret = vd_nvme_read(c, off, len, rb);
            CHECK(ret == 0, "read %d", ret);
            CHECK(!memcmp(rb, shadow + off, len), "read data differs at %" PRIu64 "+%" PRIu64,
                  off, len);
        } else if (op == 8) {
            bool unmap = rnd() & 1;
            ret = vd_nvme_write_zeroes(c, off, len, unmap, false);
            CHECK(ret == 0, "write zeroes %d", ret);
            CHECK(!!(nvme_model_get_stats(m).last_cdw12 & (1u << 25)) == (unmap && in->deac),
                  "DEAC bit");
            memset(shadow + off, 0, len);
        } else if (rnd() & 1) {
            ret = vd_nvme_discard(c, off, len);
            CHECK(ret == 0, "discard %d", ret);
            CHECK(nvme_model_get_stats(m).last_dsm_cdw11 == 4, "DSM attribute");
            memset(shadow + off, 0, len); /* the model reads deallocated blocks as zeroes */
        } else {
            CHECK(vd_nvme_flush(c) == 0, "flush");
        }
    }
    CHECK(!memcmp(nvme_model_media(m), shadow, size), "media differs from the shadow");
    free(buf);
    free(rb);
}

static void test_basic(void)
{
    printf("basic: 512-byte blocks, MDTS 128 KiB, random workload\n");
    rng_state = 0x1234567;
    nvme_model *m = nvme_model_new(&default_cfg);
    vd_nvme_params p = {.nsid = 1};
    vd_nvme_ctrl *c = open_model(m, &p);
    const vd_nvme_info *in = vd_nvme_get_info(c);
    CHECK(in->nblocks == 16384 && in->block_size == 512, "geometry %" PRIu64 " %u", in->nblocks,
          in->block_size);
    CHECK(in->max_transfer == 128 * 1024, "max_transfer %u", in->max_transfer);
    CHECK(in->io_queue_size == 128, "queue size %u", in->io_queue_size);
    CHECK(in->write_zeroes && in->discard && in->vwc && in->deac && in->dealloc_zeroes, "caps");
    CHECK(!strcmp(in->serial, "MODEL-SERIAL-0001"), "serial '%s'", in->serial);
    CHECK(!strcmp(in->model, "vdisk test NVMe controller model"), "model '%s'", in->model);
    CHECK(nvme_model_get_stats(m).io_queue_size == 128, "model queue size");

    uint8_t *shadow = calloc(1, 8u << 20);
    random_workload(c, m, shadow, 3000);

    /* requests the driver refuses itself */
    uint8_t b[1024];
    CHECK(vd_nvme_read(c, 100, 512, b) == -EINVAL, "unaligned");
    CHECK(vd_nvme_read(c, 8u << 20, 512, b) == -EINVAL, "past the end");
    CHECK(vd_nvme_read(c, 0, 256 * 1024, shadow) == -EINVAL, "above max_transfer");
    CHECK(vd_nvme_write_zeroes(c, (8u << 20) - 512, 1024, false, false) == -EINVAL, "zeroes end");

    nvme_model_stats st = nvme_model_get_stats(m);
    CHECK(st.dma_faults == 0 && st.bad_doorbells == 0, "faults %" PRIu64 " doorbells %" PRIu64,
          st.dma_faults, st.bad_doorbells);
    CHECK(st.prp_list_cmds > 0 && st.reads > 0 && st.writes > 0 && st.write_zeroes > 0 &&
              st.dsms > 0 && st.flushes > 0,
          "every command ran");
    vd_nvme_close(c);
    st = nvme_model_get_stats(m);
    CHECK(st.shutdown_seen, "no shutdown notification");
    CHECK(st.allocated_bytes == 0, "DMA memory left: %u", st.allocated_bytes);
    free(shadow);
    nvme_model_free(m);
}

static void test_formats(void)
{
    printf("4 KiB blocks, MDTS 8 KiB, doorbell stride 16, commands run in the doorbell write\n");
    rng_state = 99;
    nvme_model_cfg cfg = default_cfg;
    cfg.flbas = 1;
    cfg.mdts = 1;
    cfg.dstrd = 2;
    cfg.process_on_doorbell = true;
    cfg.dlfeat = 1; /* deallocated reads zeroes, but write zeroes never deallocates */
    nvme_model *m = nvme_model_new(&cfg);
    vd_nvme_params p = {.nsid = 1, .queue_size = 16};
    vd_nvme_ctrl *c = open_model(m, &p);
    const vd_nvme_info *in = vd_nvme_get_info(c);
    CHECK(in->block_size == 4096 && in->nblocks == 2048, "geometry");
    CHECK(in->max_transfer == 8192 && in->io_queue_size == 16, "limits %u %u",
          in->max_transfer, in->io_queue_size);
    CHECK(!in->deac, "deac");
    uint8_t *shadow = calloc(1, 8u << 20);
    random_workload(c, m, shadow, 1000);
    uint8_t b[4096];
    CHECK(vd_nvme_read(c, 512, 4096, b) == -EINVAL, "512-aligned on 4K blocks");
    nvme_model_stats st = nvme_model_get_stats(m);
    CHECK(st.dma_faults == 0 && st.bad_doorbells == 0 && st.prp_list_cmds == 0, "faults");
    vd_nvme_close(c);
    free(shadow);
    nvme_model_free(m);

    printf("a 2 MiB bounce buffer: PRP lists of 511 entries\n");
    cfg = default_cfg;
    cfg.mdts = 0;
    m = nvme_model_new(&cfg);
    p = (vd_nvme_params){.nsid = 1, .bounce_size = 2u << 20};
    c = open_model(m, &p);
    CHECK(vd_nvme_get_info(c)->max_transfer == 2u << 20, "2 MiB");
    shadow = calloc(1, 8u << 20);
    random_workload(c, m, shadow, 100);
    CHECK(nvme_model_get_stats(m).dma_faults == 0, "faults");
    vd_nvme_close(c);
    free(shadow);
    nvme_model_free(m);
}

static void set_never_ready(nvme_model *m)
{
    nvme_model_never_ready(m, true);
}
static void set_fatal(nvme_model *m)
{
    nvme_model_fatal_on_enable(m, true);
}
static void set_gone(nvme_model *m)
{
    nvme_model_gone(m, true);
}
static void set_identify_error(nvme_model *m)
{
    nvme_model_inject(m, NVME_ADM_IDENTIFY, true, 0x02, 1);
}
static void set_create_error(nvme_model *m)
{
    nvme_model_inject(m, NVME_ADM_CREATE_SQ, true, 0x0102, 1);
}
static void set_hang(nvme_model *m)
{
    nvme_model_hang(m, true);
}

static void test_open_errors(void)
{
    printf("controllers and namespaces the driver refuses\n");
    vd_nvme_params p = {.nsid = 1, .timeout_ms = 200};
    nvme_model_cfg cfg = default_cfg;
    cfg.flbas = 2;
    expect_open_fail(&cfg, &p, NULL, "Namespaces with metadata are not yet supported");
    cfg.flbas = 3;
    expect_open_fail(&cfg, &p, NULL, "Unsupported NVMe block size 2^13");
    cfg = default_cfg;
    cfg.no_nvm_css = true;
    expect_open_fail(&cfg, &p, NULL, "Device doesn't support NVMe command set");
    cfg = default_cfg;
    cfg.mpsmin = 1;
    expect_open_fail(&cfg, &p, NULL, "does not support 4 KiB pages");
    cfg = default_cfg;
    cfg.sqes_128 = true;
    expect_open_fail(&cfg, &p, NULL, "64-byte submission");
    expect_open_fail(&default_cfg, &p, set_never_ready, "Timeout while enabling");
    expect_open_fail(&default_cfg, &p, set_fatal, "fatal status while enabling");
    expect_open_fail(&default_cfg, &p, set_gone, "not responding");
    expect_open_fail(&default_cfg, &p, set_identify_error,
                     "Failed to identify controller: Invalid argument");
    expect_open_fail(&default_cfg, &p, set_create_error,
                     "Failed to create NVMe I/O submission queue: Invalid argument");
    expect_open_fail(&default_cfg, &p, set_hang, "Failed to identify controller: Connection timed out");
    vd_nvme_params p2 = {.nsid = 2, .timeout_ms = 200};
    expect_open_fail(&default_cfg, &p2, NULL, "Invalid namespace 2 (the controller has 1)");
    cfg = default_cfg;
    cfg.nn = 4;
    vd_nvme_params p5 = {.nsid = 5, .timeout_ms = 200};
    expect_open_fail(&cfg, &p5, NULL, "Invalid namespace 5 (the controller has 4)");
    vd_nvme_params p0 = {.nsid = 0};
    expect_open_fail(&default_cfg, &p0, NULL, "Invalid namespace 0");
}

/* ------------------------------------------- full queue, phase wraps */

typedef struct acb {
    int ret;
    int done;
} acb;

static void acb_done(void *opaque, int ret)
{
    acb *a = opaque;
    a->ret = ret;
    a->done++;
}

static void test_queue_full_async(void)
{
    printf("asynchronous submission into a 4-entry queue, one command per controller turn\n");
    rng_state = 7;
    nvme_model_cfg cfg = default_cfg;
    cfg.mqes = 3;
    cfg.batch = 1;
    nvme_model *m = nvme_model_new(&cfg);
    vd_nvme_params p = {.nsid = 1};
    vd_nvme_ctrl *c = open_model(m, &p);
    CHECK(vd_nvme_get_info(c)->io_queue_size == 4, "queue size");
    enum { N = 600, LEN = 4096 };
    static acb a[N];
    static uint8_t data[N][LEN];
    uint8_t *media = nvme_model_media(m);
    unsigned max_inflight = 0;
    /* writes of distinct blocks, then reads of them back */
    for (int i = 0; i < N; i++) {
        for (int k = 0; k < LEN; k++) {
            data[i][k] = (uint8_t)(i * 7 + k);
        }
        CHECK(vd_nvme_submit_write(c, (uint64_t)i * LEN, LEN, data[i], acb_done, &a[i]) == 0,
              "submit");
        unsigned n = vd_nvme_inflight(c);
        max_inflight = VD_MAX(max_inflight, n);
    }
    while (vd_nvme_inflight(c)) {
        CHECK(vd_nvme_poll(c) >= 0, "poll");
    }
    for (int i = 0; i < N; i++) {
        CHECK(a[i].done == 1 && a[i].ret == 0, "write %d: done %d ret %d", i, a[i].done,
              a[i].ret);
        CHECK(!memcmp(media + (size_t)i * LEN, data[i], LEN), "media of write %d", i);
        memset(data[i], 0, LEN);
        a[i] = (acb){0};
    }
    for (int i = 0; i < N; i++) {
        CHECK(vd_nvme_submit_read(c, (uint64_t)i * LEN, LEN, data[i], acb_done, &a[i]) == 0,
              "submit");
    }
    while (vd_nvme_inflight(c)) {
        CHECK(vd_nvme_poll(c) >= 0, "poll");
    }
    for (int i = 0; i < N; i++) {
        CHECK(a[i].done == 1 && a[i].ret == 0, "read %d", i);
        CHECK(!memcmp(media + (size_t)i * LEN, data[i], LEN), "data of read %d", i);
    }
    nvme_model_stats st = nvme_model_get_stats(m);
    printf("  %" PRIu64 " completion queue wraps, at most %u commands in the SQ, %u in flight\n",
           st.cq_wraps, st.max_sq_occupancy, max_inflight);
    CHECK(st.cq_wraps >= 2 * N / 4 - 1, "phase wraps %" PRIu64, st.cq_wraps);
    CHECK(st.max_sq_occupancy == 3 && max_inflight == 3, "queue not filled: %u %u",
          st.max_sq_occupancy, max_inflight);
    CHECK(st.dma_faults == 0 && st.bad_doorbells == 0, "faults");
    vd_nvme_close(c);
    nvme_model_free(m);
}

typedef struct thr {
    vd_nvme_ctrl *c;
    int idx;
    uint64_t seed;
    int fails;
} thr;

/* each thread owns 256 KiB of the namespace and checks it with its own shadow */
static void *thread_main(void *opaque)
{
    thr *t = opaque;
    uint64_t s = t->seed;
    uint8_t shadow[256 * 1024] = {0};
    uint8_t buf[16384];
    uint64_t base = (uint64_t)t->idx * sizeof(shadow);
    for (int i = 0; i < 300; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t nb = 1 + (s >> 33) % 32;
        uint64_t off = ((s >> 13) % (sizeof(shadow) / 512 - nb + 1)) * 512;
        if ((s >> 7) & 1) {
            memset(buf, (int)(s >> 40), nb * 512);
            if (vd_nvme_write(t->c, base + off, nb * 512, buf, false) != 0) {
                t->fails++;
            }
            memcpy(shadow + off, buf, nb * 512);
        } else if (vd_nvme_read(t->c, base + off, nb * 512, buf) != 0 ||
                   memcmp(buf, shadow + off, nb * 512)) {
            t->fails++;
        }
    }
    return NULL;
}

static void test_threads(void)
{
    printf("8 threads on a 4-entry queue\n");
    nvme_model_cfg cfg = default_cfg;
    cfg.mqes = 3;
    cfg.batch = 2;
    nvme_model *m = nvme_model_new(&cfg);
    vd_nvme_params p = {.nsid = 1};
    vd_nvme_ctrl *c = open_model(m, &p);
    pthread_t th[8];
    thr t[8];
    /* the controller holds its commands until every slot is taken: the
     * other threads then wait for a free slot */
    nvme_model_hang(m, true);
    for (int i = 0; i < 8; i++) {
        t[i] = (thr){.c = c, .idx = i, .seed = 1000 + i};
        CHECK(pthread_create(&th[i], NULL, thread_main, &t[i]) == 0, "thread");
    }
    while (vd_nvme_inflight(c) < 3) {
        sched_yield();
    }
    nvme_model_hang(m, false);
    for (int i = 0; i < 8; i++) {
        pthread_join(th[i], NULL);
        CHECK(t[i].fails == 0, "thread %d: %d failures", i, t[i].fails);
    }
    nvme_model_stats st = nvme_model_get_stats(m);
    printf("  %" PRIu64 " I/O commands, at most %u in the SQ\n", st.io_cmds, st.max_sq_occupancy);
    CHECK(st.max_sq_occupancy == 3 && st.dma_faults == 0 && st.bad_doorbells == 0, "queue");
    vd_nvme_close(c);
    nvme_model_free(m);
}

/* ------------------------------------------------------------- errors */

static void test_status_errors(void)
{
    printf("error statuses, missing optional commands, split write zeroes\n");
    nvme_model_cfg cfg = default_cfg;
    cfg.nsze = 81920; /* 40 MiB */
    nvme_model *m = nvme_model_new(&cfg);
    vd_nvme_params p = {.nsid = 1};
    vd_nvme_ctrl *c = open_model(m, &p);
    uint8_t b[4096];
    static const struct {
        uint16_t status;
        int want;
    } cases[] = {
        {0x0080, -EIO},     /* LBA out of range */
        {0x0001, -ENOTSUP}, /* invalid opcode */
        {0x0002, -EINVAL},  /* invalid field */
        {0x0281, -EIO},     /* media error: unrecovered read error */
        {0x4004, -EIO},     /* data transfer error, do not retry */
    };
    for (size_t i = 0; i < VD_ARRAY_SIZE(cases); i++) {
        nvme_model_inject(m, NVME_CMD_READ, false, cases[i].status, 1);
        int ret = vd_nvme_read(c, 0, 4096, b);
        CHECK(ret == cases[i].want, "status %#x: %d", cases[i].status, ret);
        CHECK(vd_nvme_read(c, 0, 4096, b) == 0, "the next read works");
    }
    nvme_model_inject(m, NVME_CMD_WRITE, false, 0x0006, 1); /* internal error */
    CHECK(vd_nvme_write(c, 0, 4096, b, false) == -EIO, "write error");
    nvme_model_inject(m, NVME_CMD_FLUSH, false, 0x0006, 1);
    CHECK(vd_nvme_flush(c) == -EIO, "flush error");
    CHECK(vd_nvme_flush(c) == 0, "flush");

    memset(nvme_model_media(m), 0xaa, 81920u * 512);
    CHECK(vd_nvme_write_zeroes(c, 512, 70000u * 512, false, false) == 0, "big write zeroes");
    nvme_model_stats st = nvme_model_get_stats(m);
    CHECK(st.write_zeroes == 2, "write zeroes split in %" PRIu64, st.write_zeroes);
    uint8_t *media = nvme_model_media(m);
    CHECK(media[511] == 0xaa && media[512] == 0 && media[70000u * 512 + 511] == 0 &&
              media[70001u * 512] == 0xaa,
          "write zeroes range");
    vd_nvme_close(c);
    nvme_model_free(m);

    cfg.oncs = 0;
    m = nvme_model_new(&cfg);
    c = open_model(m, &p);
    CHECK(vd_nvme_write_zeroes(c, 0, 4096, false, false) == -ENOTSUP, "no write zeroes");
    CHECK(vd_nvme_discard(c, 0, 4096) == -ENOTSUP, "no DSM");
    CHECK(nvme_model_get_stats(m).io_cmds == 0, "commands sent anyway");
    vd_nvme_close(c);
    nvme_model_free(m);
}

static void test_dead_controller(void)
{
    printf("a controller that stops answering, bogus completions\n");
    vd_nvme_params p = {.nsid = 1, .timeout_ms = 200};
    nvme_model *m = nvme_model_new(&default_cfg);
    vd_nvme_ctrl *c = open_model(m, &p);
    uint8_t b[4096];
    CHECK(vd_nvme_read(c, 0, 4096, b) == 0, "read");
    nvme_model_hang(m, true);
    CHECK(vd_nvme_read(c, 0, 4096, b) == -ETIMEDOUT, "timeout");
    CHECK(vd_nvme_write(c, 0, 4096, b, false) == -EIO, "dead");
    CHECK(vd_nvme_flush(c) == -EIO, "dead flush");
    vd_nvme_close(c);
    CHECK(nvme_model_get_stats(m).allocated_bytes == 0, "DMA memory left");
    nvme_model_free(m);

    /* asynchronous requests of a controller that hangs fail with -EIO */
    m = nvme_model_new(&default_cfg);
    c = open_model(m, &p);
    nvme_model_hang(m, true);
    acb a[4] = {{0}};
    for (int i = 0; i < 4; i++) {
        CHECK(vd_nvme_submit_read(c, 0, 4096, b, acb_done, &a[i]) == 0, "submit");
    }
    int ret;
    while ((ret = vd_nvme_poll(c)) == 0) {
    }
    CHECK(ret == -ETIMEDOUT, "poll %d", ret);
    for (int i = 0; i < 4; i++) {
        CHECK(a[i].done == 1 && a[i].ret == -EIO, "async %d: %d %d", i, a[i].done, a[i].ret);
    }
    CHECK(vd_nvme_submit_read(c, 0, 4096, b, acb_done, &a[0]) == -EIO, "submit when dead");
    vd_nvme_close(c);
    nvme_model_free(m);

    /* completions for commands never sent */
    uint16_t bad[] = {77, 5, 0xffff};
    for (size_t i = 0; i < VD_ARRAY_SIZE(bad); i++) {
        m = nvme_model_new(&default_cfg);
        c = open_model(m, &p);
        nvme_model_corrupt_next_cid(m, bad[i]);
        CHECK(vd_nvme_read(c, 0, 4096, b) == -EIO, "bogus cid %u", bad[i]);
        CHECK(vd_nvme_read(c, 0, 4096, b) == -EIO, "dead after bogus cid");
        vd_nvme_close(c);
        nvme_model_free(m);
    }

    /* surprise removal while open */
    m = nvme_model_new(&default_cfg);
    c = open_model(m, &p);
    nvme_model_gone(m, true);
    CHECK(vd_nvme_read(c, 0, 4096, b) == -ETIMEDOUT, "gone");
    vd_nvme_close(c);
    nvme_model_free(m);
}

/* -------------------------------------------------------------- bench */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int bench_done;
static void bench_cb(void *opaque, int ret)
{
    CHECK(ret == 0, "bench request failed: %d", ret);
    bench_done++;
}

static void bench(long n)
{
    nvme_model *m = nvme_model_new(&default_cfg);
    vd_nvme_params p = {.nsid = 1};
    vd_nvme_ctrl *c = open_model(m, &p);
    static uint8_t bufs[32][4096];
    unsigned qds[] = {1, 32};
    rng_state = 42;
    for (size_t q = 0; q < 2; q++) {
        unsigned qd = qds[q];
        long submitted = 0;
        bench_done = 0;
        double t0 = now_s();
        while (bench_done < n) {
            while (submitted < n && vd_nvme_inflight(c) < qd) {
                uint64_t off = (rnd() % 2048) * 4096;
                CHECK(vd_nvme_submit_read(c, off, 4096, bufs[submitted % 32], bench_cb, NULL) ==
                          0,
                      "submit");
                submitted++;
            }
            CHECK(vd_nvme_poll(c) >= 0, "poll");
        }
        double t = now_s() - t0;
        printf("nvme queue logic + model, 4 KiB random reads, QD %2u: %9.0f requests/s "
               "(%.2f us each)\n",
               qd, n / t, t / n * 1e6);
    }
    vd_nvme_close(c);
    nvme_model_free(m);
}

int main(int argc, char **argv)
{
    if (argc > 1 && !strcmp(argv[1], "bench")) {
        bench(argc > 2 ? atol(argv[2]) : 200000);
        return 0;
    }
    test_basic();
    test_formats();
    test_open_errors();
    test_queue_full_async();
    test_threads();
    test_status_errors();
    test_dead_controller();
    printf("all nvme queue tests passed\n");
    return 0;
}
