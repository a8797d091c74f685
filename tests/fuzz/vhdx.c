/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The vhdx driver on hostile bytes: open, read, block status, info, check.
 * A VHDX file is at least a few MiB with its structures far apart and
 * guarded by CRC-32C, so the input is a compact description the target
 * spreads out: byte 0 holds flags (bit 0: keep the input's CRCs instead of
 * fixing them), then 512 bytes of header (at 64 KiB and, with the sequence
 * number lowered by one, at 128 KiB), 1 KiB of region table (192 KiB),
 * 512 bytes of metadata table (3 MiB), 512 bytes of metadata items
 * (3 MiB + 64 KiB), and the rest is the BAT (2 MiB, at most 64 KiB), where
 * qemu-img puts them.  The file is 6 MiB, so BAT entries pointing at 4 and
 * 5 MiB hit data.
 *
 * Byte 0 bit 1 adds a metadata log: the header's log is then 1 MiB at
 * 1 MiB with a non-zero log GUID, and 16 KiB of input (taken before the
 * BAT) are its first four sectors, each "loge" sector getting the header's
 * log GUID and, unless bit 0 is set, the CRC-32C of its entry (as long as
 * it fits in those 16 KiB), so that the log search (open reads it even
 * read-only) sees valid entries with hostile descriptors.
 *
 * Byte 0 bit 2 takes the read-write paths instead: the last 48 bytes of the
 * input (before the layout above takes the rest) are six requests, and the
 * image, in a memfd of its own, is opened read-write (which replays a
 * pending log), checked with repairs, written, zero-written and discarded
 * at offsets the requests give, each write read back (a write within one
 * block must read back as written), flushed, closed, and then opened again
 * read-only for the read-only harness on what the writes left.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "image.h"
#include "vdisk.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MiB (1u << 20)
#define FILE_SIZE (6u * MiB)

/* Not traced by coverage: it runs over 64 KiB bit by bit on every input. */
__attribute__((no_sanitize("coverage"))) static uint32_t crc32c(const uint8_t *p, size_t len)
{
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < len; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        }
    }
    return ~c;
}

static void put_crc(uint8_t *p, size_t len)
{
    memset(p + 4, 0, 4);
    uint32_t c = crc32c(p, len);
    p[4] = (uint8_t)c;
    p[5] = (uint8_t)(c >> 8);
    p[6] = (uint8_t)(c >> 16);
    p[7] = (uint8_t)(c >> 24);
}

#define NREQ 6
#define REQ_SIZE 8
/* Largest write of one request (zero writes and discards: 8 MiB). */
#define MAX_WRITE (1u << 20)
/* The writable image may grow to this (blocks are appended, a replayed log
 * may grow the file, and zero writes fall back to allocating on a memfd):
 * past it a write fails with EFBIG, which keeps memory bounded. */
#define MAX_FILE (1ull << 30)

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct rlimit rl = {MAX_FILE, MAX_FILE};
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &rl);
    return 0;
}

/*
 * One request of 8 bytes: byte 0 is the kind (bits 0-1: write, zero write,
 * zero write that may unmap, discard), bit 5 keeps the length even past
 * the end of the disk, bit 6 adds byte 7 to the offset (unaligned), bit 7
 * asks for FUA; bytes 1-4 are the offset in sectors (modulo the disk
 * size), bytes 5-6 the length in units of 16 bytes (writes) or 128 bytes.
 */
static void request(vd_image *img, uint64_t length, uint32_t block, const uint8_t *r,
                    uint8_t *buf, uint8_t *back)
{
    uint64_t off = ((uint64_t)r[1] | (uint64_t)r[2] << 8 | (uint64_t)r[3] << 16 |
                    (uint64_t)r[4] << 24) << 9;
    if (r[0] & 0x40) {
        off += r[7];
    }
    off %= length;
    unsigned kind = r[0] & 3;
    uint64_t units = (uint64_t)r[5] | (uint64_t)r[6] << 8;
    uint64_t len = (units + 1) << (kind == 0 ? 4 : 7);
    if (kind == 0 && len > MAX_WRITE) {
        len = MAX_WRITE;
    }
    if (!(r[0] & 0x20) && len > length - off) {
        len = length - off;
    }
    unsigned flags = r[0] & 0x80 ? VD_REQ_FUA : 0;
    switch (kind) {
    case 0:
        for (size_t i = 0; i < len; i++) {
            buf[i] = (uint8_t)(i * 7 + r[7] + 1);
        }
        if (vd_pwrite(img, buf, (size_t)len, off, flags) == 0 &&
            vd_pread(img, back, (size_t)len, off) == 0 && block &&
            off / block == (off + len - 1) / block && memcmp(buf, back, (size_t)len)) {
            fprintf(stderr, "vhdx: a write of %llu bytes at %llu reads back otherwise\n",
                    (unsigned long long)len, (unsigned long long)off);
            abort();
        }
        return;
    case 1:
    case 2:
        vd_pwrite_zeroes(img, off, len, flags | (kind == 2 ? VD_REQ_MAY_UNMAP : 0));
        break;
    default:
        vd_discard(img, off, len);
        break;
    }
    /* the first bytes of what the zero write or discard touched */
    vd_pread(img, back, (size_t)(len < 4096 ? len : 4096), off);
}

