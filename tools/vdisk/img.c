/* SPDX-License-Identifier: BSD-3-Clause */
/* Command-line plumbing shared by the vdisk subcommands (see img.h). */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "img.h"

int img_usage_error(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s: %s\nTry '%s --help' for more information\n", tool_progname(), msg,
            tool_progname());
    return 1;
}

int img_bad_option(int c, char **argv)
{
    const char *opt = argv[optind - 1];
    if (c == ':') {
        return img_usage_error("missing argument for option '%s'", opt);
    }
    /* A short option cluster ("-xq") reports the offending letter. */
    if (optopt && opt[0] == '-' && opt[1] != '-') {
        char o[3] = {'-', (char)optopt, 0};
        return img_usage_error("unrecognized option '%s'", o);
    }
    return img_usage_error("unrecognized option '%s'", opt);
}

int img_common_option(img_common *co, const char *cmd, int c, char **argv)
{
    switch (c) {
    case 'h':
        if (!cmd) {
            return IMG_OPT_OTHER; /* the command prints its own help */
        }
        img_command_help(cmd);
        return IMG_OPT_HELP;
    case 'f':
        co->fmt = optarg;
        return IMG_OPT_HANDLED;
    case 'U':
        co->force_share = true;
        return IMG_OPT_HANDLED;
    case 'q':
        co->quiet = true;
        return IMG_OPT_HANDLED;
    case 'T':
        co->src_cache = optarg;
        return IMG_OPT_HANDLED;
    case OPT_OUTPUT:
        co->output = optarg;
        return IMG_OPT_HANDLED;
    case OPT_IMAGE_OPTS:
        co->image_opts = true;
        return IMG_OPT_HANDLED;
    case OPT_OBJECT:
        return tool_object_add(optarg) ? IMG_OPT_HANDLED : IMG_OPT_FAIL;
    default:
        /* the command's own, or ':' / '?' for its usage error */
        return IMG_OPT_OTHER;
    }
}

bool img_parse_output(const char *arg, enum img_output *out)
{
    if (!strcmp(arg, "json")) {
        *out = IMG_OUTPUT_JSON;
    } else if (!strcmp(arg, "human")) {
        *out = IMG_OUTPUT_HUMAN;
    } else {
        tool_error("--output must be used with human or json as argument.");
        return false;
    }
    return true;
}

bool img_add_options(char **options, const char *arg)
{
    size_t len = strlen(arg), trailing = 0;
    while (trailing < len && arg[len - 1 - trailing] == ',') {
        trailing++;
    }
    /* An odd run of trailing commas leaves an empty element (",," is an
     * escaped comma inside a value). */
    if (!len || arg[0] == ',' || trailing % 2) {
        tool_error("Invalid option list: %s", arg);
        return false;
    }
    char *joined;
    if (*options) {
        joined = malloc(strlen(*options) + len + 2);
        if (joined) {
            sprintf(joined, "%s,%s", *options, arg);
        }
    } else {
        joined = strdup(arg);
    }
    if (!joined) {
        tool_error("Out of memory");
        return false;
    }
    free(*options);
    *options = joined;
    return true;
}

bool img_has_help_option(const char *options)
{
    if (!options) {
        return false;
    }
    const char *p = options;
    while (*p) {
        /* split on single commas; ",," stays inside the element */
        const char *start = p;
        while (*p) {
            if (*p == ',') {
                if (p[1] == ',') {
                    p += 2;
                    continue;
                }
                break;
            }
            p++;
        }
        size_t n = (size_t)(p - start);
        if ((n == 4 && !strncmp(start, "help", 4)) || (n == 1 && *start == '?') ||
            (n == 7 && !strncmp(start, "help=on", 7))) {
            return true;
        }
        if (*p == ',') {
            p++;
        }
    }
    return false;
}

static const char *opt_type_name(vd_opt_type t)
{
    switch (t) {
    case VD_OPT_BOOL:
        return "bool (on/off)";
    case VD_OPT_NUMBER:
        return "num";
    case VD_OPT_SIZE:
        return "size";
    case VD_OPT_STRING:
    default:
        return "str";
    }
}

static int desc_cmp(const void *a, const void *b)
{
    const vd_opt_desc *x = a, *y = b;
    return strcmp(x->name, y->name);
}

bool img_format_known(const char *fmt)
{
    const char *kind = vd_driver_type(fmt);
    return kind != NULL;
}

