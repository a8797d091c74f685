/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The explicit driver table.  Adding a driver: one extern line and one
 * table line, in probe order (cheap, specific probes first; raw last).
 * The --object types are listed the same way, below.  The protocol
 * drivers built as loadable modules (module.h) have one line each in the
 * module table after it: this file is the one place that knows their
 * names, files and prefixes.
 */
#include <pthread.h>
#include <stdlib.h>

#include "internal.h"
#include "module.h"

/* protocols */
extern const vd_driver vd_drv_file;
extern const vd_driver vd_drv_host_device;
extern const vd_driver vd_drv_host_cdrom;
extern const vd_driver vd_drv_null_co;
extern const vd_driver vd_drv_null_aio;
extern const vd_driver vd_drv_nbd;
extern const vd_driver vd_drv_nvme;
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
    &vd_drv_nvme,
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

/*
 * Driver modules: the protocols whose library is heavy (dozens of shared
 * objects and static constructors for librbd) are loaded on first use.
 * One line each: driver name, module file, filename prefixes.  A line is
 * here only when meson built the module (VD_HAVE_X, as for the linked-in
 * drivers: a driver whose library is missing at build time is left out).
 */
typedef struct vd_module_driver {
    const char *name;
    const char *file;
    const char *const *protocols;
} vd_module_driver;

static const vd_module_driver modules[] = {
#ifdef VD_HAVE_SSH
    {"ssh", "vdisk-ssh.so", (const char *const[]){"ssh", NULL}},
#endif
#ifdef VD_HAVE_ISCSI
    {"iscsi", "vdisk-iscsi.so", (const char *const[]){"iscsi", NULL}},
#endif
#if defined(VD_HAVE_RBD) && defined(VD_HAVE_RADOS)
    {"rbd", "vdisk-rbd.so", (const char *const[]){"rbd", NULL}},
#endif
#ifdef VD_HAVE_GLUSTER
    {"gluster", "vdisk-gluster.so",
     (const char *const[]){"gluster", "gluster+tcp", "gluster+unix", "gluster+rdma", NULL}},
#endif
    {NULL, NULL, NULL},
};
#define NMODULES (sizeof(modules) / sizeof(modules[0]) - 1)

/* what loading each module gave: its driver, or a stub and the reason */
static pthread_mutex_t module_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    bool tried;
    const vd_driver *drv;
    vd_driver stub;
    char msg[600];
} module_state[NMODULES + 1];

const char *vd_driver_module_name(size_t i)
{
    return i < NMODULES ? modules[i].name : NULL;
}

int vd_module_missing_error(const vd_driver *drv, vd_error **errp)
{
    for (size_t i = 0; i < NMODULES; i++) {
        if (drv == &module_state[i].stub) {
            return vd_error_set(errp, ENOTSUP, "Unknown protocol '%s': %s", drv->name,
                                module_state[i].msg);
        }
    }
    return vd_error_set(errp, ENOTSUP, "Unknown protocol '%s'", drv->name);
}

static int stub_parse_filename(const char *filename, vd_opts *opts, vd_error **errp)
{
    const vd_driver *drv = vd_driver_find_protocol(filename);
    return drv ? vd_module_missing_error(drv, errp) : vd_error_set(errp, ENOTSUP, "?");
}

static int stub_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    return vd_module_missing_error(bs->drv, errp);
}

static int stub_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    return stub_parse_filename(filename, NULL, errp);
}

/* The driver of module i: loaded on the first call (dlopen), or its stub. */
static const vd_driver *module_driver(size_t i)
{
    pthread_mutex_lock(&module_lock);
    if (!module_state[i].tried) {
        module_state[i].tried = true;
        module_state[i].drv = vd_module_load(modules[i].file, modules[i].name,
                                             module_state[i].msg, sizeof(module_state[i].msg));
        module_state[i].stub = (vd_driver){
            .name = modules[i].name,
            .kind = VD_DRV_PROTOCOL,
            .protocols = modules[i].protocols,
            .parse_filename = stub_parse_filename,
            .open = stub_open,
            .create = stub_create,
            .flags = VD_DRV_MODULE_MISSING,
        };
    }
    const vd_driver *drv = module_state[i].drv ? module_state[i].drv : &module_state[i].stub;
    pthread_mutex_unlock(&module_lock);
    return drv;
}

const vd_driver *vd_driver_find(const char *name)
{
    for (size_t i = 0; name && vd_drivers[i]; i++) {
        if (!strcmp(vd_drivers[i]->name, name)) {
            return vd_drivers[i];
        }
    }
    for (size_t i = 0; name && i < NMODULES; i++) {
        if (!strcmp(modules[i].name, name)) {
            return module_driver(i);
        }
    }
    return NULL;
}

static bool has_prefix(const char *const *p, const char *filename, size_t n)
{
    for (; p && *p; p++) {
        if (strlen(*p) == n && !strncmp(*p, filename, n)) {
            return true;
        }
    }
    return false;
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
        if (has_prefix(vd_drivers[i]->protocols, filename, n)) {
            return vd_drivers[i];
        }
    }
    for (size_t i = 0; i < NMODULES; i++) {
        if (has_prefix(modules[i].protocols, filename, n)) {
            return module_driver(i);
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

/*
 * The names vd_driver_name lists: the linked-in protocols, the modules
 * whose file is found (without loading them), then filters and formats.
 */
static const char *listing[sizeof(vd_drivers) / sizeof(vd_drivers[0]) +
                           NMODULES];
static size_t nlisting;
static pthread_once_t listing_once = PTHREAD_ONCE_INIT;

static void build_listing(void)
{
    size_t i = 0;
    for (; vd_drivers[i] && vd_drivers[i]->kind == VD_DRV_PROTOCOL; i++) {
        listing[nlisting++] = vd_drivers[i]->name;
    }
    for (size_t m = 0; m < NMODULES; m++) {
        if (vd_module_exists(modules[m].file)) {
            listing[nlisting++] = modules[m].name;
        }
    }
    for (; vd_drivers[i]; i++) {
        listing[nlisting++] = vd_drivers[i]->name;
    }
}

size_t vd_driver_count(void)
{
    pthread_once(&listing_once, build_listing);
    return nlisting;
}

const char *vd_driver_name(size_t i)
{
    return i < vd_driver_count() ? listing[i] : NULL;
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