/* The read-write paths on the image f (see the top). */
static void fuzz_rw(const uint8_t *f, const uint8_t *req)
{
    int fd = vd_fuzz_memfd(f, FILE_SIZE);
    char name[64];
    snprintf(name, sizeof(name), "/proc/self/fd/%d", fd);
    vd_image *img = vd_open(name, "vhdx", NULL, VD_OPEN_RDWR | VD_OPEN_NO_BACKING);
    if (!img) {
        close(fd);
        return;
    }
    vd_check_result res;
    memset(&res, 0, sizeof(res));
    vd_check(img, VD_CHECK_FIX_LEAKS | VD_CHECK_FIX_ERRORS, &res);
    int64_t length = vd_get_length(img);
    uint8_t *buf = malloc(MAX_WRITE);
    uint8_t *back = malloc(MAX_WRITE);
    if (length > 0 && buf && back) {
        uint32_t block = vd_image_cluster_size(img);
        for (int i = 0; i < NREQ; i++) {
            request(img, (uint64_t)length, block, req + i * REQ_SIZE, buf, back);
        }
    }
    free(buf);
    free(back);
    vd_flush(img);
    vd_close(img);
    /* what the writes left, as a reader finds it */
    vd_fuzz_image_path(name, "vhdx");
    close(fd);
}

/* Copy up to want bytes of the input to dst, advancing it. */
static void take(uint8_t *dst, const uint8_t **data, size_t *size, size_t want)
{
    size_t n = *size < want ? *size : want;
    memcpy(dst, *data, n);
    *data += n;
    *size -= n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t flags = data[0];
    data++;
    size--;
    uint8_t req[NREQ * REQ_SIZE] = {0};
    if (flags & 4) {
        size_t n = size < sizeof(req) ? size : sizeof(req);
        memcpy(req, data + size - n, n);
        size -= n;
    }
    /* one buffer for every input: a fresh 6 MiB allocation each time costs
     * more page faults than the rest of a run */
    static uint8_t *f;
    if (!f && !(f = malloc(FILE_SIZE))) {
        return 0;
    }
    memset(f, 0, FILE_SIZE);
    memcpy(f, "vhdxfile", 8);
    take(f + 64 * 1024, &data, &size, 512);
    memcpy(f + 128 * 1024, f + 64 * 1024, 512);
    f[128 * 1024 + 8] -= 1; /* a lower sequence number (mostly) */
    take(f + 192 * 1024, &data, &size, 1024);
    take(f + 3 * MiB, &data, &size, 512);
    take(f + 3 * MiB + 64 * 1024, &data, &size, 512);
    uint8_t *h = f + 64 * 1024;
    if (flags & 2) {
        static const uint8_t len_off[12] = {0, 0, 0x10, 0, 0, 0, 0x10, 0, 0, 0, 0, 0};
        memcpy(h + 68, len_off, sizeof(len_off));
        h[48] |= 1; /* a log GUID */
        memcpy(f + 128 * 1024, h, 512);
        f[128 * 1024 + 8] -= 1;
        take(f + MiB, &data, &size, 16 * 1024);
        for (size_t o = MiB; o < MiB + 16 * 1024; o += 4096) {
            if (memcmp(f + o, "loge", 4)) {
                continue;
            }
            memcpy(f + o + 32, h + 48, 16);
            uint32_t len = (uint32_t)f[o + 8] | (uint32_t)f[o + 9] << 8 |
                           (uint32_t)f[o + 10] << 16 | (uint32_t)f[o + 11] << 24;
            if (!(flags & 1) && len && len <= MiB + 16 * 1024 - o) {
                put_crc(f + o, len);
            }
        }
    }
    take(f + 2 * MiB, &data, &size, 64 * 1024);
    /* recognisable data where blocks may point */
    for (size_t i = 4 * MiB; i < FILE_SIZE; i += 4096) {
        f[i] = (uint8_t)(i >> 12);
    }
    if (!(flags & 1)) {
        put_crc(f + 64 * 1024, 4096);
        put_crc(f + 128 * 1024, 4096);
        put_crc(f + 192 * 1024, 64 * 1024);
    }
    if (flags & 4) {
        fuzz_rw(f, req);
    } else {
        vd_fuzz_image(f, FILE_SIZE, "vhdx");
    }
    return 0;
}
