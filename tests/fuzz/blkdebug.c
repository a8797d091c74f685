/* SPDX-License-Identifier: BSD-3-Clause */
/* The blkdebug config file parser (QEMU's [inject-error]/[set-state]
 * syntax) and rule validation on hostile bytes. */
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

int vd_blkdebug_parse_config_buffer(const char *buf, size_t len, vd_error **errp);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    vd_error *err = NULL;
    (void)vd_blkdebug_parse_config_buffer((const char *)data, size, &err);
    vd_error_free(err);
    return 0;
}
