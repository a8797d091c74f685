/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The file and null protocols on real files: preallocation (st_blocks
 * against qemu-img's), sparse holes (block status against
 * SEEK_DATA/SEEK_HOLE), zero writes and discards, truncate, O_DIRECT
 * alignment on this file system, io_uring against threads under a seeded
 * concurrent workload, option errors, null-co.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../src/protocols/file.h"
#include "internal.h"

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                    \
            fprintf(stderr, __VA_ARGS__);                                                      \
            fputc('\n', stderr);                                                               \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

static char dir[] = "/tmp/vdisk-file-test.XXXXXX";

static char *path(const char *name)
{
    static char buf[8][256];
    static int i;
    char *p = buf[i++ % 8];
    snprintf(p, 256, "%s/%s", dir, name);
    return p;
}

/* Open with driver "file" (or opts' driver) and key=value options. */
static vd_node *open_opts(const char *fn, const char *opts, unsigned flags, vd_error **err)
{
    vd_opts *o = vd_opts_new();
    if (opts) {
        CHECK(vd_opts_parse(o, opts, NULL) == 0, "parse %s", opts);
    }
    if (!vd_opts_get(o, "driver")) {
        vd_opts_set(o, "driver", "file");
    }
    vd_node *bs = vd_node_open_file(fn, o, flags, err);
    vd_opts_free(o);
    return bs;
}

static vd_node *must_open(const char *fn, const char *opts, unsigned flags)
{
    vd_error *err = NULL;
    vd_node *bs = open_opts(fn, opts, flags, &err);
    CHECK(bs, "open %s (%s): %s", fn, opts ? opts : "", err ? err->msg : "?");
    return bs;
}

static void expect_open_error(const char *fn, const char *opts, unsigned flags, const char *msg)
{
    vd_error *err = NULL;
    vd_node *bs = open_opts(fn, opts, flags, &err);
    CHECK(!bs, "open %s (%s) should fail", fn, opts ? opts : "");
    CHECK(err && strstr(err->msg, msg), "'%s' lacks '%s'", err ? err->msg : "", msg);
    vd_error_free(err);
}

static void create(const char *fn, const char *opts)
{
    vd_opts *o = vd_opts_new();
    CHECK(vd_opts_parse(o, opts, NULL) == 0, "parse");
    vd_error *err = NULL;
    CHECK(vd_create_file(fn, o, &err) == 0, "create %s: %s", fn, err ? err->msg : "?");
    vd_opts_free(o);
}

static struct stat must_stat(const char *fn)
{
    struct stat st;
    CHECK(stat(fn, &st) == 0, "stat %s", fn);
    return st;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        seed = seed * 1103515245u + 12345u;
        buf[i] = (uint8_t)(seed >> 16);
    }
}

