/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk-io: run qemu-io style commands (-c, or lines read from stdin) on
 * one image.  This file holds the command line, the open image and the
 * commands that change it (open, close, quit).
 *
 * Exit status as qemu-io 7.2: 1 when the image named on the command line
 * cannot be opened, when the command line is wrong, or when any command
 * failed (a submitted aio request counts as a success); 0 otherwise.
 * Like qemu-io, the image is opened writethrough unless -t says otherwise,
 * with discard=unmap unless -d says otherwise, and a command that needs
 * write or resize permission takes it when it runs.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk-io.h"

vio_image_state vio;
bool vio_misalign;
bool vio_image_opts;

/* ------------------------------------------------------------ the image */

/*
 * -s: as QEMU's temporary snapshot, a qcow2 overlay in $TMPDIR (or /var/tmp)
 * whose backing file is the image (read-only); the overlay is what gets
 * opened and written, and it is removed when the image is closed.  Returns
 * the overlay's name (to free) with *fmt set to "qcow2", or NULL.
 */
static char *make_overlay(const char *name, const char **fmt, const vd_opts *extra)
{
    if (vio_image_opts) {
        vio_error("temporary snapshots (-s) need a file name, not --image-opts");
        return NULL;
    }
    vd_image *base = tool_open(name, *fmt, false, extra, VD_OPEN_FORCE_SHARE, true);
    if (!base) {
        return NULL;
    }
    int64_t size = vd_get_length(base);
    char bfmt[64];
    snprintf(bfmt, sizeof(bfmt), "%s", vd_image_format(base) ? vd_image_format(base) : "raw");
    vd_close(base);
    if (size < 0) {
        vio_error("Could not get the size of '%s'", name);
        return NULL;
    }
    /* a file by its absolute name, anything else (a URI) as given */
    char *abs = realpath(name, NULL);
    const char *tmpdir = getenv("TMPDIR");
    const char *dir = tmpdir && *tmpdir ? tmpdir : "/var/tmp";
    char *tmpl = malloc(strlen(dir) + sizeof("/vl.XXXXXX"));
    if (tmpl) {
        sprintf(tmpl, "%s/vl.XXXXXX", dir);
    }
    int fd = tmpl ? mkstemp(tmpl) : -1;
    if (fd < 0) {
        vio_error("Could not get temporary filename: %s", strerror(errno));
        free(abs);
        free(tmpl);
        return NULL;
    }
    close(fd);
    vd_opts *o = vd_opts_new();
    char sz[32];
    snprintf(sz, sizeof(sz), "%lld", (long long)size);
    vd_opts_set(o, "size", sz);
    vd_opts_set(o, "backing_file", abs ? abs : name);
    vd_opts_set(o, "backing_fmt", bfmt);
    int r = vd_create(tmpl, "qcow2", o);
    vd_opts_free(o);
    free(abs);
    if (r < 0) {
        fflush(stdout);
        tool_error_lib("Could not create temporary overlay '%s'", tmpl);
        unlink(tmpl);
        free(tmpl);
        return NULL;
    }
    *fmt = "qcow2";
    return tmpl;
}

