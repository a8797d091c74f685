#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# RBD speed, side by side in one run on a one-node Ceph cluster of its own
# (scripts/ceph-cluster.sh, memstore: the OSD keeps data in RAM):
#   convert onto the cluster  vdisk convert vs qemu-img convert (raw -> rbd)
#   convert off the cluster   vdisk convert vs qemu-img convert (rbd -> raw)
#   NBD export of an RBD image: vdisk-nbd vs qemu-nbd, fio 4k random read
#   QD 32 and 1 MiB sequential read QD 8
# Each figure is the best of ROUNDS interleaved runs; ratios are QEMU's
# time over vdisk's (> 1: vdisk is faster).
# Usage: bench/rbd.sh [BUILD]  (env: SIZE=1G, ROUNDS=3, SECS=5)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
vdisk="$build/tools/vdisk/vdisk"
nbd="$build/tools/vdisk-nbd/vdisk-nbd"
size=${SIZE:-1G}
rounds=${ROUNDS:-3}
secs=${SECS:-5}
for c in fio qemu-img qemu-io qemu-nbd rbd "$vdisk" "$nbd"; do
    command -v "$c" >/dev/null || { echo "missing $c" >&2; exit 1; }
done
work=$(mktemp -d /tmp/vdisk-bench-rbd.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    "$src/scripts/ceph-cluster.sh" stop "$work/ceph" || true
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"
bytes=$(qemu-img create -q -f raw probe.raw "$size" && stat -c %s probe.raw)
rm -f probe.raw
# room for the source copy and both targets, plus headroom
export CEPH_MEMSTORE_BYTES=$((bytes * 3 + (1 << 30)))
conf=$("$src/scripts/ceph-cluster.sh" start "$work/ceph")
R() { echo "rbd:rbd/$1:conf=$conf"; }

echo "preparing a $size raw image in $work ..." >&2
qemu-img create -q -f raw src.raw "$size"
qemu-io -f raw -c "write -q -P 0x5a 0 $size" src.raw >/dev/null
cat src.raw >/dev/null
qemu-img convert -f raw -O raw src.raw "$(R srcimg)"

secs_of() { # CMD... -> wall seconds
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }
    t1=$(date +%s.%N)
    /usr/bin/python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$t1"
}
declare -A res
keep_min() { # KEY SECONDS
    local old=${res[$1]:-}
    if [ -z "$old" ] || /usr/bin/python3 -c "import sys; sys.exit(not float(sys.argv[1]) < float(sys.argv[2]))" "$2" "$old"; then
        res[$1]=$2
    fi
}
keep_max() { # KEY VALUE
    local old=${res[$1]:-}
    if [ -z "$old" ] || /usr/bin/python3 -c "import sys; sys.exit(not float(sys.argv[1]) > float(sys.argv[2]))" "$2" "$old"; then
        res[$1]=$2
    fi
}
for _ in $(seq 1 "$rounds"); do
    for tool in vdisk qemu; do
        rbd -c "$conf" rm "t-$tool" >/dev/null 2>&1 || true
        rm -f "out-$tool.raw"
        if [ $tool = vdisk ]; then
            keep_min onto,$tool "$(secs_of "$vdisk" convert -f raw -O raw src.raw "$(R t-$tool)")"
            keep_min off,$tool "$(secs_of "$vdisk" convert -f raw -O raw "$(R srcimg)" "out-$tool.raw")"
        else
            keep_min onto,$tool "$(secs_of qemu-img convert -f raw -O raw src.raw "$(R t-$tool)")"
            keep_min off,$tool "$(secs_of qemu-img convert -f raw -O raw "$(R srcimg)" "out-$tool.raw")"
        fi
    done
done
cmp src.raw out-vdisk.raw && qemu-img compare -q -f raw -F raw src.raw "$(R t-vdisk)" ||
    { echo "vdisk's copies differ from the source" >&2; exit 1; }

start() { # SOCK CMD...
    local sock=$1; shift
    rm -f "$sock"
    "$@" >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 1 600); do [ -S "$sock" ] && return 0; sleep 0.05; done
    echo "server did not start: $*" >&2
    exit 1
}
run_fio() { # SOCK RW BS QD -> "iops MiB/s"
    fio --name=t --ioengine=nbd --uri="nbd+unix:///?socket=$1" --rw="$2" --bs="$3" \
        --iodepth="$4" --runtime="$secs" --time_based --size="$size" --numjobs=1 \
        --output-format=json --output=fio.json >/dev/null 2>&1
    /usr/bin/python3 -c '
import json
r = json.load(open("fio.json"))["jobs"][0]["read"]
print("%.0f %.1f" % (r["iops"], r["bw_bytes"] / 1048576))'
}
start "$work/v.sock" "$nbd" -k "$work/v.sock" -f raw -t -r -e 8 "$(R srcimg)"
start "$work/q.sock" qemu-nbd -k "$work/q.sock" -f raw -t -r -e 8 "$(R srcimg)"
for _ in $(seq 1 "$rounds"); do
    for srv in v q; do
        v=$(run_fio "$work/$srv.sock" randread 4k 32); keep_max rand,$srv "${v%% *}"
        v=$(run_fio "$work/$srv.sock" read 1M 8); keep_max seq,$srv "${v#* }"
    done
done

ratio() { /usr/bin/python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2fx' % (a/b) if b else '-')" "$1" "$2"; }
echo
printf "%-28s %12s %12s %8s\n" "$size" vdisk qemu "ratio"
printf "%-28s %11ss %11ss %8s\n" "convert onto rbd" "${res[onto,vdisk]}" "${res[onto,qemu]}" "$(ratio "${res[onto,qemu]}" "${res[onto,vdisk]}")"
printf "%-28s %11ss %11ss %8s\n" "convert off rbd" "${res[off,vdisk]}" "${res[off,qemu]}" "$(ratio "${res[off,qemu]}" "${res[off,vdisk]}")"
printf "%-28s %12s %12s %8s\n" "nbd 4k randread QD32 IOPS" "${res[rand,v]}" "${res[rand,q]}" "$(ratio "${res[rand,v]}" "${res[rand,q]}")"
printf "%-28s %12s %12s %8s\n" "nbd 1M seq read MiB/s" "${res[seq,v]}" "${res[seq,q]}" "$(ratio "${res[seq,v]}" "${res[seq,q]}")"
