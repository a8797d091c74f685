/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The `ssh` protocol driver: a file on an SFTP server (version 3, as
 * OpenSSH's sftp-server speaks it) as a node, through libssh.
 *
 * Behaviour follows QEMU 7.2's block/ssh.c:
 *   filenames ssh://[USER@]HOST[:PORT]/PATH[?host_key_check=...]; options
 *   server.host, server.port, path, user, host-key-check.mode
 *   (none|hash|known_hosts), host-key-check.type (md5|sha1|sha256),
 *   host-key-check.hash, and the legacy host, port, host_key_check
 *   (yes|no|md5:HEX|sha1:HEX|sha256:HEX); authentication by ssh-agent and
 *   the default public keys (libssh's publickey_auto); flush through the
 *   fsync@openssh.com extension, with QEMU's warning when the server lacks
 *   it; growing only (one byte written at the new end), no preallocation.
 * One SSH session per node; every request holds the session's mutex, so
 * requests from many threads are serialised, as QEMU's CoMutex does.
 * Reads are pipelined (several SFTP read requests in flight); libssh 0.10
 * has no asynchronous write, so writes go one request at a time.
 * Not supported: password or keyboard-interactive authentication (as
 * QEMU), shrinking, discard, block status (data everywhere, as QEMU).
 */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libssh/libssh.h>
#include <libssh/sftp.h>

#include "ssh.h"

/* QEMU's chunk for one SFTP write (OpenSSH takes messages up to 256 KiB) */
#define SSH_WRITE_CHUNK (128u * 1024)
/* pipelined reads: this many requests of this size in flight */
#define SSH_READ_CHUNK (64u * 1024)
#define SSH_READ_DEPTH 32

typedef struct ssh_state {
    pthread_mutex_t lock; /* the session serves one request at a time */
    bool lock_init;
    ssh_session session;
    sftp_session sftp;
    sftp_file file;
    uint64_t size; /* known length (QEMU keeps attrs->size the same way) */
    bool regular;
    bool has_fsync;
    bool warned_fsync;
    bool broken; /* the connection failed: fail every later request */
    char *host;
} ssh_state;

static const vd_opt_desc ssh_open_opts[] = {
    {"server.host", VD_OPT_STRING, "server host name or address", NULL},
    {"server.port", VD_OPT_STRING, "server port", NULL},
    {"path", VD_OPT_STRING, "path of the file on the server", NULL},
    {"user", VD_OPT_STRING, "user name (default: the local user)", NULL},
    {"host-key-check.mode", VD_OPT_STRING, "none, hash or known_hosts", "known_hosts"},
    {"host-key-check.type", VD_OPT_STRING, "md5, sha1 or sha256 (mode=hash)", NULL},
    {"host-key-check.hash", VD_OPT_STRING, "expected host key hash in hex (mode=hash)",
     NULL},
    {"host", VD_OPT_STRING, "legacy name of server.host", NULL},
    {"port", VD_OPT_STRING, "legacy name of server.port", NULL},
    {"host_key_check", VD_OPT_STRING, "legacy: yes, no, md5:HEX, sha1:HEX or sha256:HEX",
     NULL},
    {NULL, 0, NULL, NULL},
};

static const vd_opt_desc ssh_create_opts[] = {
    {"size", VD_OPT_SIZE, "Virtual disk size", NULL},
    {NULL, 0, NULL, NULL},
};

static const char *const ssh_protocols[] = {"ssh", NULL};

/* ------------------------------------------------------------ parsing */

static int ssh_hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static const char *const ssh_file_keys[] = {
    "user", "host", "port", "path", "host_key_check", "server.host", "server.port", NULL,
};

int vd_ssh_parse_filename(const char *filename, vd_opts *opts, vd_error **errp)
{
    for (size_t i = 0; ssh_file_keys[i]; i++) {
        if (vd_opts_get(opts, ssh_file_keys[i])) {
            return vd_error_set(errp, EINVAL,
                                "user, host, port, path, host_key_check cannot be used at "
                                "the same time as a file option");
        }
    }
    if (strncmp(filename, "ssh:", 4) != 0) {
        return vd_error_set(errp, EINVAL, "URI scheme must be 'ssh'");
    }
    if (strncmp(filename + 4, "//", 2) != 0) {
        return vd_error_set(errp, EINVAL, "missing hostname in URI");
    }
    char *work = vd_strdup(filename + 6);
    if (!work) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    int ret = 0;
    char *frag = strchr(work, '#');
    if (frag) {
        *frag = 0;
    }
    char *query = strchr(work, '?');
    if (query) {
        *query++ = 0;
    }
    char *path = strchr(work, '/');
    char *auth = work;
    if (path) {
        /* the path keeps its leading slash: the authority ends before it */
        size_t alen = (size_t)(path - work);
        auth = vd_strdup(work);
        if (!auth) {
            free(work);
            return vd_error_set(errp, ENOMEM, "out of memory");
        }
        auth[alen] = 0;
    }
    char *host = auth, *port = NULL;
    char *at = strrchr(host, '@');
    if (at) {
        *at = 0;
        if (vd_uri_unescape(host) < 0) {
            ret = vd_error_set(errp, EINVAL, "invalid escape in the user name of the URI");
            goto out;
        }
        if (*host) {
            vd_opts_set(opts, "user", host);
        }
        host = at + 1;
    }
    if (*host == '[') {
        char *rb = strchr(host, ']');
        if (!rb || (rb[1] && rb[1] != ':')) {
            ret = vd_error_set(errp, EINVAL, "invalid IPv6 address in URI");
            goto out;
        }
        *rb = 0;
        port = rb[1] == ':' ? rb + 2 : NULL;
        host++;
    } else {
        port = strchr(host, ':');
        if (port) {
            *port++ = 0;
        }
    }
    if (vd_uri_unescape(host) < 0) {
        ret = vd_error_set(errp, EINVAL, "invalid escape in the host name of the URI");
        goto out;
    }
    if (!*host) {
        ret = vd_error_set(errp, EINVAL, "missing hostname in URI");
        goto out;
    }
    unsigned long pn = 22;
    if (port && *port) {
        char *end;
        pn = isdigit((unsigned char)*port) ? strtoul(port, &end, 10) : 0;
        if (!pn || *end || pn > 65535) {
            ret = vd_error_set(errp, EINVAL, "invalid port '%s' in URI", port);
            goto out;
        }
    }
    if (!path) {
        ret = vd_error_set(errp, EINVAL, "missing remote path in URI");
        goto out;
    }
    if (vd_uri_unescape(path) < 0) {
        ret = vd_error_set(errp, EINVAL, "invalid escape in the path of the URI");
        goto out;
    }
    char pbuf[16];
    snprintf(pbuf, sizeof(pbuf), "%lu", pn);
    vd_opts_set(opts, "server.host", host);
    vd_opts_set(opts, "server.port", pbuf);
    vd_opts_set(opts, "path", path);
    /* the parameters QEMU understands; the others are ignored, as QEMU does */
    for (char *q = query; q && *q;) {
        char *amp = q + strcspn(q, "&;");
        char *next = *amp ? amp + 1 : NULL;
        *amp = 0;
        char *eq = strchr(q, '=');
        if (eq) {
            *eq = 0;
        }
        if (vd_uri_unescape(q) < 0 || (eq && vd_uri_unescape(eq + 1) < 0)) {
            ret = vd_error_set(errp, EINVAL, "could not parse query parameters");
            goto out;
        }
        if (!strcmp(q, "host_key_check")) {
            if (!eq) {
                ret = vd_error_set(errp, EINVAL, "host_key_check in the URI needs a value");
                goto out;
            }
            vd_opts_set(opts, "host_key_check", eq + 1);
        }
        q = next;
    }
out:
    if (auth != work) {
        free(auth);
    }
    free(work);
    return ret;
}

static int ssh_parse_legacy_hkc(const char *s, vd_ssh_cfg *cfg, vd_error **errp)
{
    static const struct {
        const char *prefix;
        vd_ssh_hash_type type;
    } hashes[] = {
        {"md5:", VD_SSH_HASH_MD5},
        {"sha1:", VD_SSH_HASH_SHA1},
        {"sha256:", VD_SSH_HASH_SHA256},
    };
    if (!strcmp(s, "no")) {
        cfg->mode = VD_SSH_HKC_NONE;
        return 0;
    }
    if (!strcmp(s, "yes")) {
        cfg->mode = VD_SSH_HKC_KNOWN_HOSTS;
        return 0;
    }
    for (size_t i = 0; i < VD_ARRAY_SIZE(hashes); i++) {
        size_t n = strlen(hashes[i].prefix);
        if (!strncmp(s, hashes[i].prefix, n)) {
            cfg->mode = VD_SSH_HKC_HASH;
            cfg->hash_type = hashes[i].type;
            cfg->hash = s + n;
            return 0;
        }
    }
    return vd_error_set(errp, EINVAL, "unknown host_key_check setting (%s)", s);
}

/* Move a legacy key to its current name, refusing both at once. */
static int ssh_legacy_key(vd_opts *opts, const char *old, const char *cur, vd_error **errp)
{
    const char *v = vd_opts_get(opts, old);
    if (!v) {
        return 0;
    }
    if (vd_opts_get(opts, cur)) {
        return vd_error_set(errp, EINVAL, "%s and %s cannot be used at the same time", old,
                            cur);
    }
    char *copy = vd_strdup(v);
    if (!copy) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    vd_opts_set(opts, cur, copy);
    vd_opts_set(opts, old, NULL);
    free(copy);
    return 0;
}

int vd_ssh_parse_opts(vd_opts *opts, vd_ssh_cfg *cfg, vd_error **errp)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->mode = VD_SSH_HKC_KNOWN_HOSTS;
    const char *lp = vd_opts_get(opts, "port");
    if (lp) {
        /* the legacy key is a number in QEMU (server.port may name a
         * service): its words for "0.42" (iotest 162) */
        char *end = NULL;
        errno = 0;
        (void)strtoull(lp, &end, 0);
        if (!*lp || *end || errno) {
            return vd_error_set(errp, EINVAL, "Parameter 'port' expects a number");
        }
    }
    if (ssh_legacy_key(opts, "host", "server.host", errp) < 0 ||
        ssh_legacy_key(opts, "port", "server.port", errp) < 0) {
        return -EINVAL;
    }
    cfg->host = vd_opts_get(opts, "server.host");
    cfg->port = vd_opts_get(opts, "server.port");
    cfg->path = vd_opts_get(opts, "path");
    cfg->user = vd_opts_get(opts, "user");
    if (!cfg->host && !cfg->port) {
        return vd_error_set(errp, EINVAL, "Parameter 'server' is missing");
    }
    if (!cfg->host) {
        return vd_error_set(errp, EINVAL, "Parameter 'server.host' is missing");
    }
    if (!cfg->port) {
        return vd_error_set(errp, EINVAL, "Parameter 'server.port' is missing");
    }
    if (!*cfg->host) {
        return vd_error_set(errp, EINVAL, "Parameter 'server.host' must not be empty");
    }
    if (!*cfg->port) {
        return vd_error_set(errp, EINVAL, "Parameter 'server.port' must not be empty");
    }
    if (!cfg->path) {
        return vd_error_set(errp, EINVAL, "Parameter 'path' is missing");
    }
    if (!*cfg->path) {
        return vd_error_set(errp, EINVAL, "Parameter 'path' must not be empty");
    }
    if (cfg->user && !*cfg->user) {
        cfg->user = NULL;
    }

    const char *legacy = vd_opts_get(opts, "host_key_check");
    const char *mode = vd_opts_get(opts, "host-key-check.mode");
    const char *type = vd_opts_get(opts, "host-key-check.type");
    const char *hash = vd_opts_get(opts, "host-key-check.hash");
    if (legacy) {
        if (mode || type || hash) {
            return vd_error_set(errp, EINVAL,
                                "host_key_check and host-key-check cannot be used at the "
                                "same time");
        }
        cfg->legacy_hkc = legacy;
        return ssh_parse_legacy_hkc(legacy, cfg, errp);
    }
    if (!mode) {
        if (type || hash) {
            return vd_error_set(errp, EINVAL, "Parameter 'host-key-check.mode' is missing");
        }
        return 0;
    }
    if (!strcmp(mode, "none")) {
        cfg->mode = VD_SSH_HKC_NONE;
    } else if (!strcmp(mode, "known_hosts")) {
        cfg->mode = VD_SSH_HKC_KNOWN_HOSTS;
    } else if (!strcmp(mode, "hash")) {
        cfg->mode = VD_SSH_HKC_HASH;
    } else {
        return vd_error_set(errp, EINVAL, "Parameter 'mode' does not accept value '%s'", mode);
    }
    if (cfg->mode != VD_SSH_HKC_HASH) {
        if (type || hash) {
            return vd_error_set(errp, EINVAL,
                                "host-key-check.type and .hash need host-key-check.mode=hash");
        }
        return 0;
    }
    if (!type) {
        return vd_error_set(errp, EINVAL, "Parameter 'host-key-check.type' is missing");
    }
    if (!strcmp(type, "md5")) {
        cfg->hash_type = VD_SSH_HASH_MD5;
    } else if (!strcmp(type, "sha1")) {
        cfg->hash_type = VD_SSH_HASH_SHA1;
    } else if (!strcmp(type, "sha256")) {
        cfg->hash_type = VD_SSH_HASH_SHA256;
    } else {
        return vd_error_set(errp, EINVAL, "Parameter 'type' does not accept value '%s'", type);
    }
    if (!hash) {
        return vd_error_set(errp, EINVAL, "Parameter 'host-key-check.hash' is missing");
    }
    cfg->hash = hash;
    return 0;
}

bool vd_ssh_fingerprint_matches(const uint8_t *hash, size_t len, const char *text)
{
    for (size_t i = 0; i < len; i++) {
        while (*text == ':') {
            text++;
        }
        int hi = ssh_hexval((unsigned char)text[0]);
        int lo = hi < 0 ? -1 : ssh_hexval((unsigned char)text[1]);
        if (lo < 0 || hi * 16 + lo != hash[i]) {
            return false;
        }
        text += 2;
    }
    return *text == 0;
}

static int ssh_parse_filename(const char *filename, vd_opts *opts, vd_error **errp)
{
    return vd_ssh_parse_filename(filename, opts, errp);
}

/* ---------------------------------------------------------- messages */

static int ssh_session_error(vd_error **errp, ssh_session session, int err, const char *what)
{
    return vd_error_set(errp, err, "%s: %s (libssh error code: %d)", what,
                        ssh_get_error(session), ssh_get_error_code(session));
}

static int ssh_sftp_errno(sftp_session sftp)
{
    switch (sftp ? sftp_get_error(sftp) : SSH_FX_FAILURE) {
    case SSH_FX_NO_SUCH_FILE:
        return ENOENT;
    case SSH_FX_PERMISSION_DENIED:
        return EACCES;
    case SSH_FX_OP_UNSUPPORTED:
        return ENOTSUP;
    default:
        return EIO;
    }
}

static int ssh_sftp_error(vd_error **errp, ssh_state *s, const char *what)
{
    if (!s->sftp) {
        return ssh_session_error(errp, s->session, EIO, what);
    }
    return vd_error_set(errp, ssh_sftp_errno(s->sftp),
                        "%s: %s (libssh error code: %d, sftp error code: %d)", what,
                        ssh_get_error(s->session), ssh_get_error_code(s->session),
                        sftp_get_error(s->sftp));
}

/* --------------------------------------------------------- connecting */

static int ssh_tcp_connect(const char *host, const char *port, vd_error **errp)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int r = getaddrinfo(host, port, &hints, &res);
    if (r != 0) {
        return vd_error_set(errp, EINVAL, "address resolution failed for %s:%s: %s", host,
                            port, gai_strerror(r));
    }
    int fd = -1, err = ECONNREFUSED;
    for (struct addrinfo *a = res; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) {
            break;
        }
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        return vd_error_setg_errno(errp, err, "Failed to connect to '%s:%s'", host, port);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    return fd;
}

