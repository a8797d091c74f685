/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The shared format loops of src/core/format-io.c against a model, on
 * in-memory nodes: vd_fmt_cow_write (unaligned head and tail, one cluster
 * and runs of many, cluster sizes that are not powers of two, old data
 * from a backing node shorter than the image, no backing node, zeroes in
 * memory or written by the file, read_old and write errors) and
 * vd_fmt_read (data in the file or another node, zeroes, backing, bytes
 * the callback fills, extents of every length down to one byte, map errors
 * and broken answers).  Seeded random cases besides the hand-picked ones.
 */
#include <stdio.h>
#include <stdlib.h>

#include "format-io.h"

static int failures;
#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);           \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

/* ------------------------------------------------------ in-memory nodes */

typedef struct mem_state {
    uint8_t *data;
    uint64_t size;
    int writes;       /* pwrite calls */
    int zero_calls;   /* pwrite_zeroes calls */
    int reads;        /* pread calls */
    uint64_t fail_at; /* requests touching this offset fail with -EIO (0: none) */
} mem_state;

static bool mem_fails(mem_state *s, uint64_t off, uint64_t len)
{
    return s->fail_at && off <= s->fail_at && s->fail_at < off + len;
}

static int mem_pread(vd_node *bs, uint64_t off, uint64_t len, void *buf, unsigned flags)
{
    mem_state *s = bs->opaque;
    (void)flags;
    s->reads++;
    if (mem_fails(s, off, len)) {
        return -EIO;
    }
    memcpy(buf, s->data + off, len);
    return 0;
}

static int mem_pwrite(vd_node *bs, uint64_t off, uint64_t len, const void *buf, unsigned flags)
{
    mem_state *s = bs->opaque;
    (void)flags;
    s->writes++;
    if (mem_fails(s, off, len)) {
        return -EIO;
    }
    memcpy(s->data + off, buf, len);
    return 0;
}

static int mem_pwrite_zeroes(vd_node *bs, uint64_t off, uint64_t len, unsigned flags)
{
    mem_state *s = bs->opaque;
    (void)flags;
    s->zero_calls++;
    if (mem_fails(s, off, len)) {
        return -EIO;
    }
    memset(s->data + off, 0, len);
    return 0;
}

static int64_t mem_get_length(vd_node *bs)
{
    return (int64_t)((mem_state *)bs->opaque)->size;
}

/* One driver for the file, data-file and backing nodes.  A format node
 * reads zeroes past its end, which makes a short one a backing file
 * shorter than the image. */
static const vd_driver mem_drv = {
    .name = "test-mem",
    .kind = VD_DRV_FORMAT,
    .state_size = sizeof(mem_state),
    .get_length = mem_get_length,
    .pread = mem_pread,
    .pwrite = mem_pwrite,
    .pwrite_zeroes = mem_pwrite_zeroes,
};

static uint64_t rnd(uint64_t *st)
{
    uint64_t x = *st;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *st = x;
}

static vd_node *mem_node(uint64_t size, uint64_t *seed)
{
    vd_node *bs = calloc(1, sizeof(*bs));
    mem_state *s = calloc(1, sizeof(*s));
    bs->drv = &mem_drv;
    bs->opaque = s;
    s->size = size;
    s->data = malloc(size ? size : 1);
    uint64_t g = seed ? rnd(seed) : 0;
    for (uint64_t i = 0; i < size; i++) {
        /* recognisable garbage (bit 7 set): never a byte new_byte() writes */
        s->data[i] = seed ? (uint8_t)(0x80 | (g >> (i % 57)) | (i * 37)) : 0;
    }
    bs->flags = VD_NODE_RDWR;
    bs->request_alignment = 1;
    bs->filename = strdup("mem");
    pthread_mutex_init(&bs->req_lock, NULL);
    pthread_cond_init(&bs->req_cond, NULL);
    return bs;
}

static void mem_free(vd_node *bs)
{
    if (!bs) {
        return;
    }
    mem_state *s = bs->opaque;
    free(s->data);
    free(s);
    free(bs->filename);
    pthread_mutex_destroy(&bs->req_lock);
    pthread_cond_destroy(&bs->req_cond);
    free(bs);
}

