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
 */
#include <stdlib.h>
#include <string.h>

#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MiB (1u << 20)
#define FILE_SIZE (6u * MiB)

static uint32_t crc32c(const uint8_t *p, size_t len)
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
    uint8_t *f = calloc(1, FILE_SIZE);
    if (!f) {
        return 0;
    }
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
    vd_fuzz_image(f, FILE_SIZE, "vhdx");
    free(f);
    return 0;
}