/* The options of a table, sorted, under title, as qemu-img prints them. */
static int print_opts_table(const vd_opt_desc *opts, const char *title, bool protocol_note)
{
    size_t n = 0;
    while (opts[n].name) {
        n++;
    }
    vd_opt_desc *sorted = calloc(n ? n : 1, sizeof(*sorted));
    if (!sorted) {
        tool_error("Out of memory");
        return 1;
    }
    /* Sorted and without duplicates (a format and its protocol may both
     * declare "size"). */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        bool dup = false;
        for (size_t j = 0; j < m; j++) {
            if (!strcmp(sorted[j].name, opts[i].name)) {
                dup = true;
                break;
            }
        }
        if (!dup) {
            sorted[m++] = opts[i];
        }
    }
    qsort(sorted, m, sizeof(*sorted), desc_cmp);
    printf("%s\n", title);
    for (size_t i = 0; i < m; i++) {
        char head[256];
        snprintf(head, sizeof(head), "%s=<%s>", sorted[i].name, opt_type_name(sorted[i].type));
        if (sorted[i].help) {
            printf("  %-22s - %s\n", head, sorted[i].help);
        } else {
            printf("  %s\n", head);
        }
    }
    if (protocol_note) {
        printf("\nThe protocol level may support further options.\n"
               "Specify the target filename to include those options.\n");
    }
    free(sorted);
    return 0;
}

int img_print_create_opts_help(const char *fmt, const char *filename, const char *title)
{
    if (!img_format_known(fmt)) {
        tool_error("Unknown file format '%s'", fmt);
        return 1;
    }
    /* qemu-img lists nothing for a format without creation: an error
     * (iotest 082); vdisk lists the options open takes */
    const vd_driver_info *di = vd_driver_get_info(fmt);
    if (di && !di->can_create && tool_is_qemu_name()) {
        tool_error("Format driver '%s' does not support image creation", fmt);
        return 1;
    }
    const vd_opt_desc *opts = vd_driver_create_opts(fmt, filename);
    if (!opts) {
        tool_error_lib("Format driver '%s' does not support image creation", fmt);
        return 1;
    }
    char head[256];
    if (title) {
        snprintf(head, sizeof(head), "%s", title);
    } else if (filename) {
        snprintf(head, sizeof(head), "Supported options:");
    } else {
        snprintf(head, sizeof(head), "Supported %s options:", fmt);
    }
    return print_opts_table(opts, head, !filename && !title);
}

int img_print_amend_opts_help(const char *fmt)
{
    const vd_driver_info *di = vd_driver_get_info(fmt);
    if (!di) {
        tool_error("Unknown file format '%s'", fmt);
        return 1;
    }
    if (!di->can_amend && tool_is_qemu_name()) {
        /* qemu-img's answer (iotest 082); vdisk lists the empty table */
        tool_error("Format driver '%s' does not support option amendment", fmt);
        return 1;
    }
    char head[256];
    snprintf(head, sizeof(head), "Amend options for '%s':", fmt);
    return print_opts_table(di->amend_opts, head, false);
}

/* ------------------------------------------------------------------ help */

