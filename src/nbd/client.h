/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * NBD client: handshake (fixed newstyle, STARTTLS, extended headers or
 * structured replies, meta contexts, NBD_OPT_GO with fallback to
 * NBD_OPT_EXPORT_NAME) and a transmission phase where many threads issue
 * requests at once; one reader thread matches replies to requests by
 * cookie and copies read data straight into the callers' buffers.
 * Optional reconnection after the server went away (reconnect-delay).
 */
#ifndef VD_NBD_CLIENT_H
#define VD_NBD_CLIENT_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"
#include "vdisk-nbd.h"

typedef struct vd_nbd_client_cfg {
    const char *host; /* TCP host (NULL: localhost) */
    const char *port; /* NULL: 10809 */
    const char *path; /* unix socket; wins over host/port */
    const char *export_name;
    vd_nbd_tls_creds *tls; /* client endpoint, or NULL */
    const char *tls_hostname;
    bool no_extended; /* do not ask for extended headers */
    bool no_structured;
    const char *context;      /* metadata context to select, or NULL */
    unsigned reconnect_delay; /* seconds to keep retrying a lost server */
} vd_nbd_client_cfg;

typedef struct vd_nbd_client vd_nbd_client;

int vd_nbd_client_connect(const vd_nbd_client_cfg *cfg, vd_nbd_client **out, vd_error **errp);
/* NBD_CMD_DISC, then close. */
void vd_nbd_client_close(vd_nbd_client *c);

uint64_t vd_nbd_client_size(vd_nbd_client *c);
uint16_t vd_nbd_client_flags(vd_nbd_client *c);
/* Block sizes (defaults filled in when the server gave none). */
void vd_nbd_client_block_sizes(vd_nbd_client *c, uint32_t *min, uint32_t *pref, uint32_t *max);
bool vd_nbd_client_has_context(vd_nbd_client *c);
bool vd_nbd_client_extended(vd_nbd_client *c);

/* Commands: 0 or -errno.  flags: NBD_CMD_FLAG_*. */
int vd_nbd_client_read(vd_nbd_client *c, uint64_t off, uint64_t len, void *buf);
int vd_nbd_client_write(vd_nbd_client *c, uint64_t off, uint64_t len, const void *buf,
                        uint16_t flags);
int vd_nbd_client_zero(vd_nbd_client *c, uint64_t off, uint64_t len, uint16_t flags);
int vd_nbd_client_trim(vd_nbd_client *c, uint64_t off, uint64_t len, uint16_t flags);
int vd_nbd_client_flush(vd_nbd_client *c);
int vd_nbd_client_cache(vd_nbd_client *c, uint64_t off, uint64_t len);
/* First extent of the selected context at off (REQ_ONE). */
int vd_nbd_client_block_status(vd_nbd_client *c, uint64_t off, uint64_t len, uint64_t *ext_len,
                               uint32_t *ext_flags);

#endif
