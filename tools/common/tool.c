/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Helpers shared by vdisk, vdisk-io and vdisk-nbd: messages, sizes, opening
 * images the way qemu-img does, cache modes and progress output.  Only the
 * public API (vdisk.h) is used here.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

static const char *progname = "vdisk";

/* The library's warnings, as QEMU's warn_report: "progname: warning: ..." */
static void tool_lib_warning(void *opaque, const char *msg)
{
    (void)opaque;
    tool_warn("%s", msg);
}

/* An automatic repair's lines (a dirty qcow2 opened read-write), bare on
 * stderr as QEMU's tools print them */
static void tool_repair_line(void *opaque, const char *line)
{
    (void)opaque;
    fprintf(stderr, "%s\n", line);
}

void tool_init(const char *name)
{
    if (name && *name) {
        progname = name;
    }
    vd_set_warning_handler(tool_lib_warning, NULL);
    vd_set_repair_report(tool_repair_line, NULL);
}

/*
 * vdisk is a drop-in for QEMU's tools: started through a link named after
 * the QEMU tool it replaces, it speaks as that tool (messages, prompt, log
 * lines), so scripts that match QEMU's text keep working.  Under any other
 * name it keeps its own.
 */
void tool_name_from_argv0(const char *argv0)
{
    static const char *const names[][2] = {
        {"vdisk", "qemu-img"},
        {"vdisk-io", "qemu-io"},
        {"vdisk-nbd", "qemu-nbd"},
    };
    if (!argv0) {
        return;
    }
    const char *base = strrchr(argv0, '/');
    base = base ? base + 1 : argv0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(progname, names[i][0]) == 0 && strcmp(base, names[i][1]) == 0) {
            progname = names[i][1];
            /* the library's advice names QEMU's image tool too */
            vd_set_image_tool_name("qemu-img");
        }
    }
}

bool tool_is_qemu_name(void)
{
    return strncmp(progname, "qemu-", 5) == 0;
}

const char *tool_progname(void)
{
    return progname;
}

/*
 * The one printer of the tools' errors and warnings: "progname: KIND
 * MESSAGE[: LIB]" on one line, then hint (the library's advice, QEMU's
 * error_append_hint text) as it is on the lines after, as QEMU's
 * error_report_err prints them.
 */
static void vmsg(const char *kind, const char *lib, const char *hint, const char *fmt,
                 va_list ap)
{
    /* Build the whole text first so concurrent writers don't interleave. */
    char buf[4096];
    int n = snprintf(buf, sizeof(buf), "%s: %s", progname, kind ? kind : "");
    if (n < 0 || (size_t)n >= sizeof(buf)) {
        n = 0;
    }
    int m = vsnprintf(buf + n, sizeof(buf) - (size_t)n, fmt, ap);
    if (m > 0) {
        n += m;
        if ((size_t)n >= sizeof(buf)) {
            n = (int)sizeof(buf) - 1;
        }
    }
    if (lib && *lib && (size_t)n < sizeof(buf) - 1) {
        /* an empty fmt: the library's message alone */
        m = snprintf(buf + n, sizeof(buf) - (size_t)n, m > 0 ? ": %s" : "%s", lib);
        if (m > 0) {
            n += m;
            if ((size_t)n >= sizeof(buf)) {
                n = (int)sizeof(buf) - 1;
            }
        }
    }
    if (hint && *hint && (size_t)n < sizeof(buf) - 1) {
        snprintf(buf + n, sizeof(buf) - (size_t)n, "\n%s", hint);
    }
    n = (int)strlen(buf);
    fprintf(stderr, n > 0 && buf[n - 1] == '\n' ? "%s" : "%s\n", buf);
}

void tool_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(NULL, NULL, NULL, fmt, ap);
    va_end(ap);
}

void tool_verror(const char *fmt, va_list ap)
{
    vmsg(NULL, NULL, NULL, fmt, ap);
}

static void lib_message(char *lib, size_t size)
{
    snprintf(lib, size, "%s", vd_get_error());
    if (!lib[0] && vd_get_errno()) {
        snprintf(lib, size, "%s", strerror(vd_get_errno()));
    }
    if (!lib[0]) {
        snprintf(lib, size, "unknown error");
    }
}