static mem_state *ms(vd_node *bs)
{
    return bs->opaque;
}

/* ------------------------------------------------------- copy-on-write */

/* A read_old that records its calls and serves a byte pattern of the
 * guest offset (or fails at one cluster). */
typedef struct cow_probe {
    int calls;
    uint64_t cluster[4], from[4], to[4];
    uint64_t cs;
    uint64_t fail_cluster; /* UINT64_MAX: never */
} cow_probe;

static uint8_t old_byte(uint64_t guest)
{
    return (uint8_t)(guest * 7 + 3) | 1;
}

static int probe_read(void *opaque, uint64_t cluster, uint64_t from, uint64_t to, uint8_t *buf)
{
    cow_probe *p = opaque;
    if (p->calls < 4) {
        p->cluster[p->calls] = cluster;
        p->from[p->calls] = from;
        p->to[p->calls] = to;
    }
    p->calls++;
    if (cluster == p->fail_cluster) {
        return -EIO;
    }
    for (uint64_t i = from; i < to; i++) {
        buf[i] = old_byte(cluster + i);
    }
    return 0;
}

static uint8_t new_byte(uint64_t guest)
{
    return (uint8_t)(guest * 13 + 5) & 0x7f; /* never equal to the 0x80 garbage */
}

/*
 * One write of [offset, offset+len) with cluster size cs at host `host` of
 * a fresh file; old content from the probe.  Checks every byte of the file
 * (the span gets old/new bytes, the rest stays untouched) and the calls.
 */
static void cow_case(uint64_t cs, uint64_t offset, uint64_t len, uint64_t host, uint64_t *seed)
{
    uint64_t first = offset - offset % cs;
    uint64_t end = (offset + len + cs - 1) / cs * cs;
    uint64_t fsize = host + (end - first) + 2 * cs;
    vd_node *file = mem_node(fsize, seed);
    uint8_t *before = malloc(fsize);
    memcpy(before, ms(file)->data, fsize);
    uint8_t *data = malloc(len);
    for (uint64_t i = 0; i < len; i++) {
        data[i] = new_byte(offset + i);
    }
    cow_probe p = {.cs = cs, .fail_cluster = UINT64_MAX};

    int ret = vd_fmt_cow_write(file, host, cs, offset, len, data, probe_read, &p);
    CHECK(ret == 0);
    bool head = offset != first, tail = offset + len != end;
    CHECK(p.calls == (int)head + (int)tail);
    for (int i = 0; i < p.calls && i < 4; i++) {
        CHECK(p.from[i] < p.to[i] && p.to[i] <= cs);
        /* never asked for bytes the write covers */
        uint64_t a = p.cluster[i] + p.from[i], b = p.cluster[i] + p.to[i];
        CHECK(b <= offset || a >= offset + len);
        CHECK(p.cluster[i] % cs == 0 && p.cluster[i] >= first && p.cluster[i] < end);
    }
    /* at most three writes: composed first, the middle, composed last */
    CHECK(ms(file)->writes <= 3 && ms(file)->writes >= 1);
    CHECK(ms(file)->zero_calls == 0);
    uint64_t bad = 0;
    for (uint64_t h = 0; h < fsize; h++) {
        uint8_t want = before[h];
        if (h >= host && h < host + (end - first)) {
            uint64_t g = first + (h - host);
            want = g >= offset && g < offset + len ? new_byte(g) : old_byte(g);
        }
        bad += ms(file)->data[h] != want;
    }
    CHECK(bad == 0);
    if (bad) {
        fprintf(stderr, "  cs=%llu offset=%llu len=%llu host=%llu: %llu bytes wrong\n",
                (unsigned long long)cs, (unsigned long long)offset, (unsigned long long)len,
                (unsigned long long)host, (unsigned long long)bad);
    }
    free(data);
    free(before);
    mem_free(file);
}

