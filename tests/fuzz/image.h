/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The shared image fuzzing harness.  A format's fuzz target is one line:
 *
 *     int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
 *     {
 *         return vd_fuzz_image(data, size, "qcow2");
 *     }
 *
 * (add its name to fuzz_targets in tests/fuzz/meson.build and a few small
 * seed images under tests/fuzz/corpus/NAME/).
 */
#ifndef VD_FUZZ_IMAGE_H
#define VD_FUZZ_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* Most bytes one input may read from its virtual disk, to bound the time
 * an image that claims a huge size takes. */
#define VD_FUZZ_READ_BUDGET (32u << 20)
/* Most block status answers asked for per input. */
#define VD_FUZZ_MAX_EXTENTS 4096

/*
 * Put data in an anonymous in-memory file and open it read-only as format
 * (NULL probes) without backing files: read the virtual disk (data extents
 * fully, others a little, within VD_FUZZ_READ_BUDGET), ask block status
 * over it, get its info, check it (without repairs) and close it.
 * Failures to open or read are expected results, not errors.  Returns 0
 * (what libFuzzer wants).
 */
int vd_fuzz_image(const uint8_t *data, size_t size, const char *format);
/* A memfd holding data (holes where it has whole 4 KiB pages of zeroes);
 * the caller closes it.  Aborts when it cannot be made. */
int vd_fuzz_memfd(const uint8_t *data, size_t size);
/* The same on an image that already is a file (multi-file formats). */
void vd_fuzz_image_path(const char *name, const char *format);

#endif
