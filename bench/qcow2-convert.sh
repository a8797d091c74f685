#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The qcow2 speed targets of issue 3, side by side with qemu-img 7.2 (ratio
# of medians, page cache warm) on a 1 GiB image with scattered data:
#   raw -> qcow2, qcow2 -> raw              target <= 0.9x qemu-img's time
#   raw -> qcow2 -c (zlib), (zstd)          target <= 0.6x qemu-img's time
# The raw -> qcow2 cases run bench/convert.sh (which also checks the
# outputs); qcow2 -> raw is timed here from a qcow2 made by qemu-img.
# Usage: bench/qcow2-convert.sh [-r RUNS] [-s SIZE] [BUILD]
set -eu
. "$(dirname "$0")/lib.sh"

bench_args 5 1G "$@"
here=$(dirname "$0")
status=0

"$here/convert.sh" -O qcow2 -r "$runs" -s "$size" "$bench_build" || status=1
"$here/convert.sh" -O qcow2 -c -r "$runs" -s "$size" -x "-o compression_type=zlib" "$bench_build" || status=1
"$here/convert.sh" -O qcow2 -c -r "$runs" -s "$size" -x "-o compression_type=zstd" "$bench_build" || status=1

# qcow2 -> raw
bench_fmt_to_raw qcow2 "$size" "$runs" || status=1
exit $status
