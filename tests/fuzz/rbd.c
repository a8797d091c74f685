/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The rbd filename parser (rbd:POOL[/NAMESPACE]/IMAGE[@SNAP][:KEY=VALUE...],
 * backslash escapes): the input is the filename (with "rbd:" put in front
 * when it lacks it), parsed through the driver's parse_filename, and what
 * it produced validated against the driver's option tables.  Nothing is
 * opened: no cluster is contacted.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const vd_driver *drv = vd_driver_find("rbd");
    if (!drv || !drv->parse_filename || size > 4096) {
        return 0;
    }
    char *name = malloc(size + 5);
    if (!name) {
        return 0;
    }
    size_t off = 0;
    if (size < 4 || memcmp(data, "rbd:", 4) != 0) {
        memcpy(name, "rbd:", 4);
        off = 4;
    }
    memcpy(name + off, data, size);
    name[off + size] = 0;

    vd_opts *o = vd_opts_new();
    vd_error *err = NULL;
    if (o && drv->parse_filename(name, o, &err) == 0) {
        /* every plain value is a piece of the input (the key/value pairs
         * are a JSON list, longer by its quoting) */
        for (size_t i = 0; i < vd_opts_count(o); i++) {
            if (vd_opts_key(o, i)[0] != '=' && strlen(vd_opts_value(o, i)) > size) {
                abort();
            }
        }
        const vd_opt_desc *const tables[] = {drv->open_opts, NULL};
        vd_error_free(err);
        err = NULL;
        vd_opts_validate(o, tables, drv->opt_prefixes, "rbd", &err);
    }
    vd_error_free(err);
    vd_opts_free(o);
    free(name);
    return 0;
}
