/* SPDX-License-Identifier: BSD-3-Clause */
/* vdisk compare (work in progress) */
#include "cmds.h"
#include "tool.h"

int cmd_compare(int argc, char **argv)
{
    tool_error("compare: not implemented yet");
    return 1;
}
