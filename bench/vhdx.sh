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

runs=5
size=1G
while getopts "r:s:" o; do
    case $o in
        r) runs=$OPTARG ;;
        s) size=$OPTARG ;;
        *) echo "usage: $0 [-r RUNS] [-s SIZE] [BUILD]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
bench_init "${1:-}"
here=$(dirname "$0")
status=0

"$here/convert.sh" -O vhdx -r "$runs" -s "$size" "${1:-}" || status=1

# vhdx -> raw
bench_fmt_to_raw vhdx "$size" "$runs" || status=1
exit $status
