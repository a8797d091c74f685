/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The GlusterFS URI parser (src/protocols/gluster-uri.c): the input is a
 * filename, tried as given and behind each gluster scheme.  What parses
 * must name a volume without a slash, a non-empty path and one server of
 * a known type with its address.
 */
#include <stdlib.h>
#include <string.h>

#include "../../src/protocols/gluster.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const char *name)
{
    vd_opts *o = vd_opts_new();
    if (!o) {
        return;
    }
    if (vd_gluster_parse_uri(name, o) == 0) {
        const char *vol = vd_opts_get(o, "volume");
        const char *path = vd_opts_get(o, "path");
        const char *type = vd_opts_get(o, "server.0.type");
        if (!vol || !*vol || strchr(vol, '/') || !path || !*path || !type) {
            abort();
        }
        if (!strcmp(type, "unix")) {
            const char *sock = vd_opts_get(o, "server.0.path");
            if (!sock || !*sock) {
                abort();
            }
        } else if (!strcmp(type, "inet")) {
            const char *host = vd_opts_get(o, "server.0.host");
            const char *port = vd_opts_get(o, "server.0.port");
            if (!host || !*host || !port || strtoul(port, NULL, 10) > 65535) {
                abort();
            }
        } else {
            abort();
        }
    }
    vd_opts_free(o);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const schemes[] = {
        "", "gluster://", "gluster+tcp://", "gluster+unix://", "gluster+rdma://",
    };
    if (size > 4096) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
        size_t sl = strlen(schemes[i]);
        char *s = malloc(sl + size + 1);
        if (!s) {
            return 0;
        }
        memcpy(s, schemes[i], sl);
        memcpy(s + sl, data, size);
        s[sl + size] = 0;
        check(s);
        free(s);
    }
    return 0;
}
