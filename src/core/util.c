/* SPDX-License-Identifier: BSD-3-Clause */
/* Small shared helpers: allocation, zero detection, paths, booleans. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "internal.h"

const char *vd_version(void)
{
    return VD_VERSION_STRING;
}

bool vd_buffer_is_zero(const void *buf, size_t len)
{
    const uint8_t *p = buf;
    /* check the head byte-wise until 8-aligned, then words */
    while (len && ((uintptr_t)p & 7)) {
        if (*p) {
            return false;
        }
        p++;
        len--;
    }
    const uint64_t *w = (const uint64_t *)(const void *)p;
    while (len >= 32) {
        if (w[0] | w[1] | w[2] | w[3]) {
            return false;
        }
        w += 4;
        len -= 32;
    }
    p = (const uint8_t *)w;
    while (len--) {
        if (*p++) {
            return false;
        }
    }
    return true;
}

int vd_uri_unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p != '%') {
            *o++ = *p;
            continue;
        }
        if (!isxdigit((unsigned char)p[1]) || !isxdigit((unsigned char)p[2])) {
            return -EINVAL;
        }
        char h[3] = {p[1], p[2], 0};
        long v = strtol(h, NULL, 16);
        if (v == 0) {
            return -EINVAL;
        }
        *o++ = (char)v;
        p += 2;
    }
    *o = 0;
    return 0;
}

void *vd_malloc(size_t n)
{
    return malloc(n ? n : 1);
}

void *vd_calloc(size_t n, size_t size)
{
    return calloc(n ? n : 1, size ? size : 1);
}

void *vd_aligned_alloc(size_t align, size_t size)
{
    void *p = NULL;
    if (align < sizeof(void *)) {
        align = sizeof(void *);
    }
    if (posix_memalign(&p, align, size ? size : align) != 0) {
        return NULL;
    }
    return p;
}

char *vd_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

char *vd_asprintf(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0) {
        s = NULL;
    }
    va_end(ap);
    return s;
}

int vd_parse_bool(const char *s)
{
    static const char *const yes[] = {"on", "true", "yes", "1"};
    static const char *const no[] = {"off", "false", "no", "0"};
    if (!s) {
        return -1;
    }
    for (size_t i = 0; i < VD_ARRAY_SIZE(yes); i++) {
        if (!strcasecmp(s, yes[i])) {
            return 1;
        }
        if (!strcasecmp(s, no[i])) {
            return 0;
        }
    }
    return -1;
}

char *vd_path_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        return strdup(".");
    }
    if (slash == path) {
        return strdup("/");
    }
    return strndup(path, (size_t)(slash - path));
}

char *vd_path_combine(const char *base, const char *name)
{
    if (name[0] == '/' || !strchr(base, '/')) {
        return strdup(name);
    }
    const char *slash = strrchr(base, '/');
    return vd_asprintf("%.*s/%s", (int)(slash - base), base, name);
}

int vd_prealloc_parse(const char *s)
{
    static const char *const names[] = {"off", "metadata", "falloc", "full"};
    for (size_t i = 0; s && i < VD_ARRAY_SIZE(names); i++) {
        if (!strcmp(s, names[i])) {
            return (int)i;
        }
    }
    return -1;
}

const char *vd_prealloc_name(vd_prealloc p)
{
    switch (p) {
    case VD_PREALLOC_OFF:
        return "off";
    case VD_PREALLOC_METADATA:
        return "metadata";
    case VD_PREALLOC_FALLOC:
        return "falloc";
    case VD_PREALLOC_FULL:
        return "full";
    }
    return "?";
}

void vd_uuid_generate(uint8_t out[16])
{
    if (getrandom(out, 16, 0) != 16) {
        /* getrandom on Linux does not fail for 16 bytes; keep a fallback */
        uint64_t t = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)out;
        for (int i = 0; i < 16; i++) {
            t = t * 6364136223846793005ull + 1442695040888963407ull;
            out[i] = (uint8_t)(t >> 56);
        }
    }
    out[6] = (uint8_t)((out[6] & 0x0f) | 0x40);
    out[8] = (uint8_t)((out[8] & 0x3f) | 0x80);
}
