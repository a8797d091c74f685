/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * GlusterFS filenames as QEMU 7.2's block/gluster.c reads them:
 *
 *   gluster[+tcp|+unix|+rdma]://[HOST[:PORT]]/VOLUME/PATH[?socket=SOCKET]
 *
 * turned into the options of the `gluster` driver (volume, path,
 * server.0.type, server.0.host, server.0.port, server.0.path).  HOST may be
 * a name, an IPv4 address or an IPv6 address in brackets; it defaults to
 * localhost and PORT to 24007.  gluster+unix takes no host or port and
 * exactly one query parameter, socket=; the other transports take none.
 * +rdma is accepted and connects over tcp, as QEMU 7.2 does.  A user name
 * before '@' and a #fragment are ignored, as QEMU's URI parser does.
 * Percent escapes in the path and the query are decoded; a %00 is refused.
 *
 * Kept apart from gluster.c (which needs libgfapi) so that the fuzz target
 * can exercise it on every build.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "gluster.h"

/* "/VOLUME/PATH": leading slashes skipped, then the volume up to the next
 * slash, then the rest after the slashes that follow it (both non-empty). */
static int gluster_split_path(char *p, const char **vol, const char **path)
{
    p += strspn(p, "/");
    char *end = p + strcspn(p, "/");
    if (end == p || !*end) {
        return -EINVAL;
    }
    *end++ = 0;
    end += strspn(end, "/");
    if (!*end) {
        return -EINVAL;
    }
    *vol = p;
    *path = end;
    return 0;
}

/* The part of the work buffer between "://" and the path: [user@]host[:port] */
static int gluster_parse_authority(char *auth, const char **host, const char **port)
{
    char *at = strrchr(auth, '@');
    if (at) {
        auth = at + 1;
    }
    *host = NULL;
    *port = NULL;
    if (*auth == '[') {
        char *rb = strchr(auth, ']');
        if (!rb || rb == auth + 1) {
            return -EINVAL;
        }
        *rb = 0;
        for (const char *c = auth + 1; *c; c++) {
            if (!isxdigit((unsigned char)*c) && *c != ':' && *c != '.') {
                return -EINVAL;
            }
        }
        *host = auth + 1;
        if (rb[1] == ':') {
            *port = rb + 2;
        } else if (rb[1]) {
            return -EINVAL;
        }
    } else {
        char *colon = strchr(auth, ':');
        if (colon) {
            *colon = 0;
            *port = colon + 1;
        }
        if (*auth) {
            if (strchr(auth, '%') && vd_uri_unescape(auth) < 0) {
                return -EINVAL;
            }
            *host = auth;
        }
    }
    if (*port) {
        /* an empty port is the default, as in QEMU's URI parser */
        if (!**port) {
            *port = NULL;
            return 0;
        }
        unsigned long v = 0;
        for (const char *c = *port; *c; c++) {
            if (!isdigit((unsigned char)*c)) {
                return -EINVAL;
            }
            v = v * 10 + (unsigned long)(*c - '0');
            if (v > 65535) {
                return -EINVAL;
            }
        }
        if (v == 0) {
            *port = NULL; /* port 0: the default, as QEMU */
        }
    }
    return 0;
}

int vd_gluster_parse_uri(const char *filename, vd_opts *opts)
{
    const char *sep = strstr(filename, "://");
    if (!sep) {
        return -EINVAL;
    }
    size_t sl = (size_t)(sep - filename);
    bool is_unix;
    if ((sl == 7 && !strncmp(filename, "gluster", 7)) ||
        (sl == 11 && !strncmp(filename, "gluster+tcp", 11)) ||
        (sl == 12 && !strncmp(filename, "gluster+rdma", 12))) {
        is_unix = false;
    } else if (sl == 12 && !strncmp(filename, "gluster+unix", 12)) {
        is_unix = true;
    } else {
        return -EINVAL;
    }
    char *work = strdup(sep + 3);
    if (!work) {
        return -ENOMEM;
    }
    int ret = -EINVAL;
    char *frag = strchr(work, '#');
    if (frag) {
        *frag = 0;
    }
    char *query = strchr(work, '?');
    if (query) {
        *query++ = 0;
    }
    char *slash = strchr(work, '/');
    if (!slash) {
        goto out;
    }
    /* split the authority from the path, keeping the path's slash */
    char *pathbuf = strdup(slash);
    if (!pathbuf) {
        ret = -ENOMEM;
        goto out;
    }
    *slash = 0;
    const char *host, *port, *vol, *path;
    if (gluster_parse_authority(work, &host, &port) < 0 || vd_uri_unescape(pathbuf) < 0 ||
        gluster_split_path(pathbuf, &vol, &path) < 0) {
        free(pathbuf);
        goto out;
    }
    const char *sock = NULL;
    if (query && *query) {
        /* exactly one parameter, socket=, and only for unix */
        char *eq = strchr(query, '=');
        if (!is_unix || !eq || strchr(query, '&') || strchr(query, ';')) {
            free(pathbuf);
            goto out;
        }
        *eq = 0;
        if (strcmp(query, "socket") || vd_uri_unescape(eq + 1) < 0 || !eq[1]) {
            free(pathbuf);
            goto out;
        }
        sock = eq + 1;
    }
    if (is_unix) {
        if (host || port || !sock) {
            free(pathbuf);
            goto out;
        }
        vd_opts_set(opts, "server.0.type", "unix");
        vd_opts_set(opts, "server.0.path", sock);
    } else {
        vd_opts_set(opts, "server.0.type", "inet");
        vd_opts_set(opts, "server.0.host", host ? host : "localhost");
        vd_opts_set(opts, "server.0.port", port ? port : "24007");
    }
    vd_opts_set(opts, "volume", vol);
    vd_opts_set(opts, "path", path);
    free(pathbuf);
    ret = 0;
out:
    free(work);
    return ret;
}
