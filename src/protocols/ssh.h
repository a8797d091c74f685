/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The ssh protocol driver's parsers, visible to the fuzz target: a
 * filename (ssh://...) into options, and options into a checked
 * configuration.  Neither connects anywhere.
 */
#ifndef VD_PROTOCOLS_SSH_H
#define VD_PROTOCOLS_SSH_H

#include "internal.h"

typedef enum vd_ssh_hkc_mode {
    VD_SSH_HKC_NONE,
    VD_SSH_HKC_HASH,
    VD_SSH_HKC_KNOWN_HOSTS,
} vd_ssh_hkc_mode;

typedef enum vd_ssh_hash_type {
    VD_SSH_HASH_MD5,
    VD_SSH_HASH_SHA1,
    VD_SSH_HASH_SHA256,
} vd_ssh_hash_type;

/* A checked ssh configuration; the strings point into the options. */
typedef struct vd_ssh_cfg {
    const char *host;
    const char *port;
    const char *path;
    const char *user;       /* NULL: the local user's name */
    const char *legacy_hkc; /* host_key_check as given (shown in the name) */
    vd_ssh_hkc_mode mode;
    vd_ssh_hash_type hash_type;
    const char *hash; /* hex, ':' separators allowed */
} vd_ssh_cfg;

/* ssh://[USER@]HOST[:PORT]/PATH[?host_key_check=...] into opts. */
int vd_ssh_parse_filename(const char *filename, vd_opts *opts, vd_error **errp);
/* Legacy and current option names into a configuration (opts may be
 * changed: legacy keys are moved to their current names). */
int vd_ssh_parse_opts(vd_opts *opts, vd_ssh_cfg *cfg, vd_error **errp);
/* Whether the hex fingerprint text (':' allowed) names exactly these bytes. */
bool vd_ssh_fingerprint_matches(const uint8_t *hash, size_t len, const char *text);

#endif
