/* SPDX-License-Identifier: BSD-3-Clause */
/* Sockets for NBD (listen helpers are public: vdisk-nbd.h). */
#ifndef VD_NBD_NET_H
#define VD_NBD_NET_H

#include <stddef.h>

#include "internal.h"
#include "vdisk-nbd.h"

/* Connected socket or -errno (message in errp). */
int vd_nbd_connect_unix(const char *path, vd_error **errp);
/* host NULL = localhost, port NULL = 10809. */
int vd_nbd_connect_tcp(const char *host, const char *port, vd_error **errp);
/* TCP_NODELAY on TCP sockets (harmless failure on others). */
void vd_nbd_socket_tune(int fd);
/* "1.2.3.4:5678" of the peer, for logs. */
void vd_nbd_peer_name(int fd, char *buf, size_t len);

#endif