static const char *ssh_hash_name(vd_ssh_hash_type t)
{
    return t == VD_SSH_HASH_MD5 ? "md5" : t == VD_SSH_HASH_SHA1 ? "sha1" : "sha256";
}

static int ssh_check_hash(ssh_state *s, const vd_ssh_cfg *cfg, vd_error **errp)
{
    static const enum ssh_publickey_hash_type types[] = {
        [VD_SSH_HASH_MD5] = SSH_PUBLICKEY_HASH_MD5,
        [VD_SSH_HASH_SHA1] = SSH_PUBLICKEY_HASH_SHA1,
        [VD_SSH_HASH_SHA256] = SSH_PUBLICKEY_HASH_SHA256,
    };
    ssh_key key = NULL;
    if (ssh_get_server_publickey(s->session, &key) != SSH_OK) {
        return ssh_session_error(errp, s->session, EINVAL, "failed to read remote host key");
    }
    unsigned char *hash = NULL;
    size_t len = 0;
    const char *ktype = ssh_key_type_to_char(ssh_key_type(key));
    char ktype_buf[64];
    snprintf(ktype_buf, sizeof(ktype_buf), "%s", ktype ? ktype : "unknown");
    int r = ssh_get_publickey_hash(key, types[cfg->hash_type], &hash, &len);
    ssh_key_free(key);
    if (r != 0) {
        return ssh_session_error(errp, s->session, EINVAL,
                                 "failed reading the hash of the server SSH key");
    }
    int ret = 0;
    if (!vd_ssh_fingerprint_matches(hash, len, cfg->hash)) {
        char hex[2 * 64 + 1];
        size_t n = VD_MIN(len, (size_t)64);
        for (size_t i = 0; i < n; i++) {
            snprintf(hex + 2 * i, 3, "%02x", hash[i]);
        }
        hex[2 * n] = 0;
        const char *tn = ssh_hash_name(cfg->hash_type);
        ret = vd_error_set(errp, EPERM,
                           "remote host %s key fingerprint '%s:%s' does not match "
                           "host_key_check '%s:%s'",
                           ktype_buf, tn, hex, tn, cfg->hash);
    }
    ssh_clean_pubkey_hash(&hash);
    return ret;
}