static int run(const char *cmd)
{
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* --------------------------------------------------------- preallocation */

static void test_prealloc(void)
{
    static const char *const modes[] = {"off", "falloc", "full"};
    for (size_t i = 0; i < VD_ARRAY_SIZE(modes); i++) {
        char opts[128], cmd[512], name[64];
        /* an odd size: QEMU rounds it up to whole sectors */
        snprintf(opts, sizeof(opts), "size=1049000,preallocation=%s", modes[i]);
        snprintf(name, sizeof(name), "p-%s.img", modes[i]);
        create(path(name), opts);
        snprintf(cmd, sizeof(cmd), "qemu-img create -q -f raw -o preallocation=%s %s 1049000",
                 modes[i], path("q.img"));
        CHECK(run(cmd) == 0, "%s", cmd);
        struct stat a = must_stat(path(name)), b = must_stat(path("q.img"));
        CHECK(a.st_size == b.st_size && a.st_size == 1049088, "%s: size %lld vs %lld", modes[i],
              (long long)a.st_size, (long long)b.st_size);
        CHECK(a.st_blocks == b.st_blocks, "%s: st_blocks %lld vs qemu-img's %lld", modes[i],
              (long long)a.st_blocks, (long long)b.st_blocks);
        if (i > 0) {
            CHECK((uint64_t)a.st_blocks * 512 >= 1049088, "%s: not allocated", modes[i]);
        }
        /* allocated size the driver reports is st_blocks * 512 */
        vd_node *bs = must_open(path(name), NULL, 0);
        CHECK(bs->drv->get_allocated_size(bs) == (int64_t)a.st_blocks * 512, "alloc size");
        CHECK(vd_node_get_length(bs) == 1049088, "length");
        CHECK(bs->has_zero_init, "file has zero init");
        vd_node_close(bs);
        unlink(path("q.img"));
    }
    vd_opts *o = vd_opts_new();
    vd_opts_parse(o, "size=1M,preallocation=metadata", NULL);
    vd_error *err = NULL;
    CHECK(vd_create_file(path("meta.img"), o, &err) < 0, "metadata accepted");
    CHECK(strstr(err->msg, "Unsupported preallocation mode"), "%s", err->msg);
    vd_error_free(err);
    err = NULL;
    vd_opts_set(o, "preallocation", "bogus");
    CHECK(vd_create_file(path("meta.img"), o, &err) < 0, "bogus accepted");
    vd_error_free(err);
    err = NULL;
    vd_opts_set(o, "preallocation", "off");
    vd_opts_set(o, "extent_size_hint", "8G");
    CHECK(vd_create_file(path("meta.img"), o, &err) < 0, "huge hint accepted");
    CHECK(strstr(err->msg, "Extent size hint is too large"), "%s", err->msg);
    vd_error_free(err);
    /* nocow and a hint are accepted (and ignored on ext4), like QEMU */
    vd_opts_set(o, "extent_size_hint", "64k");
    vd_opts_set(o, "nocow", "on");
    err = NULL;
    CHECK(vd_create_file(path("nocow.img"), o, &err) == 0, "%s", err ? err->msg : "");
    vd_opts_free(o);
    /* create truncates an existing file */
    create(path("nocow.img"), "size=4096");
    CHECK(must_stat(path("nocow.img")).st_size == 4096, "recreate");
}

/* ---------------------------------------------------------- sparse files */

/* What SEEK_DATA/SEEK_HOLE say about offset: 1 data, 0 hole; *end is where
 * that answer stops. */
static int seek_status(int fd, off_t offset, off_t size, off_t *end)
{
    off_t d = lseek(fd, offset, SEEK_DATA);
    if (d < 0 || d >= size) {
        *end = size;
        return 0;
    }
    if (d > offset) {
        *end = d;
        return 0;
    }
    off_t h = lseek(fd, offset, SEEK_HOLE);
    *end = h;
    return 1;
}

static void test_sparse(void)
{
    const char *fn = path("sparse.img");
    const uint64_t size = 8 << 20;
    create(fn, "size=8M");
    vd_node *bs = must_open(fn, NULL, VD_NODE_RDWR);
    uint8_t *buf = malloc(1 << 20);
    fill(buf, 1 << 20, 1);
    CHECK(vd_node_pwrite(bs, 64 << 10, 64 << 10, buf, 0) == 0, "w1");
    CHECK(vd_node_pwrite(bs, 1 << 20, 4096, buf, 0) == 0, "w2");
    CHECK(vd_node_pwrite(bs, 5 << 20, 1 << 20, buf, 0) == 0, "w3");
    CHECK(vd_node_pwrite(bs, size - 4096, 4096, buf, 0) == 0, "w4");
    bs->discard_unmap = true;
    CHECK(vd_node_discard(bs, (5 << 20) + (128 << 10), 256 << 10) == 0, "discard");
    CHECK(vd_node_flush(bs) == 0, "flush");

    int fd = open(fn, O_RDONLY);
    CHECK(fd >= 0, "open");
    int extents = 0, holes = 0;
    for (uint64_t off = 0; off < size;) {
        uint64_t pnum, map;
        vd_node *file;
        int ret = vd_node_block_status(bs, true, off, size - off, &pnum, &map, &file);
        CHECK(ret >= 0 && pnum > 0, "block status at %llu", (unsigned long long)off);
        CHECK((ret & VD_BLOCK_OFFSET_VALID) && map == off && file == bs, "offset valid");
        off_t end;
        int data = seek_status(fd, (off_t)off, (off_t)size, &end);
        CHECK(!!(ret & VD_BLOCK_DATA) == data && !!(ret & VD_BLOCK_ZERO) == !data,
              "at %llu: flags 0x%x, SEEK says %s", (unsigned long long)off, ret,
              data ? "data" : "hole");
        CHECK(off + pnum == (uint64_t)end, "at %llu: pnum %llu, SEEK end %lld",
              (unsigned long long)off, (unsigned long long)pnum, (long long)end);
        holes += !data;
        extents++;
        off += pnum;
    }
    /* holes before, between and after the data, and the discarded one */
    CHECK(holes >= 5 && extents >= 9, "%d holes in %d extents", holes, extents);
    close(fd);

    /* want_zero=false: everything is data, as QEMU's answer */
    uint64_t pnum, map;
    vd_node *file;
    int ret = vd_node_block_status(bs, false, 0, size, &pnum, &map, &file);
    CHECK((ret & (VD_BLOCK_DATA | VD_BLOCK_ZERO)) == VD_BLOCK_DATA && pnum == size,
          "!want_zero");
    /* past the end: zeroes (the driver itself, the core clips) */
    ret = bs->drv->block_status(bs, true, size + 4096, 4096, &pnum, &map, &file);
    CHECK(ret == (VD_BLOCK_ZERO | VD_BLOCK_OFFSET_VALID) && pnum == 4096, "past EOF 0x%x", ret);

    /* the discarded range reads as zeroes, the rest as written */
    uint8_t *rd = malloc(1 << 20);
    CHECK(vd_node_pread(bs, 5 << 20, 1 << 20, rd, 0) == 0, "read");
    CHECK(!memcmp(rd, buf, 128 << 10), "before discard");
    CHECK(vd_buffer_is_zero(rd + (128 << 10), 256 << 10), "discarded");
    CHECK(!memcmp(rd + (384 << 10), buf + (384 << 10), (1 << 20) - (384 << 10)), "after");

    /* a short read at the end of file is zero-filled */
    memset(rd, 0xab, 8192);
    CHECK(bs->drv->pread(bs, size - 4096, 8192, rd, 0) == 0, "read past EOF");
    CHECK(!memcmp(rd, buf, 4096) && vd_buffer_is_zero(rd + 4096, 4096), "EOF fill");
    vd_node_close(bs);

    /* qemu-img map sees the same holes */
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "qemu-img map --output=json -f raw %s | grep -c '\"data\": false' | "
             "grep -qx %d",
             fn, holes);
    CHECK(run(cmd) == 0, "qemu-img map does not report %d holes", holes);
    free(buf);
    free(rd);
}

