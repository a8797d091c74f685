/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The shared helpers of internal.h every parser relies on: byte order
 * loads/stores (unaligned, both endians), overflow-checked arithmetic,
 * alignment, zero detection and boolean words.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

static int failures;

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                              \
        }                                                                            \
    } while (0)

static void test_byteorder(void)
{
    /* odd offset: the helpers must not assume alignment */
    uint8_t buf[17];
    const uint8_t *p = (const uint8_t *)"\x01\x02\x03\x04\x05\x06\x07\x08";
    memcpy(buf + 1, p, 8);
    CHECK(vd_ld_be16(buf + 1) == 0x0102);
    CHECK(vd_ld_le16(buf + 1) == 0x0201);
    CHECK(vd_ld_be32(buf + 1) == 0x01020304u);
    CHECK(vd_ld_le32(buf + 1) == 0x04030201u);
    CHECK(vd_ld_be64(buf + 1) == 0x0102030405060708ull);
    CHECK(vd_ld_le64(buf + 1) == 0x0807060504030201ull);

    /* high bits survive (no sign extension through int promotion) */
    memset(buf, 0xff, sizeof(buf));
    CHECK(vd_ld_be16(buf + 3) == 0xffff);
    CHECK(vd_ld_le32(buf + 3) == 0xffffffffu);
    CHECK(vd_ld_be64(buf + 3) == UINT64_MAX);
    CHECK(vd_ld_le64(buf + 3) == UINT64_MAX);

    memset(buf, 0, sizeof(buf));
    vd_st_be16(buf + 1, 0xa1b2);
    CHECK(buf[1] == 0xa1 && buf[2] == 0xb2 && buf[0] == 0 && buf[3] == 0);
    vd_st_le16(buf + 1, 0xa1b2);
    CHECK(buf[1] == 0xb2 && buf[2] == 0xa1);
    vd_st_be32(buf + 1, 0x8899aabbu);
    CHECK(vd_ld_be32(buf + 1) == 0x8899aabbu && buf[1] == 0x88 && buf[5] == 0);
    vd_st_le32(buf + 1, 0x8899aabbu);
    CHECK(vd_ld_le32(buf + 1) == 0x8899aabbu && buf[1] == 0xbb);
    vd_st_be64(buf + 1, 0xf0e1d2c3b4a59687ull);
    CHECK(vd_ld_be64(buf + 1) == 0xf0e1d2c3b4a59687ull && buf[1] == 0xf0 && buf[8] == 0x87);
    CHECK(buf[9] == 0);
    vd_st_le64(buf + 1, 0xf0e1d2c3b4a59687ull);
    CHECK(vd_ld_le64(buf + 1) == 0xf0e1d2c3b4a59687ull && buf[1] == 0x87 && buf[8] == 0xf0);
    CHECK(buf[0] == 0 && buf[9] == 0);
}

static void test_overflow(void)
{
    uint64_t r;
    CHECK(!vd_add_overflow(1, 2, &r) && r == 3);
    CHECK(!vd_add_overflow(UINT64_MAX - 1, 1, &r) && r == UINT64_MAX);
    CHECK(vd_add_overflow(UINT64_MAX, 1, &r));
    CHECK(!vd_mul_overflow(1ull << 31, 1ull << 32, &r) && r == 1ull << 63);
    CHECK(vd_mul_overflow(1ull << 32, 1ull << 32, &r));
    CHECK(!vd_mul_overflow(0, UINT64_MAX, &r) && r == 0);

    CHECK(vd_is_pow2(1) && vd_is_pow2(65536) && vd_is_pow2(1ull << 63));
    CHECK(!vd_is_pow2(0) && !vd_is_pow2(3) && !vd_is_pow2(65535));
    CHECK(vd_div_round_up(0, 512) == 0);
    CHECK(vd_div_round_up(1, 512) == 1);
    CHECK(vd_div_round_up(512, 512) == 1);
    CHECK(vd_div_round_up(513, 512) == 2);
    CHECK(vd_div_round_up(UINT64_MAX, 2) == (1ull << 63));

    CHECK(!vd_align_up_overflow(0, 4096, &r) && r == 0);
    CHECK(!vd_align_up_overflow(1, 4096, &r) && r == 4096);
    CHECK(!vd_align_up_overflow(4096, 4096, &r) && r == 4096);
    CHECK(!vd_align_up_overflow(UINT64_MAX - 4095, 4096, &r) && r == UINT64_MAX - 4095);
    CHECK(vd_align_up_overflow(UINT64_MAX - 4094, 4096, &r));
    CHECK(vd_align_down(4097, 4096) == 4096);
    CHECK(vd_align_down(4095, 4096) == 0);
    CHECK(vd_is_aligned(8192, 4096) && !vd_is_aligned(8193, 4096));
    CHECK(vd_ctz64(1) == 0 && vd_ctz64(65536) == 16 && vd_ctz64(1ull << 63) == 63);
    CHECK(vd_ctz64(0) == 64);
    CHECK(VD_MIN(3, 5) == 3 && VD_MAX(3, 5) == 5);
}

static void test_misc(void)
{
    /* zero detection at every alignment and length around the word loop */
    uint8_t *buf = calloc(1, 300);
    CHECK(buf);
    for (size_t off = 0; off < 9; off++) {
        for (size_t len = 0; len < 80; len++) {
            CHECK(vd_buffer_is_zero(buf + off, len));
            if (len) {
                buf[off + len - 1] = 1;
                CHECK(!vd_buffer_is_zero(buf + off, len));
                buf[off + len - 1] = 0;
                buf[off] = 1;
                CHECK(!vd_buffer_is_zero(buf + off, len));
                buf[off] = 0;
            }
        }
    }
    free(buf);

    CHECK(vd_parse_bool("on") == 1 && vd_parse_bool("yes") == 1 && vd_parse_bool("true") == 1);
    CHECK(vd_parse_bool("off") == 0 && vd_parse_bool("no") == 0 && vd_parse_bool("false") == 0);
    CHECK(vd_parse_bool("maybe") == -1 && vd_parse_bool("") == -1 && vd_parse_bool(NULL) == -1);

    void *a = vd_aligned_alloc(4096, 10);
    CHECK(a && ((uintptr_t)a & 4095) == 0);
    free(a);
}

int main(void)
{
    test_byteorder();
    test_overflow();
    test_misc();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("bytes: all checks passed\n");
    return 0;
}
