/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Options: the input as a "k=v,..." list (with and without an implied
 * key), as a json: filename, as a size, and what parsed through the typed
 * getters, prefix helpers, validation and the secret loader (base64,
 * decryption).  Secrets that name a file are skipped: the input must not
 * choose files to read.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const vd_opt_desc fuzz_table[] = {
    {.name = "driver", .type = VD_OPT_STRING},
    {.name = "size", .type = VD_OPT_SIZE},
    {.name = "cluster_size", .type = VD_OPT_SIZE},
    {.name = "lazy_refcounts", .type = VD_OPT_BOOL},
    {.name = "refcount_bits", .type = VD_OPT_NUMBER},
    {NULL},
};

static void exercise(vd_opts *o)
{
    static const char *const names[] = {"off", "metadata", "falloc", "full", NULL};
    static const char *const children[] = {"file.", "backing", NULL};
    const vd_opt_desc *const tables[] = {fuzz_table, NULL};
    vd_error *err = NULL;

    size_t n = vd_opts_count(o);
    for (size_t i = 0; i < n && i < 64; i++) {
        const char *k = vd_opts_key(o, i);
        bool b;
        uint64_t u;
        int e;
        vd_opts_get_bool(o, k, false, &b, &err);
        vd_error_free(err);
        err = NULL;
        vd_opts_get_u64(o, k, 0, &u, &err);
        vd_error_free(err);
        err = NULL;
        vd_opts_get_size(o, k, 0, &u, &err);
        vd_error_free(err);
        err = NULL;
        vd_opts_get_enum(o, k, names, 0, &e, &err);
        vd_error_free(err);
        err = NULL;
        if (strcmp(vd_opts_get(o, k), vd_opts_value(o, i)) != 0) {
            abort();
        }
    }
    vd_opts_validate(o, tables, children, "fuzz", &err);
    vd_error_free(err);
    err = NULL;

    vd_opts *c = vd_opts_clone(o);
    vd_opts *f = vd_opts_extract_prefix(c, "file");
    vd_opts_remove_prefix(c, "file");
    for (size_t i = 0; i < vd_opts_count(c); i++) {
        if (!strncmp(vd_opts_key(c, i), "file.", 5)) {
            abort();
        }
    }
    vd_opts_merge(c, f);
    vd_opts_free(f);
    vd_opts_free(c);

    /* the secret loader, with ids the registry already has so nothing new
     * is kept across inputs */
    const char *type = vd_opts_get(o, "qom-type");
    if (type && !strcmp(type, "secret") && !vd_opts_get(o, "file")) {
        vd_opts *s = vd_opts_clone(o);
        vd_opts_set(s, "id", "fuzz0");
        if (vd_opts_get(s, "keyid")) {
            vd_opts_set(s, "keyid", "fuzzkey");
        }
        if (vd_object_add_opts(s) == 0) {
            abort(); /* the id is taken */
        }
        vd_opts_free(s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool init;
    if (!init) {
        init = true;
        if (vd_object_add("secret,id=fuzz0,data=x") < 0 ||
            vd_object_add("secret,id=fuzzkey,data=0123456789abcdef0123456789abcdef") < 0) {
            abort();
        }
    }
    char *s = malloc(size + 6);
    if (!s) {
        return 0;
    }
    memcpy(s, "json:", 5);
    memcpy(s + 5, data, size);
    s[size + 5] = 0;
    const char *str = s + 5;

    vd_opts *o = vd_opts_new();
    if (vd_opts_parse(o, str, NULL) == 0) {
        exercise(o);
    }
    vd_opts_free(o);

    o = vd_opts_new();
    if (vd_opts_parse(o, str, "qom-type") == 0) {
        exercise(o);
    }
    vd_opts_free(o);

    o = vd_opts_new();
    vd_error *err = NULL;
    if (vd_opts_parse_json_filename(o, s, &err) == 0) {
        exercise(o);
    }
    vd_error_free(err);
    vd_opts_free(o);

    uint64_t v;
    if (vd_parse_size(str, &v) == 0 && v > INT64_MAX) {
        abort();
    }
    free(s);
    return 0;
}