static const struct {
    const char *name;
    const char *syntax;
    const char *params;
} command_help[] = {
    {"amend",
     "amend [--object objectdef] [--image-opts] [-p] [-q] [-f fmt] [-t cache] [--force] -o "
     "options filename",
     "  -o options   options to change (-o help lists them for the format)\n"
     "  --force      allow changes that may be unsafe (e.g. dropping keyslots)\n"
     "  -p           show progress; -q quiet\n"},
    {"bench",
     "bench [-c count] [-d depth] [-f fmt] [--flush-interval=flush_interval] [-i aio] [-n] "
     "[--no-drain] [-o offset] [--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t "
     "cache] [-w] [-U] filename",
     "  run a simple I/O benchmark (read, or write with -w) on filename\n"},
    {"bitmap",
     "bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b "
     "source_file [-F source_fmt]] [-g granularity] [--object objectdef] [--image-opts | -f "
     "fmt] filename bitmap",
     "  'bitmap' is the name of the bitmap to manipulate, through one or more\n"
     "       actions from '--add', '--remove', '--clear', '--enable', '--disable',\n"
     "       or '--merge source'\n"
     "  '-g granularity' sets the granularity for '--add' actions\n"
     "  '-b source' and '-F src_fmt' tell '--merge' actions to find the source\n"
     "       bitmaps from an alternative file\n"},
    {"check",
     "check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | "
     "all]] [-T src_cache] [-U] filename",
     "  '-r' tries to repair any inconsistencies that are found during the check.\n"
     "       '-r leaks' repairs only cluster leaks, whereas '-r all' fixes all\n"
     "       kinds of errors, with a higher risk of choosing the wrong fix or\n"
     "       hiding corruption that has already occurred.\n"
     "  Exit status: 0 no errors, 1 check not completed (internal error),\n"
     "  2 corruptions, 3 leaked clusters only, 63 format has no check.\n"},
    {"commit",
     "commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r "
     "rate_limit] [-d] [-p] filename",
     "  copy the data of filename into its backing file (or into 'base', a deeper\n"
     "  image of its chain, with -b, which implies -d)\n"
     "  '-d' leaves filename as it is instead of emptying it\n"
     "  '-r' limits the copy to rate_limit bytes per second\n"},
    {"compare",
     "compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] "
     "[-s] [-U] filename1 filename2",
     "  '-f' first image format\n"
     "  '-F' second image format\n"
     "  '-s' run in Strict mode - fail on different image size or sector allocation\n"},
    {"convert",
     "convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] "
     "[--bitmaps] [-U] [-C] [-c] [-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O "
     "output_fmt] [-B backing_file [-F backing_fmt]] [-o options] [-l snapshot_param] [-S "
     "sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] filename [filename2 "
     "[...]] output_filename",
     "  '--bitmaps' copies all top-level persistent bitmaps to destination\n"
     "  '-m' specifies how many coroutines work in parallel during the convert\n"
     "       process (defaults to 8)\n"
     "  '-W' allow to write to the target out of order rather than sequential\n"},
    {"create",
     "create [--object objectdef] [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o "
     "options] filename [size]",
     "  '-o help' lists the options of the format; '-u' does not open the\n"
     "  backing file (then both size and -F are needed)\n"},
    {"dd",
     "dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] "
     "[skip=blocks] if=input of=output",
     "  'bs=BYTES' read and write up to BYTES bytes at a time (default: 512)\n"
     "  'count=N' copy only N input blocks\n"
     "  'if=FILE' read from FILE\n"
     "  'of=FILE' write to FILE\n"
     "  'skip=N' skip N bs-sized blocks at the start of input\n"},
#ifdef VD_HAVE_FUSE
    {"fuse",
     "fuse [--object objectdef] [--image-opts] [-f fmt] [-r | -w] [-g] [-U] [-q] [-t cache] "
     "[--aio aio] [--discard discard] [--detect-zeroes dz] [--allow-other on|off|auto] "
     "[--threads N] [--daemonize] [--pid-file file] filename mountpoint",
     "  export filename's virtual disk as the regular file mountpoint (which must\n"
     "  exist) through FUSE, until unmounted (fusermount3 -u) or SIGTERM/SIGINT\n"
     "  '-r' read-only export; '-w' writable (the default)\n"
     "  '-g', '--growable' writes past the end and truncate resize the image\n"
     "  '--aio' threads, native or io_uring; '--discard' unmap (default) or ignore\n"
     "  '--allow-other' lets other users access the mount (auto: when permitted)\n"
     "  '--threads' serves at most N requests in parallel (default 10)\n"
     "  '--daemonize' returns once the mount is ready; '--pid-file' records the pid\n"},
#endif
    {"info",
     "info [--object objectdef] [--image-opts] [-f fmt] [--output=ofmt] [--backing-chain] "
     "[-U] filename",
     "  '--backing-chain' also shows every backing file of the chain\n"},
    {"map",
     "map [--object objectdef] [--image-opts] [-f fmt] [--start-offset=offset] "
     "[--max-length=len] [--output=ofmt] [-U] filename",
     "  dump the allocation of filename (and where its data lives)\n"},
    {"measure",
     "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] "
     "[--image-opts] [-f fmt] [-l snapshot_param] filename]",
     "  space needed for a new image of output_fmt, of size N or holding filename\n"},
    {"snapshot",
     "snapshot [--object objectdef] [--image-opts] [-U] [-q] [-l | -a snapshot | -c snapshot "
     "| -d snapshot] filename",
     "  'snapshot' is the name of the snapshot to create, apply or delete\n"
     "  '-a' applies a snapshot (revert disk to saved state)\n"
     "  '-c' creates a snapshot\n"
     "  '-d' deletes a snapshot\n"
     "  '-l' lists all snapshots in the given image\n"},
    {"rebase",
     "rebase [--object objectdef] [--image-opts] [-U] [-q] [-f fmt] [-t cache] [-T "
     "src_cache] [-p] [-u] [-c] -b backing_file [-F backing_fmt] filename",
     "  '-u' allows unsafe backing chains. It is assumed that old and new backing\n"
     "       file match exactly; no data is copied (useful to rename the backing file)\n"
     "  '-b \"\"' removes the backing file\n"
     "  '-c' writes the clusters it must copy compressed (formats that can)\n"},
    {"resize",
     "resize [--object objectdef] [--image-opts] [-f fmt] [--preallocation=prealloc] [-q] "
     "[--shrink] filename [+ | -]size",
     "  '--shrink' is needed to make the image smaller\n"
     "  '--preallocation' is off, metadata, falloc or full (growing only)\n"},
};

