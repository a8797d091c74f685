/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The iscsi driver's URL parser: the input as the part after "iscsi://"
 * and as a whole filename.  A URL that parses must leave a portal, a
 * target and a LUN in the options; one that does not must leave an error
 * message.  Neither may depend on the password of the user part.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

extern const vd_driver vd_drv_iscsi;

/*
 * Where the password of an iscsi:// URL's user part is (between the first
 * '%' and the last '@' before the first '/'): false when there is none.
 */
static bool url_password(const char *name, size_t *start, size_t *len)
{
    if (strncmp(name, "iscsi://", 8) != 0) {
        return false;
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
        return false;
    }
    *start = (size_t)(pct + 1 - name);
    *len = (size_t)(at - pct - 1);
    return true;
}

/* Parse name: 0 and the options, or -1 and the message in msg. */
static int parse(const char *name, char *msg, size_t size)
{
    vd_opts *o = vd_opts_new();
    vd_error *err = NULL;
    if (!o) {
        abort();
    }
    int r = vd_drv_iscsi.parse_filename(name, o, &err);
    if (r == 0) {
        if (!vd_opts_get(o, "portal") || !vd_opts_get(o, "target") || !vd_opts_get(o, "lun")) {
            abort();
        }
        msg[0] = 0;
    } else {
        if (!err || !err->msg[0]) {
            abort();
        }
        snprintf(msg, size, "%s", err->msg);
        vd_error_free(err);
    }
    vd_opts_free(o);
    return r == 0 ? 0 : -1;
}

static char msg1[2048], msg2[2048];

/*
 * The answer must not depend on the password: the same URL with another
 * password of the same length parses the same way, with the same message
 * (so no message can quote the password).
 */
static void parse_one(const char *name)
{
    size_t start, len;
    int r = parse(name, msg1, sizeof(msg1));
    if (!url_password(name, &start, &len) || len == 0) {
        return;
    }
    char *other = strdup(name);
    if (!other) {
        abort();
    }
    char fill = name[start] == 'x' ? 'y' : 'x';
    memset(other + start, fill, len);
    if (parse(other, msg2, sizeof(msg2)) != r || strcmp(msg1, msg2) != 0) {
        abort();
    }
    free(other);
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
