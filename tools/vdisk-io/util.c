/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk-io helpers: argument parsing with qemu-io's rules, the report
 * lines scripts parse, buffers and hex dumps.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk-io.h"

#define MISALIGN_OFFSET 16

void vio_error(const char *fmt, ...)
{
    va_list ap;
    /* keep stdout and stderr lines in the order they happened (qemu-img's
     * errors do not: its buffered stdout comes out later, iotest 074) */
    fflush(stdout);
    va_start(ap, fmt);
    tool_verror(fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- numbers */

static int suffix_shift(char c)
{
    switch (c) {
    case 'b':
    case 'B':
        return 0;
    case 'k':
    case 'K':
        return 10;
    case 'm':
    case 'M':
        return 20;
    case 'g':
    case 'G':
        return 30;
    case 't':
    case 'T':
        return 40;
    case 'p':
    case 'P':
        return 50;
    case 'e':
    case 'E':
        return 60;
    default:
        return -1;
    }
}

/* Unsigned number in base 10 or 16 starting at *p; -EINVAL without digits,
 * -ERANGE on overflow.  Accepts what strtoull accepts before the digits. */
static int parse_u64(const char *s, const char **end, int base, uint64_t *out)
{
    char *e;
    errno = 0;
    unsigned long long v = strtoull(s, &e, base);
    if (e == s) {
        *end = s;
        return -EINVAL;
    }
    *end = e;
    if (errno == ERANGE) {
        return -ERANGE;
    }
    *out = v;
    return 0;
}

int64_t vio_cvtnum(const char *s)
{
    const char *end;
    uint64_t val = 0;
    unsigned __int128 valf = 0; /* fraction as 0.64 fixed point */
    int ret = parse_u64(s, &end, 10, &val);

    if (ret < 0) {
        return ret;
    }
    /* strtoull takes "-1" as a huge number; sizes are never negative */
    if (memchr(s, '-', (size_t)(end - s))) {
        return -EINVAL;
    }
    if (val == 0 && (*end == 'x' || *end == 'X')) {
        /* hex: no fraction; a unit still works but QEMU warns about it */
        ret = parse_u64(s, &end, 16, &val);
        if (ret < 0) {
            return ret;
        }
        if (*end == '.') {
            return -EINVAL;
        }
        if (suffix_shift(*end) >= 0 && end[1] == '\0') {
            vio_error("warning: Using a multiplier suffix on hex numbers is deprecated: %s", s);
        }
    } else if (*end == '.') {
        const char *f = end;
        char *fe;
        errno = 0;
        double fraction = strtod(f, &fe);
        if (fe == f || errno) {
            end = f + 1; /* "1.k": a bare dot */
        } else if (memchr(f, 'e', (size_t)(fe - f)) || memchr(f, 'E', (size_t)(fe - f))) {
            return -EINVAL;
        } else {
            end = fe;
            if (fraction >= 1.0 || fraction < 0) {
                return -EINVAL;
            }
            valf = (unsigned __int128)(fraction * 18446744073709551616.0);
        }
    }
    int shift = suffix_shift(*end);
    if (shift >= 0) {
        end++;
    } else {
        shift = 0; /* bytes */
    }
    if (shift == 0) {
        if (valf != 0) {
            return -EINVAL; /* a fraction needs a unit */
        }
    } else {
        unsigned __int128 whole = (unsigned __int128)val << shift;
        unsigned __int128 frac = valf << shift; /* 64.64 fixed point */
        /* round half up */
        unsigned __int128 total = whole + (frac >> 64) + ((frac >> 63) & 1);
        if (total > UINT64_MAX) {
            return -ERANGE;
        }
        val = (uint64_t)total;
    }
    if (*end != '\0') {
        return -EINVAL;
    }
    if (val > (uint64_t)INT64_MAX) {
        return -ERANGE;
    }
    return (int64_t)val;
}

void vio_print_cvtnum_err(int64_t rc, const char *arg)
{
    switch (rc) {
    case -EINVAL:
        printf("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- "
               "%s\n",
               arg);
        break;
    case -ERANGE:
        printf("Parsing error: argument too large -- %s\n", arg);
        break;
    default:
        printf("Parsing error: %s\n", arg);
        break;
    }
}

int64_t vio_parse_num(const char *arg)
{
    int64_t v = vio_cvtnum(arg);
    if (v < 0) {
        vio_print_cvtnum_err(v, arg);
    }
    return v;
}

void vio_cvtstr(double value, char *str, size_t size)
{
    static const struct {
        int shift;
        const char *suffix;
    } units[] = {
        {60, " EiB"}, {50, " PiB"}, {40, " TiB"}, {30, " GiB"}, {20, " MiB"}, {10, " KiB"},
    };
    const char *suffix = " bytes";
    size_t i;

    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        double unit = (double)(1ULL << units[i].shift);
        if (value >= unit) {
            suffix = units[i].suffix;
            snprintf(str, size - 4, "%.3f", value / unit);
            break;
        }
    }
    if (i == sizeof(units) / sizeof(units[0])) {
        snprintf(str, size - 6, "%f", value);
    }
    /* "4.000 KiB" reads better as "4 KiB" (qemu cuts at the first ".000") */
    char *trim = strstr(str, ".000");
    if (trim) {
        strcpy(trim, suffix);
    } else {
        strcat(str, suffix);
    }
}

int vio_parse_pattern(const char *arg)
{
    char *end = NULL;
    errno = 0;
    long pattern = strtol(arg, &end, 0);
    if (errno || end == arg || pattern < 0 || pattern > UCHAR_MAX || *end != '\0') {
        printf("%s is not a valid pattern byte\n", arg);
        return -1;
    }
    return (int)pattern;
}

/* ----------------------------------------------------------------- timing */

void vio_now(struct timespec *ts)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
}

