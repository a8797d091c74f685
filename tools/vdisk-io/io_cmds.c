/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Synchronous data commands: read, readv, write, writev, discard, flush,
 * truncate.  Options, checks (in qemu-io's order) and output lines follow
 * qemu-io 7.2, since scripts parse them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk-io.h"

/* -errno of the library's last failure in this thread */
static int lib_err(void)
{
    int e = vd_get_errno();
    return -(e ? e : EIO);
}

static unsigned write_flags(unsigned flags)
{
    /* without a write cache every write reaches the disk before it completes */
    return vio.writethrough ? flags | VD_REQ_FUA : flags;
}

/* Compare buf with a pattern; true when every byte matches. */
static bool pattern_matches(const uint8_t *buf, size_t len, int pattern)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != (uint8_t)pattern) {
            return false;
        }
    }
    return true;
}

int64_t vio_sum_lengths(char **argv, int n)
{
    int64_t count = 0;
    for (int i = 0; i < n; i++) {
        int64_t len = vio_cvtnum(argv[i]);
        if (len < 0) {
            vio_print_cvtnum_err(len, argv[i]);
            return -EINVAL;
        }
        if (len > VIO_REQUEST_MAX_BYTES) {
            printf("Argument '%s' exceeds maximum size %" PRIu64 "\n", argv[i],
                   (uint64_t)VIO_REQUEST_MAX_BYTES);
            return -EINVAL;
        }
        if (count > VIO_REQUEST_MAX_BYTES - len) {
            printf("The total number of bytes exceed the maximum size %" PRIu64 "\n",
                   (uint64_t)VIO_REQUEST_MAX_BYTES);
            return -EINVAL;
        }
        count += len;
    }
    return count;
}

static int do_pread(void *buf, int64_t offset, int64_t count)
{
    int ret = vio_check_request(offset, count);
    if (ret < 0) {
        return ret;
    }
    if (vd_pread(vio.img, buf, (size_t)count, (uint64_t)offset) < 0) {
        return lib_err();
    }
    return 0;
}

static int do_pwrite(const void *buf, int64_t offset, int64_t count, unsigned flags)
{
    int ret = vio_check_request(offset, count);
    if (ret < 0) {
        return ret;
    }
    if (vd_pwrite(vio.img, buf, (size_t)count, (uint64_t)offset, write_flags(flags)) < 0) {
        return lib_err();
    }
    return 0;
}

/* ------------------------------------------------------------------ read */

static void read_help(void)
{
    printf("\n"
           " reads bytes at an offset of the open image\n"
           "\n"
           " Example:\n"
           " 'read -v 512 1k' - reads 1 KiB at byte 512 and dumps it in hex\n"
           "\n"
           " -b, -- read the VM state area instead of the disk (not supported)\n"
           " -C, -- print statistics as comma-separated values\n"
           " -l, -- length of the range to verify (only with -P)\n"
           " -p, -- accepted and ignored (compatibility)\n"
           " -P, -- verify that every byte read equals the pattern byte\n"
           " -q, -- quiet: print no statistics\n"
           " -s, -- start of the range to verify, relative to off (only with -P)\n"
           " -v, -- dump the data read in hex\n"
           "\n");
}

static int read_f(int argc, char **argv);

const vio_cmd vio_cmd_read = {
    .name = "read",
    .altname = "r",
    .fn = read_f,
    .argmin = 2,
    .argmax = -1,
    .args = "[-abCqv] [-P pattern [-s off] [-l len]] off len",
    .oneline = "reads a number of bytes at a specified offset",
    .help = read_help,
};