static int ssh_check_known_hosts(ssh_state *s, vd_error **errp)
{
    enum ssh_known_hosts_e state = ssh_session_is_known_server(s->session);
    switch (state) {
    case SSH_KNOWN_HOSTS_OK:
        return 0;
    case SSH_KNOWN_HOSTS_CHANGED: {
        ssh_key key = NULL;
        unsigned char *hash = NULL;
        size_t len = 0;
        char *fp = NULL;
        char ktype[64] = "unknown";
        if (ssh_get_server_publickey(s->session, &key) == SSH_OK) {
            const char *k = ssh_key_type_to_char(ssh_key_type(key));
            snprintf(ktype, sizeof(ktype), "%s", k ? k : "unknown");
            if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &len) == 0) {
                fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, len);
                ssh_clean_pubkey_hash(&hash);
            }
            ssh_key_free(key);
        }
        int ret;
        if (fp) {
            ret = vd_error_set(errp, EPERM,
                               "host key (%s key with fingerprint %s) does not match the one "
                               "in known_hosts; this may be a possible attack",
                               ktype, fp);
            ssh_string_free_char(fp);
        } else {
            ret = vd_error_set(errp, EPERM,
                               "host key does not match the one in known_hosts; this may be a "
                               "possible attack");
        }
        return ret;
    }
    case SSH_KNOWN_HOSTS_OTHER:
        return vd_error_set(errp, EPERM,
                            "host key for this server not found, another type exists");
    case SSH_KNOWN_HOSTS_UNKNOWN:
        return vd_error_set(errp, EPERM, "no host key was found in known_hosts");
    case SSH_KNOWN_HOSTS_NOT_FOUND:
        return vd_error_set(errp, EPERM, "known_hosts file not found");
    case SSH_KNOWN_HOSTS_ERROR:
    default:
        return ssh_session_error(errp, s->session, EINVAL, "error while checking the host");
    }
}

