/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Linked into every driver module (module.h): the core functions the
 * protocol drivers call, on top of the table the library passes to the
 * module's entry.  The module's version script keeps all of these local,
 * so a module exports vd_module_entry only and needs no symbol of the
 * program that loads it.  Built with -DVD_MODULE_DRIVER=vd_drv_NAME.
 */
#include <stdarg.h>
#include <string.h>

#include "module.h"

#ifndef VD_MODULE_DRIVER
#error "build with -DVD_MODULE_DRIVER=vd_drv_NAME"
#endif

extern const vd_driver VD_MODULE_DRIVER;
static const vd_module_host *host;

__attribute__((visibility("default"))) const vd_driver *vd_module_entry(const vd_module_host *h);

const vd_driver *vd_module_entry(const vd_module_host *h)
{
    if (strcmp(h->abi, VD_MODULE_ABI) != 0 || h->size != sizeof(*h) ||
        h->driver_size != sizeof(vd_driver) || h->node_size != sizeof(vd_node)) {
        return NULL;
    }
    host = h;
    return &VD_MODULE_DRIVER;
}

void *vd_malloc(size_t n)
{
    return host->malloc(n);
}

void *vd_calloc(size_t n, size_t size)
{
    return host->calloc(n, size);
}

char *vd_strdup(const char *s)
{
    return host->strdup(s);
}

char *vd_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = host->vasprintf(fmt, ap);
    va_end(ap);
    return s;
}

int vd_uri_unescape(char *s)
{
    return host->uri_unescape(s);
}

const char *vd_prealloc_name(vd_prealloc p)
{
    return host->prealloc_name(p);
}

void vd_snapshot_list_free(vd_snapshot_info *list, size_t count)
{
    host->snapshot_list_free(list, count);
}

int vd_error_set(vd_error **errp, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = host->error_setv(errp, err, fmt, ap);
    va_end(ap);
    return r;
}

int vd_error_setg_errno(vd_error **errp, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = host->error_setg_errnov(errp, err, fmt, ap);
    va_end(ap);
    return r;
}

void vd_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    host->warnv(fmt, ap);
    va_end(ap);
}

vd_opts *vd_opts_new(void)
{
    return host->opts_new();
}

void vd_opts_free(vd_opts *opts)
{
    host->opts_free(opts);
}

int vd_opts_set(vd_opts *opts, const char *key, const char *value)
{
    return host->opts_set(opts, key, value);
}

const char *vd_opts_get(const vd_opts *opts, const char *key)
{
    return host->opts_get(opts, key);
}

size_t vd_opts_count(const vd_opts *opts)
{
    return host->opts_count(opts);
}

const char *vd_opts_key(const vd_opts *opts, size_t i)
{
    return host->opts_key(opts, i);
}

int vd_opts_get_u64(const vd_opts *opts, const char *key, uint64_t def, uint64_t *out,
                    vd_error **errp)
{
    return host->opts_get_u64(opts, key, def, out, errp);
}

int vd_opts_get_size(const vd_opts *opts, const char *key, uint64_t def, uint64_t *out,
                     vd_error **errp)
{
    return host->opts_get_size(opts, key, def, out, errp);
}

int vd_opts_get_enum(const vd_opts *opts, const char *key, const char *const *names, int def,
                     int *out, vd_error **errp)
{
    return host->opts_get_enum(opts, key, names, def, out, errp);
}

vd_opts *vd_opts_extract_prefix(const vd_opts *opts, const char *prefix)
{
    return host->opts_extract_prefix(opts, prefix);
}

int vd_opts_parse_json_filename(vd_opts *opts, const char *filename, vd_error **errp)
{
    return host->opts_parse_json_filename(opts, filename, errp);
}

int vd_secret_lookup(const char *id, uint8_t **data, size_t *len, vd_error **errp)
{
    return host->secret_lookup(id, data, len, errp);
}

int vd_secret_lookup_utf8(const char *id, uint8_t **data, size_t *len, vd_error **errp)
{
    return host->secret_lookup_utf8(id, data, len, errp);
}
