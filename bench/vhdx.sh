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
work=$(mktemp -d /tmp/vdisk-bench-vhdx.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "== vhdx -> raw: preparing a $size vhdx image with scattered data in $work" >&2
bench_sparse_raw in.raw "$size" 42 25
qemu-img convert -f raw -O vhdx in.raw in.vhdx
rm -f in.raw
cat in.vhdx >/dev/null
run_vdisk() { "$VDISK" convert -f vhdx -O raw in.vhdx out.vdisk; }
run_qemu() { qemu-img convert -f vhdx -O raw in.vhdx out.qemu; }
tv=()
tq=()
for i in $(seq 1 "$runs"); do
    rm -f out.vdisk out.qemu
    sync
    if [ $((i % 2)) -eq 1 ]; then
        tv+=("$(bench_time run_vdisk)")
        tq+=("$(bench_time run_qemu)")
    else
        tq+=("$(bench_time run_qemu)")
        tv+=("$(bench_time run_vdisk)")
    fi
    echo "   run $i: vdisk ${tv[-1]} s, qemu-img ${tq[-1]} s" >&2
done
mv_=$(bench_median "${tv[@]}")
mq=$(bench_median "${tq[@]}")
res=ok
cmp -s out.qemu out.vdisk || { echo "   FAIL: raw outputs differ" >&2; res=FAIL; status=1; }
printf "   %-28s vdisk %7ss  qemu-img %7ss  ratio %s %s\n" "convert-vhdx-to-raw" \
    "$mv_" "$mq" "$(bench_ratio "$mv_" "$mq")" "$res" >&2
bench_result "convert vhdx->raw ($size, warm cache, median of $runs)" "$mv_" "$mq" "$res"
exit $status
