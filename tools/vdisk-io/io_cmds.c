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

/*
 * The "off len" arguments of read, write and discard.  A length over a
 * request's maximum is refused unless unlimited (write -n); how applies
 * (" without -n") tells how to get past it.  Returns 0 or -errno.
 */
static int parse_off_len(char **args, int64_t *offset, int64_t *count, bool unlimited,
                         const char *how)
{
    *offset = vio_parse_num(args[0]);
    if (*offset < 0) {
        return (int)*offset;
    }
    *count = vio_parse_num(args[1]);
    if (*count < 0) {
        return (int)*count;
    }
    if (*count > VIO_REQUEST_MAX_BYTES && !unlimited) {
        printf("length cannot exceed %" PRIu64 "%s, given %s\n",
               (uint64_t)VIO_REQUEST_MAX_BYTES, how, args[1]);
        return -EINVAL;
    }
    return 0;
}

/* The "off len [len..]" arguments of readv and writev. */
static int parse_off_lens(char **args, int n, int64_t *offset, int64_t *count)
{
    *offset = vio_parse_num(args[0]);
    if (*offset < 0) {
        return (int)*offset;
    }
    *count = vio_sum_lengths(args + 1, n - 1);
    return *count < 0 ? (int)*count : 0;
}

/* -b and -c work on whole sectors. */
static int check_sector_aligned(int64_t offset, int64_t count)
{
    if (offset % VIO_SECTOR) {
        printf("%" PRId64 " is not a sector-aligned value for 'offset'\n", offset);
        return -EINVAL;
    }
    if (count % VIO_SECTOR) {
        printf("%" PRId64 " is not a sector-aligned value for 'count'\n", count);
        return -EINVAL;
    }
    return 0;
}

/* read and readv once their arguments are checked (vmstate: -b). */
static int run_read(const char *cmd, bool vmstate, int64_t offset, int64_t count,
                    int64_t pattern_offset, int64_t pattern_count, const vio_io_flags *f)
{
    struct timespec t1, t2;
    uint8_t *buf = vio_alloc((size_t)count, 0xab);
    if (!buf) {
        printf("%s failed: %s\n", cmd, strerror(ENOMEM));
        return -ENOMEM;
    }
    vio_now(&t1);
    /* the VM state area is a qcow2 detail the library does not expose */
    int ret = vmstate ? -ENOTSUP : do_pread(buf, offset, count);
    vio_now(&t2);
    if (ret < 0) {
        printf("%s failed: %s\n", cmd, strerror(-ret));
    } else {
        t2 = vio_tsub(t2, t1);
        ret = vio_read_report(buf, offset, count, pattern_offset, pattern_count, f, &t2);
    }
    vio_free(buf);
    return ret;
}

