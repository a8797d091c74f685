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