/* ------------------------------------------------------------- zeroes */

static void test_zeroes(void)
{
    const char *fn = path("zero.img");
    create(fn, "size=4M,preallocation=full");
    vd_node *bs = must_open(fn, NULL, VD_NODE_RDWR);
    uint8_t *buf = malloc(4 << 20), *rd = malloc(4 << 20);
    fill(buf, 4 << 20, 2);
    CHECK(vd_node_pwrite(bs, 0, 4 << 20, buf, 0) == 0, "write");
    CHECK(vd_node_flush(bs) == 0, "flush");
    blkcnt_t full = must_stat(fn).st_blocks;

    /* plain zero write: reads zero, stays allocated */
    CHECK(bs->drv->pwrite_zeroes(bs, 1 << 20, 256 << 10, 0) == 0, "zero");
    /* may unmap: reads zero, space is freed */
    CHECK(bs->drv->pwrite_zeroes(bs, 2 << 20, 1 << 20, VD_REQ_MAY_UNMAP) == 0, "unmap");
    CHECK(vd_node_flush(bs) == 0, "flush");
    blkcnt_t after = must_stat(fn).st_blocks;
    /* (an extent tree block may be allocated by the split) */
    CHECK(after <= full - (1 << 20) / 512 + 64, "MAY_UNMAP freed nothing: %lld -> %lld",
          (long long)full, (long long)after);
    CHECK(vd_node_pread(bs, 0, 4 << 20, rd, 0) == 0, "read");
    CHECK(!memcmp(rd, buf, 1 << 20), "head");
    CHECK(vd_buffer_is_zero(rd + (1 << 20), 256 << 10), "zeroed");
    CHECK(!memcmp(rd + (1280 << 10), buf + (1280 << 10), 768 << 10), "middle");
    CHECK(vd_buffer_is_zero(rd + (2 << 20), 1 << 20), "unmapped");
    CHECK(!memcmp(rd + (3 << 20), buf + (3 << 20), 1 << 20), "tail");

    /* zero writes past the end grow the file like writes, with or without
     * MAY_UNMAP */
    CHECK(bs->drv->pwrite_zeroes(bs, 4 << 20, 64 << 10, 0) == 0, "grow");
    CHECK(vd_node_get_length(bs) == (4 << 20) + (64 << 10), "grew to %lld",
          (long long)vd_node_get_length(bs));
    CHECK(bs->drv->pwrite_zeroes(bs, (4 << 20) + (64 << 10), 64 << 10, VD_REQ_MAY_UNMAP) == 0,
          "grow unmap");
    CHECK(vd_node_get_length(bs) == (4 << 20) + (128 << 10), "grew to %lld",
          (long long)vd_node_get_length(bs));
    CHECK(vd_node_pread(bs, 4 << 20, 128 << 10, rd, 0) == 0 && vd_buffer_is_zero(rd, 128 << 10),
          "grown part");
    /* unaligned zero write (the core passes them on with alignment 1) */
    CHECK(bs->drv->pwrite_zeroes(bs, 1000, 3000, VD_REQ_MAY_UNMAP) == 0, "unaligned");
    CHECK(vd_node_pread(bs, 0, 8192, rd, 0) == 0, "read");
    CHECK(!memcmp(rd, buf, 1000) && vd_buffer_is_zero(rd + 1000, 3000) &&
              !memcmp(rd + 4000, buf + 4000, 4192),
          "unaligned zeroes");
    vd_node_close(bs);
    free(buf);
    free(rd);
}