int vio_open_image(const char *name, const char *fmt, const vio_open_args *args)
{
    if (vio.img) {
        vio_error("file open already, try 'help close'");
        return -EBUSY;
    }
    unsigned flags =
        (args->read_only ? 0 : VD_OPEN_RDWR) | (args->force_share ? VD_OPEN_FORCE_SHARE : 0);
    /* The defaults (discard=unmap) must not override what an option
     * string names itself. */
    vd_opts *extra = args->opts ? vd_opts_clone(args->opts) : vd_opts_new();
    if (!extra) {
        return -ENOMEM;
    }
    if (vio_image_opts && name) {
        vd_opts *own = vd_opts_new();
        if (own && vd_opts_parse(own, name, NULL) == 0) {
            for (size_t i = 0; i < vd_opts_count(own); i++) {
                vd_opts_set(extra, vd_opts_key(own, i), NULL);
            }
        }
        vd_opts_free(own);
    }
    char *overlay = NULL;
    if (args->snapshot && name) {
        overlay = make_overlay(name, &fmt, extra);
        if (!overlay) {
            vd_opts_free(extra);
            return -EIO;
        }
        name = overlay;
        /* the overlay is ours: resizable; read-only with -r, as QEMU's */
        flags = args->read_only ? 0 : VD_OPEN_RDWR | VD_OPEN_RESIZE;
    }
    bool image_opts = vio_image_opts;
    if (args->copy_on_read && name) {
        /* -C: the image under a copy-on-read filter (its options as the
         * filter's file.*), opened from the options alone */
        if (image_opts) {
            vd_opts *own = vd_opts_new();
            if (!own || vd_opts_parse(own, name, NULL) < 0) {
                vio_error("Invalid image options '%s'", name);
                vd_opts_free(own);
                vd_opts_free(extra);
                return -EINVAL;
            }
            for (size_t i = 0; i < vd_opts_count(own); i++) {
                char key[512];
                snprintf(key, sizeof(key), "file.%s", vd_opts_key(own, i));
                vd_opts_set(extra, key, vd_opts_value(own, i));
            }
            vd_opts_free(own);
        } else {
            char probed[64] = "";
            if (!fmt) {
                vd_image *p = tool_open(name, NULL, false, extra, VD_OPEN_FORCE_SHARE, true);
                if (!p) {
                    vd_opts_free(extra);
                    return -EIO;
                }
                snprintf(probed, sizeof(probed), "%s", vd_image_format(p));
                vd_close(p);
            }
            vd_opts_set(extra, "file.driver", fmt ? fmt : probed);
            vd_opts_set(extra, "file.file.filename", name);
        }
        vd_opts_set(extra, "driver", "copy-on-read");
        name = NULL;
        fmt = NULL;
        image_opts = false;
    }
    /* qemu warns about a probed raw image only when it may be written */
    vd_image *img = tool_open(name, fmt, image_opts, extra, flags,
                              args->read_only || overlay);
    if (!img) {
        int e = vd_get_errno();
        if (overlay) {
            unlink(overlay);
            free(overlay);
        }
        vd_opts_free(extra);
        return -(e ? e : EIO);
    }
    vio.tmp_overlay = overlay;
    vio.img = img;
    vio.open_flags = flags;
    vio.writethrough = args->writethrough;
    vio.image_opts = image_opts;
    vio.name = name ? strdup(name) : NULL;
    vio.fmt = fmt ? strdup(fmt) : NULL;
    vio.opts = extra;
    return 0;
}

static void forget_image(void)
{
    if (vio.tmp_overlay) {
        unlink(vio.tmp_overlay);
        free(vio.tmp_overlay);
        vio.tmp_overlay = NULL;
    }
    free(vio.name);
    free(vio.fmt);
    vd_opts_free(vio.opts);
    vio.name = vio.fmt = NULL;
    vio.opts = NULL;
    vio.img = NULL;
}

void vio_close_image(void)
{
    if (!vio.img) {
        return;
    }
    vio_aio_drain();
    vd_close(vio.img);
    forget_image();
}

int vio_need_perm(bool write, bool resize)
{
    (void)write;
    if (vd_image_is_read_only(vio.img)) {
        vio_error("Block node is read-only");
        return -EPERM;
    }
    if (!resize || (vio.open_flags & VD_OPEN_RESIZE)) {
        return 0;
    }
    /* Resizing needs one more permission (and lock): reopen with it. */
    vio_aio_drain();
    vd_close(vio.img);
    vio.img = tool_open(vio.name, vio.fmt, vio.image_opts, vio.opts,
                        vio.open_flags | VD_OPEN_RESIZE, true);
    if (vio.img) {
        vio.open_flags |= VD_OPEN_RESIZE;
        return 0;
    }
    int e = vd_get_errno() ? vd_get_errno() : EPERM;
    /* keep working on the image as it was */
    vio.img = tool_open(vio.name, vio.fmt, vio.image_opts, vio.opts, vio.open_flags, true);
    if (!vio.img) {
        forget_image();
    }
    return -e;
}

bool vio_parse_discard(const char *mode, vd_opts *opts)
{
    if (!strcmp(mode, "off") || !strcmp(mode, "ignore")) {
        vd_opts_set(opts, "discard", "ignore");
    } else if (!strcmp(mode, "on") || !strcmp(mode, "unmap")) {
        vd_opts_set(opts, "discard", "unmap");
    } else {
        vio_error("Invalid discard option: %s", mode);
        return false;
    }
    return true;
}

