/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The nvme block driver (src/protocols/nvme/nvme.c) through the public
 * API, with the software controller of nvme-model.c in place of VFIO:
 * nvme:// filenames and device/namespace options, the limits it gives the
 * core (block size alignment, MDTS splitting), unaligned requests
 * (read-modify-write by the core), zero writes with and without the
 * controller's Write Zeroes, discard, flush, read-only opens, and the
 * messages of a missing device or namespace.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

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

#define DEVICE "0000:00:04.0"

static nvme_model_cfg model_cfg;
static nvme_model *model; /* the one the last open created */
static int model_opens;

static int model_open(const char *device, vd_nvme_hw *hw, void **handle, vd_error **errp)
{
    if (strcmp(device, DEVICE) != 0) {
        return vd_error_set(errp, ENODEV, "PCI device %s does not exist (model)", device);
    }
    model = nvme_model_new(&model_cfg);
    if (!model) {
        return vd_error_set(errp, ENOMEM, "model");
    }
    nvme_model_hw(model, hw);
    *handle = model;
    model_opens++;
    return 0;
}

static void model_close(void *handle)
{
    nvme_model_stats st = nvme_model_get_stats(handle);
    CHECK(st.allocated_bytes == 0 && st.dma_faults == 0, "model at close: %u bytes, %" PRIu64
          " faults", st.allocated_bytes, st.dma_faults);
    /* keep the media readable for the checks after close */
    if (handle != model) {
        nvme_model_free(handle);
    }
}

static const vd_nvme_transport model_transport = {
    .open = model_open,
    .close = model_close,
};

static uint64_t rng = 0xfeedbeef;
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545F4914F6CDD1Dull;
}

/* unaligned random requests through the core, checked against a shadow copy */
static void workload(vd_image *img, uint64_t size, uint32_t bs, int ops, bool discard_zeroes)
{
    uint8_t *shadow = calloc(1, size), *buf = malloc(1 << 20), *rb = malloc(1 << 20);
    CHECK(shadow && buf && rb, "malloc");
    memcpy(shadow, nvme_model_media(model), size);
    for (int i = 0; i < ops; i++) {
        uint64_t len = 1 + rnd() % (1 << 20);
        uint64_t off = rnd() % (size - len + 1);
        int op = (int)(rnd() % 8);
        if (getenv("NVME_TRACE")) {
            fprintf(stderr, "op %d %" PRIu64 "+%" PRIu64 "\n", op, off, len);
        }
        if (op < 3) {
            for (uint64_t k = 0; k < len; k++) {
                buf[k] = (uint8_t)rnd();
            }
            CHECK(vd_pwrite(img, buf, len, off, rnd() & 1 ? VD_REQ_FUA : 0) == 0, "write: %s",
                  vd_get_error());
            memcpy(shadow + off, buf, len);
        } else if (op < 6) {
            CHECK(vd_pread(img, rb, len, off) == 0, "read: %s", vd_get_error());
            CHECK(!memcmp(rb, shadow + off, len), "read %" PRIu64 "+%" PRIu64, off, len);
        } else if (op == 6) {
            CHECK(vd_pwrite_zeroes(img, off, len, rnd() & 1 ? VD_REQ_MAY_UNMAP : 0) == 0,
                  "zeroes: %s", vd_get_error());
            memset(shadow + off, 0, len);
        } else {
            /* whole blocks, so the result is known: the model reads them as zeroes
             * (when discards reach it) */
            off &= ~(uint64_t)(bs - 1);
            len = (len + bs - 1) & ~(uint64_t)(bs - 1);
            if (off + len > size) {
                len = size - off;
            }
            CHECK(vd_discard(img, off, len) == 0, "discard: %s", vd_get_error());
            if (discard_zeroes) {
                memset(shadow + off, 0, len);
            }
            CHECK(vd_flush(img) == 0, "flush: %s", vd_get_error());
        }
    }
    CHECK(!memcmp(nvme_model_media(model), shadow, size), "media differs");
    free(shadow);
    free(buf);
    free(rb);
}

static void test_filename(void)
{
    printf("nvme://" DEVICE "/1, 512-byte blocks, MDTS 64 KiB\n");
    model_cfg = (nvme_model_cfg){.mdts = 4, .oncs = 0xc, .dlfeat = 9, .vwc = true};
    /* discards reach the protocol only with discard=unmap, as in QEMU */
    vd_opts *o = vd_opts_new();
    CHECK(vd_opts_parse(o, "discard=unmap", NULL) == 0, "opts");
    vd_image *img = vd_open("nvme://" DEVICE "/1", "raw", o, VD_OPEN_RDWR);
    vd_opts_free(o);
    CHECK(img, "open: %s", vd_get_error());
    CHECK(vd_get_length(img) == 8 << 20, "length %" PRId64, vd_get_length(img));
    CHECK(vd_image_alignment(img) == 512, "alignment %u", vd_image_alignment(img));
    workload(img, 8 << 20, 512, 400, true);
    /* an unaligned discard: the core keeps the partial blocks at both ends */
    memset(nvme_model_media(model), 0x77, 8192);
    CHECK(vd_discard(img, 100, 5000) == 0, "discard: %s", vd_get_error());
    uint8_t *media = nvme_model_media(model);
    CHECK(media[511] == 0x77 && media[512] == 0 && media[4607] == 0 && media[4608] == 0x77,
          "unaligned discard");
    nvme_model_stats st = nvme_model_get_stats(model);
    CHECK(st.write_zeroes > 0 && st.dsms > 0 && st.flushes > 0 && st.prp_list_cmds > 0,
          "commands");
    vd_close(img);
    CHECK(nvme_model_get_stats(model).shutdown_seen, "shutdown");
    nvme_model_free(model);
    model = NULL;
}

