/* SPDX-License-Identifier: BSD-3-Clause */
/* The cloop driver on hostile bytes: open, read, block status, info, check. */
#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return vd_fuzz_image(data, size, "cloop");
}
