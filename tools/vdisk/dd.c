/* SPDX-License-Identifier: BSD-3-Clause */
/* vdisk dd (work in progress) */
#include "cmds.h"
#include "tool.h"

int cmd_dd(int argc, char **argv)
{
    tool_error("dd: not implemented yet");
    return 1;
}
