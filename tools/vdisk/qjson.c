/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * qemu-img compatible JSON output.  QEMU stores object members in a
 * 512-bucket hash table (tdb hash) and prints them bucket by bucket, the
 * newest member first within a bucket; we reproduce that order so scripts
 * that compare text (not just parsed values) see the same document.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "qjson.h"

#define QDICT_BUCKETS 512

typedef struct {
    char *buf;
    size_t len, cap;
} strbuf;

static void sb_grow(strbuf *sb, size_t more)
{
    if (sb->len + more + 1 <= sb->cap) {
        return;
    }
    size_t cap = sb->cap ? sb->cap : 256;
    while (cap < sb->len + more + 1) {
        cap *= 2;
    }
    char *p = realloc(sb->buf, cap);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    sb->buf = p;
    sb->cap = cap;
}

static void sb_add(strbuf *sb, const char *s, size_t n)
{
    sb_grow(sb, n);
    memcpy(sb->buf + sb->len, s, n);
    sb->len += n;
    sb->buf[sb->len] = 0;
}

static void sb_puts(strbuf *sb, const char *s)
{
    sb_add(sb, s, strlen(s));
}

static void sb_printf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(strbuf *sb, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n > 0) {
        sb_add(sb, tmp, (size_t)n < sizeof(tmp) ? (size_t)n : sizeof(tmp) - 1);
    }
}

static void sb_indent(strbuf *sb, int level)
{
    sb_puts(sb, "\n");
    for (int i = 0; i < level * 4; i++) {
        sb_add(sb, " ", 1);
    }
}

/* The member-order hash QEMU's QDict uses (gdbm's, via tdb). */
static unsigned qdict_bucket(const char *key)
{
    uint32_t v = (uint32_t)(0x238F13AFu * (uint32_t)strlen(key));
    for (uint32_t i = 0; key[i]; i++) {
        v += (uint32_t)(unsigned char)key[i] << (i * 5 % 24);
    }
    return (uint32_t)(1103515243u * v + 12345u) % QDICT_BUCKETS;
}

typedef struct {
    const char *key;
    struct json_object *val;
    unsigned bucket;
    size_t index;
} member;

static int member_cmp(const void *a, const void *b)
{
    const member *x = a, *y = b;
    if (x->bucket != y->bucket) {
        return x->bucket < y->bucket ? -1 : 1;
    }
    /* QEMU inserts at the head of a bucket's list: newest first */
    return x->index > y->index ? -1 : (x->index < y->index ? 1 : 0);
}

/* Members of obj in QEMU's iteration order (malloc'ed array, *n entries). */
static member *ordered_members(struct json_object *obj, size_t *n)
{
    size_t count = (size_t)json_object_object_length(obj);
    member *m = calloc(count ? count : 1, sizeof(*m));
    if (!m) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    size_t i = 0;
    json_object_object_foreach(obj, key, val)
    {
        if (i < count) {
            m[i].key = key;
            m[i].val = val;
            m[i].bucket = qdict_bucket(key);
            m[i].index = i;
            i++;
        }
    }
    qsort(m, i, sizeof(*m), member_cmp);
    *n = i;
    return m;
}

