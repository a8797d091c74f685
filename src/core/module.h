/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Loadable driver modules (vdisk-NAME.so): the protocol drivers that need
 * a heavy external library (libssh, libiscsi, libgfapi, librbd) are built
 * as shared modules and dlopen'ed the first time a filename or a driver
 * option names them (drivers.c keeps the one table of module names).
 *
 * A module takes nothing from the program that loads it by symbol name:
 * the library hands it this table of the core functions the drivers call,
 * and src/core/module-shim.c, linked into every module, defines those
 * functions on top of it.  So a module works the same under the tools, a
 * program linked with the static libvdisk (no -rdynamic needed) and one
 * linked with libvdisk.so.  docs/design.md, "Driver modules".
 */
#ifndef VD_MODULE_H
#define VD_MODULE_H

#include <stdarg.h>

#include "internal.h"

/* the one symbol a module exports */
#define VD_MODULE_ENTRY "vd_module_entry"
/* a module and the library that loads it come from the same build */
#define VD_MODULE_ABI "vdisk-module-1 " VD_VERSION_STRING

typedef struct vd_module_host {
    const char *abi;    /* VD_MODULE_ABI */
    size_t size;        /* sizeof(vd_module_host) */
    size_t driver_size; /* sizeof(vd_driver) */
    size_t node_size;   /* sizeof(vd_node) */

    /* util */
    void *(*malloc)(size_t n);
    void *(*calloc)(size_t n, size_t size);
    char *(*strdup)(const char *s);
    char *(*vasprintf)(const char *fmt, va_list ap);
    int (*uri_unescape)(char *s);
    const char *(*prealloc_name)(vd_prealloc p);
    void (*snapshot_list_free)(vd_snapshot_info *list, size_t count);
    /* errors */
    int (*error_setv)(vd_error **errp, int err, const char *fmt, va_list ap);
    int (*error_setg_errnov)(vd_error **errp, int err, const char *fmt, va_list ap);
    void (*warnv)(const char *fmt, va_list ap);
    /* options */
    vd_opts *(*opts_new)(void);
    void (*opts_free)(vd_opts *opts);
    int (*opts_set)(vd_opts *opts, const char *key, const char *value);
    const char *(*opts_get)(const vd_opts *opts, const char *key);
    size_t (*opts_count)(const vd_opts *opts);
    const char *(*opts_key)(const vd_opts *opts, size_t i);
    int (*opts_get_u64)(const vd_opts *opts, const char *key, uint64_t def, uint64_t *out,
                        vd_error **errp);
    int (*opts_get_size)(const vd_opts *opts, const char *key, uint64_t def, uint64_t *out,
                         vd_error **errp);
    int (*opts_get_enum)(const vd_opts *opts, const char *key, const char *const *names,
                         int def, int *out, vd_error **errp);
    vd_opts *(*opts_extract_prefix)(const vd_opts *opts, const char *prefix);
    int (*opts_parse_json_filename)(vd_opts *opts, const char *filename, vd_error **errp);
    /* secrets (--object secret) */
    int (*secret_lookup)(const char *id, uint8_t **data, size_t *len, vd_error **errp);
    int (*secret_lookup_utf8)(const char *id, uint8_t **data, size_t *len, vd_error **errp);
} vd_module_host;

/* A module's entry: the driver it brings, or NULL when host does not match
 * the build the module comes from. */
typedef const vd_driver *vd_module_entry_fn(const vd_module_host *host);

/*
 * Load the module file NAME.so for driver: search the module directories
 * (module.c), dlopen, check.  The driver, or NULL with a one-line reason
 * in msg ("module vdisk-ssh.so not found (...)").
 */
const vd_driver *vd_module_load(const char *file, const char *driver, char *msg,
                                size_t msglen);
/* Whether module file NAME.so is in a module directory (no loading). */
bool vd_module_exists(const char *file);

#endif