static const char common_params[] =
    "\nCommand parameters:\n"
    "  'filename' is a disk image filename\n"
    "  'objectdef' is a user creatable object definition, such as\n"
    "    secret,id=ID,data=TEXT or secret,id=ID,file=PATH[,format=base64]\n"
    "  'fmt' is the disk image format. It is guessed automatically in most cases\n"
    "  'cache' is the cache mode used to write the output disk image, the valid\n"
    "    options are: 'none', 'writeback' (default, except for convert), 'writethrough',\n"
    "    'directsync' and 'unsafe' (default for convert)\n"
    "  'src_cache' is the cache mode used to read input disk images, the valid\n"
    "    options are the same as for the 'cache' option\n"
    "  'size' is the disk image size in bytes. Optional suffixes\n"
    "    'k' or 'K' (kilobyte, 1024), 'M' (megabyte, 1024k), 'G' (gigabyte, 1024M),\n"
    "    'T' (terabyte, 1024G), 'P' (petabyte, 1024T) and 'E' (exabyte, 1024P)  are\n"
    "    supported. 'b' is ignored.\n"
    "  'options' is a comma separated list of format specific options in a\n"
    "    name=value format. Use -o help for an overview of the options supported by\n"
    "    the used format\n"
    "  '--output' takes the format in which the output must be done (human or json)\n"
    "  '-U' opens the image read-only even when another process holds its lock\n"
    "  '-p' show progress of command (only certain commands)\n"
    "  '-q' use Quiet mode - do not print any output (except errors)\n";

void img_command_help(const char *cmd)
{
    for (size_t i = 0; i < sizeof(command_help) / sizeof(command_help[0]); i++) {
        if (!strcmp(command_help[i].name, cmd)) {
            printf("usage: %s %s\n\n%s%s", tool_progname(), command_help[i].syntax,
                   command_help[i].params, common_params);
            printf("\nSee %s(1) for details.\n", tool_progname());
            return;
        }
    }
    printf("usage: %s %s ...\n", tool_progname(), cmd);
}

void img_print_all_syntax(void)
{
    for (size_t i = 0; i < sizeof(command_help) / sizeof(command_help[0]); i++) {
        printf("  %s\n", command_help[i].syntax);
    }
}

/* -------------------------------------------------------------- snapshots */

void img_print_snapshots(const vd_snapshot_info *sn, size_t n)
{
    if (!n) {
        return;
    }
    printf("Snapshot list:\n");
    printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
    for (size_t i = 0; i < n; i++) {
        char date[64] = "", clock[64], icount[32] = "";
        time_t t = (time_t)sn[i].date_sec;
        struct tm tm;
        if (localtime_r(&t, &tm)) {
            strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
        }
        uint64_t secs = sn[i].vm_clock_nsec / 1000000000ULL;
        snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(secs / 3600),
                 (int)((secs / 60) % 60), (int)(secs % 60),
                 (int)((sn[i].vm_clock_nsec / 1000000) % 1000));
        if (sn[i].icount != UINT64_MAX) {
            snprintf(icount, sizeof(icount), "%" PRId64, (int64_t)sn[i].icount);
        }
        printf("%-9s %-16s %8s%20s%13s%11s\n", sn[i].id ? sn[i].id : "",
               sn[i].name ? sn[i].name : "", tool_human_size(sn[i].vm_state_size), date, clock,
               icount);
    }
}

/* ------------------------------------------------------------------ paths */

char *img_backing_path(const char *image, const char *backing)
{
    if (backing[0] == '/' || !strncmp(backing, "json:", 5) || strstr(backing, "://") ||
        !image || !strchr(image, '/') || !strncmp(image, "json:", 5)) {
        return strdup(backing);
    }
    const char *slash = strrchr(image, '/');
    size_t dirlen = (size_t)(slash - image);
    char *p = malloc(dirlen + strlen(backing) + 2);
    if (p) {
        sprintf(p, "%.*s/%s", (int)dirlen, image, backing);
    }
    return p;
}

bool img_same_file(const char *a, const char *b)
{
    if (!a || !b) {
        return false;
    }
    if (!strcmp(a, b)) {
        return true;
    }
    char *ra = realpath(a, NULL), *rb = realpath(b, NULL);
    bool same = ra && rb && !strcmp(ra, rb);
    free(ra);
    free(rb);
    return same;
}