static int ssh_authenticate(ssh_state *s, vd_error **errp)
{
    int r = ssh_userauth_none(s->session, NULL);
    if (r == SSH_AUTH_ERROR) {
        return ssh_session_error(errp, s->session, EPERM,
                                 "failed to check available authentication methods");
    }
    if (r == SSH_AUTH_SUCCESS) {
        return 0;
    }
    int methods = ssh_userauth_list(s->session, NULL);
    if (methods & SSH_AUTH_METHOD_PUBLICKEY) {
        /* the agent's identities, then ~/.ssh/id_*: never a passphrase prompt
         * (no auth callback is set, so encrypted keys are skipped) */
        r = ssh_userauth_publickey_auto(s->session, NULL, NULL);
        if (r == SSH_AUTH_ERROR) {
            return ssh_session_error(errp, s->session, EPERM,
                                     "failed to authenticate using publickey authentication");
        }
        if (r == SSH_AUTH_SUCCESS) {
            return 0;
        }
    }
    return vd_error_set(errp, EPERM,
                        "failed to authenticate using publickey authentication and the "
                        "identities held by your ssh-agent");
}

static char *ssh_local_user(void)
{
    struct passwd pw, *res = NULL;
    char buf[4096];
    if (getpwuid_r(getuid(), &pw, buf, sizeof(buf), &res) == 0 && res && res->pw_name) {
        return vd_strdup(res->pw_name);
    }
    const char *env = getenv("USER");
    return env && *env ? vd_strdup(env) : NULL;
}