/* ----------------------------------------------------------- truncate */

static void test_truncate(void)
{
    const char *fn = path("trunc.img");
    create(fn, "size=1M");
    vd_node *bs = must_open(fn, NULL, VD_NODE_RDWR | VD_NODE_RESIZE);
    vd_error *err = NULL;
    CHECK(vd_node_truncate(bs, 2 << 20, true, VD_PREALLOC_OFF, &err) == 0, "grow off");
    blkcnt_t b0 = must_stat(fn).st_blocks;
    CHECK(vd_node_truncate(bs, 4 << 20, true, VD_PREALLOC_FALLOC, &err) == 0, "falloc");
    CHECK(must_stat(fn).st_blocks >= b0 + (2 << 20) / 512, "falloc allocated");
    CHECK(vd_node_truncate(bs, 6 << 20, true, VD_PREALLOC_FULL, &err) == 0, "full");
    CHECK(must_stat(fn).st_size == 6 << 20, "size");
    CHECK(must_stat(fn).st_blocks >= b0 + (4 << 20) / 512, "full allocated");
    CHECK(vd_node_truncate(bs, 3 << 20, true, VD_PREALLOC_FALLOC, &err) < 0, "shrink falloc");
    CHECK(strstr(err->msg, "Cannot use preallocation for shrinking files"), "%s", err->msg);
    vd_error_free(err);
    err = NULL;
    CHECK(vd_node_truncate(bs, 8 << 20, true, VD_PREALLOC_METADATA, &err) < 0, "metadata");
    CHECK(strstr(err->msg, "Unsupported preallocation mode: metadata"), "%s", err->msg);
    vd_error_free(err);
    err = NULL;
    CHECK(vd_node_truncate(bs, 3 << 20, true, VD_PREALLOC_OFF, &err) == 0, "shrink");
    CHECK(vd_node_get_length(bs) == 3 << 20, "length");
    vd_node_close(bs);
}

