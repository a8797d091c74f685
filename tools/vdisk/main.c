/* SPDX-License-Identifier: BSD-3-Clause */
/* vdisk: qemu-img compatible command line. One file per subcommand. */
#include <stdio.h>
#include <string.h>

#include "cmds.h"
#include "img.h"
#include "tool.h"

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
} cmds[] = {
    {"amend", cmd_amend},     {"bench", cmd_bench},     {"bitmap", cmd_bitmap},
    {"check", cmd_check},     {"commit", cmd_commit},   {"compare", cmd_compare},
    {"convert", cmd_convert}, {"create", cmd_create},   {"dd", cmd_dd},
    {"info", cmd_info},       {"map", cmd_map},         {"measure", cmd_measure},
    {"rebase", cmd_rebase},   {"resize", cmd_resize},   {"snapshot", cmd_snapshot},
#ifdef VD_HAVE_FUSE
    {"fuse", cmd_fuse},
#endif
};

static void usage(FILE *f)
{
    fprintf(f, "usage: vdisk [standard options] command [command options]\n"
               "Disk image utility (qemu-img compatible)\n\n"
               "    '-h', '--help'       display this help and exit\n"
               "    '-V', '--version'    output version information and exit\n\n"
               "Command syntax:\n");
    fflush(f);
    img_print_all_syntax();
    fflush(stdout);
    fprintf(f, "\nRun 'vdisk COMMAND --help' for what a command's options mean; see vdisk(1).\n"
               "\nSupported formats:");
    for (size_t i = 0; i < vd_driver_count(); i++) {
        fprintf(f, " %s", vd_driver_name(i));
    }
    fprintf(f, "\n");
}

int main(int argc, char **argv)
{
    tool_init("vdisk");
    tool_name_from_argv0(argv[0]);
    if (argc < 2) {
        return img_usage_error("Not enough arguments");
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "-V") || !strcmp(cmd, "--version")) {
        printf("vdisk version %s (libvdisk %s)\n", VD_VERSION_STRING, vd_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        if (!strcmp(cmd, cmds[i].name)) {
            return cmds[i].fn(argc - 1, argv + 1);
        }
    }
    if (cmd[0] == '-') {
        return img_usage_error("unrecognized option '%s'", cmd);
    }
    return img_usage_error("Command not found: %s", cmd);
}
