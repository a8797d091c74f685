/* SPDX-License-Identifier: BSD-3-Clause */
#ifndef VDISK_CMDS_H
#define VDISK_CMDS_H
/* Each subcommand gets argv starting at its own name (argv[0] = "convert"). */
int cmd_amend(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_bitmap(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_commit(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_create(int argc, char **argv);
int cmd_dd(int argc, char **argv);
#ifdef VD_HAVE_FUSE
int cmd_fuse(int argc, char **argv); /* only when libfuse3 was found */
#endif
int cmd_info(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_measure(int argc, char **argv);
int cmd_rebase(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
#endif
