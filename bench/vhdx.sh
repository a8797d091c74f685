#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The vhdx speed target of issue 13, side by side with qemu-img 7.2 (ratio
# of medians, page cache warm) on an image with scattered data:
#   raw -> vhdx (dynamic), and back         target <= 1.0x qemu-img's time
# raw -> vhdx runs bench/convert.sh (which also checks the output);
# vhdx -> raw is timed here from qemu-img's image.
# Usage: bench/vhdx.sh [-r RUNS] [-s SIZE] [BUILD]
set -eu
. "$(dirname "$0")/lib.sh"

bench_args 5 1G "$@"
here=$(dirname "$0")
status=0

"$here/convert.sh" -O vhdx -r "$runs" -s "$size" "$bench_build" || status=1

# vhdx -> raw
bench_fmt_to_raw vhdx "$size" "$runs" || status=1
exit $status
