/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * vdisk-io's command table: splitting a line into words, finding the
 * command (by name or one-letter alias), the checks qemu-io makes before
 * running it (an image is open, argument count, permissions) and help.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "vdisk-io.h"

static int help_f(int argc, char **argv);

static const vio_cmd vio_cmd_help = {
    .name = "help",
    .altname = "?",
    .fn = help_f,
    .argmin = 0,
    .argmax = 1,
    .flags = VIO_CMD_GLOBAL,
    .args = "[command]",
    .oneline = "help for one or all commands",
};

/* Sorted by name: help lists them in this order. */
static const vio_cmd *const cmdtab[] = {
    &vio_cmd_abort,  &vio_cmd_aio_flush, &vio_cmd_aio_read, &vio_cmd_aio_write,
    &vio_cmd_alloc,  &vio_cmd_close,     &vio_cmd_discard,  &vio_cmd_flush,
    &vio_cmd_help,   &vio_cmd_info,      &vio_cmd_length,   &vio_cmd_map,
    &vio_cmd_open,   &vio_cmd_quit,      &vio_cmd_read,     &vio_cmd_readv,
    &vio_cmd_reopen, &vio_cmd_sigraise,  &vio_cmd_sleep,    &vio_cmd_truncate,
    &vio_cmd_write,  &vio_cmd_writev,
};

#define NCMDS (sizeof(cmdtab) / sizeof(cmdtab[0]))

static const vio_cmd *find_command(const char *name)
{
    for (size_t i = 0; i < NCMDS; i++) {
        if (!strcmp(cmdtab[i]->name, name) ||
            (cmdtab[i]->altname && !strcmp(cmdtab[i]->altname, name))) {
            return cmdtab[i];
        }
    }
    return NULL;
}

int vio_usage(const vio_cmd *cmd)
{
    printf("%s %s -- %s\n", cmd->name, cmd->args ? cmd->args : "", cmd->oneline);
    return -EINVAL;
}

static int run_command(const vio_cmd *ct, int argc, char **argv)
{
    if (!(ct->flags & (VIO_CMD_GLOBAL | VIO_CMD_NOFILE_OK)) && !vio.img) {
        fflush(stdout);
        fprintf(stderr, "no file open, try 'help open'\n");
        return -EINVAL;
    }
    if (argc - 1 < ct->argmin || (ct->argmax != -1 && argc - 1 > ct->argmax)) {
        fflush(stdout);
        if (ct->argmax == -1) {
            fprintf(stderr, "bad argument count %d to %s, expected at least %d arguments\n",
                    argc - 1, argv[0], ct->argmin);
        } else if (ct->argmin == ct->argmax) {
            fprintf(stderr, "bad argument count %d to %s, expected %d arguments\n", argc - 1,
                    argv[0], ct->argmin);
        } else {
            fprintf(stderr,
                    "bad argument count %d to %s, expected between %d and %d arguments\n",
                    argc - 1, argv[0], ct->argmin, ct->argmax);
        }
        return -EINVAL;
    }
    /* qemu-io takes write/resize permissions when a command first needs
     * them, so a read-only image refuses here, before any parsing */
    if (vio.img && (ct->flags & (VIO_CMD_WRITE | VIO_CMD_RESIZE))) {
        int ret = vio_need_perm(true, (ct->flags & VIO_CMD_RESIZE) != 0);
        if (ret < 0) {
            return ret;
        }
    }
    /* getopt restarts from scratch for each command (glibc: optind 0) */
    optind = 0;
    opterr = 1;
    fflush(stdout);
    return ct->fn(argc, argv);
}

int vio_run_line(const char *line)
{
    char *input = strdup(line);
    char **argv = NULL;
    int argc = 0, ret = 0;

    if (!input) {
        return -ENOMEM;
    }
    /* words are separated by single spaces; empty words are skipped */
    for (char *p = input, *w; (w = strsep(&p, " ")) != NULL;) {
        if (!*w) {
            continue;
        }
        char **n = realloc(argv, sizeof(*argv) * (size_t)(argc + 2));
        if (!n) {
            ret = -ENOMEM;
            goto out;
        }
        argv = n;
        argv[argc++] = w;
        argv[argc] = NULL;
    }
    vio_aio_poll();
    if (argc) {
        const vio_cmd *ct = find_command(argv[0]);
        if (ct) {
            ret = run_command(ct, argc, argv);
        } else {
            fflush(stdout);
            fprintf(stderr, "command \"%s\" not found\n", argv[0]);
            ret = -EINVAL;
        }
    }
    fflush(stdout);
out:
    free(argv);
    free(input);
    return ret;
}

/* ------------------------------------------------------------------ help */

static void help_oneline(const char *name, const vio_cmd *ct)
{
    printf("%s ", name);
    if (ct->args) {
        printf("%s ", ct->args);
    }
    printf("-- %s\n", ct->oneline);
}

static int help_f(int argc, char **argv)
{
    if (argc == 1) {
        for (size_t i = 0; i < NCMDS; i++) {
            help_oneline(cmdtab[i]->name, cmdtab[i]);
        }
        printf("\nUse 'help commandname' for extended help.\n");
        return 0;
    }
    const vio_cmd *ct = find_command(argv[1]);
    if (!ct) {
        printf("command %s not found\n", argv[1]);
        return -EINVAL;
    }
    help_oneline(argv[1], ct);
    if (ct->help) {
        ct->help();
    }
    return 0;
}
