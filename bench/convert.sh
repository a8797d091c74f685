#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# `vdisk convert` against `qemu-img convert`, side by side in one run, on a
# sparse raw image with scattered seeded data (holes, data, allocated
# zeroes, short zero runs inside data).  The runs alternate (vdisk first on
# odd runs, qemu-img first on even ones) with the page cache warm: the
# source is read once before timing and stays cached (24 GiB RAM here), so
# the comparison measures the tools, not the disk.  Prints the median of
# each and the ratio vdisk/qemu-img, then checks that both outputs have the
# same content as the source and the same allocation map (holes kept).
#
# Usage: bench/convert.sh [-O fmt] [-c] [-r RUNS] [-s SIZE] [-x "EXTRA ARGS"] [BUILD]
#   -O fmt   output format (raw default; qcow2, qed, vdi, vpc ...)
#   -c       compressed output (-c for both tools; needs a format with it)
#   -r RUNS  runs per tool (default 5)
#   -s SIZE  image size (default 1G)
#   -x ARGS  more convert options for both tools (e.g. "-S 0", "-m 16 -W")
set -eu
. "$(dirname "$0")/lib.sh"

fmt=raw
compress=
runs=5
size=1G
extra=
while getopts "O:cr:s:x:" o; do
    case $o in
        O) fmt=$OPTARG ;;
        c) compress=-c ;;
        r) runs=$OPTARG ;;
        s) size=$OPTARG ;;
        x) extra=$OPTARG ;;
        *) echo "usage: $0 [-O fmt] [-c] [-r RUNS] [-s SIZE] [-x ARGS] [BUILD]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
bench_init "${1:-}"

work=$(mktemp -d /tmp/vdisk-bench-convert.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"

name="convert-$fmt${compress:+-c}${extra:+ $extra}"
echo "== $name: preparing a $size sparse raw image with scattered data in $work" >&2
bench_sparse_raw in.raw "$size" 42 25
cat in.raw >/dev/null # warm the page cache
echo "   source: $(du -k in.raw | cut -f1) KiB allocated of $(stat -c %s in.raw) bytes" >&2

# shellcheck disable=SC2086 # $compress and $extra are option lists
vcmd=("$VDISK" convert -f raw -O "$fmt" $compress $extra in.raw out.vdisk)
# shellcheck disable=SC2086
qcmd=(qemu-img convert -f raw -O "$fmt" $compress $extra in.raw out.qemu)

tv=(); tq=(); cv=(); cq=()
one() { # v|q
    sync # earlier writes are not written back during the timing
    local r
    if [ "$1" = v ]; then
        r=$(bench_time_cpu "${vcmd[@]}")
        tv+=("${r% *}"); cv+=("${r#* }")
    else
        r=$(bench_time_cpu "${qcmd[@]}")
        tq+=("${r% *}"); cq+=("${r#* }")
    fi
}
for i in $(seq 1 "$runs"); do
    rm -f out.vdisk out.qemu
    if [ $((i % 2)) -eq 1 ]; then one v; one q; else one q; one v; fi
    echo "   run $i: vdisk ${tv[-1]} s (cpu ${cv[-1]}), qemu-img ${tq[-1]} s (cpu ${cq[-1]})" >&2
done
mv_=$(bench_median "${tv[@]}")
mq=$(bench_median "${tq[@]}")
mcv=$(bench_median "${cv[@]}")
mcq=$(bench_median "${cq[@]}")

# Correctness of the last outputs.
status=ok
if [ "$fmt" = raw ]; then
    cmp -s in.raw out.vdisk || { echo "   FAIL: vdisk output differs from the source" >&2; status=FAIL; }
    cmp -s out.qemu out.vdisk || { echo "   FAIL: outputs differ" >&2; status=FAIL; }
else
    qemu-img compare -q -f raw -F "$fmt" in.raw out.vdisk ||
        { echo "   FAIL: vdisk output differs from the source" >&2; status=FAIL; }
    qemu-img check -q -f "$fmt" out.vdisk 2>/dev/null || {
        rc=$?
        # 63: the format has no check
        [ $rc -eq 63 ] || { echo "   FAIL: qemu-img check found problems" >&2; status=FAIL; }
    }
fi
# The allocation map without host offsets: the same data/zero/hole layout.
map() {
    qemu-img map -f "$fmt" --output=json "$1" |
        /usr/bin/python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    k = (e["depth"], e["zero"], e["data"])
    if out and out[-1][3] == k:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"], None, k])
for s, l, _, k in out:
    print(s, l, *k)'
}
if ! diff <(map out.qemu) <(map out.vdisk) >map.diff; then
    echo "   FAIL: allocation maps differ (qemu-img map, offsets ignored):" >&2
    head -n 10 map.diff >&2
    status=FAIL
fi
du_v=$(du -k out.vdisk | cut -f1)
du_q=$(du -k out.qemu | cut -f1)

printf "   %-28s vdisk %7ss  qemu-img %7ss  ratio %s  (cpu: vdisk %ss, qemu-img %ss, ratio %s; du KiB: vdisk %s, qemu-img %s) %s\n" \
    "$name" "$mv_" "$mq" "$(bench_ratio "$mv_" "$mq")" "$mcv" "$mcq" "$(bench_ratio "$mcv" "$mcq")" "$du_v" "$du_q" "$status" >&2
bench_result "$name ($size, warm, median of $runs)" "$mv_" "$mq" "$status"
bench_result "$name ($size, cpu time)" "$mcv" "$mcq" "$status"
[ "$status" = ok ]
