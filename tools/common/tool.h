/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Helpers shared by vdisk, vdisk-io and vdisk-nbd.  Tools use only the
 * public API (vdisk.h); anything two tools need lives here, once.
 */
#ifndef VD_TOOL_H
#define VD_TOOL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "vdisk.h"

#define TOOL_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Program name used in messages ("vdisk", "vdisk-io"). */
void tool_init(const char *progname);
const char *tool_progname(void);
/* After tool_init: started as qemu-img/qemu-io/qemu-nbd (a link), speak as that. */
void tool_name_from_argv0(const char *argv0);
/* Whether the tool was started under QEMU's name. */
bool tool_is_qemu_name(void);

/* "progname: message" on stderr. */
void tool_error(const char *fmt, ...) TOOL_PRINTF(1, 2);
/* tool_error with a va_list. */
void tool_verror(const char *fmt, va_list ap) TOOL_PRINTF(1, 0);
/* "progname: message: <library error>" on stderr, then the library error's
 * hint (vd_get_error_hint) on the following lines, as QEMU prints them. */
void tool_error_lib(const char *fmt, ...) TOOL_PRINTF(1, 2);
/* "progname: <library error>" and its hint. */
void tool_error_last(void);
/* Warning line on stderr ("progname: warning: ..."). */
void tool_warn(const char *fmt, ...) TOOL_PRINTF(1, 2);

/* --object SPEC: registers it, prints an error and returns false on failure. */
bool tool_object_add(char *spec); /* spec: writable (argv); its data= is hidden after */

/* Size with suffixes; prints "<what>: invalid size 'str'..." and returns false on error. */
bool tool_parse_size(const char *what, const char *str, uint64_t *out);
/*
 * qemu's cvtnum_full for dd and bench operands: a size with suffixes in
 * [min, max]; prints qemu-img's two-line message and returns false on error.
 */
bool tool_parse_size_range(const char *what, const char *str, uint64_t min, uint64_t max,
                           uint64_t *out);

/* "[prefix: ]Parameter 'key' expects a non-negative number below 2^64" for a
 * size option's bad value: under QEMU's names with its two hint lines. */
void tool_size_param_error(const char *prefix, const char *key, const char *value);

/* qemu's size_to_str: "512 B", "1 GiB", "1.5 GiB" (3 significant digits).
 * Returns a static per-thread buffer. */
const char *tool_human_size(uint64_t bytes);

/*
 * Open an image as qemu-img does: image_opts treats filename as an option
 * string ("driver=qcow2,file.filename=x"); fmt may be NULL (probe: prints
 * qemu-img's warning about probing raw unless quiet); extra opts may be NULL.
 * Prints an error naming the file and returns NULL on failure.
 */
/* While set, tool_open prints a failure as the library's message alone
 * (qemu-io's reopen does), not after "can't open device NAME: ". */
extern bool tool_open_plain_errors;
vd_image *tool_open(const char *filename, const char *fmt, bool image_opts,
                    const vd_opts *extra, unsigned flags, bool quiet);

/*
 * Parse a cache mode (-t/-T): none, writeback, writethrough, directsync,
 * unsafe into opts ("cache.direct", "cache.no-flush"); writethrough also
 * sets *writethrough (the caller flushes after each write).  false on an
 * unknown mode (message printed).
 */
bool tool_parse_cache(const char *mode, vd_opts *opts, bool *writethrough);

/* Whether len bytes at buf are all zero (true for len 0). */
bool tool_is_zero(const void *buf, size_t len);

/* Progress: "    (12.34/100%)\r" on stdout when enabled; SIGUSR1 prints the
 * current value even when disabled. */
void tool_progress_init(bool enabled);
void tool_progress_update(double percent);
/* Print percent now, even when the last line shows the same value (qemu's
 * progress prints 0 and 100 every time it is given them). */
void tool_progress_print(double percent);
void tool_progress_end(void);
/* vd_progress_fn adapter */
void tool_progress_cb(void *opaque, double percent);

#endif
