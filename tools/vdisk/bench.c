/* SPDX-License-Identifier: BSD-3-Clause */
/* vdisk bench (work in progress) */
#include "cmds.h"
#include "tool.h"

int cmd_bench(int argc, char **argv)
{
    tool_error("bench: not implemented yet");
    return 1;
}