/* Decode one UTF-8 sequence; -1 for an invalid one (consumed bytes in *len). */
static int32_t utf8_decode(const unsigned char *s, size_t *len)
{
    unsigned char c = s[0];
    int need;
    int32_t cp, min;
    if (c < 0x80) {
        *len = 1;
        return c;
    } else if (c >= 0xC0 && c < 0xE0) {
        need = 1;
        cp = c & 0x1F;
        min = 0x80;
    } else if (c >= 0xE0 && c < 0xF0) {
        need = 2;
        cp = c & 0x0F;
        min = 0x800;
    } else if (c >= 0xF0 && c < 0xF8) {
        need = 3;
        cp = c & 0x07;
        min = 0x10000;
    } else {
        *len = 1;
        return -1;
    }
    for (int i = 1; i <= need; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *len = (size_t)i;
            return -1;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    *len = (size_t)need + 1;
    /* QEMU's decoder accepts the two-byte NUL of modified UTF-8 */
    if (cp == 0 && need == 1) {
        return 0;
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return -1;
    }
    return cp;
}

static void quoted(strbuf *sb, const char *str)
{
    const unsigned char *p = (const unsigned char *)str;
    sb_add(sb, "\"", 1);
    while (*p) {
        size_t len;
        int32_t cp = utf8_decode(p, &len);
        p += len;
        switch (cp) {
        case '"':
            sb_puts(sb, "\\\"");
            break;
        case '\\':
            sb_puts(sb, "\\\\");
            break;
        case '\b':
            sb_puts(sb, "\\b");
            break;
        case '\f':
            sb_puts(sb, "\\f");
            break;
        case '\n':
            sb_puts(sb, "\\n");
            break;
        case '\r':
            sb_puts(sb, "\\r");
            break;
        case '\t':
            sb_puts(sb, "\\t");
            break;
        default:
            if (cp < 0) {
                cp = 0xFFFD;
            }
            if (cp > 0xFFFF) {
                sb_printf(sb, "\\u%04X\\u%04X", 0xD800 + ((cp - 0x10000) >> 10),
                          0xDC00 + ((cp - 0x10000) & 0x3FF));
            } else if (cp < 0x20 || cp >= 0x7F) {
                sb_printf(sb, "\\u%04X", (unsigned)cp);
            } else {
                char ch = (char)cp;
                sb_add(sb, &ch, 1);
            }
        }
    }
    sb_add(sb, "\"", 1);
}

static void scalar(strbuf *sb, struct json_object *v)
{
    switch (json_object_get_type(v)) {
    case json_type_null:
        sb_puts(sb, "null");
        break;
    case json_type_boolean:
        sb_puts(sb, json_object_get_boolean(v) ? "true" : "false");
        break;
    case json_type_int: {
        int64_t i = json_object_get_int64(v);
        if (i == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX) {
            sb_printf(sb, "%" PRIu64, json_object_get_uint64(v));
        } else {
            sb_printf(sb, "%" PRId64, i);
        }
        break;
    }
    case json_type_double:
        sb_printf(sb, "%.17g", json_object_get_double(v));
        break;
    case json_type_string:
        quoted(sb, json_object_get_string(v));
        break;
    default:
        sb_puts(sb, "null");
        break;
    }
}

static void emit(strbuf *sb, struct json_object *v, int level)
{
    enum json_type t = v ? json_object_get_type(v) : json_type_null;
    if (t == json_type_object) {
        size_t n;
        member *m = ordered_members(v, &n);
        sb_add(sb, "{", 1);
        for (size_t i = 0; i < n; i++) {
            if (i) {
                sb_add(sb, ",", 1);
            }
            sb_indent(sb, level + 1);
            quoted(sb, m[i].key);
            sb_puts(sb, ": ");
            emit(sb, m[i].val, level + 1);
        }
        sb_indent(sb, level);
        sb_add(sb, "}", 1);
        free(m);
    } else if (t == json_type_array) {
        size_t n = json_object_array_length(v);
        sb_add(sb, "[", 1);
        for (size_t i = 0; i < n; i++) {
            if (i) {
                sb_add(sb, ",", 1);
            }
            sb_indent(sb, level + 1);
            emit(sb, json_object_array_get_idx(v, i), level + 1);
        }
        sb_indent(sb, level);
        sb_add(sb, "]", 1);
    } else if (v) {
        scalar(sb, v);
    } else {
        sb_puts(sb, "null");
    }
}

char *qjson_to_string(struct json_object *obj)
{
    strbuf sb = {0};
    emit(&sb, obj, 0);
    if (!sb.buf) {
        sb_puts(&sb, "");
    }
    return sb.buf;
}

void qjson_print(FILE *f, struct json_object *obj)
{
    char *s = qjson_to_string(obj);
    fprintf(f, "%s\n", s);
    free(s);
}

static void human_value(FILE *f, struct json_object *v, int indent);

static void human_list(FILE *f, struct json_object *list, int indent)
{
    size_t n = json_object_array_length(list);
    for (size_t i = 0; i < n; i++) {
        struct json_object *e = json_object_array_get_idx(list, i);
        enum json_type t = e ? json_object_get_type(e) : json_type_null;
        bool composite = t == json_type_object || t == json_type_array;
        fprintf(f, "%*s[%zu]:%c", indent * 4, "", i, composite ? '\n' : ' ');
        human_value(f, e, indent + 1);
        if (!composite) {
            fputc('\n', f);
        }
    }
}

static void human_dict(FILE *f, struct json_object *dict, int indent)
{
    size_t n;
    member *m = ordered_members(dict, &n);
    for (size_t i = 0; i < n; i++) {
        enum json_type t = m[i].val ? json_object_get_type(m[i].val) : json_type_null;
        bool composite = t == json_type_object || t == json_type_array;
        char *key = strdup(m[i].key);
        if (!key) {
            continue;
        }
        for (char *p = key; *p; p++) {
            if (*p == '-') {
                *p = ' ';
            }
        }
        fprintf(f, "%*s%s:%c", indent * 4, "", key, composite ? '\n' : ' ');
        free(key);
        human_value(f, m[i].val, indent + 1);
        if (!composite) {
            fputc('\n', f);
        }
    }
    free(m);
}

static void human_value(FILE *f, struct json_object *v, int indent)
{
    enum json_type t = v ? json_object_get_type(v) : json_type_null;
    switch (t) {
    case json_type_object:
        human_dict(f, v, indent);
        break;
    case json_type_array:
        human_list(f, v, indent);
        break;
    case json_type_string:
        fputs(json_object_get_string(v), f);
        break;
    case json_type_boolean:
        fputs(json_object_get_boolean(v) ? "true" : "false", f);
        break;
    case json_type_int: {
        int64_t i = json_object_get_int64(v);
        if (i == INT64_MAX && json_object_get_uint64(v) > (uint64_t)INT64_MAX) {
            fprintf(f, "%" PRIu64, json_object_get_uint64(v));
        } else {
            fprintf(f, "%" PRId64, i);
        }
        break;
    }
    case json_type_double:
        fprintf(f, "%.17g", json_object_get_double(v));
        break;
    default:
        break;
    }
}

void qjson_dump_human(FILE *f, struct json_object *obj, int indent)
{
    human_value(f, obj, indent);
}

void qjson_add_str(struct json_object *o, const char *key, const char *val)
{
    json_object_object_add(o, key, json_object_new_string(val ? val : ""));
}

void qjson_add_int(struct json_object *o, const char *key, int64_t val)
{
    json_object_object_add(o, key, json_object_new_int64(val));
}

void qjson_add_uint(struct json_object *o, const char *key, uint64_t val)
{
    json_object_object_add(o, key, json_object_new_uint64(val));
}

void qjson_add_bool(struct json_object *o, const char *key, bool val)
{
    json_object_object_add(o, key, json_object_new_boolean(val));
}
