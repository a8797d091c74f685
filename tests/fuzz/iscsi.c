/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The iscsi driver's URL parser: the input as the part after "iscsi://"
 * and as a whole filename.  A URL that parses must leave a portal, a
 * target and a LUN in the options; one that does not must leave an error
 * message that never quotes the password of its user part.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern const vd_driver vd_drv_iscsi;

/* The password of an iscsi:// URL's user part (malloc'ed), or NULL. */
static char *url_password(const char *name)
{
    if (strncmp(name, "iscsi://", 8) != 0) {
        return NULL;
    }
    const char *auth = name + 8;
    size_t alen = strcspn(auth, "/");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++) {
        if (*p == '@') {
            at = p;
        }
    }
    const char *pct = at ? memchr(auth, '%', (size_t)(at - auth)) : NULL;
    if (!pct) {
        return NULL;
    }
    return strndup(pct + 1, (size_t)(at - pct - 1));
}

/* Occurrences of needle in hay. */
static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++) {
        n++;
    }
    return n;
}

static void parse_one(const char *name)
{
    vd_opts *o = vd_opts_new();
    vd_error *err = NULL;
    if (!o) {
        return;
    }
    if (vd_drv_iscsi.parse_filename(name, o, &err) == 0) {
        if (!vd_opts_get(o, "portal") || !vd_opts_get(o, "target") || !vd_opts_get(o, "lun")) {
            abort();
        }
    } else {
        if (!err || !err->msg[0]) {
            abort();
        }
        /* the message quotes the URL without its password: a password
         * that the rest of the URL does not also contain must be absent */
        char *pw = url_password(name);
        if (pw && strlen(pw) >= 4 && count(name, pw) == 1 && strlen(name) < 900 &&
            strstr(err->msg, pw)) {
            abort();
        }
        free(pw);
        vd_error_free(err);
    }
    vd_opts_free(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096) {
        return 0;
    }
    char *raw = malloc(size + 1);
    char *url = malloc(size + 9);
    if (!raw || !url) {
        free(raw);
        free(url);
        return 0;
    }
    memcpy(raw, data, size);
    raw[size] = 0;
    memcpy(url, "iscsi://", 8);
    memcpy(url + 8, data, size);
    url[size + 8] = 0;
    parse_one(raw);
    parse_one(url);
    free(raw);
    free(url);
    return 0;
}
