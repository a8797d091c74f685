/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Capability queries (vd_driver_get_info): what each driver of the table
 * can do, read from its vtable, so that the tools carry no list of format
 * names.  Built once, on first use, for the whole table; a driver module's
 * (drivers.c) when it is first asked for, which loads the module.
 */
#include <stdlib.h>

#include "internal.h"

static const char *const no_protocols[] = {NULL};
static const vd_opt_desc no_opts[] = {{NULL, 0, NULL, NULL}};
static const vd_opt_desc size_opt[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {NULL, 0, NULL, NULL},
};

static pthread_once_t infos_once = PTHREAD_ONCE_INIT;
static vd_driver_info *infos;
static size_t ninfos;

/* table plus "size" first when the table lacks it (qemu-img always lists
 * it); static storage for the life of the process */
static const vd_opt_desc *with_size(const vd_opt_desc *table)
{
    size_t n = 0;
    bool has_size = false;
    for (const vd_opt_desc *d = table; d && d->name; d++) {
        has_size |= !strcmp(d->name, "size");
        n++;
    }
    if (has_size) {
        return table;
    }
    vd_opt_desc *out = calloc(n + 2, sizeof(*out));
    if (!out) {
        return size_opt;
    }
    out[0] = size_opt[0];
    for (size_t i = 0; i < n; i++) {
        out[i + 1] = table[i];
    }
    return out;
}

static const char *kind_name(vd_driver_kind k)
{
    switch (k) {
    case VD_DRV_PROTOCOL:
        return "protocol";
    case VD_DRV_FORMAT:
        return "format";
    case VD_DRV_FILTER:
        return "filter";
    }
    return "format";
}

static void fill_info(const vd_driver *d, vd_driver_info *in)
{
    in->name = d->name;
    in->kind = kind_name(d->kind);
    in->can_create = d->create != NULL;
    in->can_compress = d->pwrite_compressed != NULL;
    in->has_bitmaps = d->bitmap_add != NULL;
    in->has_snapshots = d->snapshot_list != NULL;
    in->read_only = d->pwrite == NULL;
    in->supports_backing = d->supports_backing;
    in->can_amend = d->amend != NULL;
    in->can_check = d->check != NULL;
    in->can_measure = d->measure != NULL;
    in->can_resize = d->truncate != NULL || d->is_filter || d->kind == VD_DRV_FILTER;
    in->is_raw = (d->flags & VD_DRV_RAW_FORMAT) != 0;
    in->protocols = d->protocols ? d->protocols : no_protocols;
    in->create_opts = d->create ? with_size(d->create_opts) : no_opts;
    if (!d->amend) {
        in->amend_opts = no_opts;
    } else if (d->amend_opts) {
        in->amend_opts = d->amend_opts;
    } else {
        in->amend_opts = in->create_opts;
    }
    in->open_opts = d->open_opts ? d->open_opts : no_opts;
}

static void build_infos(void)
{
    size_t n = 0;
    while (vd_drivers[n]) {
        n++;
    }
    infos = calloc(n ? n : 1, sizeof(*infos));
    if (!infos) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        fill_info(vd_drivers[i], &infos[i]);
    }
    ninfos = n;
}

/* the loaded modules' infos, one slot per module name, kept for the life
 * of the process as the table's */
enum { MAX_MODULE_INFOS = 16 };
static pthread_mutex_t module_infos_lock = PTHREAD_MUTEX_INITIALIZER;
static vd_driver_info module_infos[MAX_MODULE_INFOS];
static const vd_driver *module_info_drv[MAX_MODULE_INFOS];

static const vd_driver_info *module_info(const char *name, bool *is_module)
{
    size_t m = 0;
    while (vd_driver_module_name(m) && strcmp(vd_driver_module_name(m), name) != 0) {
        m++;
    }
    if (!vd_driver_module_name(m) || m >= MAX_MODULE_INFOS) {
        return NULL;
    }
    *is_module = true;
    const vd_driver *d = vd_driver_find(name); /* loads the module */
    if (!d || (d->flags & VD_DRV_MODULE_MISSING)) {
        vd_error *err = NULL;
        if (d) {
            vd_module_missing_error(d, &err);
        }
        vd_set_public_error(ENOENT, "%s", err ? err->msg : "Unknown driver");
        vd_error_free(err);
        return NULL;
    }
    pthread_mutex_lock(&module_infos_lock);
    if (module_info_drv[m] != d) {
        fill_info(d, &module_infos[m]);
        module_info_drv[m] = d;
    }
    pthread_mutex_unlock(&module_infos_lock);
    return &module_infos[m];
}

const vd_driver_info *vd_driver_get_info(const char *name)
{
    pthread_once(&infos_once, build_infos);
    for (size_t i = 0; name && i < ninfos; i++) {
        if (!strcmp(infos[i].name, name)) {
            return &infos[i];
        }
    }
    bool is_module = false;
    const vd_driver_info *in = name ? module_info(name, &is_module) : NULL;
    if (is_module) {
        if (!in) {
            errno = ENOENT;
        }
        return in;
    }
    vd_set_public_error(ENOENT, "Unknown driver '%s'", name ? name : "");
    errno = ENOENT;
    return NULL;
}
