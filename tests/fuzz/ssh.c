/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The ssh protocol's parsers (never a connection): the first input byte
 * picks what the rest is: 0 an ssh:// filename (vd_ssh_parse_filename,
 * then the options it made through vd_ssh_parse_opts), 1 a "k=v,..."
 * option list, 2 a json: filename (both through vd_ssh_parse_opts), 3 a
 * host key hash (first 4 bytes) against fingerprint text (the rest).
 */
#include <stdlib.h>
#include <string.h>

#include "../../src/protocols/ssh.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_cfg(vd_opts *o)
{
    vd_ssh_cfg cfg;
    vd_error *err = NULL;
    if (vd_ssh_parse_opts(o, &cfg, &err) == 0) {
        /* a configuration that parsed names everything a connection needs */
        if (!cfg.host || !*cfg.host || !cfg.port || !*cfg.port || !cfg.path || !*cfg.path ||
            (cfg.mode == VD_SSH_HKC_HASH && !cfg.hash) || (cfg.user && !*cfg.user)) {
            abort();
        }
        if (err) {
            abort();
        }
    } else if (!err || !err->msg[0]) {
        abort(); /* every refusal carries a message */
    }
    vd_error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536) {
        return 0;
    }
    char *s = malloc(size);
    if (!s) {
        return 0;
    }
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    vd_opts *o = vd_opts_new();
    vd_error *err = NULL;
    int r;
    switch (data[0] % 4) {
    case 0:
        r = vd_ssh_parse_filename(s, o, &err);
        if (r < 0 && (!err || !err->msg[0])) {
            abort();
        }
        vd_error_free(err);
        err = NULL;
        if (r == 0) {
            check_cfg(o);
        }
        break;
    case 1:
        if (vd_opts_parse_err(o, s, NULL, &err) == 0) {
            check_cfg(o);
        }
        vd_error_free(err);
        break;
    case 2:
        if (vd_opts_parse_json_filename(o, s, &err) == 0) {
            check_cfg(o);
        }
        vd_error_free(err);
        break;
    case 3:
        if (size >= 5) {
            vd_ssh_fingerprint_matches(data + 1, 4, s + 4);
        }
        break;
    }
    vd_opts_free(o);
    free(s);
    return 0;
}
