/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * The null protocols (QEMU 7.2 block/null.c): null-co and null-aio, a
 * device of `size` bytes (default 1 GiB) that discards writes, for tests
 * and benchmarks.  Options: size, read-zeroes (default off, as in QEMU),
 * latency-ns (each request sleeps that long).
 *
 * One deliberate difference: QEMU leaves the read buffer untouched unless
 * read-zeroes=on, so a server built on it can send whatever the buffer
 * held (uninitialised heap memory).  A library must not do that, so reads
 * always return zeroes; read-zeroes only changes what block status says,
 * exactly as in QEMU: with it, ZERO|OFFSET_VALID; without it, only
 * OFFSET_VALID ("neither known data nor known zeroes").
 * null-co and null-aio behave the same here (our API is synchronous).
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

typedef struct null_state {
    uint64_t length;
    uint64_t latency_ns;
    bool read_zeroes;
} null_state;

static int null_check_filename(const char *drv, const char *filename, vd_error **errp)
{
    char want[32];
    snprintf(want, sizeof(want), "%s://", drv);
    if (strcmp(filename, want) != 0) {
        return vd_error_set(errp, EINVAL, "The only allowed filename for this driver is '%s'",
                            want);
    }
    return 0;
}

static int null_parse_filename(const char *filename, vd_opts *opts, vd_error **errp)
{
    /* the prefix selected us, so it is "null-co" or "null-aio" */
    const char *colon = strchr(filename, ':');
    char drv[16];
    size_t n = colon ? (size_t)(colon - filename) : 0;
    if (n == 0 || n >= sizeof(drv)) {
        return vd_error_set(errp, EINVAL, "Invalid filename '%s'", filename);
    }
    memcpy(drv, filename, n);
    drv[n] = '\0';
    return null_check_filename(drv, filename, errp);
}

static int null_open(vd_node *bs, vd_opts *opts, vd_error **errp)
{
    null_state *s = bs->opaque;
    const char *fn = vd_opts_get(opts, "filename");
    const char *lat = vd_opts_get(opts, "latency-ns");

    if (fn && null_check_filename(bs->drv->name, fn, errp) < 0) {
        return -EINVAL;
    }
    if (lat && lat[0] == '-') {
        return vd_error_set(errp, EINVAL, "latency-ns is invalid");
    }
    if (vd_opts_get_size(opts, "size", (uint64_t)1 << 30, &s->length, errp) < 0 ||
        vd_opts_get_u64(opts, "latency-ns", 0, &s->latency_ns, errp) < 0 ||
        vd_opts_get_bool(opts, "read-zeroes", false, &s->read_zeroes, errp) < 0) {
        return -EINVAL;
    }
    if (s->length > (uint64_t)INT64_MAX) {
        return vd_error_set(errp, EINVAL, "size is too large");
    }
    bs->has_zero_init = false;
    bs->supports_fua = true; /* nothing to make durable */
    if (!strcmp(bs->filename, bs->drv->name)) {
        /* opened from options: QEMU's name for it (iotest 162) */
        char *name = vd_asprintf("%s://", bs->drv->name);
        if (name) {
            free(bs->filename);
            bs->filename = name;
        }
    }
    return 0;
}

static void null_delay(vd_node *bs)
{
    null_state *s = bs->opaque;
    if (s->latency_ns) {
        struct timespec ts = {
            .tv_sec = (time_t)(s->latency_ns / 1000000000u),
            .tv_nsec = (long)(s->latency_ns % 1000000000u),
        };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
        }
    }
}

static int64_t null_get_length(vd_node *bs)
{
    null_state *s = bs->opaque;
    return (int64_t)s->length;
}

static int64_t null_get_allocated_size(vd_node *bs)
{
    return 0;
}

static int null_pread(vd_node *bs, uint64_t offset, uint64_t len, void *buf, unsigned flags)
{
    memset(buf, 0, len);
    null_delay(bs);
    return 0;
}

static int null_pwrite(vd_node *bs, uint64_t offset, uint64_t len, const void *buf,
                       unsigned flags)
{
    null_delay(bs);
    return 0;
}

static int null_pwrite_zeroes(vd_node *bs, uint64_t offset, uint64_t len, unsigned flags)
{
    null_delay(bs);
    return 0;
}

static int null_discard(vd_node *bs, uint64_t offset, uint64_t len)
{
    return 0;
}

static int null_flush(vd_node *bs)
{
    null_delay(bs);
    return 0;
}

static int null_block_status(vd_node *bs, bool want_zero, uint64_t offset, uint64_t len,
                             uint64_t *pnum, uint64_t *map, vd_node **file)
{
    null_state *s = bs->opaque;
    *pnum = len;
    *map = offset;
    *file = bs;
    return VD_BLOCK_OFFSET_VALID | (s->read_zeroes ? VD_BLOCK_ZERO : 0);
}

static const vd_opt_desc null_open_opts[] = {
    {"filename", VD_OPT_STRING, "must be the driver's own name followed by ://", NULL},
    {"size", VD_OPT_SIZE, "size of the null block", "1G"},
    {"latency-ns", VD_OPT_NUMBER,
     "nanoseconds (approximated) to wait before completing "
     "request",
     "0"},
    {"read-zeroes", VD_OPT_BOOL, "return zeroes when read", "off"},
    {NULL, 0, NULL, NULL},
};

static const char *const null_co_protocols[] = {"null-co", NULL};
static const char *const null_aio_protocols[] = {"null-aio", NULL};

const vd_driver vd_drv_null_co = {
    .name = "null-co",
    .kind = VD_DRV_PROTOCOL,
    .protocols = null_co_protocols,
    .state_size = sizeof(null_state),
    .open_opts = null_open_opts,
    .parse_filename = null_parse_filename,
    .open = null_open,
    .get_length = null_get_length,
    .get_allocated_size = null_get_allocated_size,
    .pread = null_pread,
    .pwrite = null_pwrite,
    .pwrite_zeroes = null_pwrite_zeroes,
    .discard = null_discard,
    .flush = null_flush,
    .block_status = null_block_status,
};

const vd_driver vd_drv_null_aio = {
    .name = "null-aio",
    .kind = VD_DRV_PROTOCOL,
    .protocols = null_aio_protocols,
    .state_size = sizeof(null_state),
    .open_opts = null_open_opts,
    .parse_filename = null_parse_filename,
    .open = null_open,
    .get_length = null_get_length,
    .get_allocated_size = null_get_allocated_size,
    .pread = null_pread,
    .pwrite = null_pwrite,
    .pwrite_zeroes = null_pwrite_zeroes,
    .discard = null_discard,
    .flush = null_flush,
    .block_status = null_block_status,
};
