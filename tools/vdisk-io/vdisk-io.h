/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk-io: byte-level read/write/verify commands on one image, a clone of
 * QEMU 7.2's qemu-io.  The lines scripts parse ("wrote N/N bytes at offset
 * X", "Pattern verification failed ...", "N/N bytes allocated at offset
 * ...") are printed exactly as qemu-io prints them.
 *
 *   main.c      command line, the open image, open/close/quit, the loop
 *   commands.c  the command table, dispatch and help
 *   io_cmds.c   read, readv, write, writev, discard, flush, truncate
 *   aio.c       aio_read, aio_write, aio_flush (a small worker pool)
 *   info_cmds.c length, info, alloc, map, sleep, sigraise, abort
 *   util.c      number parsing, size strings, timing reports, buffers,
 *               patterns, hex dumps
 */
#ifndef VDISK_IO_H
#define VDISK_IO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "tool.h"
#include "vdisk.h"

/* qemu's BDRV_REQUEST_MAX_BYTES: the largest single request */
#define VIO_REQUEST_MAX_BYTES 2147483136LL
#define VIO_SECTOR 512

/* ------------------------------------------------------------ the image */

typedef struct vio_image_state {
    vd_image *img;
    bool writethrough;   /* cache mode without a write cache: FUA every write */
    unsigned open_flags; /* VD_OPEN_* it was opened with */
    /* what it was opened from, to reopen with more permissions */
    char *name;
    char *fmt;
    bool image_opts;
    vd_opts *opts;
    char *tmp_overlay; /* -s: the temporary overlay, removed on close */
} vio_image_state;

extern vio_image_state vio;
extern bool vio_misalign;   /* -m */
extern bool vio_image_opts; /* --image-opts */

/* Open options shared by the command line and the `open` command. */
typedef struct vio_open_args {
    bool read_only;
    bool force_share;
    bool writethrough;
    bool snapshot; /* -s: writes go to a temporary qcow2 overlay */
    bool copy_on_read; /* -C: under a copy-on-read filter */
    vd_opts *opts; /* cache/discard/aio/-o options; owned by the caller */
} vio_open_args;

/* Opens name as the current image; prints the error and returns -errno. */
int vio_open_image(const char *name, const char *fmt, const vio_open_args *args);
void vio_close_image(void);
/*
 * Make sure the image may be written (resize: and resized).  Reopens it
 * with more permissions when needed, as qemu-io takes them per command.
 * Prints the error and returns -errno.
 */
int vio_need_perm(bool write, bool resize);

/* Parse -t / -d / -i / -k into opts; print the error and return false. */
bool vio_parse_discard(const char *mode, vd_opts *opts);
bool vio_parse_aio(const char *mode, vd_opts *opts);

/* ------------------------------------------------------------- commands */

enum {
    VIO_CMD_GLOBAL = 1u << 0,    /* runs with or without an image (help, quit) */
    VIO_CMD_NOFILE_OK = 1u << 1, /* runs without an image */
    VIO_CMD_WRITE = 1u << 2,     /* needs write permission */
    VIO_CMD_RESIZE = 1u << 3,    /* needs resize permission */
};

typedef struct vio_cmd {
    const char *name;
    const char *altname;
    int (*fn)(int argc, char **argv); /* 0, or -errno on failure */
    int argmin;
    int argmax; /* -1: no limit */
    unsigned flags;
    const char *args;
    const char *oneline;
    void (*help)(void);
} vio_cmd;

/* Run one command line; returns 0, -errno on failure, or VIO_QUIT. */
#define VIO_QUIT 1
int vio_run_line(const char *line);
/* Print "name args -- oneline" for a command (its usage). Returns -EINVAL. */
int vio_usage(const vio_cmd *cmd);

/* Command implementations (each file exports its table entries). */
extern const vio_cmd vio_cmd_read, vio_cmd_readv, vio_cmd_write, vio_cmd_writev,
    vio_cmd_discard, vio_cmd_flush, vio_cmd_truncate;
