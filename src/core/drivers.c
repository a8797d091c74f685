/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The explicit driver table.  Adding a driver: one extern line and one
 * table line, in probe order (cheap, specific probes first; raw last).
 * The --object types are listed the same way, below.
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
#ifdef VD_HAVE_SSH
extern const vd_driver vd_drv_ssh;
#endif
#ifdef VD_HAVE_ISCSI
extern const vd_driver vd_drv_iscsi;
#endif
#if defined(VD_HAVE_RBD) && defined(VD_HAVE_RADOS)
extern const vd_driver vd_drv_rbd;
#endif
extern const vd_driver vd_drv_nvme;
#ifdef VD_HAVE_GLUSTER
extern const vd_driver vd_drv_gluster;
#endif
extern const vd_driver vd_drv_vvfat;
/* filters */
extern const vd_driver vd_drv_preallocate;
extern const vd_driver vd_drv_blkdebug;
extern const vd_driver vd_drv_blklogwrites;
extern const vd_driver vd_drv_copy_on_read;
extern const vd_driver vd_drv_quorum;
/* formats */
extern const vd_driver vd_drv_luks;
extern const vd_driver vd_drv_qcow2;
extern const vd_driver vd_drv_qed;
extern const vd_driver vd_drv_qcow;
extern const vd_driver vd_drv_vdi;
extern const vd_driver vd_drv_vpc;
extern const vd_driver vd_drv_vhdx;
extern const vd_driver vd_drv_vmdk;
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
#ifdef VD_HAVE_SSH
    &vd_drv_ssh,
#endif
#ifdef VD_HAVE_ISCSI
    &vd_drv_iscsi,
#endif
#if defined(VD_HAVE_RBD) && defined(VD_HAVE_RADOS)
    &vd_drv_rbd,
#endif
    &vd_drv_nvme,
#ifdef VD_HAVE_GLUSTER
    &vd_drv_gluster,
#endif
    &vd_drv_vvfat,
    /* filters */
    &vd_drv_preallocate,
    &vd_drv_blkdebug,
    &vd_drv_blklogwrites,
    &vd_drv_copy_on_read,
    &vd_drv_quorum,
    /* formats, raw last */
    &vd_drv_luks,
    &vd_drv_qcow2,
    &vd_drv_qed,
    &vd_drv_qcow,
    &vd_drv_vdi,
    &vd_drv_vpc,
    &vd_drv_vhdx,
    &vd_drv_vmdk,
    &vd_drv_bochs,
    &vd_drv_cloop,
    &vd_drv_dmg,
    &vd_drv_parallels,
    &vd_drv_raw,
    NULL,
};

/* object types for --object: one extern line and one table line each */
extern const vd_object_type vd_obj_secret;
extern const vd_object_type vd_obj_tls_creds_x509;
extern const vd_object_type vd_obj_tls_creds_psk;

const vd_object_type *const vd_object_types[] = {
    &vd_obj_secret,
    &vd_obj_tls_creds_x509,
    &vd_obj_tls_creds_psk,
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

const vd_driver *vd_protocol_for(const char *filename)
{
    const vd_driver *drv = filename ? vd_driver_find_protocol(filename) : NULL;
    if (drv) {
        return drv;
    }
    const vd_driver *best = NULL, *fallback = NULL;
    int best_score = 0;
    for (size_t i = 0; vd_drivers[i]; i++) {
        const vd_driver *d = vd_drivers[i];
        if (d->kind != VD_DRV_PROTOCOL) {
            continue;
        }
        if ((d->flags & VD_DRV_DEFAULT_PROTOCOL) && !fallback) {
            fallback = d;
        }
        if (filename && d->probe_device) {
            int score = d->probe_device(filename);
            if (score > best_score) {
                best_score = score;
                best = d;
            }
        }
    }
    return best ? best : fallback;
}

const vd_driver *vd_driver_raw_format(void)
{
    for (size_t i = 0; vd_drivers[i]; i++) {
        if (vd_drivers[i]->kind == VD_DRV_FORMAT && (vd_drivers[i]->flags & VD_DRV_RAW_FORMAT)) {
            return vd_drivers[i];
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