bool vio_parse_aio(const char *mode, vd_opts *opts)
{
    if (!strcmp(mode, "threads")) {
        vd_opts_set(opts, "file.aio", NULL);
    } else if (!strcmp(mode, "native") || !strcmp(mode, "io_uring")) {
        /* an option of the file protocol under the image */
        vd_opts_set(opts, "file.aio", mode);
    } else {
        vio_error("Invalid aio option: %s", mode);
        return false;
    }
    return true;
}

/* Cache mode into opts and writethrough; message printed on error. */
static bool parse_cache(const char *mode, vd_opts *opts, bool *writethrough)
{
    bool wt = false;
    if (!tool_parse_cache(mode, opts, &wt)) {
        return false;
    }
    *writethrough = wt;
    return true;
}

/*
 * The open options the command line and the open command share (-n -r -U
 * -k -i -t -d): 1 when c is one of them, 0 when not, -1 on a bad value
 * (message printed).
 */
static int open_arg(int c, vio_open_args *args)
{
    switch (c) {
    case 'n':
        return parse_cache("none", args->opts, &args->writethrough) ? 1 : -1;
    case 'r':
        args->read_only = true;
        return 1;
    case 'U':
        args->force_share = true;
        return 1;
    case 'k':
        vd_opts_set(args->opts, "file.aio", "native");
        return 1;
    case 'i':
        return vio_parse_aio(optarg, args->opts) ? 1 : -1;
    case 't':
        return parse_cache(optarg, args->opts, &args->writethrough) ? 1 : -1;
    case 'd':
        return vio_parse_discard(optarg, args->opts) ? 1 : -1;
    default:
        return 0;
    }
}

/* ------------------------------------------------------ open/close/quit */

static void open_help(void)
{
    printf("\n"
           " opens an image for the other commands\n"
           "\n"
           " Example:\n"
           " 'open -n -o driver=raw /tmp/data' - opens a raw file read-write, uncached\n"
           "\n"
           " -r, -- open read-only\n"
           " -s, -- use -snapshot mode (writes go to a temporary overlay)\n"
           " -C, -- use copy-on-read\n"
           " -n, -- bypass the host page cache, short for -t none\n"
           " -U, -- force shared permissions (ignore other users' locks)\n"
           " -k, -- use Linux native AIO (short for -i native)\n"
           " -i, -- AIO mode: threads, native or io_uring\n"
           " -t, -- cache mode: none, writeback, writethrough, directsync, unsafe\n"
           " -d, -- discard mode: ignore (off) or unmap (on)\n"
           " -o, -- driver options (key=value,...)\n"
           "\n");
}

static int open_f(int argc, char **argv);

const vio_cmd vio_cmd_open = {
    .name = "open",
    .altname = "o",
    .fn = open_f,
    .argmin = 1,
    .argmax = -1,
    .flags = VIO_CMD_NOFILE_OK,
    .args = "[-rsCnkU] [-t cache] [-d discard] [-o options] [path]",
    .oneline = "open the file specified by path",
    .help = open_help,
};

static int open_f(int argc, char **argv)
{
    vio_open_args args = {.writethrough = true};
    int c, ret = -EINVAL;
    const char *name = NULL;

    args.opts = vd_opts_new();
    if (!args.opts) {
        return -ENOMEM;
    }
    vd_opts_set(args.opts, "discard", "unmap");
    while ((c = getopt(argc, argv, "snCro:kt:d:Ui:")) != -1) {
        switch (c) {
        case 's':
            args.snapshot = true;
            break;
        case 'C':
            args.copy_on_read = true;
            break;
        case 'o':
            if (vd_opts_parse(args.opts, optarg, NULL) < 0) {
                fflush(stdout);
                tool_error_last();
                goto out;
            }
            break;
        default: {
            int r = open_arg(c, &args);
            if (r < 0) {
                goto out;
            } else if (r == 0) {
                ret = vio_usage(&vio_cmd_open);
                goto out;
            }
            break;
        }
        }
    }
    if (optind == argc - 1) {
        name = argv[optind];
    } else if (optind != argc) {
        ret = vio_usage(&vio_cmd_open);
        goto out;
    }
    ret = vio_open_image(name, NULL, &args);
out:
    vd_opts_free(args.opts);
    return ret;
}