static void ssh_disconnect_state(ssh_state *s)
{
    if (s->file) {
        sftp_close(s->file);
        s->file = NULL;
    }
    if (s->sftp) {
        sftp_free(s->sftp);
        s->sftp = NULL;
    }
    if (s->session) {
        ssh_disconnect(s->session);
        ssh_free(s->session);
        s->session = NULL;
    }
}

/*
 * Connect, check the host key, authenticate and open the file with
 * open(2)-style flags.  *user_out: the user name used (malloc'ed).
 */
static int ssh_connect_file(ssh_state *s, const vd_ssh_cfg *cfg, int oflags, mode_t mode,
                            char **user_out, vd_error **errp)
{
    char *user = cfg->user ? vd_strdup(cfg->user) : ssh_local_user();
    if (!user) {
        return vd_error_set(errp, EINVAL, "Can't get user name");
    }
    int fd = ssh_tcp_connect(cfg->host, cfg->port, errp);
    if (fd < 0) {
        free(user);
        return fd;
    }
    int ret = 0;
    s->session = ssh_new();
    if (!s->session) {
        close(fd);
        free(user);
        return vd_error_set(errp, ENOMEM, "failed to initialize libssh session");
    }
    socket_t sock = fd;
    long port = strtol(cfg->port, NULL, 10);
    int iport = port > 0 && port <= 65535 ? (int)port : 22;
    if (ssh_options_set(s->session, SSH_OPTIONS_HOST, cfg->host) < 0 ||
        ssh_options_set(s->session, SSH_OPTIONS_PORT, &iport) < 0 ||
        ssh_options_set(s->session, SSH_OPTIONS_COMPRESSION, "no") < 0 ||
        ssh_options_set(s->session, SSH_OPTIONS_USER, user) < 0) {
        ret = ssh_session_error(errp, s->session, EINVAL, "failed to set the ssh options");
        close(fd);
        goto fail;
    }
    if (ssh_options_parse_config(s->session, NULL) < 0) {
        ret = ssh_session_error(errp, s->session, EINVAL, "failed to read ssh config");
        close(fd);
        goto fail;
    }
    /* from here on the session owns the socket (ssh_free closes it) */
    ssh_options_set(s->session, SSH_OPTIONS_FD, &sock);
    ssh_set_blocking(s->session, 1);
    if (ssh_connect(s->session) != SSH_OK) {
        ret = ssh_session_error(errp, s->session, EIO, "failed to establish SSH session");
        goto fail;
    }
    switch (cfg->mode) {
    case VD_SSH_HKC_NONE:
        break;
    case VD_SSH_HKC_HASH:
        ret = ssh_check_hash(s, cfg, errp);
        break;
    case VD_SSH_HKC_KNOWN_HOSTS:
        ret = ssh_check_known_hosts(s, errp);
        break;
    }
    if (ret < 0) {
        goto fail;
    }
    ret = ssh_authenticate(s, errp);
    if (ret < 0) {
        goto fail;
    }
    s->sftp = sftp_new(s->session);
    if (!s->sftp) {
        ret = ssh_session_error(errp, s->session, EIO, "failed to initialize sftp handle");
        goto fail;
    }
    if (sftp_init(s->sftp) < 0) {
        ret = ssh_sftp_error(errp, s, "failed to initialize sftp handle");
        goto fail;
    }
    s->file = sftp_open(s->sftp, cfg->path, oflags, mode);
    if (!s->file) {
        char what[4200];
        snprintf(what, sizeof(what), "failed to open remote file '%s'", cfg->path);
        ret = ssh_sftp_error(errp, s, what);
        goto fail;
    }
    sftp_file_set_blocking(s->file);
    sftp_attributes attrs = sftp_fstat(s->file);
    if (!attrs) {
        ret = ssh_sftp_error(errp, s, "failed to read file attributes");
        goto fail;
    }
    s->size = attrs->size;
    s->regular = attrs->type == SSH_FILEXFER_TYPE_REGULAR;
    sftp_attributes_free(attrs);
    s->has_fsync = sftp_extension_supported(s->sftp, "fsync@openssh.com", "1") != 0;
    *user_out = user;
    return 0;

fail:
    ssh_disconnect_state(s);
    free(user);
    return ret;
}