/* ------------------------------------------------------------ O_DIRECT */

static void test_direct(void)
{
    const char *fn = path("direct.img");
    create(fn, "size=1M");
    uint8_t *pat = malloc(1 << 20), *rd = malloc((1 << 20) + 64);
    fill(pat, 1 << 20, 3);
    int fd = open(fn, O_RDWR);
    CHECK(pwrite(fd, pat, 1 << 20, 0) == 1 << 20 && fsync(fd) == 0, "prepare");
    close(fd);

    vd_node *bs = must_open(fn, "cache.direct=on", VD_NODE_RDWR);
    uint32_t a = bs->request_alignment;
    CHECK(a == 512 || a == 4096, "alignment %u", a);
    /* check the probe against the kernel: a aligned O_DIRECT reads work,
     * half of it does not */
    fd = open(fn, O_RDONLY | O_DIRECT);
    uint8_t *ab = vd_aligned_alloc(4096, 8192);
    CHECK(fd >= 0 && pread(fd, ab, a, 0) == (ssize_t)a, "aligned read");
    CHECK(pread(fd, ab, a / 2, 0) < 0 && errno == EINVAL, "half-aligned read works");
    close(fd);
    free(ab);

    /* unaligned requests and unaligned memory through the core */
    CHECK(vd_node_pread(bs, 1000, 70000, rd + 1, 0) == 0, "read");
    CHECK(!memcmp(rd + 1, pat + 1000, 70000), "unaligned direct read");
    fill(pat + 3333, 50000, 4);
    CHECK(vd_node_pwrite(bs, 3333, 50000, pat + 3333, 0) == 0, "write");
    /* the driver itself, aligned request, misaligned memory */
    CHECK(bs->drv->pread(bs, 0, 8192, rd + 3, 0) == 0, "drv read");
    CHECK(!memcmp(rd + 3, pat, 8192), "drv read content");
    CHECK(vd_node_flush(bs) == 0, "flush");
    vd_node_close(bs);
    fd = open(fn, O_RDONLY);
    CHECK(pread(fd, rd, 1 << 20, 0) == 1 << 20 && !memcmp(rd, pat, 1 << 20), "on disk");
    close(fd);

    /* aio=native needs cache.direct=on (QEMU's check), and works with it */
    expect_open_error(fn, "aio=native", 0, "requires cache.direct=on");
    bs = must_open(fn, "aio=native,cache.direct=on", 0);
    CHECK(vd_node_pread(bs, 0, 4096, rd, 0) == 0 && !memcmp(rd, pat, 4096), "native read");
    vd_node_close(bs);
    /* cache.no-flush: flush succeeds without syncing */
    bs = must_open(fn, "cache.no-flush=on", VD_NODE_RDWR);
    CHECK(bs->drv->flush(bs) == 0, "no-flush");
    vd_node_close(bs);
    free(pat);
    free(rd);
}

/* -------------------------------------------- io_uring against threads */

#define WL_THREADS 4
#define WL_REGION (1u << 20)
#define WL_OPS 300

typedef struct wl_arg {
    vd_node *bs;
    unsigned id;
    unsigned seed;
    uint8_t *model; /* the whole image, each thread owns its region */
    int failed;
} wl_arg;

static unsigned rnd(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return *s >> 8;
}