void tool_error_lib(const char *fmt, ...)
{
    /* Copy the library message first: formatting must not clobber it. */
    char lib[1024], hint[1024];
    lib_message(lib, sizeof(lib));
    snprintf(hint, sizeof(hint), "%s", vd_get_error_hint());
    va_list ap;
    va_start(ap, fmt);
    vmsg(NULL, lib, hint, fmt, ap);
    va_end(ap);
}

void tool_error_last(void)
{
    tool_error_lib("%s", "");
}

void tool_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg("warning: ", NULL, NULL, fmt, ap);
    va_end(ap);
}

/*
 * Overwrite the value of every data= property of an --object spec with
 * 'x': the secret leaves the process listing (spec points into argv) and
 * no message can show it.  ",," is an escaped comma inside a value.
 */
static void object_hide_data(char *spec)
{
    for (char *p = spec; *p;) {
        if (!strncmp(p, "data=", 5)) {
            for (p += 5; *p && !(*p == ',' && p[1] != ','); p++) {
                if (*p == ',') {
                    *p++ = 'x';
                }
                *p = 'x';
            }
        }
        char *comma = p;
        while (*comma && !(*comma == ',' && comma[1] != ',')) {
            comma += (*comma == ',') ? 2 : 1;
        }
        p = *comma ? comma + 1 : comma;
    }
}

bool tool_object_add(char *spec)
{
    int r = vd_object_add(spec);
    object_hide_data(spec);
    if (r < 0) {
        const char *msg = vd_get_error();
        tool_error("Invalid --object '%s': %s", spec,
                   *msg ? msg : strerror(vd_get_errno() ? vd_get_errno() : EINVAL));
        return false;
    }
    return true;
}

bool tool_parse_size(const char *what, const char *str, uint64_t *out)
{
    if (tool_is_qemu_name()) {
        /* qemu-img's cvtnum, two lines (iotest 049) */
        return tool_parse_size_range(what, str ? str : "", 0, INT64_MAX, out);
    }
    /* qemu-img's cvtnum wording, on one line */
    if (!str || !*str || vd_parse_size(str, out) < 0) {
        if (str && *str && vd_get_errno() == ERANGE) {
            tool_error("Invalid %s specified. Must be between 0 and %" PRId64 ".", what,
                       INT64_MAX);
        } else {
            tool_error("Invalid %s specified '%s'. You may use k, M, G, T, P or E suffixes "
                       "for kilobytes, megabytes, gigabytes, terabytes, petabytes and "
                       "exabytes.",
                       what, str ? str : "");
        }
        return false;
    }
    if (*out > (uint64_t)INT64_MAX) {
        tool_error("Invalid %s specified. Must be between 0 and %" PRId64 ".", what, INT64_MAX);
        return false;
    }
    return true;
}

bool tool_parse_size_range(const char *what, const char *str, uint64_t min, uint64_t max,
                           uint64_t *out)
{
    uint64_t v;
    if (vd_parse_size(str, &v) < 0 && vd_get_errno() != ERANGE) {
        tool_error("Invalid %s specified. You may use k, M, G, T, P or E suffixes for\n"
                   "%s: kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.",
                   what, tool_progname());
        return false;
    }
    if (vd_parse_size(str, &v) < 0 || v < min || v > max) {
        tool_error("Invalid %s specified. Must be between %" PRIu64 " and %" PRIu64 ".", what,
                   min, max);
        return false;
    }
    *out = v;
    return true;
}

void tool_size_param_error(const char *prefix, const char *key, const char *value)
{
    if (tool_is_qemu_name()) {
        /* QEMU's message and its hint lines (iotest 049) */
        tool_error("%s%sParameter '%s' expects a non-negative number below 2^64\n"
                   "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
                   "and exabytes, respectively.",
                   prefix ? prefix : "", prefix ? ": " : "", key);
    } else {
        tool_error("%s%sParameter '%s' expects a non-negative number below 2^64 (optional "
                   "suffix k, M, G, T, P or E), not '%s'",
                   prefix ? prefix : "", prefix ? ": " : "", key, value);
    }
}

const char *tool_human_size(uint64_t bytes)
{
    static _Thread_local char buf[32];
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    /*
     * Pick the unit so the shown number stays below 1000 (three significant
     * digits): the power of 1024 of bytes * 1024 / 1000.
     */
    int exp2;
    frexp((double)bytes / (1000.0 / 1024.0), &exp2);
    int unit = (exp2 - 1) / 10;
    if (unit < 0) {
        unit = 0;
    }
    if (unit > 6) {
        unit = 6;
    }
    double div = (double)(1ULL << (unit * 10));
    snprintf(buf, sizeof(buf), "%0.3g %s", (double)bytes / div, units[unit]);
    return buf;
}