struct timespec vio_tsub(struct timespec end, struct timespec start)
{
    struct timespec d;
    d.tv_sec = end.tv_sec - start.tv_sec;
    d.tv_nsec = end.tv_nsec - start.tv_nsec;
    if (d.tv_nsec < 0) {
        d.tv_nsec += 1000000000L;
        d.tv_sec--;
    }
    if (d.tv_sec < 0) {
        d.tv_sec = 0;
        d.tv_nsec = 0;
    }
    return d;
}

static double tdiv(double value, const struct timespec *t)
{
    return value / ((double)t->tv_sec + (double)t->tv_nsec / 1e9);
}

static void timestr(const struct timespec *t, char *ts, size_t size, bool verbose)
{
    double frac = (double)t->tv_nsec / 1e9;
    unsigned long secs = (unsigned long)t->tv_sec;

    if (verbose || secs) {
        snprintf(ts, size, "%u:%02u:%02u.%02u", (unsigned)(secs / 3600),
                 (unsigned)((secs % 3600) / 60), (unsigned)(secs % 60), (unsigned)(frac * 100));
    } else {
        snprintf(ts, size, "%05.2f sec", frac);
    }
}

void vio_print_report(const char *op, const struct timespec *t, int64_t offset, int64_t count,
                      int64_t total, int cnt, bool cflag)
{
    char s1[64], s2[64], ts[64];

    timestr(t, ts, sizeof(ts), cflag);
    if (!cflag) {
        vio_cvtstr((double)total, s1, sizeof(s1));
        vio_cvtstr(tdiv((double)total, t), s2, sizeof(s2));
        printf("%s %" PRId64 "/%" PRId64 " bytes at offset %" PRId64 "\n", op, total, count,
               offset);
        printf("%s, %d ops; %s (%s/sec and %.4f ops/sec)\n", s1, cnt, ts, s2,
               tdiv((double)cnt, t));
    } else {
        /* bytes,ops,time,bytes/sec,ops/sec */
        printf("%" PRId64 ",%d,%s,%.3f,%.3f\n", total, cnt, ts, tdiv((double)total, t),
               tdiv((double)cnt, t));
    }
}