static void *wl_thread(void *opaque)
{
    wl_arg *w = opaque;
    uint64_t base = (uint64_t)w->id * WL_REGION;
    uint8_t *buf = malloc(65536), *rd = malloc(65536);
    unsigned s = w->seed;
    for (int i = 0; i < WL_OPS && !w->failed; i++) {
        unsigned op = rnd(&s) % 10;
        uint64_t len = 1 + rnd(&s) % 65536;
        uint64_t off = rnd(&s) % (WL_REGION - len);
        if (op < 5) {
            fill(buf, len, rnd(&s));
            w->failed |= vd_node_pwrite(w->bs, base + off, len, buf, 0) != 0;
            memcpy(w->model + base + off, buf, len);
        } else if (op < 6) {
            /* whole blocks, so the zeroes come from fallocate */
            off &= ~4095ull;
            len = (len + 4095) & ~4095ull;
            unsigned f = rnd(&s) % 2 ? VD_REQ_MAY_UNMAP : 0;
            w->failed |= vd_node_pwrite_zeroes(w->bs, base + off, len, f) != 0;
            memset(w->model + base + off, 0, len);
        } else if (op < 9) {
            w->failed |= vd_node_pread(w->bs, base + off, len, rd, 0) != 0;
            w->failed |= memcmp(rd, w->model + base + off, len) != 0;
        } else {
            w->failed |= vd_node_flush(w->bs) != 0;
        }
    }
    free(buf);
    free(rd);
    return NULL;
}

static void workload(const char *fn, const char *opts, uint8_t *model, unsigned seed)
{
    vd_node *bs = must_open(fn, opts, VD_NODE_RDWR);
    pthread_t t[WL_THREADS];
    wl_arg args[WL_THREADS];
    for (unsigned i = 0; i < WL_THREADS; i++) {
        args[i] = (wl_arg){.bs = bs, .id = i, .seed = seed + i * 7919, .model = model};
        CHECK(pthread_create(&t[i], NULL, wl_thread, &args[i]) == 0, "thread");
    }
    for (unsigned i = 0; i < WL_THREADS; i++) {
        pthread_join(t[i], NULL);
        CHECK(!args[i].failed, "%s: thread %u failed (I/O error or wrong data)", opts, i);
    }
    CHECK(vd_node_flush(bs) == 0, "flush");
    vd_node_close(bs);
}

static void test_uring(void)
{
    const size_t size = (size_t)WL_THREADS * WL_REGION;
    uint8_t *init = malloc(size), *m1 = malloc(size), *m2 = malloc(size), *m3 = malloc(size);
    uint8_t *rd = malloc(size);
    fill(init, size, 5);
    const char *names[] = {"threads.img", "uring.img", "uring-direct.img"};
    const char *opts[] = {"aio=threads", "aio=io_uring", "aio=io_uring,cache.direct=on"};
    uint8_t *models[] = {m1, m2, m3};
    for (int i = 0; i < 3; i++) {
        int fd = open(path(names[i]), O_RDWR | O_CREAT | O_TRUNC, 0644);
        CHECK(fd >= 0 && pwrite(fd, init, size, 0) == (ssize_t)size, "init");
        close(fd);
        memcpy(models[i], init, size);
        workload(path(names[i]), opts[i], models[i], 42);
    }
    CHECK(!memcmp(m1, m2, size) && !memcmp(m1, m3, size), "models differ: seeding broken");
    for (int i = 0; i < 3; i++) {
        int fd = open(path(names[i]), O_RDONLY);
        CHECK(pread(fd, rd, size, 0) == (ssize_t)size, "read back");
        close(fd);
        CHECK(!memcmp(rd, m1, size), "%s: file differs from the model", opts[i]);
    }
    free(init);
    free(m1);
    free(m2);
    free(m3);
    free(rd);
}

/* -------------------------------------------------- errors and devices */

