#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The convert targets of issue 17, side by side in one run (page cache
# warm, runs alternating which tool goes first, median of RUNS each) on
# sparse images of SIZE with DENSITIES percent of scattered seeded data
# (bench/lib.sh bench_sparse_raw):
#   raw->raw, raw->qcow2, qcow2->raw, qcow2->qcow2 from a backing chain of
#   two (flattened)                           target <= 0.6x qemu-img
#   raw->raw, and with -C (copy_file_range)   target <= 1.0x cp --sparse=always
#   raw->raw -C                               target <= 0.6x qemu-img -C
#   raw->qcow2 -c zlib, -c zstd               target <= 0.35x qemu-img, and
#                                             output <= 1.02x qemu-img's
# Every output is compared with its source (qemu-img compare) after the
# last run; a wrong output marks the row FAIL.  Each pair gives two rows:
# wall time (the target) and CPU time (user + system, no target), since the
# wall time on a loaded shared machine mostly measures the other load.
# Prints RESULT|name|vdisk|reference|ratio|status|target lines (bench/run.sh
# turns them into the table and the CSV).
# Usage: bench/convert-matrix.sh [-r RUNS] [-s SIZE] [-d "10 35"] [BUILD]
set -eu
. "$(dirname "$0")/lib.sh"

runs=3
size=2G
densities="10 35"
while getopts "r:s:d:" o; do
    case $o in
        r) runs=$OPTARG ;;
        s) size=$OPTARG ;;
        d) densities=$OPTARG ;;
        *) echo "usage: $0 [-r RUNS] [-s SIZE] [-d DENSITIES] [BUILD]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
bench_init "${1:-}"