/* QEMU's name for the file: ssh://USER@HOST:PORT/PATH[?host_key_check=..] */
static char *ssh_canonical_name(const vd_ssh_cfg *cfg, const char *user)
{
    bool v6 = strchr(cfg->host, ':') != NULL;
    return vd_asprintf("ssh://%s@%s%s%s:%s%s%s%s", user, v6 ? "[" : "", cfg->host,
                       v6 ? "]" : "", cfg->port, cfg->path,
                       cfg->legacy_hkc ? "?host_key_check=" : "",
                       cfg->legacy_hkc ? cfg->legacy_hkc : "");
}

/* ---------------------------------------------------------- open/close */

static int ssh_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    ssh_state *s = bs->opaque;
    vd_ssh_cfg cfg;
    int ret = vd_ssh_parse_opts(opts, &cfg, errp);
    if (ret < 0) {
        return ret;
    }
    char *user = NULL;
    ret = ssh_connect_file(s, &cfg, bs->read_only ? O_RDONLY : O_RDWR, 0, &user, errp);
    if (ret < 0) {
        return ret;
    }
    char *name = ssh_canonical_name(&cfg, user);
    free(user);
    s->host = vd_strdup(cfg.host);
    if (!name || !s->host) {
        free(name);
        ssh_disconnect_state(s);
        free(s->host);
        s->host = NULL;
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    free(bs->filename);
    bs->filename = name;
    pthread_mutex_init(&s->lock, NULL);
    s->lock_init = true;
    bs->request_alignment = 1;
    bs->has_zero_init = s->regular;
    return 0;
}

static void ssh_close(vd_node *bs)
{
    ssh_state *s = bs->opaque;
    ssh_disconnect_state(s);
    free(s->host);
    s->host = NULL;
    if (s->lock_init) {
        pthread_mutex_destroy(&s->lock);
        s->lock_init = false;
    }
}

static int64_t ssh_get_length(vd_node *bs)
{
    ssh_state *s = bs->opaque;
    pthread_mutex_lock(&s->lock);
    uint64_t size = s->size;
    pthread_mutex_unlock(&s->lock);
    return size > (uint64_t)INT64_MAX ? -EFBIG : (int64_t)size;
}