static void test_errors(void)
{
    expect_open_error(path("nonexistent"), NULL, 0, "No such file or directory");
    expect_open_error("/dev/null", NULL, 0,
                      "'file' driver requires '/dev/null' to be a regular file");
    expect_open_error(dir, NULL, 0, "to be a regular file");
    create(path("plain.img"), "size=64k");
    expect_open_error(path("plain.img"), "driver=host_device", 0,
                      "'host_device' driver requires");
    expect_open_error(path("plain.img"), "driver=host_cdrom", 0,
                      "to be either a character or block device");
    expect_open_error(path("plain.img"), "aio=posix", 0, "aio");
    expect_open_error(path("plain.img"), "bogus=1", 0, "bogus");
    expect_open_error(path("plain.img"), "pr-manager=x", 0, "not supported");
    /* accepted and kept, as QEMU does */
    vd_node *bs = must_open(path("plain.img"),
                            "aio-max-batch=16,drop-cache=off,x-check-cache-dropped=on", 0);
    vd_node_close(bs);
    /* read-only node: writes are refused by the core, the fd is O_RDONLY */
    CHECK(vd_file_protocol_for("/dev/null") == vd_driver_find("host_device"), "chr");
    CHECK(vd_file_protocol_for(path("plain.img")) == vd_driver_find("file"), "reg");
    CHECK(vd_file_protocol_for(path("nope")) == vd_driver_find("file"), "missing");
    /* "file:" prefix */
    vd_error *err = NULL;
    char name[300];
    snprintf(name, sizeof(name), "file:%s", path("plain.img"));
    bs = vd_node_open_file(name, NULL, 0, &err);
    CHECK(bs && bs->drv == vd_driver_find("file"), "file: prefix: %s", err ? err->msg : "");
    CHECK(vd_node_get_length(bs) == 65536, "length");
    vd_node_close(bs);
}

/* ---------------------------------------------------------------- null */

static void test_null(void)
{
    vd_error *err = NULL;
    vd_node *bs = vd_node_open_file("null-co://", NULL, 0, &err);
    CHECK(bs && !strcmp(bs->drv->name, "null-co"), "null-co://: %s", err ? err->msg : "");
    CHECK(vd_node_get_length(bs) == 1 << 30, "default 1G");
    uint8_t buf[4096];
    memset(buf, 0xab, sizeof(buf));
    CHECK(vd_node_pread(bs, 12345, sizeof(buf), buf, 0) == 0, "read");
    CHECK(vd_buffer_is_zero(buf, sizeof(buf)), "null reads zeroes (our choice)");
    uint64_t pnum, map;
    vd_node *file;
    int ret = bs->drv->block_status(bs, true, 4096, 8192, &pnum, &map, &file);
    CHECK(ret == VD_BLOCK_OFFSET_VALID && pnum == 8192 && map == 4096, "status 0x%x", ret);
    CHECK(bs->drv->get_allocated_size(bs) == 0, "allocated");
    vd_node_close(bs);

    vd_opts *o = vd_opts_new();
    vd_opts_parse(o, "driver=null-co,size=4M,read-zeroes=on,latency-ns=1000", NULL);
    bs = vd_node_open_file(NULL, o, VD_NODE_RDWR, &err);
    CHECK(bs, "null opts: %s", err ? err->msg : "");
    CHECK(vd_node_get_length(bs) == 4 << 20, "size");
    ret = bs->drv->block_status(bs, true, 0, 4096, &pnum, &map, &file);
    CHECK(ret == (VD_BLOCK_OFFSET_VALID | VD_BLOCK_ZERO), "read-zeroes status 0x%x", ret);
    CHECK(vd_node_pwrite(bs, 0, sizeof(buf), buf, 0) == 0, "write");
    CHECK(vd_node_flush(bs) == 0, "flush");
    vd_node_close(bs);

    vd_opts_set(o, "latency-ns", "-1");
    CHECK(!vd_node_open_file(NULL, o, 0, &err) && strstr(err->msg, "latency-ns"),
          "neg latency");
    vd_error_free(err);
    err = NULL;
    vd_opts_free(o);
    CHECK(!vd_node_open_file("null-co://x", NULL, 0, &err), "null-co://x accepted");
    CHECK(strstr(err->msg, "The only allowed filename for this driver is 'null-co://'"), "%s",
          err->msg);
    vd_error_free(err);
    err = NULL;
    bs = vd_node_open_file("null-aio://", NULL, 0, &err);
    CHECK(bs && !strcmp(bs->drv->name, "null-aio"), "null-aio: %s", err ? err->msg : "");
    vd_node_close(bs);
}

int main(void)
{
    CHECK(mkdtemp(dir), "mkdtemp");
    test_errors();
    test_prealloc();
    test_sparse();
    test_zeroes();
    test_truncate();
    test_direct();
    test_uring();
    test_null();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    CHECK(run(cmd) == 0, "cleanup");
    printf("ok\n");
    return 0;
}