work=$(mktemp -d /tmp/vdisk-bench-matrix.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
failed=0

# pair NAME TARGET CHECK VCMD QCMD: VCMD and QCMD are shell strings writing
# out.v and out.q; CHECK is a shell string run after the last run (exit
# status 0 = the outputs are right).  Prints the RESULT line.
pair() {
    local name=$1 target=$2 check=$3 vcmd=$4 qcmd=$5
    local tv=() tq=() cv=() cq=() i r
    # one untimed run of each first: the first run after the images were
    # written met reclaim and writeback (4-8x slower, for both tools)
    rm -f out.v out.q
    sync
    bash -c "$vcmd" >/dev/null 2>&1 || true
    bash -c "$qcmd" >/dev/null 2>&1 || true
    for i in $(seq 1 "$runs"); do
        rm -f out.v out.q
        sync
        if [ $((i % 2)) -eq 1 ]; then
            r=$(bench_time_cpu bash -c "$vcmd"); tv+=("${r% *}"); cv+=("${r#* }")
            r=$(bench_time_cpu bash -c "$qcmd"); tq+=("${r% *}"); cq+=("${r#* }")
        else
            r=$(bench_time_cpu bash -c "$qcmd"); tq+=("${r% *}"); cq+=("${r#* }")
            r=$(bench_time_cpu bash -c "$vcmd"); tv+=("${r% *}"); cv+=("${r#* }")
        fi
        echo "   $name run $i: vdisk ${tv[-1]} s (cpu ${cv[-1]}), reference ${tq[-1]} s (cpu ${cq[-1]}) (load $(cut -d' ' -f1 /proc/loadavg))" >&2
    done
    local mv mq st=ok
    mv=$(bench_median "${tv[@]}")
    mq=$(bench_median "${tq[@]}")
    eval "$check" || { st=FAIL; failed=$((failed + 1)); echo "   FAIL: $name output check" >&2; }
    echo "RESULT|$name|$mv|$mq|$(bench_ratio "$mv" "$mq")|$st|$target"
    # CPU time (user + system): far less disturbed by the other load on a
    # shared machine than the wall time, but blind to waiting and overlap
    mv=$(bench_median "${cv[@]}")
    mq=$(bench_median "${cq[@]}")
    echo "RESULT|$name, cpu time|$mv|$mq|$(bench_ratio "$mv" "$mq")|$st|-"
}

V=$VDISK
for d in $densities; do
    echo "== preparing $size images with $d % data" >&2
    bench_sparse_raw in.raw "$size" 42 "$d"
    qemu-img convert -f raw -O qcow2 in.raw in.qcow2
    # a backing chain of two: base = in.raw; the top holds what a second
    # seeded layer of data changes (qemu-img convert -B writes only that)
    qemu-img convert -f raw -O qcow2 in.raw base.qcow2
    cp --sparse=always in.raw mixed.raw
    bench_sparse_raw layer.raw "$size" 43 $((d / 5 + 1))
    /usr/bin/python3 - <<'EOF'
import os
src = os.open('layer.raw', os.O_RDONLY)
dst = os.open('mixed.raw', os.O_WRONLY)
end = os.fstat(src).st_size
off = 0
while off < end:
    try:
        data = os.lseek(src, off, os.SEEK_DATA)
    except OSError:
        break
    hole = os.lseek(src, data, os.SEEK_HOLE)
    os.pwrite(dst, os.pread(src, hole - data, data), data)
    off = hole
EOF
    qemu-img convert -f raw -O qcow2 -B base.qcow2 -F qcow2 mixed.raw top.qcow2
    rm -f layer.raw
    cat in.raw in.qcow2 base.qcow2 top.qcow2 mixed.raw >/dev/null
    echo "   in.raw: $(du -k in.raw | cut -f1) KiB allocated; top.qcow2 $(du -k top.qcow2 | cut -f1) KiB over base.qcow2 $(du -k base.qcow2 | cut -f1) KiB" >&2

    tag="$size $d%"
    pair "convert raw->raw ($tag)" 0.6 "cmp -s in.raw out.v" \
        "$V convert -f raw -O raw in.raw out.v" "qemu-img convert -f raw -O raw in.raw out.q"
    pair "convert raw->raw vs cp --sparse=always ($tag)" 1.0 "cmp -s in.raw out.v" \
        "$V convert -f raw -O raw in.raw out.v" "cp --sparse=always in.raw out.q"
    pair "convert -C raw->raw vs qemu-img -C ($tag)" 0.6 "cmp -s in.raw out.v" \
        "$V convert -C -f raw -O raw in.raw out.v" "qemu-img convert -C -f raw -O raw in.raw out.q"
    pair "convert -C raw->raw vs cp --sparse=always ($tag)" 1.0 "cmp -s in.raw out.v" \
        "$V convert -C -f raw -O raw in.raw out.v" "cp --sparse=always in.raw out.q"
    pair "convert raw->qcow2 ($tag)" 0.6 "qemu-img compare -q -f raw -F qcow2 in.raw out.v" \
        "$V convert -f raw -O qcow2 in.raw out.v" "qemu-img convert -f raw -O qcow2 in.raw out.q"
    pair "convert qcow2->raw ($tag)" 0.6 "cmp -s in.raw out.v" \
        "$V convert -f qcow2 -O raw in.qcow2 out.v" "qemu-img convert -f qcow2 -O raw in.qcow2 out.q"
    pair "convert qcow2 chain of 2->qcow2 ($tag)" 0.6 "qemu-img compare -q -f raw -F qcow2 mixed.raw out.v" \
        "$V convert -f qcow2 -O qcow2 top.qcow2 out.v" "qemu-img convert -f qcow2 -O qcow2 top.qcow2 out.q"
    for ct in zlib zstd; do
        pair "convert -c $ct ($tag)" 0.35 \
            "qemu-img compare -q -f raw -F qcow2 in.raw out.v && echo \"RESULT|convert -c $ct output size ($tag)|\$(stat -c %s out.v)|\$(stat -c %s out.q)|\$(bench_ratio \$(stat -c %s out.v) \$(stat -c %s out.q))|ok|1.02\"" \
            "$V convert -c -f raw -O qcow2 -o compression_type=$ct in.raw out.v" \
            "qemu-img convert -c -f raw -O qcow2 -o compression_type=$ct in.raw out.q"
    done
    rm -f in.raw in.qcow2 base.qcow2 top.qcow2 mixed.raw out.v out.q
done
[ "$failed" -eq 0 ]
