/* SPDX-License-Identifier: BSD-3-Clause */
/* Sockets for NBD: listening (server) and connecting (client). */
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "proto.h"

void vd_nbd_socket_tune(int fd)
{
    int one = 1;
    /* replies are small and latency bound: never wait to coalesce */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int net_unix_addr(const char *path, struct sockaddr_un *sa, vd_error **errp)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path)) {
        return vd_error_set(errp, ENAMETOOLONG, "socket path '%s' is too long", path);
    }
    strcpy(sa->sun_path, path);
    return 0;
}

int vd_nbd_connect_unix(const char *path, vd_error **errp)
{
    struct sockaddr_un sa;
    int r = net_unix_addr(path, &sa, errp);
    if (r < 0) {
        return r;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return vd_error_setg_errno(errp, errno, "cannot create socket");
    }
    while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        if (errno == EINTR) {
            continue;
        }
        int e = errno;
        close(fd);
        return vd_error_setg_errno(errp, e, "Failed to connect to '%s'", path);
    }
    return fd;
}

int vd_nbd_connect_tcp(const char *host, const char *port, vd_error **errp)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    char portbuf[16];
    if (!port || !*port) {
        snprintf(portbuf, sizeof(portbuf), "%d", NBD_DEFAULT_PORT);
        port = portbuf;
    }
    if (!host || !*host) {
        host = "localhost";
    }
    int r = getaddrinfo(host, port, &hints, &res);
    if (r) {
        return vd_error_set(errp, EHOSTUNREACH, "address resolution failed for %s:%s: %s", host,
                            port, gai_strerror(r));
    }
    int err = ECONNREFUSED;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int c;
        while ((c = connect(fd, a->ai_addr, a->ai_addrlen)) < 0 && errno == EINTR) {
        }
        if (c == 0) {
            freeaddrinfo(res);
            vd_nbd_socket_tune(fd);
            return fd;
        }
        err = errno;
        close(fd);
    }
    freeaddrinfo(res);
    return vd_error_setg_errno(errp, err, "Failed to connect to '%s:%s'", host, port);
}

int vd_nbd_listen_unix(const char *path)
{
    vd_error *err = NULL;
    struct sockaddr_un sa;
    if (net_unix_addr(path, &sa, &err) < 0) {
        vd_error_publish(err);
        return -1;
    }
    struct stat st;
    if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
        /* never replace something that is not a socket (bind would refuse) */
        vd_set_public_error(EADDRINUSE, "Failed to bind socket to %s: %s", path,
                            strerror(EADDRINUSE));
        return -1;
    }
    /*
     * The socket must appear under its name only once it listens: a client
     * that sees the name and connects in between would get ECONNREFUSED.
     * So bind and listen under a temporary name in the same directory, then
     * rename it over the final name (which also replaces a stale socket of an
     * earlier server, as qemu-nbd does).
     */
    struct sockaddr_un tmp;
    const char *slash = strrchr(path, '/');
    size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
    int n = snprintf(tmp.sun_path, sizeof(tmp.sun_path), "%.*s.vdisk-nbd-%ld.sock", (int)dirlen,
                     path, (long)getpid());
    bool renamed = n > 0 && (size_t)n < sizeof(tmp.sun_path);
    if (renamed) {
        tmp.sun_family = AF_UNIX;
        unlink(tmp.sun_path);
    } else {
        /* no room for a temporary name: bind in place (the old race) */
        if (lstat(path, &st) == 0) {
            unlink(path);
        }
        tmp = sa;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        vd_set_public_error(errno, "cannot create socket: %s", strerror(errno));
        return -1;
    }
    if (bind(fd, (struct sockaddr *)&tmp, sizeof(tmp)) < 0 || listen(fd, SOMAXCONN) < 0 ||
        (renamed && rename(tmp.sun_path, path) < 0)) {
        int e = errno;
        close(fd);
        if (renamed) {
            unlink(tmp.sun_path);
        }
        vd_set_public_error(e, "Failed to bind socket to %s: %s", path, strerror(e));
        return -1;
    }
    return fd;
}

int vd_nbd_listen_tcp(const char *host, const char *port, int **fds, size_t *nfds)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char portbuf[16];
    *fds = NULL;
    *nfds = 0;
    if (!port || !*port) {
        snprintf(portbuf, sizeof(portbuf), "%d", NBD_DEFAULT_PORT);
        port = portbuf;
    }
    if (host && !*host) {
        host = NULL;
    }
    int r = getaddrinfo(host, port, &hints, &res);
    if (r) {
        vd_set_public_error(EINVAL, "address resolution failed for %s:%s: %s",
                            host ? host : "*", port, gai_strerror(r));
        return -1;
    }
    int err = 0;
    size_t n = 0;
    int *out = NULL;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (a->ai_family == AF_INET6) {
            /* keep v4 and v6 sockets apart so both can bind the port */
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        }
        if (bind(fd, a->ai_addr, a->ai_addrlen) < 0 || listen(fd, SOMAXCONN) < 0) {
            err = errno;
            close(fd);
            continue;
        }
        int *nout = realloc(out, (n + 1) * sizeof(*nout));
        if (!nout) {
            close(fd);
            err = ENOMEM;
            break;
        }
        out = nout;
        out[n++] = fd;
    }
    freeaddrinfo(res);
    if (!n) {
        free(out);
        vd_set_public_error(err ? err : EADDRNOTAVAIL, "Failed to listen on %s:%s: %s",
                            host ? host : "0.0.0.0", port, strerror(err ? err : EADDRNOTAVAIL));
        return -1;
    }
    *fds = out;
    *nfds = n;
    return 0;
}

void vd_nbd_peer_name(int fd, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(buf, len, "fd %d", fd);
        return;
    }
    if (ss.ss_family == AF_UNIX) {
        snprintf(buf, len, "unix socket client");
        return;
    }
    char h[NI_MAXHOST], p[NI_MAXSERV];
    if (getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), p, sizeof(p),
                    NI_NUMERICHOST | NI_NUMERICSERV)) {
        snprintf(buf, len, "fd %d", fd);
        return;
    }
    snprintf(buf, len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", h, p);
}