static void test_cow_shapes(void)
{
    uint64_t seed = 0x1234567u;
    const uint64_t sizes[] = {512, 4096, 65536, 3000};
    for (size_t k = 0; k < VD_ARRAY_SIZE(sizes); k++) {
        uint64_t cs = sizes[k];
        /* aligned, head only, tail only, both, inside one cluster, one byte */
        cow_case(cs, 2 * cs, cs, 5 * cs, &seed);
        cow_case(cs, 2 * cs, 3 * cs, 5 * cs, &seed);
        cow_case(cs, 2 * cs + 1, cs - 1, 5 * cs, &seed);
        cow_case(cs, 2 * cs, cs - 1, 5 * cs, &seed);
        cow_case(cs, 2 * cs + 7, cs, 5 * cs, &seed);
        cow_case(cs, 2 * cs + 7, 13, 5 * cs, &seed);
        cow_case(cs, 2 * cs + cs / 2, 1, 0, &seed);
        cow_case(cs, cs - 1, 2, cs, &seed);
        /* a run spanning many clusters, unaligned at both ends */
        cow_case(cs, 3 * cs + 100, 40 * cs, 0, &seed);
        cow_case(cs, 3 * cs, 40 * cs - 100, 7 * cs, &seed);
    }
    /* seeded random shapes */
    for (int i = 0; i < 300; i++) {
        uint64_t cs = sizes[rnd(&seed) % VD_ARRAY_SIZE(sizes)];
        uint64_t off = rnd(&seed) % (20 * cs);
        uint64_t len = 1 + rnd(&seed) % (12 * cs);
        uint64_t host = (rnd(&seed) % 8) * cs;
        cow_case(cs, off, len, host, &seed);
    }
}

/* Old data from the backing chain: a backing node shorter than the image
 * (zeroes past its end), and no backing node at all (zeroes). */
static void test_cow_backing(void)
{
    uint64_t seed = 99;
    uint64_t cs = 4096;
    vd_node *fmt = mem_node(64 * cs, NULL);
    vd_node *backing = mem_node(12 * cs + 100, &seed);
    vd_node *file = mem_node(64 * cs, &seed);
    fmt->file = file;
    fmt->backing = backing;
    uint8_t data[3 * 4096];
    memset(data, 0x11, sizeof(data));

    /* clusters 9..12 of the guest: head from the backing node, tail past its end */
    uint64_t off = 9 * cs + 50, len = 3 * cs;
    CHECK(vd_fmt_cow_write(file, 20 * cs, cs, off, len, data, vd_fmt_cow_backing, fmt) == 0);
    const uint8_t *h = ms(file)->data + 20 * cs;
    const uint8_t *b = ms(backing)->data;
    CHECK(memcmp(h, b + 9 * cs, 50) == 0);
    CHECK(h[50] == 0x11 && h[50 + len - 1] == 0x11);
    uint64_t tail_at = 50 + len, zeroes = 0;
    for (uint64_t i = tail_at; i < 4 * cs; i++) {
        uint64_t g = 9 * cs + i;
        zeroes += h[i] == (g < 12 * cs + 100 ? b[g] : 0);
    }
    CHECK(zeroes == 4 * cs - tail_at);

    /* no backing node: zeroes */
    fmt->backing = NULL;
    CHECK(vd_fmt_cow_write(file, 30 * cs, cs, 2 * cs + 10, 20, data, vd_fmt_cow_backing, fmt) ==
          0);
    h = ms(file)->data + 30 * cs;
    CHECK(vd_buffer_is_zero(h, 10) && vd_buffer_is_zero(h + 30, cs - 30));
    CHECK(h[10] == 0x11 && h[29] == 0x11);

    /* zeroes composed in memory: whole clusters written (first, middle,
     * last), no zero requests */
    int w = ms(file)->writes, z = ms(file)->zero_calls;
    CHECK(vd_fmt_cow_write(file, 40 * cs, cs, 5, 2 * cs, data, vd_fmt_cow_zeroes, NULL) == 0);
    h = ms(file)->data + 40 * cs;
    CHECK(vd_buffer_is_zero(h, 5) && vd_buffer_is_zero(h + 5 + 2 * cs, cs - 5));
    CHECK(h[5] == 0x11 && h[4 + 2 * cs] == 0x11);
    CHECK(ms(file)->writes - w == 3 && ms(file)->zero_calls == z);

    /* read_old NULL: head and tail zeroed by the file, data in one write */
    w = ms(file)->writes;
    CHECK(vd_fmt_cow_write(file, 50 * cs, cs, cs + 9, cs, data, NULL, NULL) == 0);
    h = ms(file)->data + 50 * cs;
    CHECK(vd_buffer_is_zero(h, 9) && vd_buffer_is_zero(h + 9 + cs, cs - 9));
    CHECK(h[9] == 0x11 && h[8 + cs] == 0x11);
    CHECK(ms(file)->writes - w == 1 && ms(file)->zero_calls - z == 2);
    /* ... and an aligned one needs no zeroing */
    z = ms(file)->zero_calls;
    CHECK(vd_fmt_cow_write(file, 52 * cs, cs, 0, cs, data, NULL, NULL) == 0);
    CHECK(ms(file)->zero_calls == z);

    mem_free(file);
    mem_free(backing);
    mem_free(fmt);
}