static void test_options(void)
{
    printf("driver=nvme,device=...,namespace=2, 4 KiB blocks, no Write Zeroes or DSM, "
           "discard=ignore\n");
    model_cfg = (nvme_model_cfg){.mdts = 2, .flbas = 1, .nn = 2};
    vd_opts *o = vd_opts_new();
    CHECK(vd_opts_parse(o, "driver=nvme,device=" DEVICE ",namespace=2", NULL) == 0, "opts");
    vd_image *img = vd_open(NULL, NULL, o, VD_OPEN_RDWR);
    CHECK(img, "open: %s", vd_get_error());
    CHECK(!strcmp(vd_image_format(img), "nvme"), "format %s", vd_image_format(img));
    CHECK(vd_image_alignment(img) == 4096, "alignment %u", vd_image_alignment(img));
    uint64_t writes0 = nvme_model_get_stats(model).writes;
    /* zero writes fall back to writing zero buffers */
    memset(nvme_model_media(model), 0x55, 8 << 20);
    CHECK(vd_pwrite_zeroes(img, 1000, 20000, 0) == 0, "zeroes: %s", vd_get_error());
    uint8_t *media = nvme_model_media(model);
    CHECK(media[999] == 0x55 && media[1000] == 0 && media[20999] == 0 && media[21000] == 0x55,
          "fallback zeroes");
    CHECK(nvme_model_get_stats(model).writes > writes0 &&
              nvme_model_get_stats(model).write_zeroes == 0,
          "fallback used writes");
    CHECK(vd_pwrite_zeroes(img, 0, 4096, VD_REQ_NO_FALLBACK) < 0, "no fallback");
    workload(img, 8 << 20, 4096, 100, false);
    vd_close(img);
    nvme_model_free(model);
    model = NULL;
    vd_opts_free(o);

    printf("read-only open\n");
    model_cfg = (nvme_model_cfg){.oncs = 0xc};
    img = vd_open("nvme://" DEVICE, "raw", NULL, 0);
    CHECK(img, "open: %s", vd_get_error());
    uint8_t b[512] = {0};
    CHECK(vd_pread(img, b, 512, 0) == 0, "read");
    CHECK(vd_pwrite(img, b, 512, 0, 0) < 0, "write on a read-only open");
    CHECK(nvme_model_get_stats(model).writes == 0, "write reached the controller");
    vd_close(img);
    nvme_model_free(model);
    model = NULL;
}

static void test_create(void)
{
    printf("create: first sector zeroed, no growing\n");
    model_cfg = (nvme_model_cfg){.oncs = 0xc};
    vd_opts *o = vd_opts_new();
    CHECK(vd_opts_set(o, "size", "4M") == 0, "opts");
    CHECK(vd_create("nvme://" DEVICE "/1", "raw", o) == 0, "create: %s", vd_get_error());
    nvme_model_stats st = nvme_model_get_stats(model);
    CHECK(st.write_zeroes + st.writes >= 1 && st.last_cdw12 == 0, "first sector: %" PRIu64,
          st.write_zeroes);
    nvme_model_free(model);
    CHECK(vd_opts_set(o, "size", "16M") == 0, "opts");
    CHECK(vd_create("nvme://" DEVICE "/1", "raw", o) < 0 &&
              strstr(vd_get_error(), "Cannot grow NVMe devices"),
          "grow: %s", vd_get_error());
    nvme_model_free(model);
    model = NULL;
    CHECK(vd_create("nvme://0000:00:05.0/1", "raw", o) < 0 &&
              strstr(vd_get_error(), "Protocol driver 'nvme' does not support image creation, "
                                     "and opening the image failed: PCI device 0000:00:05.0 "
                                     "does not exist (model)"),
          "missing device: %s", vd_get_error());
    printf("  %s\n", vd_get_error());
    vd_opts_free(o);
}

static void expect_fail(const char *filename, const char *opts, const char *want)
{
    vd_opts *o = NULL;
    if (opts) {
        o = vd_opts_new();
        CHECK(vd_opts_parse(o, opts, NULL) == 0, "opts");
    }
    model_cfg = (nvme_model_cfg){0};
    int before = model_opens;
    vd_image *img = vd_open(filename, o ? NULL : "raw", o, VD_OPEN_RDWR);
    CHECK(!img && strstr(vd_get_error(), want), "%s: want '%s', got '%s'",
          filename ? filename : opts, want, img ? "success" : vd_get_error());
    printf("  %s\n", vd_get_error());
    if (model_opens != before) {
        nvme_model_free(model);
        model = NULL;
    }
    vd_opts_free(o);
}

static void test_errors(void)
{
    printf("errors\n");
    expect_fail("nvme://" DEVICE "/2", NULL, DEVICE ": Invalid namespace 2 (the controller has 1)");
    expect_fail("nvme://0000:00:05.0/1", NULL, "PCI device 0000:00:05.0 does not exist (model)");
    expect_fail("nvme://" DEVICE "/x", NULL, "Invalid namespace 'x', positive number expected");
    expect_fail("nvme:foo", NULL, "'device' option is required");
    expect_fail(NULL, "driver=nvme", "'device' option is required");
    expect_fail(NULL, "driver=nvme,device=" DEVICE ",namespace=0", "Invalid namespace 0");
    expect_fail(NULL, "driver=nvme,device=" DEVICE ",namespace=abc", "namespace");
}

int main(void)
{
    vd_nvme_transport_override = &model_transport;
    test_filename();
    test_options();
    test_errors();
    test_create();
    printf("all nvme driver tests passed\n");
    return 0;
}
