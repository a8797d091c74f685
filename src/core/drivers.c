/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The explicit driver table.  Adding a driver: one extern line and one
 * table line, in probe order (cheap, specific probes first; raw last).
 */
#include <stdlib.h>

#include "internal.h"

/* protocols */
extern const vd_driver vd_drv_file;
extern const vd_driver vd_drv_host_device;
extern const vd_driver vd_drv_host_cdrom;
extern const vd_driver vd_drv_null_co;
extern const vd_driver vd_drv_null_aio;
extern const vd_driver vd_drv_nbd;
/* filters */
extern const vd_driver vd_drv_preallocate;
/* formats */
extern const vd_driver vd_drv_qcow2;
extern const vd_driver vd_drv_qed;
extern const vd_driver vd_drv_qcow;
extern const vd_driver vd_drv_vdi;
extern const vd_driver vd_drv_vpc;
extern const vd_driver vd_drv_bochs;
extern const vd_driver vd_drv_cloop;
extern const vd_driver vd_drv_dmg;
extern const vd_driver vd_drv_parallels;
extern const vd_driver vd_drv_raw;

const vd_driver *const vd_drivers[] = {
    /* protocols */
    &vd_drv_file,
    &vd_drv_host_device,
    &vd_drv_host_cdrom,
    &vd_drv_null_co,
    &vd_drv_null_aio,
    &vd_drv_nbd,
    /* filters */
    &vd_drv_preallocate,
    /* formats, raw last */
    &vd_drv_qcow2,
    &vd_drv_qed,
    &vd_drv_qcow,
    &vd_drv_vdi,
    &vd_drv_vpc,
    &vd_drv_bochs,
    &vd_drv_cloop,
    &vd_drv_dmg,
    &vd_drv_parallels,
    &vd_drv_raw,
    NULL,
};

const vd_driver *vd_driver_find(const char *name)
{
    for (size_t i = 0; name && vd_drivers[i]; i++) {
        if (!strcmp(vd_drivers[i]->name, name)) {
            return vd_drivers[i];
        }
    }
    return NULL;
}

const vd_driver *vd_driver_find_protocol(const char *filename)
{
    const char *colon = strchr(filename, ':');
    if (!colon) {
        return NULL;
    }
    /* "dir/a:b" is a path, not a prefix */
    const char *slash = strchr(filename, '/');
    if (slash && slash < colon) {
        return NULL;
    }
    size_t n = (size_t)(colon - filename);
    for (size_t i = 0; vd_drivers[i]; i++) {
        const char *const *p = vd_drivers[i]->protocols;
        for (; p && *p; p++) {
            if (strlen(*p) == n && !strncmp(*p, filename, n)) {
                return vd_drivers[i];
            }
        }
    }
    return NULL;
}

size_t vd_driver_count(void)
{
    size_t n = 0;
    while (vd_drivers[n]) {
        n++;
    }
    return n;
}

const char *vd_driver_name(size_t i)
{
    return i < vd_driver_count() ? vd_drivers[i]->name : NULL;
}

const char *vd_driver_type(const char *name)
{
    const vd_driver *d = vd_driver_find(name);
    if (!d) {
        return NULL;
    }
    switch (d->kind) {
    case VD_DRV_PROTOCOL:
        return "protocol";
    case VD_DRV_FORMAT:
        return "format";
    case VD_DRV_FILTER:
        return "filter";
    }
    return NULL;
}
