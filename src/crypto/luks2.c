/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * LUKS2 headers: not read yet; a LUKS2 image is refused with a clear
 * message.
 */
#include "luks.h"

int vd_luks2_read(vd_luks_io_fn *io, void *opaque, uint64_t region_size, vd_luks **out,
                  vd_error **errp)
{
    (void)io, (void)opaque, (void)region_size, (void)out;
    return vd_error_set(errp, ENOTSUP, "LUKS2 headers are not supported");
}

int vd_luks2_unlock_slot(vd_luks *l, int slot, vd_luks_io_fn *io, void *opaque,
                         const uint8_t *pass, size_t passlen, uint8_t *mk, vd_error **errp)
{
    (void)l, (void)slot, (void)io, (void)opaque, (void)pass, (void)passlen, (void)mk;
    return vd_error_set(errp, ENOTSUP, "LUKS2 headers are not supported");
}

int vd_luks2_check_mk(vd_luks *l, const uint8_t *mk, bool *ok, vd_error **errp)
{
    (void)l, (void)mk, (void)ok;
    return vd_error_set(errp, ENOTSUP, "LUKS2 headers are not supported");
}