static int read_f(int argc, char **argv)
{
    bool cflag = false, qflag = false, vflag = false;
    bool pflag = false, sflag = false, lflag = false, bflag = false;
    int pattern = 0, c, ret;
    int64_t offset, count, pattern_offset = 0, pattern_count = 0;
    struct timespec t1, t2;

    while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
        switch (c) {
        case 'b':
            bflag = true;
            break;
        case 'C':
            cflag = true;
            break;
        case 'l':
            lflag = true;
            pattern_count = vio_cvtnum(optarg);
            if (pattern_count < 0) {
                vio_print_cvtnum_err(pattern_count, optarg);
                return (int)pattern_count;
            }
            break;
        case 'p':
            break;
        case 'P':
            pflag = true;
            pattern = vio_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            qflag = true;
            break;
        case 's':
            sflag = true;
            pattern_offset = vio_cvtnum(optarg);
            if (pattern_offset < 0) {
                vio_print_cvtnum_err(pattern_offset, optarg);
                return (int)pattern_offset;
            }
            break;
        case 'v':
            vflag = true;
            break;
        default:
            return vio_usage(&vio_cmd_read);
        }
    }
    if (optind != argc - 2) {
        return vio_usage(&vio_cmd_read);
    }
    offset = vio_cvtnum(argv[optind]);
    if (offset < 0) {
        vio_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    count = vio_cvtnum(argv[optind]);
    if (count < 0) {
        vio_print_cvtnum_err(count, argv[optind]);
        return (int)count;
    } else if (count > VIO_REQUEST_MAX_BYTES) {
        printf("length cannot exceed %" PRIu64 ", given %s\n", (uint64_t)VIO_REQUEST_MAX_BYTES,
               argv[optind]);
        return -EINVAL;
    }
    if (!pflag && (lflag || sflag)) {
        return vio_usage(&vio_cmd_read);
    }
    if (!lflag) {
        pattern_count = count - pattern_offset;
    }
    if (pattern_count < 0 || pattern_count + pattern_offset > count) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }
    if (bflag) {
        if (offset % VIO_SECTOR) {
            printf("%" PRId64 " is not a sector-aligned value for 'offset'\n", offset);
            return -EINVAL;
        }
        if (count % VIO_SECTOR) {
            printf("%" PRId64 " is not a sector-aligned value for 'count'\n", count);
            return -EINVAL;
        }
    }

    uint8_t *buf = vio_alloc((size_t)count, 0xab);
    if (!buf) {
        printf("read failed: %s\n", strerror(ENOMEM));
        return -ENOMEM;
    }
    vio_now(&t1);
    /* the VM state area is a qcow2 detail the library does not expose */
    ret = bflag ? -ENOTSUP : do_pread(buf, offset, count);
    vio_now(&t2);
    if (ret < 0) {
        printf("read failed: %s\n", strerror(-ret));
        goto out;
    }
    if (pflag && !pattern_matches(buf + pattern_offset, (size_t)pattern_count, pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n",
               offset + pattern_offset, pattern_count);
        ret = -EINVAL;
    }
    if (qflag) {
        goto out;
    }
    if (vflag) {
        vio_dump_buffer(buf, offset, count);
    }
    t2 = vio_tsub(t2, t1);
    vio_print_report("read", &t2, offset, count, count, 1, cflag);
out:
    vio_free(buf);
    return ret;
}

/* ----------------------------------------------------------------- readv */

static void readv_help(void)
{
    printf("\n"
           " reads bytes at an offset into several buffers\n"
           "\n"
           " Example:\n"
           " 'readv -v 512 1k 1k' - reads 2 KiB at byte 512 and dumps them in hex\n"
           "\n"
           " -C, -- print statistics as comma-separated values\n"
           " -P, -- verify that every byte read equals the pattern byte\n"
           " -v, -- dump the data read in hex\n"
           " -q, -- quiet: print no statistics\n"
           "\n");
}

static int readv_f(int argc, char **argv);

const vio_cmd vio_cmd_readv = {
    .name = "readv",
    .fn = readv_f,
    .argmin = 2,
    .argmax = -1,
    .args = "[-Cqv] [-P pattern] off len [len..]",
    .oneline = "reads a number of bytes at a specified offset",
    .help = readv_help,
};