/* After a timed write or discard: its failure, or unless -q its report. */
static int write_report(const char *cmd, const char *op, int ret, int64_t offset, int64_t count,
                        const vio_io_flags *f, struct timespec t1, struct timespec t2)
{
    if (ret < 0) {
        printf("%s failed: %s\n", cmd, strerror(-ret));
        return ret;
    }
    if (!f->qflag) {
        t2 = vio_tsub(t2, t1);
        vio_print_report(op, &t2, offset, count, count, 1, f->cflag);
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
    vio_io_flags f = {0};
    bool sflag = false, lflag = false, bflag = false;
    int c, ret;
    int64_t offset = 0, count = 0, pattern_offset = 0, pattern_count = 0;

    while ((c = getopt(argc, argv, "bCl:pP:qs:v")) != -1) {
        switch (c) {
        case 'b':
            bflag = true;
            break;
        case 'l':
            lflag = true;
            pattern_count = vio_parse_num(optarg);
            if (pattern_count < 0) {
                return (int)pattern_count;
            }
            break;
        case 'p':
            break;
        case 's':
            sflag = true;
            pattern_offset = vio_parse_num(optarg);
            if (pattern_offset < 0) {
                return (int)pattern_offset;
            }
            break;
        default:
            ret = vio_io_flag(c, &f);
            if (ret <= 0) {
                return ret < 0 ? ret : vio_usage(&vio_cmd_read);
            }
            break;
        }
    }
    if (optind != argc - 2) {
        return vio_usage(&vio_cmd_read);
    }
    ret = parse_off_len(argv + optind, &offset, &count, false, "");
    if (ret < 0) {
        return ret;
    }
    if (!f.pflag && (lflag || sflag)) {
        return vio_usage(&vio_cmd_read);
    }
    if (!lflag) {
        pattern_count = count - pattern_offset;
    }
    if (pattern_count < 0 || pattern_count + pattern_offset > count) {
        printf("pattern verification range exceeds end of read data\n");
        return -EINVAL;
    }
    if (bflag && (ret = check_sector_aligned(offset, count)) < 0) {
        return ret;
    }
    return run_read("read", bflag, offset, count, pattern_offset, pattern_count, &f);
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
    vio_io_flags f = {0};
    int c, ret;
    int64_t offset = 0, count = 0;

    while ((c = getopt(argc, argv, "CP:qv")) != -1) {
        ret = vio_io_flag(c, &f);
        if (ret <= 0) {
            return ret < 0 ? ret : vio_usage(&vio_cmd_readv);
        }
    }
    if (optind > argc - 2) {
        return vio_usage(&vio_cmd_readv);
    }
    ret = parse_off_lens(argv + optind, argc - optind, &offset, &count);
    if (ret < 0) {
        return ret;
    }
    return run_read("readv", false, offset, count, 0, count, &f);
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
    vio_io_flags f = {.pattern = 0xcd};
    bool bflag = false, zflag = false, compressed = false, sflag = false;
    unsigned flags = 0;
    int c, ret;
    int64_t offset = 0, count = 0;
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
        case 'f':
            flags |= VD_REQ_FUA;
            break;
        case 'n':
            flags |= VD_REQ_NO_FALLBACK;
            break;
        case 'p':
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
            ret = vio_io_flag(c, &f);
            if (ret <= 0) {
                return ret < 0 ? ret : vio_usage(&vio_cmd_write);
            }
            break;
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
    if ((int)zflag + (int)f.pflag + (int)sflag > 1) {
        printf("Only one of -z, -P, and -s can be specified at the same time\n");
        return -EINVAL;
    }
    ret = parse_off_len(argv + optind, &offset, &count, flags & VD_REQ_NO_FALLBACK, " without -n");
    if (ret < 0) {
        return ret;
    }
    if ((bflag || compressed) && (ret = check_sector_aligned(offset, count)) < 0) {
        return ret;
    }
    if (!zflag) {
        buf = sflag ? vio_alloc_from_file((size_t)count, source)
                    : vio_alloc((size_t)count, f.pattern);
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
    vio_free(buf);
    return write_report("write", "wrote", ret, offset, count, &f, t1, t2);
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
    vio_io_flags f = {.pattern = 0xcd};
    unsigned flags = 0;
    int c, ret;
    int64_t offset = 0, count = 0;
    struct timespec t1, t2;

    while ((c = getopt(argc, argv, "CfqP:")) != -1) {
        if (c == 'f') {
            flags |= VD_REQ_FUA;
            continue;
        }
        ret = vio_io_flag(c, &f);
        if (ret <= 0) {
            return ret < 0 ? ret : vio_usage(&vio_cmd_writev);
        }
    }
    if (optind > argc - 2) {
        return vio_usage(&vio_cmd_writev);
    }
    ret = parse_off_lens(argv + optind, argc - optind, &offset, &count);
    if (ret < 0) {
        return ret;
    }
    uint8_t *buf = vio_alloc((size_t)count, f.pattern);
    if (!buf) {
        printf("writev failed: %s\n", strerror(ENOMEM));
        return -ENOMEM;
    }
    vio_now(&t1);
    ret = do_pwrite(buf, offset, count, flags);
    vio_now(&t2);
    vio_free(buf);
    return write_report("writev", "wrote", ret, offset, count, &f, t1, t2);
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
    vio_io_flags f = {0};
    int c, ret;
    int64_t offset = 0, bytes = 0;
    struct timespec t1, t2;

    while ((c = getopt(argc, argv, "Cq")) != -1) {
        if (vio_io_flag(c, &f) <= 0) {
            return vio_usage(&vio_cmd_discard);
        }
    }
    if (optind != argc - 2) {
        return vio_usage(&vio_cmd_discard);
    }
    ret = parse_off_len(argv + optind, &offset, &bytes, false, "");
    if (ret < 0) {
        return ret;
    }
    vio_now(&t1);
    ret = vio_check_request(offset, bytes);
    if (ret == 0 && vd_discard(vio.img, (uint64_t)offset, (uint64_t)bytes) < 0) {
        ret = lib_err();
    }
    vio_now(&t2);
    return write_report("discard", "discard", ret, offset, bytes, &f, t1, t2);
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
    offset = vio_parse_num(argv[optind]);
    if (offset < 0) {
        return (int)offset;
    }
    if (vd_truncate(vio.img, (uint64_t)offset, true, (vd_prealloc)prealloc) < 0) {
        int ret = lib_err();
        fflush(stdout);
        tool_error_last();
        return ret;
    }
    return 0;
}
