#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The vmdk speed targets of issue 13, side by side with qemu-img 7.2 (ratio
# of medians, page cache warm) on an image with scattered data:
#   raw -> streamOptimized (compressed)     target <= 0.6x qemu-img's time
#   raw -> monolithicSparse, and back       target <= 1.0x qemu-img's time
# The raw -> vmdk cases run bench/convert.sh (which also checks the
# outputs); monolithicSparse -> raw is timed here from qemu-img's image.
# Usage: bench/vmdk.sh [-r RUNS] [-s SIZE] [BUILD]
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

"$here/convert.sh" -O vmdk -r "$runs" -s "$size" "${1:-}" || status=1
"$here/convert.sh" -O vmdk -r "$runs" -s "$size" -x "-o subformat=streamOptimized" "${1:-}" ||
    status=1

# monolithicSparse -> raw
bench_fmt_to_raw vmdk "$size" "$runs" || status=1
exit $status