static void reopen_help(void)
{
    printf("\n"
           " reopens the image with changed options\n"
           "\n"
           " Example:\n"
           " 'reopen -o lazy-refcounts=on' - turns on lazy refcounts of a qcow2 image\n"
           "\n"
           " The image is closed and opened again with the changes; requests still\n"
           " in flight complete first.\n"
           " -r, -- reopen read-only\n"
           " -w, -- reopen read-write\n"
           " -c, -- cache mode: none, writeback, writethrough, directsync, unsafe\n"
           " -o, -- driver options to change (key=value,...)\n"
           "\n");
}

static int reopen_f(int argc, char **argv);

const vio_cmd vio_cmd_reopen = {
    .name = "reopen",
    .fn = reopen_f,
    .argmin = 0,
    .argmax = -1,
    .args = "[(-r|-w)] [-c cache] [-o options]",
    .oneline = "reopens an image with new options",
    .help = reopen_help,
};

static int reopen_f(int argc, char **argv)
{
    /* changes: the user's -o; cache: what -c's mode sets (merged later) */
    vd_opts *changes = vd_opts_new(), *cache = vd_opts_new();
    vd_opts *opts = NULL, *old = NULL, *base = NULL;
    unsigned flags = vio.open_flags;
    bool writethrough = vio.writethrough, has_rw = false, has_cache = false;
    int c, ret = -EINVAL;

    if (!changes || !cache) {
        vd_opts_free(changes);
        vd_opts_free(cache);
        return -ENOMEM;
    }
    while ((c = getopt(argc, argv, "c:o:rw")) != -1) {
        switch (c) {
        case 'c':
            /* a new cache mode replaces the old one's keys */
            if (!parse_cache(optarg, cache, &writethrough)) {
                goto out;
            }
            has_cache = true;
            break;
        case 'o':
            if (vd_opts_parse(changes, optarg, NULL) < 0) {
                fflush(stdout);
                tool_error_last();
                goto out;
            }
            break;
        case 'r':
        case 'w':
            if (has_rw) {
                vio_error("Only one -r/-w option may be given");
                goto out;
            }
            has_rw = true;
            flags = c == 'r' ? flags & ~(unsigned)VD_OPEN_RDWR : flags | VD_OPEN_RDWR;
            break;
        default:
            ret = vio_usage(&vio_cmd_reopen);
            goto out;
        }
    }
    if (optind != argc) {
        ret = vio_usage(&vio_cmd_reopen);
        goto out;
    }
    /* QEMU's checks and words (iotest 133) */
    if (has_rw && vd_opts_get(changes, "read-only")) {
        vio_error("Cannot set both -r/-w and 'read-only'");
        goto out;
    }
    if (has_cache && (vd_opts_get(changes, "cache.direct") ||
                      vd_opts_get(changes, "cache.no-flush"))) {
        vio_error("Cannot set both -c and the cache options");
        goto out;
    }
    if (vd_opts_merge(changes, cache) < 0) {
        ret = -ENOMEM;
        goto out;
    }
    const char *ro = vd_opts_get(changes, "read-only");
    if (ro) {
        if (strcmp(ro, "on") && strcmp(ro, "off")) {
            vio_error("Parameter 'read-only' expects 'on' or 'off'");
            goto out;
        }
        flags = !strcmp(ro, "on") ? flags & ~(unsigned)VD_OPEN_RDWR : flags | VD_OPEN_RDWR;
        vd_opts_set(changes, "read-only", NULL);
    }
    base = vio.opts ? vd_opts_clone(vio.opts) : vd_opts_new();
    if (!base) {
        ret = -ENOMEM;
        goto out;
    }
    if (has_cache) {
        /* the new mode's keys replace the old ones */
        vd_opts_set(base, "cache.direct", NULL);
        vd_opts_set(base, "cache.no-flush", NULL);
    }
    /* the options the image was opened with: the --image-opts string too,
     * for the unchangeable ones (driver, node-name) */
    old = vd_opts_new();
    if (!old) {
        ret = -ENOMEM;
        goto out;
    }
    if (vio.image_opts && vio.name) {
        (void)vd_opts_parse(old, vio.name, NULL);
    }
    if (vio.opts) {
        (void)vd_opts_merge(old, vio.opts);
    }
    vd_opts *checked = vd_reopen_options(vio.img, old, changes);
    if (!checked) {
        vio_error("%s", vd_get_error());
        goto out;
    }
    vd_opts_free(checked);
    opts = vd_reopen_options(vio.img, base, changes);
    if (!opts) {
        vio_error("%s", vd_get_error());
        goto out;
    }
    if (!(flags & VD_OPEN_RDWR)) {
        flags &= ~(unsigned)VD_OPEN_RESIZE;
    }

    vio_aio_drain();
    vd_close(vio.img);
    tool_open_plain_errors = true;
    vio.img = tool_open(vio.name, vio.fmt, vio.image_opts, opts, flags, true);
    tool_open_plain_errors = false;
    if (vio.img) {
        vd_opts_free(vio.opts);
        vio.opts = opts;
        opts = NULL;
        vio.open_flags = flags;
        vio.writethrough = writethrough;
        ret = 0;
        goto out;
    }
    ret = -(vd_get_errno() ? vd_get_errno() : EINVAL);
    /* keep working on the image as it was */
    vio.img = tool_open(vio.name, vio.fmt, vio.image_opts, vio.opts, vio.open_flags, true);
    if (!vio.img) {
        forget_image();
    }
out:
    vd_opts_free(changes);
    vd_opts_free(cache);
    vd_opts_free(opts);
    vd_opts_free(old);
    vd_opts_free(base);
    return ret;
}