/* ------------------------------------------------------------------ I/O */

/* After a failed request: a connection that is gone stays failed
 * (ECONNRESET, "Connection reset by peer", from then on). */
static int ssh_io_failed(ssh_state *s)
{
    ssh_channel ch = s->sftp ? s->sftp->channel : NULL;
    if (!ssh_is_connected(s->session) || ssh_get_error_code(s->session) == SSH_FATAL || !ch ||
        ssh_channel_is_closed(ch) ||
        ssh_channel_is_eof(ch) || sftp_get_error(s->sftp) == SSH_FX_CONNECTION_LOST ||
        sftp_get_error(s->sftp) == SSH_FX_NO_CONNECTION) {
        s->broken = true;
        return -ECONNRESET;
    }
    int e = ssh_sftp_errno(s->sftp);
    return e == ENOENT ? -EIO : -e;
}

/* Bytes of [off, off+len) one synchronous read loop fills (zeroes past EOF). */
static int ssh_read_sync(ssh_state *s, uint64_t off, uint8_t *buf, uint64_t len)
{
    if (sftp_seek64(s->file, off) < 0) {
        return ssh_io_failed(s);
    }
    while (len) {
        size_t n = (size_t)VD_MIN(len, (uint64_t)SSH_READ_CHUNK);
        ssize_t r = sftp_read(s->file, buf, n);
        if (r < 0) {
            return ssh_io_failed(s);
        }
        if (r == 0) {
            memset(buf, 0, (size_t)len); /* end of file reads as zeroes */
            return 0;
        }
        buf += r;
        len -= (uint64_t)r;
    }
    return 0;
}

static int ssh_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    (void)flags;
    ssh_state *s = bs->opaque;
    uint8_t *p = buf;
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    if (s->broken) {
        ret = -ECONNRESET;
        goto out;
    }
    /* past the known end reads zeroes without asking (the node's length) */
    if (offset >= s->size) {
        memset(p, 0, (size_t)len);
        goto out;
    }
    if (len > s->size - offset) {
        memset(p + (s->size - offset), 0, (size_t)(len - (s->size - offset)));
        len = s->size - offset;
    }
    while (len && ret == 0) {
        /* one round: up to SSH_READ_DEPTH requests in flight */
        int ids[SSH_READ_DEPTH];
        uint32_t lens[SSH_READ_DEPTH];
        uint32_t got[SSH_READ_DEPTH];
        int n = 0;
        uint64_t issued = 0;
        if (sftp_seek64(s->file, offset) < 0) {
            ret = ssh_io_failed(s);
            break;
        }
        while (n < SSH_READ_DEPTH && issued < len) {
            uint32_t c = (uint32_t)VD_MIN(len - issued, (uint64_t)SSH_READ_CHUNK);
            int id = sftp_async_read_begin(s->file, c);
            if (id < 0) {
                ret = ssh_io_failed(s);
                break;
            }
            ids[n] = id;
            lens[n] = c;
            n++;
            issued += c;
        }
        uint64_t pos = 0;
        for (int i = 0; i < n; i++) {
            /* once a reply said EOF, libssh answers 0 without collecting the
             * others, which would then stay queued: every one is collected */
            s->file->eof = 0;
            if (ret < 0) {
                /* collect what was asked for, so that libssh frees it */
                sftp_async_read(s->file, p + pos, lens[i], (uint32_t)ids[i]);
                pos += lens[i];
                continue;
            }
            int r = sftp_async_read(s->file, p + pos, lens[i], (uint32_t)ids[i]);
            if (r < 0) {
                ret = ssh_io_failed(s);
                got[i] = 0;
            } else {
                got[i] = (uint32_t)r;
            }
            pos += lens[i];
        }
        if (ret < 0) {
            break;
        }
        /* a short answer: end of file (zeroes) or a server that answers
         * less than asked; fill the rest one request at a time */
        pos = 0;
        for (int i = 0; i < n && ret == 0; i++) {
            if (got[i] < lens[i]) {
                ret = ssh_read_sync(s, offset + pos + got[i], p + pos + got[i],
                                    lens[i] - got[i]);
            }
            pos += lens[i];
        }
        p += issued;
        offset += issued;
        len -= issued;
    }
out:
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int ssh_write_locked(ssh_state *s, uint64_t offset, const uint8_t *p, uint64_t len)
{
    if (s->broken) {
        return -ECONNRESET;
    }
    if (sftp_seek64(s->file, offset) < 0) {
        return ssh_io_failed(s);
    }
    uint64_t end = offset + len;
    while (len) {
        size_t n = (size_t)VD_MIN(len, (uint64_t)SSH_WRITE_CHUNK);
        ssize_t r = sftp_write(s->file, p, n);
        if (r <= 0) {
            return ssh_io_failed(s);
        }
        p += r;
        len -= (uint64_t)r;
    }
    if (end > s->size) {
        s->size = end;
    }
    return 0;
}

