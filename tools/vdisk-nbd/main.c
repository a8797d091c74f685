/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk-nbd: export a disk image over NBD, with qemu-nbd's command line.
 * Uses only the public API (vdisk.h, vdisk-nbd.h) and tools/common.
 * Not supported: -c/-d (kernel /dev/nbd devices), --tls-authz,
 * --selinux-label, -T tracing.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tool.h"
#include "vdisk-nbd.h"
#include "vdisk.h"

enum {
    OPT_OBJECT = 256,
    OPT_IMAGE_OPTS,
    OPT_CACHE,
    OPT_AIO,
    OPT_DISCARD,
    OPT_DETECT_ZEROES,
    OPT_TLS_CREDS,
    OPT_TLS_PSK,
    OPT_TLS_HOSTNAME,
    OPT_TLS_AUTHZ,
    OPT_FORK,
    OPT_PID_FILE,
    OPT_HANDSHAKE_LIMIT,
    OPT_THREADS,
    OPT_SELINUX,
};

static const struct option long_opts[] = {
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {"port", required_argument, NULL, 'p'},
    {"bind", required_argument, NULL, 'b'},
    {"socket", required_argument, NULL, 'k'},
    {"shared", required_argument, NULL, 'e'},
    {"persistent", no_argument, NULL, 't'},
    {"verbose", no_argument, NULL, 'v'},
    {"export-name", required_argument, NULL, 'x'},
    {"description", required_argument, NULL, 'D'},
    {"offset", required_argument, NULL, 'o'},
    {"allocation-depth", no_argument, NULL, 'A'},
    {"bitmap", required_argument, NULL, 'B'},
    {"list", no_argument, NULL, 'L'},
    {"object", required_argument, NULL, OPT_OBJECT},
    {"tls-creds", required_argument, NULL, OPT_TLS_CREDS},
    {"tls-psk", required_argument, NULL, OPT_TLS_PSK},
    {"tls-hostname", required_argument, NULL, OPT_TLS_HOSTNAME},
    {"tls-authz", required_argument, NULL, OPT_TLS_AUTHZ},
    {"trace", required_argument, NULL, 'T'},
    {"fork", no_argument, NULL, OPT_FORK},
    {"pid-file", required_argument, NULL, OPT_PID_FILE},
    {"selinux-label", required_argument, NULL, OPT_SELINUX},
    {"connect", required_argument, NULL, 'c'},
    {"disconnect", no_argument, NULL, 'd'},
    {"format", required_argument, NULL, 'f'},
    {"read-only", no_argument, NULL, 'r'},
    {"snapshot", no_argument, NULL, 's'},
    {"load-snapshot", required_argument, NULL, 'l'},
    {"nocache", no_argument, NULL, 'n'},
    {"cache", required_argument, NULL, OPT_CACHE},
    {"aio", required_argument, NULL, OPT_AIO},
    {"discard", required_argument, NULL, OPT_DISCARD},
    {"detect-zeroes", required_argument, NULL, OPT_DETECT_ZEROES},
    {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
    {"handshake-limit", required_argument, NULL, OPT_HANDSHAKE_LIMIT},
    {"threads", required_argument, NULL, OPT_THREADS},
    {NULL, 0, NULL, 0},
};

static void usage(void)
{
    printf("Usage: vdisk-nbd [OPTIONS] FILE\n"
           "  or:  vdisk-nbd -L [OPTIONS]\n"
           "Export a disk image over NBD (qemu-nbd compatible)\n"
           "\n"
           "  -h, --help                display this help and exit\n"
           "  -V, --version             output version information and exit\n"
           "\n"
           "Connection properties:\n"
           "  -p, --port=PORT           port to listen on (default `10809')\n"
           "  -b, --bind=IFACE          interface to bind to (default `0.0.0.0')\n"
           "  -k, --socket=PATH         path to the unix socket\n"
           "  -e, --shared=NUM          device can be shared by NUM clients (default '1',\n"
           "                            0 = unlimited)\n"
           "  -t, --persistent          don't exit on the last connection\n"
           "  -v, --verbose             display extra debugging information (twice: every\n"
           "                            option and request)\n"
           "  -x, --export-name=NAME    expose export by name (default is empty string)\n"
           "  -D, --description=TEXT    export a human-readable description\n"
           "      --handshake-limit=N   drop clients that have not finished the handshake\n"
           "                            after N seconds (default 10, 0 = never)\n"
           "      --threads=N           worker threads shared by all clients (default: 8 per\n"
           "                            core, 16 to 48)\n"
           "\n"
           "Exposing part of the image:\n"
           "  -o, --offset=OFFSET       offset into the image\n"
           "  -A, --allocation-depth    expose the allocation depth\n"
           "  -B, --bitmap=NAME         expose a persistent dirty bitmap\n"
           "\n"
           "General purpose options:\n"
           "  -L, --list                list exports available from another NBD server\n"
           "  --object type,id=ID,...   define an object: 'secret', 'tls-creds-x509'\n"
           "                            or 'tls-creds-psk'\n"
           "  --tls-creds=ID            use id of an earlier --object to provide TLS;\n"
           "                            a directory (x509) or a keys file (PSK) also works\n"
           "  --tls-psk=FILE            TLS with the pre-shared keys of FILE (psktool)\n"
           "  --tls-hostname=HOSTNAME   name the server certificate must carry (-L)\n"
           "  --fork                    fork off the server process and exit the parent\n"
           "                            once the server is running\n"
           "  --pid-file=PATH           store the server's process ID in the given file\n"
           "\n"
           "Block device options:\n"
           "  -f, --format=FORMAT       set image format (raw, qcow2, ...)\n"
           "  -r, --read-only           export read-only\n"
           "  -s, --snapshot            use FILE as an external snapshot, create a temporary\n"
           "                            file with backing_file=FILE, redirect the write to\n"
           "                            the temporary one\n"
           "  -l, --load-snapshot=SNAPSHOT_PARAM\n"
           "                            load an internal snapshot inside FILE and export it\n"
           "                            as an read-only device, SNAPSHOT_PARAM format is\n"
           "                            'snapshot.id=[ID],snapshot.name=[NAME]', or\n"
           "                            '[ID_OR_NAME]'\n"
           "  -n, --nocache             disable host cache\n"
           "      --cache=MODE          set cache mode used to access the disk image, the\n"
           "                            valid options are: 'none', 'writeback' (default),\n"
           "                            'writethrough', 'directsync' and 'unsafe'\n"
           "      --aio=MODE            set AIO mode (native, io_uring or threads)\n"
           "      --discard=MODE        set discard mode (ignore, unmap)\n"
           "      --detect-zeroes=MODE  set detect-zeroes mode (off, on, unmap)\n"
           "      --image-opts          treat FILE as a full set of image options\n"
           "\n"
           "See vdisk-nbd(1).\n");
}

/* ------------------------------------------------------------- logging */

static void log_cb(void *opaque, vd_nbd_log_level level, const char *msg)
{
    (void)opaque;
    if (level <= VD_NBD_LOG_WARNING) {
        fprintf(stderr, "%s: %s%s\n", tool_progname(),
                level == VD_NBD_LOG_WARNING ? "warning: " : "", msg);
    } else {
        fprintf(stderr, "%s: %s\n", tool_progname(), msg);
    }
}

/* ------------------------------------------------------------- signals */

static vd_nbd_server *g_server;

static void on_signal(int sig)
{
    (void)sig;
    if (g_server) {
        vd_nbd_server_stop(g_server);
    }
}

static void setup_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ----------------------------------------------------------------- TLS */

/*
 * --tls-creds: an --object id, else a directory (X.509) or a keys file
 * (PSK).  server: which endpoint we are.
 */
static vd_nbd_tls_creds *get_tls(const char *creds, const char *psk, bool server, bool *owned)
{
    *owned = true;
    if (psk) {
        vd_nbd_tls_creds *c = vd_nbd_tls_creds_new_psk(psk, NULL, server);
        if (!c) {
            tool_error_last();
        }
        return c;
    }
    vd_nbd_tls_creds *c = vd_nbd_tls_creds_lookup(creds);
    if (c) {
        if (vd_nbd_tls_creds_is_server(c) != server) {
            tool_error("Expecting TLS credentials with a %s endpoint",
                       server ? "server" : "client");
            return NULL;
        }
        *owned = false; /* the registry keeps it */
        return c;
    }
    struct stat st;
    if (stat(creds, &st) == 0 && S_ISDIR(st.st_mode)) {
        c = vd_nbd_tls_creds_new_x509(creds, server, false);
    } else if (stat(creds, &st) == 0 && S_ISREG(st.st_mode)) {
        c = vd_nbd_tls_creds_new_psk(creds, NULL, server);
    } else {
        tool_error("No TLS credentials with id '%s'", creds);
        return NULL;
    }
    if (!c) {
        tool_error_last();
    }
    return c;
}

/* ---------------------------------------------------------------- list */

static int do_list(const char *host, const char *port, const char *sock, vd_nbd_tls_creds *tls,
                   const char *tls_hostname)
{
    vd_nbd_export_info *list;
    size_t n;
    if (vd_nbd_list_exports(sock   ? NULL
                            : host ? host
                                   : "localhost",
                            port, sock, tls, tls_hostname, &list, &n) < 0) {
        tool_error_last();
        return EXIT_FAILURE;
    }
    static const char *const flag_names[] = {
        "readonly", "flush", "fua",    "rotational", "trim",      "zeroes",
        "df",       "multi", "resize", "cache",      "fast-zero", "block-status-payload",
    };
    printf("exports available: %zu\n", n);
    for (size_t i = 0; i < n; i++) {
        vd_nbd_export_info *e = &list[i];
        printf(" export: '%s'\n", e->name);
        if (e->description && *e->description) {
            printf("  description: %s\n", e->description);
        }
        if (e->info_failed) {
            continue;
        }
        printf("  size:  %" PRIu64 "\n", e->size);
        printf("  flags: 0x%x (", e->flags);
        for (size_t b = 0; b < sizeof(flag_names) / sizeof(flag_names[0]); b++) {
            if (e->flags & (1u << (b + 1))) {
                printf(" %s", flag_names[b]);
            }
        }
        printf(" )\n");
        if (e->min_block) {
            printf("  min block: %u\n", e->min_block);
            printf("  opt block: %u\n", e->pref_block);
            printf("  max block: %u\n", e->max_block);
        }
        if (e->ncontexts) {
            printf("  available meta contexts: %zu\n", e->ncontexts);
            for (size_t j = 0; j < e->ncontexts; j++) {
                printf("   %s\n", e->contexts[j]);
            }
        }
    }
    vd_nbd_export_info_free(list, n);
    return EXIT_SUCCESS;
}

/* ------------------------------------------------------------ snapshot */

/* -s: a temporary qcow2 overlay over filename; returns it opened RDWR. */
static vd_image *open_snapshot_overlay(const char *filename, const char *fmt,
                                       const vd_opts *extra)
{
    vd_image *base = tool_open(filename, fmt, false, extra, 0, true);
    if (!base) {
        return NULL;
    }
    int64_t size = vd_get_length(base);
    char *abs = realpath(filename, NULL);
    const char *base_fmt = vd_image_format(base);
    char fmtbuf[64];
    snprintf(fmtbuf, sizeof(fmtbuf), "%s", base_fmt ? base_fmt : "raw");
    vd_close(base);
    if (size < 0 || !abs) {
        tool_error("Could not open '%s': %s", filename, strerror(errno));
        free(abs);
        return NULL;
    }
    const char *tmpdir = getenv("TMPDIR");
    char tmpl[PATH_MAX];
    snprintf(tmpl, sizeof(tmpl), "%s/vdisk-nbd.XXXXXX",
             tmpdir && *tmpdir ? tmpdir : "/var/tmp");
    int fd = mkstemp(tmpl);
    if (fd < 0) {
        tool_error("Could not create a temporary overlay in %s: %s",
                   tmpdir && *tmpdir ? tmpdir : "/var/tmp", strerror(errno));
        free(abs);
        return NULL;
    }
    close(fd);
    vd_opts *o = vd_opts_new();
    char sz[32];
    snprintf(sz, sizeof(sz), "%" PRId64, size);
    vd_opts_set(o, "size", sz);
    vd_opts_set(o, "backing_file", abs);
    vd_opts_set(o, "backing_fmt", fmtbuf);
    int r = vd_create(tmpl, "qcow2", o);
    vd_opts_free(o);
    free(abs);
    if (r < 0) {
        tool_error_lib("Could not create temporary overlay '%s'", tmpl);
        unlink(tmpl);
        return NULL;
    }
    vd_image *img = tool_open(tmpl, "qcow2", false, extra, VD_OPEN_RDWR | VD_OPEN_EXPORT, true);
    /* the overlay lives only as long as we keep it open */
    unlink(tmpl);
    return img;
}

/* -l: "snapshot.id=ID,snapshot.name=NAME" or "ID_OR_NAME". */
static vd_image *load_snapshot(vd_image *img, const char *param)
{
    if (!strncmp(param, "snapshot.", 9)) {
        vd_opts *o = vd_opts_new();
        if (vd_opts_parse(o, param, NULL) < 0) {
            tool_error_lib("Failed in parsing snapshot param '%s'", param);
            vd_opts_free(o);
            return NULL;
        }
        for (size_t i = 0; i < vd_opts_count(o); i++) {
            const char *k = vd_opts_key(o, i);
            if (strcmp(k, "snapshot.id") && strcmp(k, "snapshot.name")) {
                tool_error("Invalid parameter '%s'", k);
                vd_opts_free(o);
                return NULL;
            }
        }
        vd_image *s = vd_snapshot_open(img, vd_opts_get(o, "snapshot.name"),
                                       vd_opts_get(o, "snapshot.id"));
        vd_opts_free(o);
        if (!s) {
            tool_error_lib("Failed to load snapshot");
        }
        return s;
    }
    vd_image *s = vd_snapshot_open(img, NULL, param);
    if (!s && vd_get_errno() == ENOENT) {
        s = vd_snapshot_open(img, param, NULL);
    }
    if (!s) {
        tool_error_lib("Failed to load snapshot");
    }
    return s;
}

/* -------------------------------------------------------------- daemon */

static int write_pid_file(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        tool_error("Failed to write pid file '%s': %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "%ld\n", (long)getpid());
    if (fclose(f) != 0 || rename(tmp, path) < 0) {
        tool_error("Failed to write pid file '%s': %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    const char *port = NULL, *bind_addr = NULL, *sock = NULL, *export_name = NULL;
    const char *desc = NULL, *fmt = NULL, *snapshot_param = NULL, *bitmap = NULL;
    const char *tls_creds = NULL, *tls_psk = NULL, *tls_hostname = NULL, *pid_file = NULL;
    const char *cache = NULL, *aio = NULL, *discard = NULL, *detect_zeroes = NULL;
    uint64_t offset = 0;
    long shared = 1, handshake_s = 10, threads = 0;
    bool persistent = false, list = false, image_opts = false, read_only = false;
    bool snapshot = false, depth = false, do_fork = false;
    int verbose = 0;

    tool_init("vdisk-nbd");
    tool_name_from_argv0(argv[0]);
    int ch;
    while ((ch = getopt_long(argc, argv, "hVp:b:k:e:tvx:D:o:AB:LT:c:df:rsl:n", long_opts,
                             NULL)) != -1) {
        char *end;
        switch (ch) {
        case 'h':
            usage();
            return EXIT_SUCCESS;
        case 'V':
            printf("vdisk-nbd %s (libvdisk %s)\n", VD_VERSION_STRING, vd_version());
            return EXIT_SUCCESS;
        case 'p': {
            long p = strtol(optarg, &end, 10);
            if (*end || p < 1 || p > 65535) {
                tool_error("Invalid port number `%s'", optarg);
                return EXIT_FAILURE;
            }
            port = optarg;
            break;
        }
        case 'b':
            bind_addr = optarg;
            break;
        case 'k':
            sock = optarg;
            break;
        case 'e':
            errno = 0;
            shared = strtol(optarg, &end, 10);
            if (errno || *end || shared < 0 || shared > 1000000) {
                tool_error("Invalid shared device number '%s'", optarg);
                return EXIT_FAILURE;
            }
            break;
        case 't':
            persistent = true;
            break;
        case 'v':
            verbose++;
            break;
        case 'x':
            export_name = optarg;
            break;
        case 'D':
            desc = optarg;
            break;
        case 'o':
            if (!tool_parse_size("offset", optarg, &offset)) {
                return EXIT_FAILURE;
            }
            break;
        case 'A':
            depth = true;
            break;
        case 'B':
            bitmap = optarg;
            break;
        case 'L':
            list = true;
            break;
        case 'T':
            tool_warn("tracing is not supported; --trace ignored");
            break;
        case 'c':
        case 'd':
            tool_error("Kernel NBD devices (-c/-d) are not supported; use nbd-client");
            return EXIT_FAILURE;
        case 'f':
            fmt = optarg;
            break;
        case 'r':
            read_only = true;
            break;
        case 's':
            snapshot = true;
            break;
        case 'l':
            snapshot_param = optarg;
            read_only = true;
            break;
        case 'n':
            cache = "none";
            break;
        case OPT_CACHE:
            cache = optarg;
            break;
        case OPT_AIO:
            if (strcmp(optarg, "threads") && strcmp(optarg, "native") &&
                strcmp(optarg, "io_uring")) {
                tool_error("invalid aio mode '%s'", optarg);
                return EXIT_FAILURE;
            }
            aio = optarg;
            break;
        case OPT_DISCARD:
            if (strcmp(optarg, "ignore") && strcmp(optarg, "off") && strcmp(optarg, "unmap") &&
                strcmp(optarg, "on")) {
                tool_error("Invalid discard mode `%s'", optarg);
                return EXIT_FAILURE;
            }
            discard = optarg;
            break;
        case OPT_DETECT_ZEROES:
            if (strcmp(optarg, "off") && strcmp(optarg, "on") && strcmp(optarg, "unmap")) {
                tool_error("Invalid detect-zeroes mode '%s'", optarg);
                return EXIT_FAILURE;
            }
            detect_zeroes = optarg;
            break;
        case OPT_IMAGE_OPTS:
            image_opts = true;
            break;
        case OPT_OBJECT:
            /* secrets and TLS credentials alike */
            if (!tool_object_add(optarg)) {
                return EXIT_FAILURE;
            }
            break;
        case OPT_TLS_CREDS:
            tls_creds = optarg;
            break;
        case OPT_TLS_PSK:
            tls_psk = optarg;
            break;
        case OPT_TLS_HOSTNAME:
            tls_hostname = optarg;
            break;
        case OPT_TLS_AUTHZ:
            tool_error("--tls-authz is not supported");
            return EXIT_FAILURE;
        case OPT_SELINUX:
            tool_error("--selinux-label is not supported");
            return EXIT_FAILURE;
        case OPT_FORK:
            do_fork = true;
            break;
        case OPT_PID_FILE:
            pid_file = optarg;
            break;
        case OPT_HANDSHAKE_LIMIT:
            errno = 0;
            handshake_s = strtol(optarg, &end, 10);
            if (errno || *end || handshake_s < 0 || handshake_s > 86400) {
                tool_error("Invalid handshake limit '%s'", optarg);
                return EXIT_FAILURE;
            }
            break;
        case OPT_THREADS:
            errno = 0;
            threads = strtol(optarg, &end, 10);
            if (errno || *end || threads < 1 || threads > 256) {
                tool_error("Invalid thread count '%s' (1 to 256)", optarg);
                return EXIT_FAILURE;
            }
            break;
        default:
            fprintf(stderr, "Try '%s --help' for more information.\n", tool_progname());
            return EXIT_FAILURE;
        }
    }

    if (sock && (port || bind_addr)) {
        tool_error("-k and -p/-b are mutually exclusive");
        return EXIT_FAILURE;
    }
    if (tls_creds && tls_psk) {
        tool_error("--tls-creds and --tls-psk are mutually exclusive");
        return EXIT_FAILURE;
    }

    vd_nbd_tls_creds *tls = NULL;
    bool tls_owned = false;
    if (list) {
        if (argc != optind) {
            tool_error("List mode is incompatible with a file name");
            return EXIT_FAILURE;
        }
        if (export_name || desc || offset || depth || bitmap || read_only || snapshot || fmt ||
            image_opts || do_fork || persistent) {
            tool_error("List mode is incompatible with per-device settings");
            return EXIT_FAILURE;
        }
        if ((tls_creds || tls_psk) && !(tls = get_tls(tls_creds, tls_psk, false, &tls_owned))) {
            return EXIT_FAILURE;
        }
        return do_list(bind_addr, port, sock, tls, tls_hostname);
    }
    if (argc - optind != 1) {
        tool_error("Expecting one image file name");
        fprintf(stderr, "Try '%s --help' for more information.\n", tool_progname());
        return EXIT_FAILURE;
    }
    if (tls_hostname) {
        tool_error("--tls-hostname is only valid with --list");
        return EXIT_FAILURE;
    }
    if (snapshot && snapshot_param) {
        tool_error("-s and -l are mutually exclusive");
        return EXIT_FAILURE;
    }
    if (snapshot && image_opts) {
        tool_error("-s is not supported with --image-opts");
        return EXIT_FAILURE;
    }
    const char *filename = argv[optind];

    if ((tls_creds || tls_psk) && !(tls = get_tls(tls_creds, tls_psk, true, &tls_owned))) {
        return EXIT_FAILURE;
    }

    /* Open the image. */
    vd_opts *extra = vd_opts_new();
    bool writethrough = false;
    if (!tool_parse_cache(cache, extra, &writethrough)) {
        return EXIT_FAILURE;
    }
    if (aio) {
        vd_opts_set(extra, "file.aio", aio);
    }
    if (discard) {
        vd_opts_set(extra, "discard", discard);
    }
    if (detect_zeroes) {
        vd_opts_set(extra, "detect-zeroes", detect_zeroes);
    }
    vd_image *img;
    if (snapshot) {
        img = open_snapshot_overlay(filename, fmt, vd_opts_count(extra) ? extra : NULL);
    } else {
        img = tool_open(filename, fmt, image_opts, vd_opts_count(extra) ? extra : NULL,
                        (read_only ? 0 : VD_OPEN_RDWR) | VD_OPEN_EXPORT, true);
    }
    vd_opts_free(extra);
    if (!img) {
        return EXIT_FAILURE;
    }
    vd_image *exported = img;
    if (snapshot_param) {
        exported = load_snapshot(img, snapshot_param);
        if (!exported) {
            vd_close(img);
            return EXIT_FAILURE;
        }
    }
    int64_t len = vd_get_length(exported);
    if (len < 0) {
        tool_error_lib("Failed to determine the image length");
        vd_close(img);
        return EXIT_FAILURE;
    }
    if (offset > (uint64_t)len) {
        tool_error("Offset (%" PRIu64 ") has to be smaller than the image size (%" PRId64 ")",
                   offset, len);
        vd_close(img);
        return EXIT_FAILURE;
    }

    vd_nbd_server *srv = vd_nbd_server_new();
    if (!srv) {
        tool_error_last();
        vd_close(img);
        return EXIT_FAILURE;
    }
    vd_nbd_export_opts eo = {
        .name = export_name ? export_name : "",
        .description = desc,
        .image = exported,
        .offset = offset,
        .read_only = read_only,
        .writethrough = writethrough,
        .allocation_depth = depth,
        .bitmap = bitmap,
        .multi_conn = -1,
    };
    if (vd_nbd_server_add_export(srv, &eo) < 0 ||
        (tls && vd_nbd_server_set_tls(srv, tls) < 0)) {
        tool_error_last();
        vd_nbd_server_free(srv);
        vd_close(img);
        return EXIT_FAILURE;
    }
    vd_nbd_server_set_max_connections(srv, (unsigned)shared);
    vd_nbd_server_set_persistent(srv, persistent);
    vd_nbd_server_set_handshake_limit(srv, (unsigned)handshake_s * 1000);
    vd_nbd_server_set_threads(srv, (unsigned)threads);
    /* qemu-nbd -v logs no client events: under QEMU's name neither do we
     * (scripts such as the iotests compare the output); -v -v still does. */
    int log_level = tool_is_qemu_name() && verbose == 1 ? 0 : verbose;
    vd_nbd_server_set_log(srv,
                          log_level >= 2   ? VD_NBD_LOG_DEBUG
                          : log_level == 1 ? VD_NBD_LOG_INFO
                                         : VD_NBD_LOG_WARNING,
                          log_cb, NULL);

    /* Listen before forking so that the parent can report failures. */
    int *fds = NULL;
    size_t nfds = 0;
    if (sock) {
        int fd = vd_nbd_listen_unix(sock);
        if (fd >= 0) {
            fds = malloc(sizeof(int));
            fds[0] = fd;
            nfds = 1;
        }
    } else {
        vd_nbd_listen_tcp(bind_addr ? bind_addr : "0.0.0.0", port, &fds, &nfds);
    }
    if (!nfds) {
        tool_error_last();
        vd_nbd_server_free(srv);
        vd_close(img);
        return EXIT_FAILURE;
    }

    if (do_fork) {
        int pfd[2];
        if (pipe(pfd) < 0) {
            tool_error("pipe: %s", strerror(errno));
            return EXIT_FAILURE;
        }
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0) {
            tool_error("Failed to fork: %s", strerror(errno));
            return EXIT_FAILURE;
        }
        if (pid > 0) {
            /* the parent waits until the child is ready, then leaves */
            close(pfd[1]);
            char ok = 0;
            ssize_t n = read(pfd[0], &ok, 1);
            _exit(n == 1 && ok == 'y' ? EXIT_SUCCESS : EXIT_FAILURE);
        }
        close(pfd[0]);
        setsid();
        if (pid_file && write_pid_file(pid_file) < 0) {
            _exit(EXIT_FAILURE);
        }
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            dup2(devnull, STDOUT_FILENO);
            if (!verbose) {
                dup2(devnull, STDERR_FILENO);
            }
            if (devnull > STDERR_FILENO) {
                close(devnull);
            }
        }
        ssize_t w = write(pfd[1], "y", 1);
        (void)w;
        close(pfd[1]);
    } else if (pid_file && write_pid_file(pid_file) < 0) {
        return EXIT_FAILURE;
    }

    g_server = srv;
    setup_signals();
    int ret = vd_nbd_server_serve(srv, fds, nfds);
    if (ret < 0) {
        tool_error_last();
    }
    g_server = NULL;
    for (size_t i = 0; i < nfds; i++) {
        close(fds[i]);
    }
    free(fds);
    if (sock) {
        unlink(sock);
    }
    if (pid_file) {
        unlink(pid_file);
    }
    vd_nbd_server_free(srv);
    if (tls_owned) {
        vd_nbd_tls_creds_free(tls);
    }
    vd_close(img);
    return ret < 0 ? EXIT_FAILURE : EXIT_SUCCESS;
}