static int close_f(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    vio_close_image();
    return 0;
}

const vio_cmd vio_cmd_close = {
    .name = "close",
    .altname = "c",
    .fn = close_f,
    .oneline = "close the current open file",
};

static int quit_f(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return VIO_QUIT;
}

const vio_cmd vio_cmd_quit = {
    .name = "quit",
    .altname = "q",
    .fn = quit_f,
    .argmin = -1,
    .argmax = -1,
    .flags = VIO_CMD_GLOBAL,
    .oneline = "exit the program",
};

/* --------------------------------------------------------- command line */

static void usage(const char *name)
{
    printf("Usage: %s [OPTIONS]... [-c STRING]... [file]\n"
           "Read, write and verify bytes of a disk image (a qemu-io clone)\n"
           "\n"
           "  --object OBJECTDEF   define an object such as 'secret' for\n"
           "                       passwords and/or encryption keys\n"
           "  --image-opts         treat file as an option string\n"
           "  -c, --cmd STRING     run this command (may be repeated); without\n"
           "                       -c, commands are read from standard input\n"
           "  -f, --format FMT     image format (probed when not given)\n"
           "  -r, --read-only      open the image read-only\n"
           "  -s, --snapshot       use snapshot file (writes go to a temporary overlay)\n"
           "  -n, --nocache        bypass the host page cache, short for -t none\n"
           "  -C, --copy-on-read   enable copy-on-read\n"
           "  -m, --misalign       misalign I/O buffers by 16 bytes\n"
           "  -k, --native-aio     use Linux native AIO (short for -i native)\n"
           "  -i, --aio=MODE       AIO mode: threads, native or io_uring\n"
           "  -t, --cache=MODE     cache mode: none, writeback, writethrough,\n"
           "                       directsync, unsafe (default writethrough)\n"
           "  -d, --discard=MODE   discard mode: ignore (off) or unmap (on)\n"
           "  -T, --trace SPEC     accepted for compatibility and ignored\n"
           "  -U, --force-share    force shared permissions (read-only only)\n"
           "  -h, --help           display this help and exit\n"
           "  -V, --version        output version information and exit\n"
           "\n"
           "See '%s -c help' for the commands.\n",
           name, name);
}

enum {
    OPT_OBJECT = 256,
    OPT_IMAGE_OPTS,
};