/* Errors: read_old's and the file's are returned; bad arguments refused. */
static void test_cow_errors(void)
{
    uint64_t seed = 5;
    uint64_t cs = 512;
    vd_node *file = mem_node(64 * cs, &seed);
    uint8_t data[8 * 512];
    memset(data, 0x22, sizeof(data));

    /* read_old fails for the head: nothing is written */
    cow_probe p = {.cs = cs, .fail_cluster = 2 * cs};
    CHECK(vd_fmt_cow_write(file, 0, cs, 2 * cs + 1, 3 * cs, data, probe_read, &p) == -EIO);
    CHECK(ms(file)->writes == 0);
    /* ... for the tail: the first cluster and the middle are written, not the last */
    p = (cow_probe){.cs = cs, .fail_cluster = 5 * cs};
    CHECK(vd_fmt_cow_write(file, 0, cs, 2 * cs + 1, 3 * cs, data, probe_read, &p) == -EIO);
    CHECK(ms(file)->writes == 2);
    /* the file fails */
    ms(file)->fail_at = 10 * cs + 3;
    p = (cow_probe){.cs = cs, .fail_cluster = UINT64_MAX};
    CHECK(vd_fmt_cow_write(file, 10 * cs, cs, 7, 100, data, probe_read, &p) == -EIO);
    CHECK(vd_fmt_cow_write(file, 9 * cs, cs, 7, 2 * cs, data, NULL, NULL) == -EIO);
    CHECK(vd_fmt_cow_write(file, 10 * cs, cs, 0, cs, data, vd_fmt_cow_zeroes, NULL) == -EIO);
    ms(file)->fail_at = 0;
    /* refused arguments */
    CHECK(vd_fmt_cow_write(file, 0, cs, 0, 0, data, NULL, NULL) == -EINVAL);
    CHECK(vd_fmt_cow_write(file, 0, 0, 0, 1, data, NULL, NULL) == -EINVAL);
    CHECK(vd_fmt_cow_write(file, 0, cs, UINT64_MAX - 10, 100, data, NULL, NULL) == -EINVAL);
    CHECK(vd_fmt_cow_write(file, UINT64_MAX - 100, cs, 0, 1, data, NULL, NULL) == -EINVAL);
    mem_free(file);
}

/* ---------------------------------------------------------------- reads */

/*
 * A guest layout of GSIZE bytes in runs of random kinds and lengths: DATA
 * at a host offset in the file (or in a second "data file" node), ZERO,
 * BACKING, FILLED (the map callback writes the bytes itself).
 */
#define GSIZE (256u * 1024)
#define NRUNS 64

