/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Command-line plumbing shared by the vdisk subcommands: qemu-img's usage
 * errors, --output parsing, -o option lists, -o help and per-command help.
 */
#ifndef VDISK_IMG_H
#define VDISK_IMG_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "tool.h"

enum img_output { IMG_OUTPUT_HUMAN, IMG_OUTPUT_JSON };

/* Long-only option codes shared by the subcommands. */
enum {
    OPT_OUTPUT = 256,
    OPT_BACKING_CHAIN,
    OPT_OBJECT,
    OPT_IMAGE_OPTS,
    OPT_SIZE,
    OPT_PREALLOCATION,
    OPT_SHRINK,
    OPT_FORCE,
    OPT_START_OFFSET,
    OPT_MAX_LENGTH,
    OPT_ADD,
    OPT_REMOVE,
    OPT_CLEAR,
    OPT_ENABLE,
    OPT_DISABLE,
    OPT_MERGE,
    OPT_TARGET_IMAGE_OPTS,
    OPT_TARGET_IS_ZERO,
    OPT_BITMAPS,
    OPT_SALVAGE,
    OPT_FLUSH_INTERVAL,
    OPT_NO_DRAIN,
    OPT_PATTERN,
};

/*
 * The option prologue every subcommand shares: -f/--format, --image-opts,
 * -U/--force-share, --object, --output, -q, -T and -h/--help.  A command
 * lists the ones it takes in its getopt string and long options (so each
 * keeps qemu-img's exact set), passes every option getopt returns to
 * img_common_option first, and handles only its own in its switch.
 */
typedef struct img_common {
    const char *fmt;       /* -f, --format */
    const char *output;    /* --output, as given (the command checks it
                              where qemu-img does) */
    const char *src_cache; /* -T */
    bool image_opts;       /* --image-opts */
    bool force_share;      /* -U, --force-share */
    bool quiet;            /* -q */
} img_common;

enum {
    IMG_OPT_OTHER,   /* not a common option: the command's own (or ':' / '?',
                        which the command reports as usage errors) */
    IMG_OPT_HANDLED, /* stored in the img_common */
    IMG_OPT_HELP,    /* -h: help printed, exit 0 */
    IMG_OPT_FAIL,    /* error printed (bad --object), exit 1 */
};

/* One option from getopt_long (with a leading ':' in the option string);
 * cmd names the command for -h (NULL: -h is the command's own). */
int img_common_option(img_common *co, const char *cmd, int c, char **argv);

/*
 * "vdisk: <message>" plus "Try 'vdisk --help' for more information" on
 * stderr, as qemu-img's error_exit.  Returns 1 (the exit code to use).
 */
int img_usage_error(const char *fmt, ...) TOOL_PRINTF(1, 2);

/*
 * For getopt_long with a leading ':' in the option string: report the
 * unknown option or missing argument the way qemu-img does.  Returns 1.
 */
int img_bad_option(int c, char **argv);

/* --output=human|json; prints qemu-img's message and returns false otherwise. */
bool img_parse_output(const char *arg, enum img_output *out);

/*
 * -o: append arg to *options ("a,b" joined with ','), rejecting malformed
 * lists as qemu-img does.  false after printing the error.
 */
bool img_add_options(char **options, const char *arg);
/* True when the -o list asks for help ("help" or "?"). */
bool img_has_help_option(const char *options);
/*
 * Print the create options of fmt (plus those of filename's protocol when
 * filename is given) as qemu-img's "-o help".  Returns the exit code.
 */
int img_print_create_opts_help(const char *fmt, const char *filename, const char *title);
/* amend's "-o help": exactly the options fmt's amend takes (none when it
 * cannot amend), from vd_driver_get_info().  Returns the exit code. */
int img_print_amend_opts_help(const char *fmt);

/* Per-command help (syntax plus what the options mean) on stdout. */
void img_command_help(const char *cmd);
/* The syntax line of every command, for `vdisk --help`. */
void img_print_all_syntax(void);

/* "Snapshot list:" and qemu-img's table of snapshots (nothing when n == 0). */
void img_print_snapshots(const vd_snapshot_info *sn, size_t n);

/*
 * A backing file name as the image `image` would resolve it: relative to
 * the image's directory unless absolute or a protocol / json: name.
 * malloc'ed.
 */
char *img_backing_path(const char *image, const char *backing);
/* True when a and b name the same file (same string or same real path). */
bool img_same_file(const char *a, const char *b);

/* True when fmt names a format driver vdisk knows. */
bool img_format_known(const char *fmt);

#endif