/* Read commands from stdin, one per line, with a prompt. */
static int command_loop_stdin(void)
{
    char *line = NULL;
    size_t cap = 0;
    int last_error = 0;

    for (;;) {
        printf("%s> ", tool_progname());
        fflush(stdout);
        ssize_t n = getline(&line, &cap, stdin);
        if (n < 0) {
            break;
        }
        if (n > 0 && line[n - 1] == '\n') {
            line[n - 1] = '\0';
        }
        int ret = vio_run_line(line);
        if (ret == VIO_QUIT) {
            break;
        }
        if (ret < 0) {
            last_error = ret;
        }
    }
    free(line);
    return last_error;
}

int main(int argc, char **argv)
{
    static const struct option lopt[] = {
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {"cmd", required_argument, NULL, 'c'},
        {"format", required_argument, NULL, 'f'},
        {"read-only", no_argument, NULL, 'r'},
        {"snapshot", no_argument, NULL, 's'},
        {"nocache", no_argument, NULL, 'n'},
        {"copy-on-read", no_argument, NULL, 'C'},
        {"misalign", no_argument, NULL, 'm'},
        {"native-aio", no_argument, NULL, 'k'},
        {"aio", required_argument, NULL, 'i'},
        {"discard", required_argument, NULL, 'd'},
        {"cache", required_argument, NULL, 't'},
        {"trace", required_argument, NULL, 'T'},
        {"object", required_argument, NULL, OPT_OBJECT},
        {"image-opts", no_argument, NULL, OPT_IMAGE_OPTS},
        {"force-share", no_argument, NULL, 'U'},
        {NULL, 0, NULL, 0},
    };
    const char *fmt = NULL;
    char **cmds = NULL;
    int ncmds = 0, c, last_error = 0, rc = 1;
    vio_open_args args = {.writethrough = true};

    tool_init("vdisk-io");
    tool_name_from_argv0(argv[0]);
    args.opts = vd_opts_new();
    if (!args.opts) {
        return 1;
    }
    vd_opts_set(args.opts, "discard", "unmap");

    while ((c = getopt_long(argc, argv, "hVc:d:f:rsnCmkt:T:Ui:", lopt, NULL)) != -1) {
        switch (c) {
        case 's':
            args.snapshot = true;
            break;
        case 'C':
            args.copy_on_read = true;
            break;
        case 'f':
            fmt = optarg;
            break;
        case 'c': {
            char **n = realloc(cmds, sizeof(*cmds) * (size_t)(ncmds + 1));
            if (!n) {
                goto out;
            }
            cmds = n;
            cmds[ncmds++] = optarg;
            break;
        }
        case 'm':
            vio_misalign = true;
            break;
        case 'T':
            /* tracing is QEMU's; accepted so scripts keep working */
            break;
        case 'V':
            printf("%s version %s\n", tool_progname(), vd_version());
            rc = 0;
            goto out;
        case 'h':
            usage(tool_progname());
            rc = 0;
            goto out;
        case OPT_OBJECT:
            if (!tool_object_add(optarg)) {
                goto out;
            }
            break;
        case OPT_IMAGE_OPTS:
            vio_image_opts = true;
            break;
        default: {
            int r = open_arg(c, &args);
            if (r < 0) {
                goto out;
            } else if (r == 0) {
                usage(tool_progname());
                goto out;
            }
            break;
        }
        }
    }
    if (argc - optind > 1) {
        usage(tool_progname());
        goto out;
    }
    if (vio_image_opts && fmt) {
        vio_error("--image-opts and -f are mutually exclusive");
        goto out;
    }
    if (argc - optind == 1) {
        if (vio_open_image(argv[optind], fmt, &args) < 0) {
            goto out;
        }
    }

    if (cmds) {
        for (int i = 0; i < ncmds; i++) {
            int ret = vio_run_line(cmds[i]);
            if (ret == VIO_QUIT) {
                break;
            }
            if (ret < 0) {
                last_error = ret;
            }
        }
    } else {
        last_error = command_loop_stdin();
    }

    /* every request completes (and reports) before the image closes */
    vio_aio_drain();
    vio_close_image();
    rc = last_error < 0 ? 1 : 0;
out:
    free(cmds);
    vd_opts_free(args.opts);
    fflush(stdout);
    return rc;
}