/* name as messages show it: a URL's user part loses its password
 * (iscsi://USER%PASSWORD@HOST/... shows as iscsi://USER@HOST/...) */
static const char *tool_shown_name(const char *name, char *buf, size_t size)
{
    const char *auth = strstr(name, "://");
    if (!auth) {
        return name;
    }
    auth += 3;
    size_t alen = strcspn(auth, "/");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++) {
        if (*p == '@') {
            at = p;
        }
    }
    const char *pct = at ? memchr(auth, '%', (size_t)(at - auth)) : NULL;
    if (!pct) {
        return name;
    }
    snprintf(buf, size, "%.*s%s", (int)(pct - name), name, at);
    return buf;
}

bool tool_open_plain_errors;

vd_image *tool_open(const char *filename, const char *fmt, bool image_opts,
                    const vd_opts *extra, unsigned flags, bool quiet)
{
    vd_opts *opts = NULL;
    const char *name = filename ? filename : "";
    const char *open_name = filename;

    if (image_opts) {
        if (fmt) {
            tool_error("--image-opts and --format are mutually exclusive");
            return NULL;
        }
        opts = vd_opts_new();
        if (!opts) {
            tool_error("Out of memory");
            return NULL;
        }
        if (vd_opts_parse(opts, filename ? filename : "", NULL) < 0) {
            tool_error_lib("Invalid image options '%s'", name);
            vd_opts_free(opts);
            return NULL;
        }
        open_name = NULL;
        if (vd_opts_get(opts, "file.filename")) {
            name = vd_opts_get(opts, "file.filename");
        } else if (vd_opts_get(opts, "filename")) {
            name = vd_opts_get(opts, "filename");
        }
    }
    if (extra) {
        if (!opts) {
            opts = vd_opts_clone(extra);
            if (!opts) {
                tool_error("Out of memory");
                return NULL;
            }
        } else if (vd_opts_merge(opts, extra) < 0) {
            tool_error_lib("Invalid options for '%s'", name);
            vd_opts_free(opts);
            return NULL;
        }
    }

    char shown_buf[4096];
    name = tool_shown_name(name, shown_buf, sizeof(shown_buf));
    vd_image *img = vd_open(open_name, fmt, opts, flags);
    if (!img) {
        /* QEMU's exact lead, which scripts and the iotests match: qemu-io
         * says "can't open device NAME: ", qemu-img "Could not open 'NAME': "
         * before the block layer's own message (which for a missing file
         * says "Could not open 'NAME': ..." a second time). */
        size_t plen = strlen(progname);
        if (tool_open_plain_errors) {
            tool_error_last();
        } else if (plen >= 3 && strcmp(progname + plen - 3, "-io") == 0) {
            /* qemu-io names no device for --image-opts or "open -o"
             * without a file name (iotest 226) */
            if (!filename || image_opts) {
                tool_error_lib("can't open");
            } else {
                tool_error_lib("can't open device %s", name);
            }
        } else {
            tool_error_lib("Could not open '%s'", name);
        }
        vd_opts_free(opts);
        return NULL;
    }

    /* Legacy qcow/qcow2 AES is read and written to get data out of old
     * images; say that it is flawed (QEMU refuses it in its emulators).
     * Not under QEMU's names: qemu-img and qemu-io print nothing there, and
     * scripts (iotest 134) match their output exactly. */
    if (!quiet && !(flags & VD_OPEN_NO_IO) && !tool_is_qemu_name()) {
        vd_info *info = NULL;
        if (vd_get_info(img, &info) == 0 && info->weak_encryption) {
            tool_warn("'%s' uses the legacy qcow AES-CBC encryption, which is flawed (weak "
                      "key derivation, predictable IVs): use it only to convert the data to "
                      "an unencrypted or LUKS-encrypted image", name);
        }
        vd_info_free(info);
    }

    /* qemu's wording, printed when writes to block 0 get restricted. */
    if (!quiet && !image_opts && !fmt && (flags & VD_OPEN_RDWR) && vd_image_probed_raw(img)) {
        fprintf(stderr,
                "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                "         Automatically detecting the format is dangerous for raw images, "
                "write operations on block 0 will be restricted.\n"
                "         Specify the 'raw' format explicitly to remove the restrictions.\n",
                name);
    }
    vd_opts_free(opts); /* name may point into it */
    return img;
}