static int readv_f(int argc, char **argv)
{
    bool cflag = false, qflag = false, vflag = false, pflag = false;
    int pattern = 0, c, ret;
    int64_t offset, count;
    struct timespec t1, t2;

    while ((c = getopt(argc, argv, "CP:qv")) != -1) {
        switch (c) {
        case 'C':
            cflag = true;
            break;
        case 'P':
            pflag = true;
            pattern = vio_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            qflag = true;
            break;
        case 'v':
            vflag = true;
            break;
        default:
            return vio_usage(&vio_cmd_readv);
        }
    }
    if (optind > argc - 2) {
        return vio_usage(&vio_cmd_readv);
    }
    offset = vio_cvtnum(argv[optind]);
    if (offset < 0) {
        vio_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    count = vio_sum_lengths(&argv[optind], argc - optind);
    if (count < 0) {
        return (int)count;
    }
    uint8_t *buf = vio_alloc((size_t)count, 0xab);
    if (!buf) {
        printf("readv failed: %s\n", strerror(ENOMEM));
        return -ENOMEM;
    }
    vio_now(&t1);
    ret = do_pread(buf, offset, count);
    vio_now(&t2);
    if (ret < 0) {
        printf("readv failed: %s\n", strerror(-ret));
        goto out;
    }
    if (pflag && !pattern_matches(buf, (size_t)count, pattern)) {
        printf("Pattern verification failed at offset %" PRId64 ", %" PRId64 " bytes\n", offset,
               count);
        ret = -EINVAL;
    }
    if (qflag) {
        goto out;
    }
    if (vflag) {
        vio_dump_buffer(buf, offset, count);
    }
    t2 = vio_tsub(t2, t1);
    vio_print_report("read", &t2, offset, count, count, 1, cflag);
out:
    vio_free(buf);
    return ret;
}

/* ----------------------------------------------------------------- write */

static void write_help(void)
{
    printf("\n"
           " writes bytes at an offset of the open image\n"
           "\n"
           " Example:\n"
           " 'write 512 1k' - writes 1 KiB at byte 512\n"
           "\n"
           " The data is the pattern byte 0xcd unless -P, -s or -z says otherwise.\n"
           " -b, -- write the VM state area instead of the disk (not supported)\n"
           " -c, -- write compressed clusters (formats that compress)\n"
           " -f, -- force unit access: the data is on stable storage on completion\n"
           " -n, -- with -z, fail instead of writing zero buffers when zeroing is slow\n"
           " -p, -- accepted and ignored (compatibility)\n"
           " -P, -- fill the data with this pattern byte\n"
           " -s, -- fill the data with the (repeated) content of this file\n"
           " -C, -- print statistics as comma-separated values\n"
           " -q, -- quiet: print no statistics\n"
           " -u, -- with -z, the range may be deallocated\n"
           " -z, -- write zeroes (efficiently, when the format can)\n"
           "\n");
}

static int write_f(int argc, char **argv);

const vio_cmd vio_cmd_write = {
    .name = "write",
    .altname = "w",
    .fn = write_f,
    .argmin = 2,
    .argmax = -1,
    .flags = VIO_CMD_WRITE,
    .args = "[-bcCfnquz] [-P pattern | -s source_file] off len",
    .oneline = "writes a number of bytes at a specified offset",
    .help = write_help,
};

static int write_f(int argc, char **argv)
{
    bool cflag = false, qflag = false, bflag = false;
    bool pflag = false, zflag = false, compressed = false, sflag = false;
    unsigned flags = 0;
    int pattern = 0xcd, c, ret;
    int64_t offset, count;
    const char *source = NULL;
    uint8_t *buf = NULL;
    struct timespec t1, t2;

    while ((c = getopt(argc, argv, "bcCfnpP:qs:uz")) != -1) {
        switch (c) {
        case 'b':
            bflag = true;
            break;
        case 'c':
            compressed = true;
            break;
        case 'C':
            cflag = true;
            break;
        case 'f':
            flags |= VD_REQ_FUA;
            break;
        case 'n':
            flags |= VD_REQ_NO_FALLBACK;
            break;
        case 'p':
            break;
        case 'P':
            pflag = true;
            pattern = vio_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        case 'q':
            qflag = true;
            break;
        case 's':
            sflag = true;
            source = optarg;
            break;
        case 'u':
            flags |= VD_REQ_MAY_UNMAP;
            break;
        case 'z':
            zflag = true;
            break;
        default:
            return vio_usage(&vio_cmd_write);
        }
    }
    if (optind != argc - 2) {
        return vio_usage(&vio_cmd_write);
    }
    if (bflag && zflag) {
        printf("-b and -z cannot be specified at the same time\n");
        return -EINVAL;
    }
    if ((flags & VD_REQ_FUA) && (bflag || compressed)) {
        printf("-f and -b or -c cannot be specified at the same time\n");
        return -EINVAL;
    }
    if ((flags & VD_REQ_NO_FALLBACK) && !zflag) {
        printf("-n requires -z to be specified\n");
        return -EINVAL;
    }
    if ((flags & VD_REQ_MAY_UNMAP) && !zflag) {
        printf("-u requires -z to be specified\n");
        return -EINVAL;
    }
    if ((int)zflag + (int)pflag + (int)sflag > 1) {
        printf("Only one of -z, -P, and -s can be specified at the same time\n");
        return -EINVAL;
    }
    offset = vio_cvtnum(argv[optind]);
    if (offset < 0) {
        vio_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    count = vio_cvtnum(argv[optind]);
    if (count < 0) {
        vio_print_cvtnum_err(count, argv[optind]);
        return (int)count;
    } else if (count > VIO_REQUEST_MAX_BYTES && !(flags & VD_REQ_NO_FALLBACK)) {
        printf("length cannot exceed %" PRIu64 " without -n, given %s\n",
               (uint64_t)VIO_REQUEST_MAX_BYTES, argv[optind]);
        return -EINVAL;
    }
    if (bflag || compressed) {
        if (offset % VIO_SECTOR) {
            printf("%" PRId64 " is not a sector-aligned value for 'offset'\n", offset);
            return -EINVAL;
        }
        if (count % VIO_SECTOR) {
            printf("%" PRId64 " is not a sector-aligned value for 'count'\n", count);
            return -EINVAL;
        }
    }
    if (!zflag) {
        buf = sflag ? vio_alloc_from_file((size_t)count, source)
                    : vio_alloc((size_t)count, pattern);
        if (!buf) {
            if (!sflag) {
                printf("write failed: %s\n", strerror(ENOMEM));
            }
            return sflag ? -EINVAL : -ENOMEM;
        }
    }

    vio_now(&t1);
    if (bflag) {
        ret = -ENOTSUP;
    } else if (zflag) {
        ret = vio_check_request(offset, count);
        if (ret == 0 && vd_pwrite_zeroes(vio.img, (uint64_t)offset, (uint64_t)count,
                                         write_flags(flags)) < 0) {
            ret = lib_err();
        }
    } else if (compressed) {
        ret = vio_check_request(offset, count);
        if (ret == 0 &&
            vd_pwrite_compressed(vio.img, buf, (size_t)count, (uint64_t)offset) < 0) {
            ret = lib_err();
        }
    } else {
        ret = do_pwrite(buf, offset, count, flags);
    }
    vio_now(&t2);
    if (ret < 0) {
        printf("write failed: %s\n", strerror(-ret));
        goto out;
    }
    if (qflag) {
        goto out;
    }
    t2 = vio_tsub(t2, t1);
    vio_print_report("wrote", &t2, offset, count, count, 1, cflag);
out:
    vio_free(buf);
    return ret;
}

/* ---------------------------------------------------------------- writev */

static void writev_help(void)
{
    printf("\n"
           " writes bytes at an offset from several buffers\n"
           "\n"
           " Example:\n"
           " 'writev 512 1k 1k' - writes 2 KiB at byte 512\n"
           "\n"
           " The data is the pattern byte 0xcd unless -P says otherwise.\n"
           " -P, -- fill the data with this pattern byte\n"
           " -C, -- print statistics as comma-separated values\n"
           " -f, -- force unit access: the data is on stable storage on completion\n"
           " -q, -- quiet: print no statistics\n"
           "\n");
}

static int writev_f(int argc, char **argv);

const vio_cmd vio_cmd_writev = {
    .name = "writev",
    .fn = writev_f,
    .argmin = 2,
    .argmax = -1,
    .flags = VIO_CMD_WRITE,
    .args = "[-Cfq] [-P pattern] off len [len..]",
    .oneline = "writes a number of bytes at a specified offset",
    .help = writev_help,
};

static int writev_f(int argc, char **argv)
{
    bool cflag = false, qflag = false;
    unsigned flags = 0;
    int pattern = 0xcd, c, ret;
    int64_t offset, count;
    struct timespec t1, t2;

    while ((c = getopt(argc, argv, "CfqP:")) != -1) {
        switch (c) {
        case 'C':
            cflag = true;
            break;
        case 'f':
            flags |= VD_REQ_FUA;
            break;
        case 'q':
            qflag = true;
            break;
        case 'P':
            pattern = vio_parse_pattern(optarg);
            if (pattern < 0) {
                return -EINVAL;
            }
            break;
        default:
            return vio_usage(&vio_cmd_writev);
        }
    }
    if (optind > argc - 2) {
        return vio_usage(&vio_cmd_writev);
    }
    offset = vio_cvtnum(argv[optind]);
    if (offset < 0) {
        vio_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    count = vio_sum_lengths(&argv[optind], argc - optind);
    if (count < 0) {
        return (int)count;
    }
    uint8_t *buf = vio_alloc((size_t)count, pattern);
    if (!buf) {
        printf("writev failed: %s\n", strerror(ENOMEM));
        return -ENOMEM;
    }
    vio_now(&t1);
    ret = do_pwrite(buf, offset, count, flags);
    vio_now(&t2);
    if (ret < 0) {
        printf("writev failed: %s\n", strerror(-ret));
        goto out;
    }
    if (qflag) {
        goto out;
    }
    t2 = vio_tsub(t2, t1);
    vio_print_report("wrote", &t2, offset, count, count, 1, cflag);
out:
    vio_free(buf);
    return ret;
}

/* --------------------------------------------------------------- discard */

static void discard_help(void)
{
    printf("\n"
           " discards (deallocates) a range of the open image\n"
           "\n"
           " Example:\n"
           " 'discard 512 1k' - discards 1 KiB at byte 512\n"
           "\n"
           " -C, -- print statistics as comma-separated values\n"
           " -q, -- quiet: print no statistics\n"
           "\n");
}

static int discard_f(int argc, char **argv);

const vio_cmd vio_cmd_discard = {
    .name = "discard",
    .altname = "d",
    .fn = discard_f,
    .argmin = 2,
    .argmax = -1,
    .flags = VIO_CMD_WRITE,
    .args = "[-Cq] off len",
    .oneline = "discards a number of bytes at a specified offset",
    .help = discard_help,
};

static int discard_f(int argc, char **argv)
{
    bool cflag = false, qflag = false;
    int c, ret;
    int64_t offset, bytes;
    struct timespec t1, t2;

    while ((c = getopt(argc, argv, "Cq")) != -1) {
        switch (c) {
        case 'C':
            cflag = true;
            break;
        case 'q':
            qflag = true;
            break;
        default:
            return vio_usage(&vio_cmd_discard);
        }
    }
    if (optind != argc - 2) {
        return vio_usage(&vio_cmd_discard);
    }
    offset = vio_cvtnum(argv[optind]);
    if (offset < 0) {
        vio_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    optind++;
    bytes = vio_cvtnum(argv[optind]);
    if (bytes < 0) {
        vio_print_cvtnum_err(bytes, argv[optind]);
        return (int)bytes;
    } else if (bytes > VIO_REQUEST_MAX_BYTES) {
        printf("length cannot exceed %" PRIu64 ", given %s\n", (uint64_t)VIO_REQUEST_MAX_BYTES,
               argv[optind]);
        return -EINVAL;
    }
    vio_now(&t1);
    ret = vio_check_request(offset, bytes);
    if (ret == 0 && vd_discard(vio.img, (uint64_t)offset, (uint64_t)bytes) < 0) {
        ret = lib_err();
    }
    vio_now(&t2);
    if (ret < 0) {
        printf("discard failed: %s\n", strerror(-ret));
        return ret;
    }
    if (!qflag) {
        t2 = vio_tsub(t2, t1);
        vio_print_report("discard", &t2, offset, bytes, bytes, 1, cflag);
    }
    return 0;
}

/* ----------------------------------------------------------------- flush */

static int flush_f(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    /* qemu-io prints nothing; a failure only shows in the exit status */
    return vd_flush(vio.img) < 0 ? lib_err() : 0;
}

const vio_cmd vio_cmd_flush = {
    .name = "flush",
    .altname = "f",
    .fn = flush_f,
    .oneline = "flush all in-core file state to disk",
};

/* -------------------------------------------------------------- truncate */

static void truncate_help(void)
{
    printf("\n"
           " changes the size of the open image\n"
           "\n"
           " Example:\n"
           " 'truncate -m falloc 1G' - grows the image to 1 GiB, allocating the new part\n"
           "\n"
           " -m, -- preallocation of a grown part: off, metadata, falloc or full\n"
           "\n");
}

static int truncate_f(int argc, char **argv);

const vio_cmd vio_cmd_truncate = {
    .name = "truncate",
    .altname = "t",
    .fn = truncate_f,
    .argmin = 1,
    .argmax = 3,
    .flags = VIO_CMD_WRITE | VIO_CMD_RESIZE,
    .args = "[-m prealloc_mode] off",
    .oneline = "truncates the current file at the given offset",
    .help = truncate_help,
};

static int truncate_f(int argc, char **argv)
{
    int prealloc = VD_PREALLOC_OFF, c;
    int64_t offset;

    while ((c = getopt(argc, argv, "m:")) != -1) {
        switch (c) {
        case 'm':
            prealloc = vd_prealloc_parse(optarg);
            if (prealloc < 0) {
                vio_error("Invalid preallocation mode '%s'", optarg);
                return -EINVAL;
            }
            break;
        default:
            return vio_usage(&vio_cmd_truncate);
        }
    }
    /* qemu-io uses the first remaining argument and ignores the rest */
    if (optind >= argc) {
        return vio_usage(&vio_cmd_truncate);
    }
    offset = vio_cvtnum(argv[optind]);
    if (offset < 0) {
        vio_print_cvtnum_err(offset, argv[optind]);
        return (int)offset;
    }
    if (vd_truncate(vio.img, (uint64_t)offset, true, (vd_prealloc)prealloc) < 0) {
        int ret = lib_err();
        vio_error("%s", vd_get_error());
        return ret;
    }
    return 0;
}
