/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The LUKS header parser on hostile bytes: the luks driver through the
 * image harness (open without a key fails after parsing), then the header
 * code directly -- parse, and unlock with a fixed passphrase when the
 * iteration counts are small enough to keep runs fast -- with the input as
 * the header region.  Seeds: a LUKS1 header with slot 0's key material
 * (passphrase "fuzz").
 */
#include <stdlib.h>

#include "../../src/crypto/luks.h"
#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct {
    const uint8_t *data;
    size_t size;
} region;

static int mem_io(void *opaque, uint64_t off, void *buf, size_t len, bool write,
                  vd_error **errp)
{
    region *r = opaque;
    if (write) {
        return vd_error_set(errp, EROFS, "read-only");
    }
    if (off > r->size || len > r->size - off) {
        return vd_error_set(errp, EIO, "read past the end");
    }
    memcpy(buf, r->data + off, len);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vd_fuzz_image(data, size, "luks");
    region reg = {data, size};
    vd_luks *l = NULL;
    vd_error *err = NULL;
    if (vd_luks_read(mem_io, &reg, size, &l, &err) == 0) {
        bool cheap = l->mk_iters <= 2000;
        for (int i = 0; i < VD_LUKS_NUM_SLOTS; i++) {
            cheap = cheap && (!l->slots[i].active || l->slots[i].iterations <= 2000);
        }
        if (cheap) {
            vd_luks_unlock(l, mem_io, &reg, (const uint8_t *)"fuzz", 4, NULL, &err);
        }
        free(vd_luks_info_fields(l));
        vd_luks_free(l);
    }
    vd_error_free(err);
    return 0;
}