extern const vio_cmd vio_cmd_aio_read, vio_cmd_aio_write, vio_cmd_aio_flush;
extern const vio_cmd vio_cmd_length, vio_cmd_info, vio_cmd_alloc, vio_cmd_map, vio_cmd_sleep,
    vio_cmd_sigraise, vio_cmd_abort;
extern const vio_cmd vio_cmd_open, vio_cmd_close, vio_cmd_quit, vio_cmd_reopen;

/* ------------------------------------------------------------------ aio */

/* Print the reports of finished aio requests (main thread only). */
void vio_aio_poll(void);
/* Wait for every aio request and print their reports. */
void vio_aio_drain(void);

/* ----------------------------------------------------------------- util */

/*
 * qemu's size parsing for command arguments: decimal or 0x hex, optional
 * fraction with a suffix (b k M G T P E, powers of 1024).  Returns the
 * value or -EINVAL / -ERANGE.
 */
int64_t vio_cvtnum(const char *s);
/*
 * The lengths of readv/writev/aio_*: each within a request's maximum, and
 * their sum too.  Returns the total or -EINVAL (message printed).
 */
int64_t vio_sum_lengths(char **argv, int n);
/* Print qemu-io's message for a vio_cvtnum failure. */
void vio_print_cvtnum_err(int64_t rc, const char *arg);
/* vio_cvtnum that prints that message: the value, or -errno. */
int64_t vio_parse_num(const char *arg);
/* qemu-io's human size: "4 KiB", "1.500 KiB", "512 bytes". */
void vio_cvtstr(double value, char *str, size_t size);
/* Parse a pattern byte; prints "X is not a valid pattern byte". -1 on error. */
int vio_parse_pattern(const char *arg);

/* Elapsed time between two CLOCK_MONOTONIC readings. */
struct timespec vio_tsub(struct timespec end, struct timespec start);
void vio_now(struct timespec *ts);
/* "wrote 512/512 bytes at offset 0" + statistics line (or -C's CSV line). */
void vio_print_report(const char *op, const struct timespec *t, int64_t offset, int64_t count,
                      int64_t total, int cnt, bool cflag);
/* qemu-io -v hex dump */
void vio_dump_buffer(const void *buf, int64_t offset, int64_t len);

/* The flags the read and write commands share: -C, -q, -v and -P. */
typedef struct vio_io_flags {
    bool cflag;  /* statistics as comma-separated values */
    bool qflag;  /* no statistics */
    bool vflag;  /* hex dump of the data read */
    bool pflag;  /* -P given */
    int pattern; /* its byte */
} vio_io_flags;
/*
 * Handle getopt's c when it is one of those flags: 1 when it was, 0 when
 * not, -EINVAL for a bad pattern byte (message printed).
 */
int vio_io_flag(int c, vio_io_flags *f);
/*
 * The end of a successful read of count bytes at offset into buf: with -P
 * the check of its pcount bytes at poff (the message, and -EINVAL, on a
 * mismatch), then unless -q the -v dump and the "read" report for time t.
 */
int vio_read_report(const uint8_t *buf, int64_t offset, int64_t count, int64_t poff,
                    int64_t pcount, const vio_io_flags *f, const struct timespec *t);

/* I/O buffers (misaligned by 16 bytes with -m), filled with pattern. */
void *vio_alloc(size_t len, int pattern);
/* A buffer filled with the repeated content of a file (write -s). */
void *vio_alloc_from_file(size_t len, const char *path);
void vio_free(void *buf);

/*
 * qemu's request check: the range must lie inside the image
 * (-EIO otherwise), as qemu-io's block backend refuses it.
 */
int vio_check_request(int64_t offset, int64_t bytes);

/* Error lines on stderr as qemu's error_report: "vdisk-io: msg". */
void vio_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