bool tool_parse_cache(const char *mode, vd_opts *opts, bool *writethrough)
{
    bool direct = false, no_flush = false, wt = false;

    if (!mode) {
        return true;
    }
    if (!strcmp(mode, "none") || !strcmp(mode, "off")) {
        direct = true;
    } else if (!strcmp(mode, "writeback")) {
        /* the default */
    } else if (!strcmp(mode, "writethrough")) {
        wt = true;
    } else if (!strcmp(mode, "directsync")) {
        direct = true;
        wt = true;
    } else if (!strcmp(mode, "unsafe")) {
        no_flush = true;
    } else {
        tool_error("Invalid cache option: %s (none, writeback, writethrough, directsync, "
                   "unsafe)",
                   mode);
        return false;
    }
    /* Only non-default keys: drivers then see no option they don't need. */
    if (opts && direct) {
        vd_opts_set(opts, "cache.direct", "on");
    }
    if (opts && no_flush) {
        vd_opts_set(opts, "cache.no-flush", "on");
    }
    if (writethrough) {
        *writethrough = wt;
    }
    return true;
}

/* ---------------------------------------------------------------- progress */

static pthread_mutex_t progress_lock = PTHREAD_MUTEX_INITIALIZER;
static bool progress_enabled;
static double progress_current;
static double progress_last_print = -100.0;
static volatile sig_atomic_t progress_pending;
static bool progress_handler_installed;

static void progress_sigusr1(int sig)
{
    (void)sig;
    progress_pending = 1;
}

static void progress_print_locked(void)
{
    if (progress_enabled) {
        printf("    (%3.2f/100%%)\r", progress_current);
        fflush(stdout);
    }
    progress_last_print = progress_current;
}

void tool_progress_init(bool enabled)
{
    pthread_mutex_lock(&progress_lock);
    progress_enabled = enabled;
    progress_current = 0.0;
    progress_last_print = -100.0;
    progress_pending = 0;
    if (!progress_handler_installed) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = progress_sigusr1;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGUSR1, &sa, NULL);
        progress_handler_installed = true;
    }
    if (enabled) {
        progress_print_locked();
    }
    pthread_mutex_unlock(&progress_lock);
}

void tool_progress_update(double percent)
{
    if (percent < 0.0) {
        percent = 0.0;
    }
    if (percent > 100.0) {
        percent = 100.0;
    }
    pthread_mutex_lock(&progress_lock);
    progress_current = percent;
    if (progress_pending) {
        progress_pending = 0;
        if (!progress_enabled) {
            /* SIGUSR1 without -p: one line on stderr, as qemu-img does */
            fprintf(stderr, "    (%3.2f/100%%)\n", progress_current);
        } else {
            progress_print_locked();
        }
    } else if (progress_enabled &&
               (percent >= progress_last_print + 1.0 || percent <= progress_last_print - 1.0 ||
                (percent == 100.0 && progress_last_print != 100.0))) {
        progress_print_locked();
    }
    pthread_mutex_unlock(&progress_lock);
}

void tool_progress_print(double percent)
{
    pthread_mutex_lock(&progress_lock);
    progress_current = percent < 0.0 ? 0.0 : percent > 100.0 ? 100.0 : percent;
    progress_print_locked();
    pthread_mutex_unlock(&progress_lock);
}

void tool_progress_end(void)
{
    pthread_mutex_lock(&progress_lock);
    if (progress_enabled) {
        if (progress_last_print != progress_current) {
            progress_print_locked();
        }
        printf("\n");
        fflush(stdout);
    }
    progress_enabled = false;
    pthread_mutex_unlock(&progress_lock);
}

void tool_progress_cb(void *opaque, double percent)
{
    (void)opaque;
    tool_progress_update(percent);
}

bool tool_is_zero(const void *buf, size_t len)
{
    /* the first bytes, then the buffer against itself shifted by 16 */
    const uint8_t *p = buf;
    if (len == 0) {
        return true;
    }
    size_t head = len < 16 ? len : 16;
    for (size_t i = 0; i < head; i++) {
        if (p[i]) {
            return false;
        }
    }
    return len <= 16 || !memcmp(p, p + 16, len - 16);
}
