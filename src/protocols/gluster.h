/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The GlusterFS URI parser shared by the gluster driver and its fuzz target
 * (gluster-uri.c; no libgfapi needed).
 */
#ifndef VD_PROTOCOLS_GLUSTER_H
#define VD_PROTOCOLS_GLUSTER_H

#include "internal.h"

/*
 * Parse gluster[+tcp|+unix|+rdma]://[HOST[:PORT]]/VOLUME/PATH[?socket=S]
 * into opts: volume, path, server.0.type (inet or unix) and
 * server.0.host + server.0.port or server.0.path.  Returns 0, -EINVAL for a
 * filename QEMU would call an invalid URI (opts may then hold some keys), or
 * -ENOMEM.
 */
int vd_gluster_parse_uri(const char *filename, vd_opts *opts);

#endif
