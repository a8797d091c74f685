/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * raw, and probing: the input opened as "raw" and then with the format
 * probed, which reaches every driver whose probe accepts the bytes.
 */
#include "image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vd_fuzz_image(data, size, "raw");
    vd_fuzz_image(data, size, NULL);
    return 0;
}
