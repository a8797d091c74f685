/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk bench: issue -c requests of -s bytes, -d of them in flight, at
 * offsets -o, -o+S, -o+2S ... (modulo the image size), as
 * qemu-img bench, and print how long the run took.  "In flight" is one
 * thread per outstanding request (the library's API is synchronous).
 * --flush-interval=N flushes after every N completed writes, first
 * draining the queue unless --no-drain.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "cmds.h"
#include "img.h"
#include "tool.h"

#define BENCH_MAX_THREADS 128

enum {
    BENCH_OPT_FLUSH_INTERVAL = 1000, /* clear of img.h's OPT_* */
    BENCH_OPT_PATTERN,
    BENCH_OPT_NO_DRAIN,
};

typedef struct bench_state {
    vd_image *img;
    uint64_t image_size;
    uint64_t bufsize;
    uint64_t step;
    uint64_t offset; /* next request's offset */
    bool write;
    int pattern;
    uint64_t flush_interval;
    bool drain_on_flush;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    uint64_t n;         /* requests not yet issued */
    uint64_t completed; /* requests done */
    uint64_t in_flight;
    uint64_t flush_gate; /* drain mode: no request past this count */
    uint64_t issued;
} bench_state;

static void bench_fail(const char *what)
{
    tool_error_lib("%s", what);
    exit(EXIT_FAILURE);
}

static void *bench_worker(void *opaque)
{
    bench_state *b = opaque;
    uint8_t *buf = NULL;
    size_t sz = b->bufsize ? (size_t)b->bufsize : 1;

    if (posix_memalign((void **)&buf, 4096, sz)) {
        tool_error("Out of memory");
        exit(EXIT_FAILURE);
    }
    memset(buf, b->pattern, sz);

    for (;;) {
        pthread_mutex_lock(&b->lock);
        /* in drain mode a flush point holds new requests back */
        while (b->n > 0 && b->drain_on_flush && b->flush_interval &&
               b->issued >= b->flush_gate) {
            pthread_cond_wait(&b->cond, &b->lock);
        }
        if (b->n == 0) {
            pthread_mutex_unlock(&b->lock);
            break;
        }
        b->n--;
        b->issued++;
        b->in_flight++;
        uint64_t offset = b->offset;
        b->offset += b->step;
        /* qemu-img 7.2 wraps at the image size: a request that then runs
         * past the end fails, as there */
        if (b->image_size <= b->bufsize) {
            b->offset = 0;
        } else {
            b->offset %= b->image_size;
        }
        pthread_mutex_unlock(&b->lock);

        if (b->bufsize) {
            int r = b->write ? vd_pwrite(b->img, buf, b->bufsize, offset, 0)
                             : vd_pread(b->img, buf, b->bufsize, offset);
            if (r < 0) {
                bench_fail("Failed request");
            }
        }

        pthread_mutex_lock(&b->lock);
        b->in_flight--;
        b->completed++;
        bool flush = b->flush_interval && b->completed % b->flush_interval == 0;
        if (flush && b->drain_on_flush) {
            /* the last of this batch to complete drains: flush, reopen */
            if (b->in_flight == 0) {
                pthread_mutex_unlock(&b->lock);
                if (vd_flush(b->img) < 0) {
                    bench_fail("Failed flush request");
                }
                pthread_mutex_lock(&b->lock);
                b->flush_gate += b->flush_interval;
                pthread_cond_broadcast(&b->cond);
            }
            pthread_mutex_unlock(&b->lock);
        } else {
            pthread_mutex_unlock(&b->lock);
            if (flush && vd_flush(b->img) < 0) {
                bench_fail("Failed flush request");
            }
        }
    }
    free(buf);
    return NULL;
}

/* qemu_strtoul with base 0 (decimal, 0x hex, 0 octal), whole string. */
static bool bench_parse_ulong(const char *s, unsigned long max, unsigned long *out)
{
    char *end;
    errno = 0;
    if (!*s || *s == '-') {
        return false;
    }
    unsigned long v = strtoul(s, &end, 0);
    if (errno || end == s || *end || v > max) {
        return false;
    }
    *out = v;
    return true;
}

int cmd_bench(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"help", no_argument, 0, 'h'},
        {"flush-interval", required_argument, 0, BENCH_OPT_FLUSH_INTERVAL},
        {"image-opts", no_argument, 0, OPT_IMAGE_OPTS},
        {"pattern", required_argument, 0, BENCH_OPT_PATTERN},
        {"no-drain", no_argument, 0, BENCH_OPT_NO_DRAIN},
        {"force-share", no_argument, 0, 'U'},
        {0, 0, 0, 0},
    };
    const char *fmt = NULL, *aio = NULL;
    bool quiet = false, image_opts = false, is_write = false, force_share = false;
    bool drain_on_flush = true, writethrough = false;
    unsigned long count = 75000, depth = 64, pattern = 0, flush_interval = 0;
    uint64_t offset = 0, bufsize = 4096, step = 0;
    vd_opts *opts = vd_opts_new();
    vd_image *img = NULL;
    int ret = 1;

    if (!opts) {
        tool_error("Out of memory");
        return 1;
    }
    optind = 0;
    opterr = 0;
    img_common co = {0};
    for (;;) {
        int c = getopt_long(argc, argv, ":hc:d:f:ni:o:qs:S:t:wU", long_options, NULL);
        if (c == -1) {
            break;
        }
        switch (img_common_option(&co, NULL, c, argv)) {
        case IMG_OPT_HANDLED:
            continue;
        case IMG_OPT_FAIL:
            return 1;
        }
        switch (c) {
        case ':':
            tool_error("missing argument for option '%s'\nTry '%s --help' for more information",
                       argv[optind - 1], tool_progname());
            goto out;
        case '?':
            tool_error("unrecognized option '%s'\nTry '%s --help' for more information",
                       argv[optind - 1], tool_progname());
            goto out;
        case 'h':
            printf("usage: %s bench [-c count] [-d depth] [-f fmt] "
                   "[--flush-interval=flush_interval] [-i aio] [-n] [--no-drain] [-o offset] "
                   "[--pattern=pattern] [-q] [-s buffer_size] [-S step_size] [-t cache] [-w] "
                   "[-U] filename\n",
                   tool_progname());
            ret = 0;
            goto out;
        case 'c':
            if (!bench_parse_ulong(optarg, INT_MAX, &count)) {
                tool_error("Invalid request count specified");
                goto out;
            }
            break;
        case 'd':
            if (!bench_parse_ulong(optarg, INT_MAX, &depth)) {
                tool_error("Invalid queue depth specified");
                goto out;
            }
            break;
        case 'n':
            aio = "native";
            break;
        case 'i':
            if (strcmp(optarg, "threads") && strcmp(optarg, "native") &&
                strcmp(optarg, "io_uring")) {
                tool_error("Invalid aio option: %s", optarg);
                goto out;
            }
            aio = optarg;
            break;
        case 'o':
            if (!tool_parse_size_range("offset", optarg, 0, INT64_MAX, &offset)) {
                goto out;
            }
            break;
        case 's':
            if (!tool_parse_size_range("buffer size", optarg, 0, INT_MAX, &bufsize)) {
                goto out;
            }
            break;
        case 'S':
            if (!tool_parse_size_range("step_size", optarg, 0, INT_MAX, &step)) {
                goto out;
            }
            break;
        case 't':
            if (!tool_parse_cache(optarg, opts, &writethrough)) {
                goto out;
            }
            break;
        case 'w':
            is_write = true;
            break;
        case BENCH_OPT_PATTERN:
            if (!bench_parse_ulong(optarg, 0xff, &pattern)) {
                tool_error("Invalid pattern byte specified");
                goto out;
            }
            break;
        case BENCH_OPT_FLUSH_INTERVAL:
            if (!bench_parse_ulong(optarg, INT_MAX, &flush_interval)) {
                tool_error("Invalid flush interval specified");
                goto out;
            }
            break;
        case BENCH_OPT_NO_DRAIN:
            drain_on_flush = false;
            break;
        }
    }
    if (co.fmt) {
        fmt = co.fmt;
    }
    quiet = co.quiet;
    force_share = co.force_share;
    image_opts = co.image_opts;

    if (optind != argc - 1) {
        tool_error("Expecting one image file name\nTry '%s --help' for more information",
                   tool_progname());
        goto out;
    }
    const char *filename = argv[argc - 1];

    if (!is_write && flush_interval) {
        tool_error("--flush-interval is only available in write tests");
        goto out;
    }
    if (flush_interval && flush_interval < depth) {
        tool_error("Flush interval can't be smaller than depth");
        goto out;
    }
    if (depth == 0 && count > 0) {
        /* qemu-img waits forever here; an error is more useful */
        tool_error("Invalid queue depth specified");
        goto out;
    }
    if (aio) {
        vd_opts_set(opts, "file.aio", aio);
    }

    unsigned flags = (is_write ? VD_OPEN_RDWR : 0) | (force_share ? VD_OPEN_FORCE_SHARE : 0);
    img = tool_open(filename, fmt, image_opts, opts, flags, quiet);
    if (!img) {
        goto out;
    }
    int64_t size = vd_get_length(img);
    if (size < 0) {
        tool_error_lib("Could not get the size of '%s'", filename);
        goto out;
    }

    bench_state b = {
        .img = img,
        .image_size = (uint64_t)size,
        .bufsize = bufsize,
        .step = step ? step : bufsize,
        .offset = offset,
        .write = is_write,
        .pattern = (int)pattern,
        .flush_interval = flush_interval,
        .drain_on_flush = drain_on_flush,
        .n = count,
        .flush_gate = flush_interval,
    };
    printf("Sending %lu %s requests, %" PRIu64 " bytes each, %lu in parallel (starting at "
           "offset %" PRIu64 ", step size %" PRIu64 ")\n",
           count, is_write ? "write" : "read", bufsize, depth, offset, b.step);
    if (flush_interval) {
        printf("Sending flush every %lu requests\n", flush_interval);
    }
    fflush(stdout);

    pthread_mutex_init(&b.lock, NULL);
    pthread_cond_init(&b.cond, NULL);
    unsigned long nthreads = depth < count ? depth : count;
    if (nthreads > BENCH_MAX_THREADS) {
        nthreads = BENCH_MAX_THREADS;
    }
    pthread_t *tids = calloc(nthreads ? nthreads : 1, sizeof(*tids));
    if (!tids) {
        tool_error("Out of memory");
        goto out;
    }

    struct timeval t1, t2;
    gettimeofday(&t1, NULL);
    unsigned long started = 0;
    for (unsigned long i = 0; i < nthreads; i++) {
        if (pthread_create(&tids[i], NULL, bench_worker, &b) != 0) {
            break;
        }
        started++;
    }
    if (nthreads && !started) {
        tool_error("Could not start a worker thread");
        free(tids);
        goto out;
    }
    for (unsigned long i = 0; i < started; i++) {
        pthread_join(tids[i], NULL);
    }
    gettimeofday(&t2, NULL);
    free(tids);
    pthread_cond_destroy(&b.cond);
    pthread_mutex_destroy(&b.lock);

    printf("Run completed in %3.3f seconds.\n",
           (double)(t2.tv_sec - t1.tv_sec) + (double)(t2.tv_usec - t1.tv_usec) / 1000000.0);
    ret = 0;

out:
    if (img) {
        vd_close(img);
    }
    vd_opts_free(opts);
    return ret;
}