typedef struct layout {
    uint64_t start[NRUNS + 1];
    vd_fmt_map_kind kind[NRUNS];
    uint64_t host[NRUNS];
    bool other_file[NRUNS];
    vd_node *data_file;
    int calls;
    uint64_t max_answer;  /* answer at most this many bytes (1: byte by byte) */
    uint64_t fail_at;     /* map fails at this guest offset (UINT64_MAX: never) */
    int broken;           /* 1: answer len 0; 2: answer len max + 1 */
    uint64_t last_offset; /* furthest offset asked about */
} layout;

static uint8_t filled_byte(uint64_t guest)
{
    return (uint8_t)(guest * 31 + 11);
}

static int layout_map(vd_node *bs, void *opaque, uint64_t offset, uint64_t max, void *buf,
                      vd_fmt_extent *ext)
{
    layout *l = opaque;
    (void)bs;
    l->calls++;
    l->last_offset = VD_MAX(l->last_offset, offset);
    CHECK(ext->len == 0 && ext->file == NULL && ext->host == 0 && ext->kind == VD_FMT_MAP_DATA);
    if (offset == l->fail_at) {
        return -ENOSPC;
    }
    int r = 0;
    while (l->start[r + 1] <= offset) {
        r++;
    }
    uint64_t n = VD_MIN(max, l->start[r + 1] - offset);
    n = VD_MIN(n, l->max_answer);
    ext->kind = l->kind[r];
    ext->len = l->broken == 1 ? 0 : l->broken == 2 ? max + 1 : n;
    if (ext->kind == VD_FMT_MAP_DATA) {
        ext->host = l->host[r] + (offset - l->start[r]);
        ext->file = l->other_file[r] ? l->data_file : NULL;
    } else if (ext->kind == VD_FMT_MAP_FILLED) {
        for (uint64_t i = 0; i < n; i++) {
            ((uint8_t *)buf)[i] = filled_byte(offset + i);
        }
    }
    return 0;
}

/* What guest byte g reads as, by the model. */
static uint8_t layout_byte(const layout *l, vd_node *bs, uint64_t g)
{
    int r = 0;
    while (l->start[r + 1] <= g) {
        r++;
    }
    switch (l->kind[r]) {
    case VD_FMT_MAP_DATA: {
        vd_node *f = l->other_file[r] ? l->data_file : bs->file;
        return ms(f)->data[l->host[r] + (g - l->start[r])];
    }
    case VD_FMT_MAP_ZERO:
        return 0;
    case VD_FMT_MAP_BACKING:
        if (!bs->backing || g >= ms(bs->backing)->size) {
            return 0;
        }
        return ms(bs->backing)->data[g];
    case VD_FMT_MAP_FILLED:
        return filled_byte(g);
    }
    return 0xee;
}

static void layout_init(layout *l, uint64_t *seed)
{
    memset(l, 0, sizeof(*l));
    l->start[0] = 0;
    for (int r = 1; r < NRUNS; r++) {
        /* sorted distinct cut points, some runs of one byte */
        l->start[r] = l->start[r - 1] + 1 + rnd(seed) % (2 * GSIZE / NRUNS - 1);
        if (l->start[r] >= GSIZE - (NRUNS - r)) {
            l->start[r] = l->start[r - 1] + 1;
        }
    }
    l->start[NRUNS] = GSIZE;
    for (int r = 0; r < NRUNS; r++) {
        l->kind[r] = (vd_fmt_map_kind)(rnd(seed) % 4);
        l->host[r] = rnd(seed) % GSIZE; /* files are 2 * GSIZE long */
        l->other_file[r] = rnd(seed) % 4 == 0;
    }
    l->max_answer = UINT64_MAX;
    l->fail_at = UINT64_MAX;
}