static int ssh_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                      unsigned flags)
{
    ssh_state *s = bs->opaque;
    pthread_mutex_lock(&s->lock);
    int ret = ssh_write_locked(s, offset, buf, len);
    if (ret == 0 && (flags & VD_REQ_FUA) && s->has_fsync) {
        if (sftp_fsync(s->file) < 0) {
            ret = ssh_io_failed(s);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int ssh_flush(vd_node *bs)
{
    ssh_state *s = bs->opaque;
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    if (s->broken) {
        ret = -ECONNRESET;
    } else if (!s->has_fsync) {
        if (!s->warned_fsync) {
            /* QEMU's warn_report and error_report lines */
            vd_warn("ssh server %s does not support fsync", s->host);
            vd_warn("to support fsync, you need OpenSSH >= 6.3");
            s->warned_fsync = true;
        }
    } else if (sftp_fsync(s->file) < 0) {
        ret = ssh_io_failed(s);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

/* QEMU's ssh_grow_file: one zero byte written at the new last offset. */
static int ssh_grow(ssh_state *s, uint64_t size, vd_error **errp)
{
    static const uint8_t zero;
    int r = ssh_write_locked(s, size - 1, &zero, 1);
    if (r < 0) {
        if (s->sftp) {
            return ssh_sftp_error(errp, s, "Failed to grow file");
        }
        return vd_error_setg_errno(errp, -r, "Failed to grow file");
    }
    return 0;
}

static int ssh_truncate(vd_node *bs, uint64_t size, bool exact, vd_prealloc prealloc,
                        vd_error **errp)
{
    (void)exact;
    ssh_state *s = bs->opaque;
    if (prealloc != VD_PREALLOC_OFF) {
        return vd_error_set(errp, ENOTSUP, "Unsupported preallocation mode '%s'",
                            vd_prealloc_name(prealloc));
    }
    if (size > (uint64_t)INT64_MAX) {
        return vd_error_set(errp, EFBIG, "Image size is too large");
    }
    int ret = 0;
    pthread_mutex_lock(&s->lock);
    if (s->broken) {
        ret = vd_error_set(errp, EIO, "the connection to ssh server %s was lost", s->host);
    } else if (size < s->size) {
        ret = vd_error_set(errp, ENOTSUP, "ssh driver does not support shrinking files");
    } else if (size > s->size) {
        ret = ssh_grow(s, size, errp);
    }
    pthread_mutex_unlock(&s->lock);
    return ret;
}

static int ssh_create(const char *filename, const vd_opts *opts, vd_error **errp)
{
    uint64_t size;
    if (vd_opts_get_size(opts, "size", 0, &size, errp) < 0) {
        return -EINVAL;
    }
    /* as for other protocols, a new file takes whole sectors */
    if (vd_align_up_overflow(size, 512, &size) || size > (uint64_t)INT64_MAX) {
        return vd_error_set(errp, EFBIG, "Image size is too large");
    }
    vd_opts *o = vd_opts_new();
    if (!o) {
        return vd_error_set(errp, ENOMEM, "out of memory");
    }
    vd_ssh_cfg cfg;
    int ret = vd_ssh_parse_filename(filename, o, errp);
    if (ret == 0) {
        ret = vd_ssh_parse_opts(o, &cfg, errp);
    }
    ssh_state s = {0};
    char *user = NULL;
    if (ret == 0) {
        ret = ssh_connect_file(&s, &cfg, O_RDWR | O_CREAT | O_TRUNC, 0644, &user, errp);
    }
    if (ret == 0) {
        free(user);
        s.host = vd_strdup(cfg.host);
        if (size > 0) {
            ret = ssh_grow(&s, size, errp);
        }
        ssh_disconnect_state(&s);
        free(s.host);
    }
    vd_opts_free(o);
    return ret;
}

const vd_driver vd_drv_ssh = {
    .name = "ssh",
    .kind = VD_DRV_PROTOCOL,
    .protocols = ssh_protocols,
    .state_size = sizeof(ssh_state),
    .create_opts = ssh_create_opts,
    .open_opts = ssh_open_opts,
    .parse_filename = ssh_parse_filename,
    .open = ssh_open,
    .close = ssh_close,
    .create = ssh_create,
    .get_length = ssh_get_length,
    .pread = ssh_pread,
    .pwrite = ssh_pwrite,
    .flush = ssh_flush,
    .truncate = ssh_truncate,
};
