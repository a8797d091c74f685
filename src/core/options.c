/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Options: the flat ordered dictionary (vd_opts) every layer passes around,
 * its two text forms ("k=v,k2=v2" as QEMU's QemuOpts / qemu-img -o parse
 * them, and json:{...} filenames flattened as QEMU's qdict_flatten does),
 * sizes with suffixes (QEMU's qemu_strtosz), typed getters for drivers,
 * --object parsing and the "secret" object type (the registry itself is
 * src/core/object.c).
 *
 * Differences from QEMU, on purpose:
 *  - sizes above INT64_MAX fail with ERANGE (every QEMU caller rejects them
 *    afterwards anyway: "Must be between 0 and 9223372036854775807");
 *  - base64 secrets must be well formed (QEMU's glib decoder silently drops
 *    incomplete groups and accepts '=' anywhere);
 *  - JSON: a key reached twice through flattening ("file": {"filename"} and
 *    "file.filename") is an error instead of an unpredictable winner.
 */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <json-c/json.h>
#include <nettle/aes.h>
#include <nettle/base64.h>
#include <nettle/cbc.h>

#include "internal.h"

/* ------------------------------------------------------------ the dictionary */

typedef struct vd_opt_entry {
    char *key;
    char *value;
} vd_opt_entry;

struct vd_opts {
    vd_opt_entry *items;
    size_t count;
    size_t cap;
    /*
     * Open-addressing index into items (slot holds item index + 1, 0 is
     * empty) so that option strings with many keys (fuzzers, scripts)
     * stay linear instead of quadratic.  index_cap is 0 or a power of two
     * at least twice count.
     */
    uint32_t *index;
    size_t index_cap;
};

/* A hard cap on the number of keys: far above any real use, and it keeps
 * the index arithmetic within 32 bits. */
#define OPTS_MAX_KEYS (1u << 20)

static uint64_t opts_hash(const char *key)
{
    /* FNV-1a */
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

static int opts_reindex(vd_opts *opts, size_t want_cap)
{
    uint32_t *index = calloc(want_cap, sizeof(*index));
    if (!index) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < opts->count; i++) {
        size_t slot = opts_hash(opts->items[i].key) & (want_cap - 1);
        while (index[slot]) {
            slot = (slot + 1) & (want_cap - 1);
        }
        index[slot] = (uint32_t)(i + 1);
    }
    free(opts->index);
    opts->index = index;
    opts->index_cap = want_cap;
    return 0;
}

/* Index of key in items, or -1. */
static ptrdiff_t opts_find(const vd_opts *opts, const char *key)
{
    if (!opts || !key || !opts->index_cap) {
        return -1;
    }
    size_t mask = opts->index_cap - 1;
    for (size_t slot = opts_hash(key) & mask;; slot = (slot + 1) & mask) {
        uint32_t v = opts->index[slot];
        if (!v) {
            return -1;
        }
        if (!strcmp(opts->items[v - 1].key, key)) {
            return (ptrdiff_t)(v - 1);
        }
    }
}

/* Rebuild the index after entries moved.  Needs no memory when a new
 * table cannot be had: the old one is refilled in place. */
static void opts_rebuild_index(vd_opts *opts)
{
    if (!opts->index_cap || opts_reindex(opts, opts->index_cap) == 0) {
        return;
    }
    size_t mask = opts->index_cap - 1;
    memset(opts->index, 0, opts->index_cap * sizeof(*opts->index));
    for (size_t i = 0; i < opts->count; i++) {
        size_t slot = opts_hash(opts->items[i].key) & mask;
        while (opts->index[slot]) {
            slot = (slot + 1) & mask;
        }
        opts->index[slot] = (uint32_t)(i + 1);
    }
}

/* Delete the entries for which drop[i] is true, keeping the order. */
static void opts_compact(vd_opts *opts, const bool *drop)
{
    size_t j = 0;
    for (size_t i = 0; i < opts->count; i++) {
        if (drop[i]) {
            free(opts->items[i].key);
            free(opts->items[i].value);
        } else {
            opts->items[j++] = opts->items[i];
        }
    }
    opts->count = j;
    opts_rebuild_index(opts);
}

static int opts_delete(vd_opts *opts, const char *key)
{
    ptrdiff_t i = opts_find(opts, key);
    if (i < 0) {
        return 0;
    }
    free(opts->items[i].key);
    free(opts->items[i].value);
    memmove(&opts->items[i], &opts->items[i + 1],
            (opts->count - (size_t)i - 1) * sizeof(*opts->items));
    opts->count--;
    opts_rebuild_index(opts);
    return 0;
}

/* Set key to value (both copied); value NULL deletes.  0 or -errno. */
static int opts_set(vd_opts *opts, const char *key, const char *value)
{
    if (!opts || !key || !*key) {
        return -EINVAL;
    }
    if (!value) {
        return opts_delete(opts, key);
    }
    ptrdiff_t i = opts_find(opts, key);
    if (i >= 0) {
        char *v = strdup(value);
        if (!v) {
            return -ENOMEM;
        }
        free(opts->items[i].value);
        opts->items[i].value = v;
        return 0;
    }
    if (opts->count >= OPTS_MAX_KEYS) {
        return -E2BIG;
    }
    if (opts->count == opts->cap) {
        size_t ncap = opts->cap ? opts->cap * 2 : 8;
        vd_opt_entry *n = realloc(opts->items, ncap * sizeof(*n));
        if (!n) {
            return -ENOMEM;
        }
        opts->items = n;
        opts->cap = ncap;
    }
    if ((opts->count + 1) * 2 > opts->index_cap) {
        size_t ncap = opts->index_cap ? opts->index_cap * 2 : 16;
        int r = opts_reindex(opts, ncap);
        if (r < 0) {
            return r;
        }
    }
    char *k = strdup(key);
    char *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return -ENOMEM;
    }
    opts->items[opts->count].key = k;
    opts->items[opts->count].value = v;
    opts->count++;
    size_t mask = opts->index_cap - 1;
    size_t slot = opts_hash(k) & mask;
    while (opts->index[slot]) {
        slot = (slot + 1) & mask;
    }
    opts->index[slot] = (uint32_t)opts->count;
    return 0;
}

static int opts_merge(vd_opts *dst, const vd_opts *src)
{
    for (size_t i = 0; src && i < src->count; i++) {
        int r = opts_set(dst, src->items[i].key, src->items[i].value);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

vd_opts *vd_opts_new(void)
{
    vd_opts *opts = calloc(1, sizeof(*opts));
    if (!opts) {
        vd_set_public_error(ENOMEM, "Out of memory");
    }
    return opts;
}

void vd_opts_free(vd_opts *opts)
{
    if (!opts) {
        return;
    }
    for (size_t i = 0; i < opts->count; i++) {
        free(opts->items[i].key);
        free(opts->items[i].value);
    }
    free(opts->items);
    free(opts->index);
    free(opts);
}

vd_opts *vd_opts_clone(const vd_opts *opts)
{
    vd_opts *n = vd_opts_new();
    if (!n) {
        return NULL;
    }
    if (opts_merge(n, opts) < 0) {
        vd_opts_free(n);
        vd_set_public_error(ENOMEM, "Out of memory");
        return NULL;
    }
    return n;
}

int vd_opts_set(vd_opts *opts, const char *key, const char *value)
{
    int r = opts_set(opts, key, value);
    if (r == -EINVAL) {
        vd_set_public_error(EINVAL, "Invalid option name '%s'", key ? key : "(null)");
        return -1;
    }
    if (r < 0) {
        vd_set_public_error(r, "Cannot set option '%s': %s", key, strerror(-r));
        return -1;
    }
    return 0;
}

const char *vd_opts_get(const vd_opts *opts, const char *key)
{
    ptrdiff_t i = opts_find(opts, key);
    return i < 0 ? NULL : opts->items[i].value;
}

size_t vd_opts_count(const vd_opts *opts)
{
    return opts ? opts->count : 0;
}

const char *vd_opts_key(const vd_opts *opts, size_t i)
{
    return opts && i < opts->count ? opts->items[i].key : NULL;
}

const char *vd_opts_value(const vd_opts *opts, size_t i)
{
    return opts && i < opts->count ? opts->items[i].value : NULL;
}

int vd_opts_merge(vd_opts *dst, const vd_opts *src)
{
    if (!dst) {
        vd_set_public_error(EINVAL, "No options to merge into");
        return -1;
    }
    int r = opts_merge(dst, src);
    if (r < 0) {
        vd_set_public_error(r, "Cannot merge options: %s", strerror(-r));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------ "k=v,k2=v2" lists */

/*
 * Read a value up to the next single ',' (",," stands for one comma) into
 * a new string; *end points at the ',' or the terminating NUL.
 */
static char *opts_read_value(const char *p, const char **end)
{
    char *v = malloc(strlen(p) + 1);
    if (!v) {
        return NULL;
    }
    size_t n = 0;
    while (*p) {
        if (*p == ',') {
            if (p[1] != ',') {
                break;
            }
            p++;
        }
        v[n++] = *p++;
    }
    v[n] = 0;
    *end = p;
    return v;
}

/*
 * QemuOpts syntax, as qemu-img -o and --image-opts read it:
 *   - "key=value" elements separated by ',', ",," is a comma in a value;
 *     keys end at the first '=' or ',' (they cannot contain either);
 *   - the first element may lack "key=" when implied_key is given;
 *   - any other element without '=' is a flag: "name" means name=on and
 *     "noname" means name=off;
 *   - a later key replaces an earlier one.
 * qemu-img refuses an empty list, a leading ',' and a trailing single ','
 * ("Invalid option list"), and an empty key ("Invalid parameter ''"), so
 * this parser does too.
 */
static int opts_parse_list(vd_opts *out, const char *str, const char *implied_key,
                           bool allow_flags, vd_error **errp)
{
    if (!str) {
        return vd_error_set(errp, EINVAL, "Invalid option list: none given");
    }
    size_t len = strlen(str);
    if (len == 0) {
        return vd_error_set(errp, EINVAL, "Invalid option list: empty string");
    }
    if (str[0] == ',') {
        return vd_error_set(errp, EINVAL,
                            "Invalid option list '%s': it starts with a comma", str);
    }
    size_t trailing = 0;
    while (trailing < len && str[len - 1 - trailing] == ',') {
        trailing++;
    }
    if (trailing % 2) {
        return vd_error_set(errp, EINVAL,
                            "Invalid option list '%s': it ends with a comma "
                            "(write ',,' for a comma inside a value)",
                            str);
    }

    const char *p = str;
    bool first = true;
    while (*p) {
        size_t n = strcspn(p, "=,");
        char *key = NULL, *value = NULL;
        if (p[n] == '=') {
            key = strndup(p, n);
            value = opts_read_value(p + n + 1, &p);
        } else if (first && implied_key) {
            key = strdup(implied_key);
            value = opts_read_value(p, &p);
        } else if (!allow_flags) {
            /* keyval (--object) has no flags */
            return vd_error_set(errp, EINVAL, "Expected '=' after parameter '%.*s'", (int)n, p);
        } else {
            /* a flag: "name" or "noname" */
            if (n >= 2 && !strncmp(p, "no", 2)) {
                key = strndup(p + 2, n - 2);
                value = strdup("off");
            } else {
                key = strndup(p, n);
                value = strdup("on");
            }
            p += n;
        }
        if (!key || !value) {
            free(key);
            free(value);
            return vd_error_set(errp, ENOMEM, "Out of memory parsing options");
        }
        int r = 0;
        if (!*key) {
            r = vd_error_set(errp, EINVAL,
                             "Invalid option list '%s': an option has an empty name", str);
        } else if ((r = opts_set(out, key, value)) < 0) {
            r = vd_error_set(errp, r, "Cannot parse options '%s': %s", str, strerror(-r));
        }
        free(key);
        free(value);
        if (r < 0) {
            return r;
        }
        if (*p == ',') {
            p++;
        }
        first = false;
    }
    return 0;
}

int vd_opts_parse_err(vd_opts *opts, const char *str, const char *implied_key,
                      vd_error **errp)
{
    if (!opts) {
        return vd_error_set(errp, EINVAL, "No options to parse into");
    }
    /* Parse into a scratch dictionary so that a failure changes nothing. */
    vd_opts tmp = {0};
    int r = opts_parse_list(&tmp, str, implied_key, true, errp);
    if (r == 0) {
        r = opts_merge(opts, &tmp);
        if (r < 0) {
            vd_error_set(errp, r, "Out of memory parsing options");
        }
    }
    for (size_t i = 0; i < tmp.count; i++) {
        free(tmp.items[i].key);
        free(tmp.items[i].value);
    }
    free(tmp.items);
    free(tmp.index);
    return r;
}

int vd_opts_parse(vd_opts *opts, const char *str, const char *implied_key)
{
    vd_error *err = NULL;
    if (vd_opts_parse_err(opts, str, implied_key, &err) < 0) {
        vd_error_publish(err);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------- JSON */

static void opts_clear(vd_opts *opts)
{
    for (size_t i = 0; i < opts->count; i++) {
        free(opts->items[i].key);
        free(opts->items[i].value);
    }
    free(opts->items);
    free(opts->index);
    memset(opts, 0, sizeof(*opts));
}

#define JSON_ERR "Could not parse the JSON options: "

static int json_put(vd_opts *out, const char *key, const char *value, vd_error **errp)
{
    if (!*key) {
        return vd_error_set(errp, EINVAL, JSON_ERR "empty key");
    }
    if (opts_find(out, key) >= 0) {
        return vd_error_set(errp, EINVAL, JSON_ERR "key '%s' is given twice", key);
    }
    int r = opts_set(out, key, value);
    if (r < 0) {
        return vd_error_set(errp, r, JSON_ERR "%s", strerror(-r));
    }
    return 0;
}

/* True for "backing" and "x.backing": the one place QEMU gives null a
 * meaning ("no backing file"); it is kept as backing="" (which QEMU reads
 * the same way). */
static bool json_is_backing_key(const char *key)
{
    size_t n = strlen(key);
    return !strcmp(key, "backing") || (n > 8 && !strcmp(key + n - 8, ".backing"));
}

/* obj's member key, created as an object when missing; NULL when the
 * member exists with another type (a clash of "a" and "a.b"). */
static json_object *json_sub_object(json_object *obj, const char *key)
{
    json_object *sub = NULL;
    if (json_object_object_get_ex(obj, key, &sub)) {
        return json_object_is_type(sub, json_type_object) ? sub : NULL;
    }
    sub = json_object_new_object();
    if (sub && json_object_object_add(obj, key, sub) < 0) {
        return NULL;
    }
    return sub;
}

/* objects whose members are exactly "0".."n-1" become arrays (quorum's
 * children), as QEMU's json: filenames show lists */
static json_object *json_arrays(json_object *obj)
{
    if (!json_object_is_type(obj, json_type_object)) {
        return json_object_get(obj);
    }
    size_t n = (size_t)json_object_object_length(obj);
    bool numbered = n > 0;
    for (size_t i = 0; numbered && i < n; i++) {
        char k[24];
        snprintf(k, sizeof(k), "%zu", i);
        numbered = json_object_object_get_ex(obj, k, NULL);
    }
    json_object *out = numbered ? json_object_new_array() : json_object_new_object();
    if (!out) {
        return NULL;
    }
    if (numbered) {
        for (size_t i = 0; i < n; i++) {
            char k[24];
            json_object *v;
            snprintf(k, sizeof(k), "%zu", i);
            json_object_object_get_ex(obj, k, &v);
            json_object_array_add(out, json_arrays(v));
        }
    } else {
        json_object_object_foreach(obj, k, v)
        {
            json_object_object_add(out, k, json_arrays(v));
        }
    }
    return out;
}

/* QEMU's qobject_to_json layout: {"a": 1, "b": [2, 3]} */
static void json_emit(FILE *b, json_object *v)
{
    if (json_object_is_type(v, json_type_object)) {
        const char *sep = "";
        fputs("{", b);
        json_object_object_foreach(v, k, m)
        {
            json_object *ks = json_object_new_string(k);
            fputs(sep, b);
            fputs(json_object_to_json_string_ext(
                      ks, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), b);
            json_object_put(ks);
            fputs(": ", b);
            json_emit(b, m);
            sep = ", ";
        }
        fputs("}", b);
    } else if (json_object_is_type(v, json_type_array)) {
        fputs("[", b);
        for (size_t i = 0; i < json_object_array_length(v); i++) {
            fputs(i ? ", " : "", b);
            json_emit(b, json_object_array_get_idx(v, i));
        }
        fputs("]", b);
    } else {
        fputs(json_object_to_json_string_ext(
                  v, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE), b);
    }
}

char *vd_opts_json_filename(const vd_opts *opts, const char *driver, const char *child_key,
                            const char *child_json)
{
    json_object *root = json_object_new_object();
    char *ret = NULL;
    if (!root) {
        return NULL;
    }
    json_object_object_add(root, "driver", json_object_new_string(driver));
    for (size_t i = 0; opts && i < vd_opts_count(opts); i++) {
        const char *key = vd_opts_key(opts, i), *val = vd_opts_value(opts, i);
        if (!val || !strcmp(key, "driver") || (child_key && !strcmp(key, child_key))) {
            continue;
        }
        char *path = strdup(key);
        if (!path) {
            goto out;
        }
        json_object *at = root;
        char *part = path, *dot;
        while (at && (dot = strchr(part, '.'))) {
            *dot = '\0';
            at = json_sub_object(at, part);
            part = dot + 1;
        }
        if (at && !json_object_object_get_ex(at, part, NULL)) {
            json_object_object_add(at, part, json_object_new_string(val));
        }
        free(path);
    }
    if (child_key && child_json) {
        json_object *child = NULL;
        if (!strncmp(child_json, "json:", 5)) {
            child = json_tokener_parse(child_json + 5);
        }
        if (!child) {
            child = json_object_new_string(child_json);
        }
        json_object_object_add(root, child_key, child);
    }
    json_object *shaped = json_arrays(root);
    if (shaped) {
        size_t len = 0;
        FILE *b = open_memstream(&ret, &len);
        if (b) {
            fputs("json:", b);
            json_emit(b, shaped);
            if (fclose(b) != 0) {
                free(ret);
                ret = NULL;
            }
        }
        json_object_put(shaped);
    }
out:
    json_object_put(root);
    return ret;
}

/*
 * Flatten obj into out under key (NULL at the top).  The shapes follow
 * qdict_flatten plus QemuOpts' conversion of scalars: objects give
 * "key.sub", arrays "key.0", "key.1"; booleans "on"/"off"; numbers in
 * decimal; null means "not given".  json-c bounds the nesting depth.
 */
static int json_flatten(vd_opts *out, const char *key, json_object *obj, vd_error **errp)
{
    char buf[64];
    switch (json_object_get_type(obj)) {
    case json_type_object: {
        if (key && json_object_object_length(obj) == 0) {
            return vd_error_set(errp, EINVAL, JSON_ERR "'%s' is an empty object", key);
        }
        json_object_object_foreach(obj, k, v)
        {
            char *sub = key ? vd_asprintf("%s.%s", key, k) : strdup(k);
            if (!sub) {
                return vd_error_set(errp, ENOMEM, JSON_ERR "out of memory");
            }
            int r = json_flatten(out, sub, v, errp);
            free(sub);
            if (r < 0) {
                return r;
            }
        }
        return 0;
    }
    case json_type_array: {
        size_t n = json_object_array_length(obj);
        if (n == 0) {
            return vd_error_set(errp, EINVAL, JSON_ERR "'%s' is an empty array", key);
        }
        for (size_t i = 0; i < n; i++) {
            char *sub = vd_asprintf("%s.%zu", key, i);
            if (!sub) {
                return vd_error_set(errp, ENOMEM, JSON_ERR "out of memory");
            }
            int r = json_flatten(out, sub, json_object_array_get_idx(obj, i), errp);
            free(sub);
            if (r < 0) {
                return r;
            }
        }
        return 0;
    }
    case json_type_string: {
        const char *s = json_object_get_string(obj);
        size_t len = (size_t)json_object_get_string_len(obj);
        if (memchr(s, 0, len)) {
            return vd_error_set(errp, EINVAL, JSON_ERR "the value of '%s' contains a NUL character",
                                key);
        }
        return json_put(out, key, s, errp);
    }
    case json_type_boolean:
        return json_put(out, key, json_object_get_boolean(obj) ? "on" : "off", errp);
    case json_type_int:
        /* json-c prints int64 and uint64 values exactly. */
        return json_put(out, key, json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN),
                        errp);
    case json_type_double: {
        double d = json_object_get_double(obj);
        if (!isfinite(d)) {
            return vd_error_set(errp, EINVAL, JSON_ERR "the value of '%s' is not a finite number",
                                key);
        }
        /* QEMU prints floating point numbers with "%.17g" */
        snprintf(buf, sizeof(buf), "%.17g", d);
        return json_put(out, key, buf, errp);
    }
    case json_type_null:
        if (json_is_backing_key(key)) {
            return json_put(out, key, "", errp);
        }
        return 0;
    }
    return vd_error_set(errp, EINVAL, JSON_ERR "unexpected value for '%s'", key);
}

static int json_parse_into(vd_opts *opts, const char *json, vd_error **errp)
{
    if (!opts || !json) {
        return vd_error_set(errp, EINVAL, JSON_ERR "no input");
    }
    size_t len = strlen(json);
    if (len > INT32_MAX) {
        return vd_error_set(errp, EINVAL, JSON_ERR "input too long");
    }
    json_tokener *tok = json_tokener_new();
    if (!tok) {
        return vd_error_set(errp, ENOMEM, JSON_ERR "out of memory");
    }
    json_object *obj = json_tokener_parse_ex(tok, json, (int)len);
    enum json_tokener_error jerr = json_tokener_get_error(tok);
    size_t end = json_tokener_get_parse_end(tok);
    json_tokener_free(tok);

    int r = 0;
    if (!obj) {
        if (jerr == json_tokener_continue || jerr == json_tokener_success) {
            r = vd_error_set(errp, EINVAL, JSON_ERR "unexpected end of input");
        } else {
            r = vd_error_set(errp, EINVAL, JSON_ERR "%s at offset %zu",
                             json_tokener_error_desc(jerr), end);
        }
        return r;
    }
    for (size_t i = end; i < len; i++) {
        if (!isspace((unsigned char)json[i])) {
            json_object_put(obj);
            return vd_error_set(errp, EINVAL,
                                JSON_ERR "Expecting at most one JSON value (extra text at "
                                         "offset %zu)",
                                i);
        }
    }
    if (!json_object_is_type(obj, json_type_object)) {
        json_object_put(obj);
        return vd_error_set(errp, EINVAL, "Invalid JSON object given");
    }

    vd_opts tmp = {0};
    r = json_flatten(&tmp, NULL, obj, errp);
    json_object_put(obj);
    if (r == 0 && (r = opts_merge(opts, &tmp)) < 0) {
        vd_error_set(errp, r, JSON_ERR "out of memory");
    }
    opts_clear(&tmp);
    return r;
}

int vd_opts_parse_json(vd_opts *opts, const char *json)
{
    vd_error *err = NULL;
    if (json_parse_into(opts, json, &err) < 0) {
        vd_error_publish(err);
        return -1;
    }
    return 0;
}

int vd_opts_parse_json_filename(vd_opts *opts, const char *filename, vd_error **errp)
{
    if (!filename || strncmp(filename, "json:", 5) != 0) {
        return vd_error_set(errp, EINVAL, "'%s' is not a json: filename",
                            filename ? filename : "(null)");
    }
    return json_parse_into(opts, filename + 5, errp);
}

/* ------------------------------------------------------------------- sizes */

static locale_t c_locale;

static void size_locale_init(void)
{
    c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

static locale_t size_c_locale(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, size_locale_init);
    return c_locale;
}

static uint64_t size_suffix_mul(char c)
{
    switch (toupper((unsigned char)c)) {
    case 'B':
        return 1;
    case 'K':
        return 1ull << 10;
    case 'M':
        return 1ull << 20;
    case 'G':
        return 1ull << 30;
    case 'T':
        return 1ull << 40;
    case 'P':
        return 1ull << 50;
    case 'E':
        return 1ull << 60;
    }
    return 0;
}

/*
 * qemu_strtosz: leading white space and '+' are accepted (strtoull's rules),
 * '-' is not; "0x" introduces hex (no fraction; a suffix is still taken,
 * which QEMU 7.2 deprecates but accepts); a decimal fraction needs a
 * suffix other than B ("1.5" and "0.5b" fail, "1.0" and "1." are 1); an
 * exponent ("1e3") fails; the result is rounded to the nearest byte.
 * 0, -EINVAL or -ERANGE.
 */
static int size_parse(const char *str, uint64_t *out)
{
    const char *p = str;
    if (!p) {
        return -EINVAL;
    }
    while (isspace((unsigned char)*p)) {
        p++;
    }
    if (*p == '+') {
        p++;
    }
    if (!isdigit((unsigned char)*p)) {
        return -EINVAL;
    }

    uint64_t val = 0, valf = 0;
    bool overflow = false;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        p += 2;
        if (!isxdigit((unsigned char)*p)) {
            return -EINVAL;
        }
        for (; isxdigit((unsigned char)*p); p++) {
            unsigned d = isdigit((unsigned char)*p) ? (unsigned)(*p - '0')
                                                    : (unsigned)(toupper((unsigned char)*p) - 'A' + 10);
            overflow |= vd_mul_overflow(val, 16, &val) || vd_add_overflow(val, d, &val);
        }
        if (*p == '.') {
            return -EINVAL;
        }
    } else {
        for (; isdigit((unsigned char)*p); p++) {
            overflow |= vd_mul_overflow(val, 10, &val) ||
                        vd_add_overflow(val, (uint64_t)(*p - '0'), &val);
        }
    }
    /* QEMU stops at an integer that overflows: anything after it makes
     * the input invalid rather than too large ("99999999999999999999k"). */
    if (overflow) {
        return *p ? -EINVAL : -ERANGE;
    }
    if (*p == '.') {
        /* QEMU converts the fraction with strtod; doing the same (in
         * the C locale, whatever the application's) gives the same
         * rounding for P and E multiples.  An exponent is refused,
         * as QEMU does; an 'e' right after the digits is the suffix. */
        const char *f = p++;
        while (isdigit((unsigned char)*p)) {
            p++;
        }
        if (p > f + 1) {
            char *fend;
            locale_t loc = size_c_locale();
            double fraction = loc ? strtod_l(f, &fend, loc) : strtod(f, &fend);
            if (fend != p) {
                return -EINVAL;
            }
            if (fraction >= 1.0) {
                valf = UINT64_MAX;
            } else if (fraction > 0) {
                valf = (uint64_t)(fraction * 0x1p64);
            }
        }
    }

    uint64_t mul = size_suffix_mul(*p);
    if (mul) {
        p++;
    } else {
        mul = 1;
    }
    if (*p) {
        return -EINVAL;
    }
    if (mul == 1 && valf) {
        return -EINVAL;
    }
    unsigned __int128 r = (unsigned __int128)val * mul;
    r += (((unsigned __int128)valf * mul) + (1ull << 63)) >> 64;
    if (r > INT64_MAX) {
        return -ERANGE;
    }
    *out = (uint64_t)r;
    return 0;
}

/* QEMU's words for a value of the wrong type (util/qemu-option.c), the
 * size's hint included: scripts and the iotests match them. */
static int bool_error(vd_error **errp, const char *key)
{
    return vd_error_set(errp, EINVAL, "Parameter '%s' expects 'on' or 'off'", key);
}

static int number_error(vd_error **errp, const char *key)
{
    return vd_error_set(errp, EINVAL, "Parameter '%s' expects a number", key);
}

static int size_error(vd_error **errp, const char *key)
{
    int r = vd_error_set(errp, EINVAL, "Parameter '%s' expects a non-negative number below 2^64",
                         key);
    vd_error_append_hint(errp, "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, "
                               "tera-, peta-\nand exabytes, respectively.\n");
    return r;
}

int vd_parse_size(const char *str, uint64_t *out)
{
    uint64_t v;
    int r = size_parse(str, &v);
    if (r == -ERANGE) {
        vd_set_public_error(ERANGE, "Size '%s' is too large (the limit is 8 EiB - 1)", str);
        return -1;
    }
    if (r < 0) {
        vd_set_public_error(EINVAL,
                            "Invalid size '%s': expected a number with an optional "
                            "k, M, G, T, P or E suffix",
                            str ? str : "(null)");
        return -1;
    }
    *out = v;
    return 0;
}

/* ------------------------------------------------------------ typed getters */

int vd_opts_get_bool(const vd_opts *opts, const char *key, bool def, bool *out,
                     vd_error **errp)
{
    const char *v = vd_opts_get(opts, key);
    if (!v) {
        *out = def;
        return 0;
    }
    int b = vd_parse_bool(v);
    if (b < 0) {
        return bool_error(errp, key);
    }
    *out = b;
    return 0;
}

/* qemu_strtou64(base 0): decimal, 0x hex or 0 octal; a negative number
 * wraps around as strtoull's does ("-1" is 2^64 - 1, refused by the
 * option's own range check with its own message, iotest 112).  0 or
 * -EINVAL / -ERANGE. */
static int number_parse(const char *s, uint64_t *out)
{
    const char *p = s;
    while (isspace((unsigned char)*p)) {
        p++;
    }
    if (!*p) {
        return -EINVAL;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 0);
    if (end == p || *end) {
        return -EINVAL;
    }
    if (errno == ERANGE) {
        return -ERANGE;
    }
    *out = v;
    return 0;
}

int vd_opts_get_u64(const vd_opts *opts, const char *key, uint64_t def, uint64_t *out,
                    vd_error **errp)
{
    const char *v = vd_opts_get(opts, key);
    if (!v) {
        *out = def;
        return 0;
    }
    int r = number_parse(v, out);
    if (r == -ERANGE) {
        return vd_error_set(errp, ERANGE, "Value '%s' is too large for parameter '%s'", v, key);
    }
    if (r < 0) {
        return number_error(errp, key);
    }
    return 0;
}

int vd_opts_get_size(const vd_opts *opts, const char *key, uint64_t def, uint64_t *out,
                     vd_error **errp)
{
    const char *v = vd_opts_get(opts, key);
    if (!v) {
        *out = def;
        return 0;
    }
    int r = size_parse(v, out);
    if (r == -ERANGE) {
        return vd_error_set(errp, ERANGE, "Value '%s' is out of range for parameter '%s'", v,
                            key);
    }
    if (r < 0) {
        return size_error(errp, key);
    }
    return 0;
}

int vd_opts_get_enum(const vd_opts *opts, const char *key, const char *const *names,
                     int def, int *out, vd_error **errp)
{
    const char *v = vd_opts_get(opts, key);
    if (!v) {
        *out = def;
        return 0;
    }
    for (int i = 0; names && names[i]; i++) {
        if (!strcmp(names[i], v)) {
            *out = i;
            return 0;
        }
    }
    char list[512] = "";
    size_t n = 0;
    for (int i = 0; names && names[i] && n < sizeof(list); i++) {
        int w = snprintf(list + n, sizeof(list) - n, "%s'%s'", i ? ", " : "", names[i]);
        if (w < 0) {
            break;
        }
        n += (size_t)w;
    }
    return vd_error_set(errp, EINVAL, "Parameter '%s' does not accept value '%s' (expected %s)",
                        key, v, list);
}

/* ------------------------------------------------------------ prefixes */

/* Length of prefix without a trailing '.' (callers may write either). */
static size_t prefix_len(const char *prefix)
{
    size_t n = strlen(prefix);
    if (n && prefix[n - 1] == '.') {
        n--;
    }
    return n;
}

static bool key_below(const char *key, const char *prefix, size_t n)
{
    return !strncmp(key, prefix, n) && key[n] == '.';
}

vd_opts *vd_opts_extract_prefix(const vd_opts *opts, const char *prefix)
{
    vd_opts *out = vd_opts_new();
    if (!out) {
        return NULL;
    }
    size_t n = prefix_len(prefix);
    for (size_t i = 0; opts && i < opts->count; i++) {
        const char *k = opts->items[i].key;
        if (key_below(k, prefix, n) && k[n + 1] &&
            opts_set(out, k + n + 1, opts->items[i].value) < 0) {
            vd_opts_free(out);
            vd_set_public_error(ENOMEM, "Out of memory");
            return NULL;
        }
    }
    return out;
}

void vd_opts_remove_prefix(vd_opts *opts, const char *prefix)
{
    if (!opts || !opts->count) {
        return;
    }
    size_t n = prefix_len(prefix);
    bool *drop = calloc(opts->count, sizeof(*drop));
    if (!drop) {
        /* No memory for the batch: delete one by one (quadratic but
         * correct). */
        for (size_t i = 0; i < opts->count;) {
            if (key_below(opts->items[i].key, prefix, n)) {
                opts_delete(opts, opts->items[i].key);
            } else {
                i++;
            }
        }
        return;
    }
    bool any = false;
    for (size_t i = 0; i < opts->count; i++) {
        drop[i] = key_below(opts->items[i].key, prefix, n);
        any |= drop[i];
    }
    if (any) {
        opts_compact(opts, drop);
    }
    free(drop);
}

/* ------------------------------------------------------------ validation */

static int validate_value(const vd_opt_desc *d, const char *value, vd_error **errp)
{
    uint64_t u;
    int r;
    switch (d->type) {
    case VD_OPT_BOOL:
        if (vd_parse_bool(value) < 0) {
            return bool_error(errp, d->name);
        }
        break;
    case VD_OPT_NUMBER:
        r = number_parse(value, &u);
        if (r == -ERANGE) {
            return vd_error_set(errp, ERANGE, "Value '%s' is too large for parameter '%s'", value,
                                d->name);
        }
        if (r < 0) {
            return number_error(errp, d->name);
        }
        break;
    case VD_OPT_SIZE:
        r = size_parse(value, &u);
        if (r == -ERANGE) {
            return vd_error_set(errp, ERANGE, "Value '%s' is out of range for parameter '%s'",
                                value, d->name);
        }
        if (r < 0) {
            return size_error(errp, d->name);
        }
        break;
    case VD_OPT_STRING:
        break;
    }
    return 0;
}

int vd_opts_validate(const vd_opts *opts, const vd_opt_desc *const *tables,
                     const char *const *child_prefixes, const char *what,
                     vd_error **errp)
{
    for (size_t i = 0; opts && i < opts->count; i++) {
        const char *key = opts->items[i].key;
        const vd_opt_desc *found = NULL;
        for (size_t t = 0; tables && tables[t] && !found; t++) {
            for (const vd_opt_desc *d = tables[t]; d->name; d++) {
                if (!strcmp(d->name, key)) {
                    found = d;
                    break;
                }
            }
        }
        if (found) {
            int r = validate_value(found, opts->items[i].value, errp);
            if (r < 0) {
                return r;
            }
            continue;
        }
        bool child = false;
        for (size_t c = 0; child_prefixes && child_prefixes[c] && !child; c++) {
            size_t n = prefix_len(child_prefixes[c]);
            /* "file.x" belongs to the child, and so does "file" itself (a
             * reference or, for backing, "" meaning none). */
            child = key_below(key, child_prefixes[c], n) ||
                    (strlen(key) == n && !strncmp(key, child_prefixes[c], n));
        }
        if (!child) {
            if (what && *what) {
                return vd_error_set(errp, EINVAL, "Invalid parameter '%s' for %s", key, what);
            }
            return vd_error_set(errp, EINVAL, "Invalid parameter '%s'", key);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ objects */

/* A secret object: the decoded bytes, NUL-terminated, with a reference
 * count so that a lookup can copy them while another thread deletes it. */
typedef struct secret_obj {
    int refs;
    uint8_t *data;
    size_t len;
} secret_obj;

/* Largest secret file read (keys and passphrases are tiny). */
#define SECRET_FILE_MAX (16u << 20)

static const char base64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";

static void wipe_free(void *p, size_t len)
{
    if (p) {
        explicit_bzero(p, len);
        free(p);
    }
}

/* Decode base64 text of len bytes: QEMU's character check, then nettle's
 * strict decoder.  Returns a malloc'ed buffer (one spare NUL byte). */
static int base64_decode(const char *in, size_t len, uint8_t **out, size_t *outlen,
                         vd_error **errp)
{
    if (memchr(in, 0, len)) {
        return vd_error_set(errp, EINVAL, "Base64 data contains embedded NUL characters");
    }
    for (size_t i = 0; i < len; i++) {
        if (!in[i] || !strchr(base64_chars, in[i])) {
            return vd_error_set(errp, EINVAL, "Base64 data contains invalid characters");
        }
    }
    uint8_t *buf = malloc(BASE64_DECODE_LENGTH(len) + 1);
    if (!buf) {
        return vd_error_set(errp, ENOMEM, "Out of memory decoding base64 data");
    }
    struct base64_decode_ctx ctx;
    size_t n = BASE64_DECODE_LENGTH(len);
    base64_decode_init(&ctx);
    if (!base64_decode_update(&ctx, &n, buf, len, in) || !base64_decode_final(&ctx)) {
        wipe_free(buf, BASE64_DECODE_LENGTH(len) + 1);
        return vd_error_set(errp, EINVAL, "Base64 data is not valid");
    }
    buf[n] = 0;
    *out = buf;
    *outlen = n;
    return 0;
}

static int read_secret_file(const char *path, uint8_t **out, size_t *outlen, vd_error **errp)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return vd_error_setg_errno(errp, errno, "Unable to read %s", path);
    }
    size_t cap = 256, n = 0;
    uint8_t *buf = malloc(cap + 1);
    int r = 0;
    while (buf) {
        if (n == cap) {
            if (cap >= SECRET_FILE_MAX) {
                r = vd_error_set(errp, EFBIG, "Unable to read %s: a secret file may hold at "
                                              "most %u bytes", path, SECRET_FILE_MAX);
                break;
            }
            uint8_t *nb = malloc(cap * 2 + 1);
            if (!nb) {
                break;
            }
            memcpy(nb, buf, n);
            wipe_free(buf, cap + 1);
            buf = nb;
            cap *= 2;
        }
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            r = vd_error_setg_errno(errp, errno, "Unable to read %s", path);
            break;
        }
        if (got == 0) {
            close(fd);
            buf[n] = 0;
            *out = buf;
            *outlen = n;
            return 0;
        }
        n += (size_t)got;
    }
    close(fd);
    if (!buf) {
        return vd_error_set(errp, ENOMEM, "Out of memory reading %s", path);
    }
    wipe_free(buf, cap + 1);
    return r < 0 ? r : vd_error_set(errp, ENOMEM, "Out of memory reading %s", path);
}

/*
 * An encrypted secret (keyid=, iv=), as QEMU's secret object decrypts it:
 * AES-256-CBC with the 32-byte secret keyid and a base64 16-byte iv, the
 * input base64 when format=base64, then the trailing pad count removed.
 */
static int secret_decrypt(const char *keyid, const char *iv_b64, bool base64,
                          const uint8_t *in, size_t inlen, uint8_t **out, size_t *outlen,
                          vd_error **errp)
{
    uint8_t *key = NULL, *iv = NULL, *ct = NULL;
    size_t keylen = 0, ivlen = 0, ctlen = 0;
    int r = vd_secret_lookup(keyid, &key, &keylen, errp);
    if (r < 0) {
        return r;
    }
    if (keylen != AES256_KEY_SIZE) {
        r = vd_error_set(errp, EINVAL, "Key should be 32 bytes in length");
        goto out;
    }
    if (!iv_b64) {
        r = vd_error_set(errp, EINVAL, "IV is required to decrypt secret");
        goto out;
    }
    r = base64_decode(iv_b64, strlen(iv_b64), &iv, &ivlen, errp);
    if (r < 0) {
        goto out;
    }
    if (ivlen != AES_BLOCK_SIZE) {
        r = vd_error_set(errp, EINVAL, "IV should be 16 bytes in length not %zu", ivlen);
        goto out;
    }
    if (base64) {
        r = base64_decode((const char *)in, inlen, &ct, &ctlen, errp);
        if (r < 0) {
            goto out;
        }
        in = ct;
        inlen = ctlen;
    }
    if (inlen == 0 || inlen % AES_BLOCK_SIZE) {
        r = vd_error_set(errp, EINVAL,
                         "Encrypted secret length %zu is not a multiple of the block size 16",
                         inlen);
        goto out;
    }
    uint8_t *plain = malloc(inlen + 1);
    if (!plain) {
        r = vd_error_set(errp, ENOMEM, "Out of memory decrypting secret");
        goto out;
    }
    struct aes256_ctx aes;
    aes256_set_decrypt_key(&aes, key);
    cbc_decrypt(&aes, (nettle_cipher_func *)aes256_decrypt, AES_BLOCK_SIZE, iv, inlen, plain,
                in);
    explicit_bzero(&aes, sizeof(aes));
    uint8_t pad = plain[inlen - 1];
    if (pad > AES_BLOCK_SIZE) {
        wipe_free(plain, inlen + 1);
        r = vd_error_set(errp, EINVAL,
                         "Incorrect number of padding bytes (%d) found on decrypted data",
                         (int)pad);
        goto out;
    }
    *outlen = inlen - pad;
    plain[*outlen] = 0;
    *out = plain;
    r = 0;
out:
    wipe_free(key, keylen + 1);
    wipe_free(iv, ivlen + 1);
    wipe_free(ct, ctlen + 1);
    return r;
}

static int secret_load(const vd_opts *props, uint8_t **out, size_t *outlen, vd_error **errp)
{
    static const char *const formats[] = {"raw", "base64", NULL};
    const char *data = vd_opts_get(props, "data");
    const char *file = vd_opts_get(props, "file");
    const char *keyid = vd_opts_get(props, "keyid");
    int fmt;
    int r = vd_opts_get_enum(props, "format", formats, 0, &fmt, errp);
    if (r < 0) {
        return r;
    }
    if (data && file) {
        return vd_error_set(errp, EINVAL, "'file' and 'data' are mutually exclusive");
    }
    if (!data && !file) {
        return vd_error_set(errp, EINVAL, "Either 'file' or 'data' must be provided");
    }

    uint8_t *in = NULL;
    size_t inlen = 0;
    if (file) {
        r = read_secret_file(file, &in, &inlen, errp);
        if (r < 0) {
            return r;
        }
    } else {
        in = (uint8_t *)strdup(data);
        if (!in) {
            return vd_error_set(errp, ENOMEM, "Out of memory");
        }
        inlen = strlen(data);
    }

    if (keyid) {
        r = secret_decrypt(keyid, vd_opts_get(props, "iv"), fmt == 1, in, inlen, out, outlen,
                           errp);
        wipe_free(in, inlen + 1);
        return r;
    }
    if (fmt == 1) {
        r = base64_decode((const char *)in, inlen, out, outlen, errp);
        wipe_free(in, inlen + 1);
        return r;
    }
    *out = in;
    *outlen = inlen;
    return 0;
}

static void secret_unref(void *obj)
{
    secret_obj *sec = obj;
    if (sec && __atomic_sub_fetch(&sec->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        wipe_free(sec->data, sec->len + 1);
        free(sec);
    }
}

static void *secret_ref(void *obj)
{
    secret_obj *sec = obj;
    __atomic_add_fetch(&sec->refs, 1, __ATOMIC_ACQ_REL);
    return sec;
}

static int secret_add(const char *id, const vd_opts *props, void **obj, vd_error **errp)
{
    secret_obj *sec = calloc(1, sizeof(*sec));
    if (!sec) {
        return vd_error_set(errp, ENOMEM, "Out of memory");
    }
    /* Loaded now, as QEMU does, so that errors show at --object time. */
    int r = secret_load(props, &sec->data, &sec->len, errp);
    if (r < 0) {
        vd_error_prepend(errp, "Secret '%s': ", id);
        free(sec);
        return r;
    }
    sec->refs = 1;
    *obj = sec;
    return 0;
}

static const vd_opt_desc secret_props[] = {
    {"data", VD_OPT_STRING, "the secret itself", NULL},
    {"file", VD_OPT_STRING, "file holding the secret", NULL},
    {"format", VD_OPT_STRING, "raw or base64", "raw"},
    {"keyid", VD_OPT_STRING, "id of a secret that encrypts this one (AES-256-CBC)", NULL},
    {"iv", VD_OPT_STRING, "base64 initialisation vector of the encryption", NULL},
    {NULL, 0, NULL, NULL},
};

/* QEMU's "secret" object type (registered in drivers.c). */
const vd_object_type vd_obj_secret = {
    .type = "secret",
    .props = secret_props,
    .add = secret_add,
    .del = secret_unref,
    .ref = secret_ref,
};

int vd_object_add_opts(const vd_opts *opts)
{
    vd_error *err = NULL;
    if (!opts) {
        vd_set_public_error(EINVAL, "No object options given");
        return -1;
    }
    if (vd_object_add_parsed(opts, &err) < 0) {
        vd_error_publish(err);
        return -1;
    }
    return 0;
}

int vd_object_add(const char *spec)
{
    vd_error *err = NULL;
    vd_opts tmp = {0};
    int r;
    const char *p = spec ? spec : "";
    while (isspace((unsigned char)*p)) {
        p++;
    }
    /* --object takes a JSON object too, as QEMU's does */
    if (*p == '{') {
        r = json_parse_into(&tmp, p, &err);
    } else {
        r = opts_parse_list(&tmp, spec, "qom-type", false, &err);
    }
    if (r == 0) {
        r = vd_object_add_parsed(&tmp, &err);
    }
    /* the parsed text may hold the secret itself */
    for (size_t i = 0; i < tmp.count; i++) {
        explicit_bzero(tmp.items[i].value, strlen(tmp.items[i].value));
    }
    opts_clear(&tmp);
    if (r < 0) {
        vd_error_publish(err);
        return -1;
    }
    return 0;
}

int vd_secret_lookup(const char *id, uint8_t **data, size_t *len, vd_error **errp)
{
    if (!id) {
        return vd_error_set(errp, EINVAL, "No secret id given");
    }
    const vd_object_type *type = NULL;
    void *obj = vd_object_find(id, &type, true);
    if (!obj) {
        return vd_error_set(errp, ENOENT, "No secret with id '%s'", id);
    }
    if (type != &vd_obj_secret) {
        if (type->ref) {
            type->del(obj); /* the reference find took */
        }
        return vd_error_set(errp, EINVAL, "Object '%s' is not a secret", id);
    }
    secret_obj *sec = obj;
    int r = 0;
    uint8_t *copy = malloc(sec->len + 1);
    if (!copy) {
        r = vd_error_set(errp, ENOMEM, "Out of memory");
    } else {
        memcpy(copy, sec->data, sec->len + 1);
        *data = copy;
        *len = sec->len;
    }
    secret_unref(sec);
    return r;
}

/*
 * Whether len bytes are text as glib's g_utf8_validate takes it with a
 * length: well-formed UTF-8 (no overlong form, no surrogate, nothing past
 * U+10FFFF, no truncated sequence) without a NUL byte.
 */
static bool is_utf8_text(const uint8_t *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint8_t c = p[i];
        if (c == 0) {
            return false;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t more;
        uint32_t cp, least;
        if ((c & 0xe0) == 0xc0) {
            more = 1, cp = c & 0x1fu, least = 0x80;
        } else if ((c & 0xf0) == 0xe0) {
            more = 2, cp = c & 0x0fu, least = 0x800;
        } else if ((c & 0xf8) == 0xf0) {
            more = 3, cp = c & 0x07u, least = 0x10000;
        } else {
            return false;
        }
        if (len - i - 1 < more) {
            return false;
        }
        for (size_t k = 1; k <= more; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (p[i + k] & 0x3fu);
        }
        if (cp < least || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += more + 1;
    }
    return true;
}

int vd_secret_lookup_utf8(const char *id, uint8_t **data, size_t *len, vd_error **errp)
{
    int r = vd_secret_lookup(id, data, len, errp);
    if (r == 0 && !is_utf8_text(*data, *len)) {
        wipe_free(*data, *len + 1);
        *data = NULL;
        *len = 0;
        r = vd_error_set(errp, EINVAL, "Data from secret %s is not valid UTF-8", id);
    }
    return r;
}