static void test_read_random(void)
{
    uint64_t seed = 0xfeedbeefu;
    vd_node *bs = mem_node(GSIZE, NULL);
    bs->file = mem_node(2 * GSIZE, &seed);
    vd_node *backing = mem_node(GSIZE / 3, &seed); /* shorter than the image */
    layout l;
    uint8_t *buf = malloc(GSIZE);
    for (int round = 0; round < 40; round++) {
        layout_init(&l, &seed);
        l.data_file = mem_node(2 * GSIZE, &seed);
        bs->backing = round % 3 == 2 ? NULL : backing; /* sometimes no backing node */
        if (round % 5 == 4) {
            l.max_answer = 1 + rnd(&seed) % 700; /* a callback answering in small pieces */
        }
        for (int i = 0; i < 20; i++) {
            uint64_t off = rnd(&seed) % GSIZE;
            uint64_t len = 1 + rnd(&seed) % (GSIZE - off);
            memset(buf, 0xee, GSIZE);
            l.calls = 0;
            CHECK(vd_fmt_read(bs, off, len, buf, layout_map, &l) == 0);
            uint64_t bad = 0;
            for (uint64_t g = off; g < off + len; g++) {
                bad += buf[g - off] != layout_byte(&l, bs, g);
            }
            CHECK(bad == 0);
            /* nothing past the request */
            CHECK(len == GSIZE || buf[len] == 0xee);
        }
        mem_free(l.data_file);
    }
    /* byte by byte over a short range */
    layout_init(&l, &seed);
    l.data_file = mem_node(2 * GSIZE, &seed);
    bs->backing = backing;
    l.max_answer = 1;
    CHECK(vd_fmt_read(bs, 1000, 3000, buf, layout_map, &l) == 0);
    CHECK(l.calls == 3000);
    for (uint64_t g = 1000; g < 4000; g++) {
        CHECK(buf[g - 1000] == layout_byte(&l, bs, g));
    }
    mem_free(l.data_file);
    free(buf);
    mem_free(backing);
    mem_free(bs->file);
    mem_free(bs);
}

static void test_read_errors(void)
{
    uint64_t seed = 77;
    vd_node *bs = mem_node(GSIZE, NULL);
    bs->file = mem_node(2 * GSIZE, &seed);
    layout l;
    uint8_t *buf = malloc(GSIZE);
    layout_init(&l, &seed);
    l.data_file = bs->file;

    /* the callback's error ends the read there */
    l.fail_at = l.start[10];
    CHECK(vd_fmt_read(bs, 0, GSIZE, buf, layout_map, &l) == -ENOSPC);
    CHECK(l.last_offset == l.start[10]);
    l.fail_at = UINT64_MAX;
    /* broken answers: empty, longer than asked */
    l.broken = 1;
    CHECK(vd_fmt_read(bs, 0, GSIZE, buf, layout_map, &l) == -EIO);
    l.broken = 2;
    l.calls = 0;
    CHECK(vd_fmt_read(bs, 5, 100, buf, layout_map, &l) == -EIO);
    CHECK(l.calls == 1);
    l.broken = 0;
    /* an unknown kind */
    l.kind[0] = (vd_fmt_map_kind)42;
    CHECK(vd_fmt_read(bs, 0, 1, buf, layout_map, &l) == -EIO);
    /* a failing data read */
    for (int r = 0; r < NRUNS; r++) {
        l.kind[r] = VD_FMT_MAP_DATA;
        l.host[r] = l.start[r];
        l.other_file[r] = false;
    }
    ms(bs->file)->fail_at = GSIZE / 2;
    l.calls = 0;
    l.last_offset = 0;
    CHECK(vd_fmt_read(bs, 0, GSIZE, buf, layout_map, &l) == -EIO);
    CHECK(l.last_offset <= GSIZE / 2);
    /* a failing backing read */
    ms(bs->file)->fail_at = 0;
    bs->backing = mem_node(GSIZE, &seed);
    ms(bs->backing)->fail_at = 100;
    for (int r = 0; r < NRUNS; r++) {
        l.kind[r] = VD_FMT_MAP_BACKING;
    }
    CHECK(vd_fmt_read(bs, 0, GSIZE, buf, layout_map, &l) == -EIO);
    mem_free(bs->backing);
    free(buf);
    mem_free(bs->file);
    mem_free(bs);
}

int main(void)
{
    test_cow_shapes();
    test_cow_backing();
    test_cow_errors();
    test_read_random();
    test_read_errors();
    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("ok\n");
    return 0;
}
