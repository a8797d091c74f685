/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Commands that look at the image rather than move data: length, info,
 * alloc, map; and the process commands sleep, sigraise, abort.
 */
#include <errno.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "vdisk-io.h"

/* ---------------------------------------------------------------- length */

static int length_f(int argc, char **argv)
{
    char s1[64];
    (void)argc;
    (void)argv;

    int64_t size = vd_get_length(vio.img);
    if (size < 0) {
        int e = vd_get_errno() ? vd_get_errno() : EIO;
        printf("getlength: %s\n", strerror(e));
        return -e;
    }
    vio_cvtstr((double)size, s1, sizeof(s1));
    printf("%s\n", s1);
    return 0;
}

const vio_cmd vio_cmd_length = {
    .name = "length",
    .altname = "l",
    .fn = length_f,
    .oneline = "gets the length of the current file",
};

/* ------------------------------------------------------------------ info */

/* Print a JSON value the way qemu dumps format-specific information:
 * "key: value" lines, dashes in keys shown as spaces, lists as [i]. */
static void dump_json(int indent, struct json_object *obj);

static bool json_composite(struct json_object *obj)
{
    return json_object_is_type(obj, json_type_object) ||
           json_object_is_type(obj, json_type_array);
}

static void dump_json(int indent, struct json_object *obj)
{
    switch (json_object_get_type(obj)) {
    case json_type_object: {
        json_object_object_foreach(obj, key, val)
        {
            bool composite = json_composite(val);
            printf("%*s", indent * 4, "");
            for (const char *k = key; *k; k++) {
                putchar(*k == '-' ? ' ' : *k);
            }
            printf(":%c", composite ? '\n' : ' ');
            dump_json(indent + 1, val);
        }
        break;
    }
    case json_type_array: {
        size_t n = json_object_array_length(obj);
        for (size_t i = 0; i < n; i++) {
            struct json_object *val = json_object_array_get_idx(obj, i);
            bool composite = json_composite(val);
            printf("%*s[%zu]:%c", indent * 4, "", i, composite ? '\n' : ' ');
            dump_json(indent + 1, val);
        }
        break;
    }
    case json_type_string:
        printf("%s\n", json_object_get_string(obj));
        break;
    case json_type_boolean:
        printf("%s\n", json_object_get_boolean(obj) ? "true" : "false");
        break;
    case json_type_null:
        printf("null\n");
        break;
    default:
        /* numbers exactly as written */
        printf("%s\n", json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
        break;
    }
}

/* qcow2's VM state lives right after the guest-visible clusters, at the
 * first L1 entry the disk does not use. */
static int info_f(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    const char *fmt = vd_image_format(vio.img);
    const char *kind = fmt ? vd_driver_type(fmt) : NULL;
    char s1[64], s2[64];

    printf("format name: %s\n", fmt ? fmt : "");
    if (kind && !strcmp(kind, "protocol")) {
        /* qemu prints a protocol's format name and protocol name */
        printf("format name: %s\n", fmt);
    }
    /* qemu prints cluster size and VM state offset only for drivers that
     * can describe themselves (the library says which) */
    vd_info *info = NULL;
    if (vd_get_info(vio.img, &info) < 0) {
        return 0;
    }
    if (!info->has_block_info) {
        vd_info_free(info);
        return 0;
    }
    struct json_object *spec = NULL, *data = NULL;
    if (info->format_specific_json) {
        spec = json_tokener_parse(info->format_specific_json);
        if (spec && !json_object_object_get_ex(spec, "data", &data)) {
            data = NULL;
        }
    }
    uint32_t cluster_size = vd_image_cluster_size(vio.img);
    uint64_t vm_state = info->vm_state_offset;
    vio_cvtstr((double)cluster_size, s1, sizeof(s1));
    vio_cvtstr((double)vm_state, s2, sizeof(s2));
    printf("cluster size: %s\n", s1);
    printf("vm state offset: %s\n", s2);
    if (data) {
        printf("Format specific information:\n");
        dump_json(1, data);
    }
    json_object_put(spec);
    vd_info_free(info);
    return 0;
}

const vio_cmd vio_cmd_info = {
    .name = "info",
    .altname = "i",
    .fn = info_f,
    .oneline = "prints information about the current file",
};

/* ----------------------------------------------------------------- alloc */

/*
 * Whether [offset, offset+bytes) is allocated in the top layer, and for how
 * many bytes the answer holds (0 at or past the end of the image).
 */
static int is_allocated(int64_t offset, int64_t bytes, int64_t *pnum)
{
    int64_t len = vd_get_length(vio.img);
    vd_extent ext;

    if (len < 0) {
        return -(vd_get_errno() ? vd_get_errno() : EIO);
    }
    if (offset >= len || bytes <= 0) {
        *pnum = 0;
        return 0;
    }
    if (bytes > len - offset) {
        bytes = len - offset;
    }
    if (vd_block_status(vio.img, (uint64_t)offset, (uint64_t)bytes, false, &ext) < 0) {
        return -(vd_get_errno() ? vd_get_errno() : EIO);
    }
    *pnum = ext.length > (uint64_t)bytes ? bytes : (int64_t)ext.length;
    return (ext.flags & VD_BS_ALLOCATED) ? 1 : 0;
}

static int alloc_f(int argc, char **argv)
{
    int64_t offset, start, remaining, count, num, sum_alloc = 0;
    char s1[64];
    int ret;

    start = offset = vio_parse_num(argv[1]);
    if (offset < 0) {
        return (int)offset;
    }
    if (argc == 3) {
        count = vio_parse_num(argv[2]);
        if (count < 0) {
            return (int)count;
        }
    } else {
        count = VIO_SECTOR;
    }
    remaining = count;
    while (remaining) {
        ret = is_allocated(offset, remaining, &num);
        if (ret < 0) {
            printf("is_allocated failed: %s\n", strerror(-ret));
            return ret;
        }
        offset += num;
        remaining -= num;
        if (ret) {
            sum_alloc += num;
        }
        if (num == 0) {
            /* the end of the image: report on what exists */
            count -= remaining;
            remaining = 0;
        }
    }
    vio_cvtstr((double)start, s1, sizeof(s1));
    printf("%" PRId64 "/%" PRId64 " bytes allocated at offset %s\n", sum_alloc, count, s1);
    return 0;
}

const vio_cmd vio_cmd_alloc = {
    .name = "alloc",
    .altname = "a",
    .fn = alloc_f,
    .argmin = 1,
    .argmax = 2,
    .args = "offset [count]",
    .oneline = "checks if offset is allocated in the file",
};

/* ------------------------------------------------------------------- map */

static int64_t req_min(int64_t bytes)
{
    return bytes < VIO_REQUEST_MAX_BYTES ? bytes : VIO_REQUEST_MAX_BYTES;
}

/* A run of bytes sharing one allocation state, starting at offset. */
static int map_is_allocated(int64_t offset, int64_t bytes, int64_t *pnum)
{
    int64_t num;
    int ret = is_allocated(offset, req_min(bytes), &num);
    if (ret < 0) {
        return ret;
    }
    int firstret = ret;
    *pnum = num;
    while (bytes > 0 && ret == firstret) {
        offset += num;
        bytes -= num;
        ret = is_allocated(offset, req_min(bytes), &num);
        if (ret == firstret && num) {
            *pnum += num;
        } else {
            break;
        }
    }
    return firstret;
}

static int map_f(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    int64_t offset = 0, num;
    char s1[64], s2[64];

    int64_t bytes = vd_get_length(vio.img);
    if (bytes < 0) {
        int e = vd_get_errno() ? vd_get_errno() : EIO;
        vio_error("Failed to query image length: %s", strerror(e));
        return -e;
    }
    while (bytes) {
        int ret = map_is_allocated(offset, bytes, &num);
        if (ret < 0) {
            vio_error("Failed to get allocation status: %s", strerror(-ret));
            return ret;
        } else if (!num) {
            vio_error("Unexpected end of image");
            return -EIO;
        }
        vio_cvtstr((double)num, s1, sizeof(s1));
        vio_cvtstr((double)offset, s2, sizeof(s2));
        printf("%s (0x%" PRIx64 ") bytes %s at offset %s (0x%" PRIx64 ")\n", s1, (uint64_t)num,
               ret ? "    allocated" : "not allocated", s2, (uint64_t)offset);
        offset += num;
        bytes -= num;
    }
    return 0;
}

const vio_cmd vio_cmd_map = {
    .name = "map",
    .fn = map_f,
    .argmin = 0,
    .argmax = 0,
    .args = "",
    .oneline = "prints the allocated areas of a file",
};

/* ----------------------------------------------------------------- sleep */

static int sleep_f(int argc, char **argv)
{
    char *end;
    (void)argc;
    errno = 0;
    long ms = strtol(argv[1], &end, 0);
    if (ms < 0 || *end != '\0' || errno) {
        printf("%s is not a valid number\n", argv[1]);
        return -EINVAL;
    }
    struct timespec deadline, now;
    vio_now(&deadline);
    deadline.tv_sec += ms / 1000;
    deadline.tv_nsec += (ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    /* finished aio requests report while we wait, as in qemu-io */
    for (;;) {
        vio_aio_poll();
        vio_now(&now);
        struct timespec left = vio_tsub(deadline, now);
        if (left.tv_sec == 0 && left.tv_nsec == 0) {
            break;
        }
        if (left.tv_sec > 0 || left.tv_nsec > 10000000L) {
            left.tv_sec = 0;
            left.tv_nsec = 10000000L;
        }
        nanosleep(&left, NULL);
    }
    return 0;
}

const vio_cmd vio_cmd_sleep = {
    .name = "sleep",
    .fn = sleep_f,
    .argmin = 1,
    .argmax = 1,
    .flags = VIO_CMD_NOFILE_OK,
    .oneline = "waits for the given value in milliseconds",
};

/* -------------------------------------------------------------- sigraise */

static void sigraise_help(void)
{
    printf("\n"
           " raises a signal in this process\n"
           "\n"
           " Example:\n"
           " 'sigraise %d' - raises SIGTERM\n"
           "\n"
           " Output is flushed first; the image is not closed, which lets a test\n"
           " look at a file as a crash would leave it.\n"
           "\n",
           SIGTERM);
}

static int sigraise_f(int argc, char **argv)
{
    (void)argc;
    int64_t sig = vio_parse_num(argv[1]);
    if (sig < 0) {
        return (int)sig;
    } else if (sig > NSIG) {
        printf("signal argument '%s' is too large to be a valid signal\n", argv[1]);
        return -EINVAL;
    }
    fflush(stdout);
    fflush(stderr);
    raise((int)sig);
    return 0;
}

const vio_cmd vio_cmd_sigraise = {
    .name = "sigraise",
    .fn = sigraise_f,
    .argmin = 1,
    .argmax = 1,
    .flags = VIO_CMD_NOFILE_OK,
    .args = "signal",
    .oneline = "raises a signal",
    .help = sigraise_help,
};

/* ----------------------------------------------------------------- abort */

static int abort_f(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    fflush(stdout);
    abort();
}

const vio_cmd vio_cmd_abort = {
    .name = "abort",
    .fn = abort_f,
    .flags = VIO_CMD_NOFILE_OK,
    .oneline = "simulate a program crash using abort(3)",
};