void vio_dump_buffer(const void *buf, int64_t offset, int64_t len)
{
    const uint8_t *p = buf;

    for (int64_t i = 0; i < len; i += 16) {
        int n = len - i < 16 ? (int)(len - i) : 16;
        printf("%08" PRIx64 ":  ", (uint64_t)(offset + i));
        for (int j = 0; j < n; j++) {
            printf("%02x ", p[i + j]);
        }
        printf(" ");
        for (int j = 0; j < n; j++) {
            putchar(isalnum(p[i + j]) ? p[i + j] : '.');
        }
        printf("\n");
    }
}

/* ---------------------------------------------------------------- buffers */

int vio_io_flag(int c, vio_io_flags *f)
{
    switch (c) {
    case 'C':
        f->cflag = true;
        return 1;
    case 'q':
        f->qflag = true;
        return 1;
    case 'v':
        f->vflag = true;
        return 1;
    case 'P':
        f->pflag = true;
        f->pattern = vio_parse_pattern(optarg);
        return f->pattern < 0 ? -EINVAL : 1;
    default:
        return 0;
    }
}

int vio_read_report(const uint8_t *buf, int64_t offset, int64_t count, int64_t poff,
                    int64_t pcount, const vio_io_flags *f, const struct timespec *t)
{
    int ret = 0;
    if (f->pflag) {
        for (int64_t i = 0; i < pcount; i++) {
            if (buf[poff + i] != (uint8_t)f->pattern) {
                printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n",
                       offset + poff, pcount);
                ret = -EINVAL;
                break;
            }
        }
    }
    if (!f->qflag) {
        if (f->vflag) {
            vio_dump_buffer(buf, offset, count);
        }
        vio_print_report("read", t, offset, count, count, 1, f->cflag);
    }
    return ret;
}

void *vio_alloc(size_t len, int pattern)
{
    size_t extra = vio_misalign ? MISALIGN_OFFSET : 0;
    void *p = NULL;

    if (len > SIZE_MAX - extra - 1 || posix_memalign(&p, 4096, len + extra + 1) != 0) {
        return NULL;
    }
    memset(p, pattern, len + extra);
    return (uint8_t *)p + extra;
}

void vio_free(void *buf)
{
    if (buf) {
        free((uint8_t *)buf - (vio_misalign ? MISALIGN_OFFSET : 0));
    }
}

void *vio_alloc_from_file(size_t len, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fflush(stdout);
        perror(path);
        return NULL;
    }
    uint8_t *buf = vio_alloc(len, 0);
    if (!buf) {
        fclose(f);
        fprintf(stderr, "%s: %s\n", path, strerror(ENOMEM));
        return NULL;
    }
    size_t got = fread(buf, 1, len, f);
    if (ferror(f)) {
        int e = errno;
        fclose(f);
        vio_free(buf);
        fflush(stdout);
        fprintf(stderr, "%s: %s\n", path, strerror(e));
        return NULL;
    }
    fclose(f);
    if (got == 0) {
        vio_free(buf);
        fflush(stdout);
        fprintf(stderr, "%s: file is empty\n", path);
        return NULL;
    }
    /* a short file is repeated to fill the buffer */
    for (size_t done = got; done < len;) {
        size_t n = len - done < got ? len - done : got;
        memcpy(buf + done, buf, n);
        done += n;
    }
    return buf;
}

/* ---------------------------------------------------------------- checks */

int vio_check_request(int64_t offset, int64_t bytes)
{
    int64_t len = vd_get_length(vio.img);
    if (len < 0) {
        return -(vd_get_errno() ? vd_get_errno() : EIO);
    }
    if (offset < 0 || bytes < 0 || offset > len || len - offset < bytes) {
        return -EIO;
    }
    return 0;
}
