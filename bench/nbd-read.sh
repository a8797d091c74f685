#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# NBD read speed, side by side in one run: vdisk-nbd vs qemu-nbd vs nbdkit
# `file`, with fio's nbd engine over a unix socket:
#   4k random read at queue depth 32 on one connection, 1 MiB sequential
#   read (QD 8) on one connection, and 4k random read with multi-conn
#   (4 fio jobs, 4 connections, QD 32 each),
#   on a raw image and on a qcow2 copy of it (nbdkit serves raw only: its
#   file plugin does not interpret qcow2).
# Each figure is the median of ROUNDS interleaved runs.  Prints a table and
# "RESULT|..." lines (bench/lib.sh): times per request (4k, microseconds)
# and per GiB (1 MiB sequential, seconds), so that a ratio below 1 means
# vdisk-nbd is faster; the note gives IOPS / MiB/s and the load average.
# Usage: bench/nbd-read.sh [BUILD]   (env: SECS=5 per run, ROUNDS=3, SIZE=1G,
#                                     NBD_BENCH_NBD=path of another vdisk-nbd)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
. "$src/bench/lib.sh"
build=$(cd "${1:-$src/build}" && pwd)
nbd=${NBD_BENCH_NBD:-$build/tools/vdisk-nbd/vdisk-nbd}
secs=${SECS:-5}
rounds=${ROUNDS:-3}
size=${SIZE:-1G}
for c in fio qemu-img qemu-io qemu-nbd nbdkit "$nbd"; do
    command -v "$c" >/dev/null || { echo "missing $c" >&2; exit 1; }
done
work=$(mktemp -d /tmp/vdisk-bench-nbd.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

echo "preparing $size raw and qcow2 images in $work ..." >&2
qemu-img create -q -f raw img.raw "$size"
qemu-io -f raw -c "write -q -P 0x5a 0 $size" img.raw >/dev/null
qemu-img convert -O qcow2 img.raw img.qcow2
cat img.raw img.qcow2 > /dev/null # page cache warm

declare -A spid
start() { # NAME SOCK CMD...
    local name=$1 sock=$2; shift 2
    rm -f "$sock"
    "$@" &
    pids+=($!)
    last=$!
    spid[$name]=$!
    for _ in $(seq 1 200); do [ -S "$sock" ] && return 0; sleep 0.05; done
    echo "server did not start: $*" >&2
    exit 1
}

run_fio() { # SOCK RW BS QD [JOBS] -> "iops MiB/s"
    fio --name=t --ioengine=nbd --uri="nbd+unix:///?socket=$1" --rw="$2" --bs="$3" \
        --iodepth="$4" --runtime="$secs" --time_based --size="$size" --numjobs="${5:-1}" \
        --group_reporting --output-format=json --output=fio.json >/dev/null 2>&1
    /usr/bin/python3 -c '
import json
r = json.load(open("fio.json"))["jobs"][0]["read"]
print("%.0f %.1f" % (r["iops"], r["bw_bytes"] / 1048576))'
}

cpu_ticks() { # PID -> user + system clock ticks of the process so far
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

cpu_per_req() { # TICKS_BEFORE TICKS_AFTER -> server CPU microseconds per request
    /usr/bin/python3 -c '
import json, os, sys
ios = json.load(open("fio.json"))["jobs"][0]["read"]["total_ios"]
hz = os.sysconf("SC_CLK_TCK")
print("%.1f" % ((float(sys.argv[2]) - float(sys.argv[1])) * 1e6 / hz / ios if ios else 0))' "$1" "$2"
}

declare -A res cpu
add() { # KEY "iops MiB/s": collect every run, the median is taken at the end
    res[$1]="${res[$1]:-} $2"
}
med() { # KEY FIELD(1 iops, 2 MiB/s) [ARRAY] -> median
    local -n arr=${3:-res}
    /usr/bin/python3 -c '
import statistics, sys
v = sys.argv[2].split()
print("%.1f" % statistics.median(float(x) for x in v[int(sys.argv[1]) - 1::2]))' "$2" "${arr[$1]}"
}
load0=$(cut -d" " -f1-3 /proc/loadavg)
for fmt in raw qcow2; do
    servers=()
    for srv in vdisk-nbd qemu-nbd nbdkit; do
        [ "$srv" = nbdkit ] && [ "$fmt" = qcow2 ] && continue
        sock="$work/$srv-$fmt.sock"
        case $srv in
            vdisk-nbd) start "$srv" "$sock" "$nbd" -k "$sock" -f "$fmt" -t -r -e 8 "img.$fmt" ;;
            qemu-nbd) start "$srv" "$sock" qemu-nbd -k "$sock" -f "$fmt" -t -r -e 8 "img.$fmt" ;;
            nbdkit) start "$srv" "$sock" nbdkit -f -r -U "$sock" file "$work/img.$fmt" ;;
        esac
        servers+=("$srv")
    done
    # interleaved rounds: a busy moment hurts every server alike
    for _ in $(seq 1 "$rounds"); do
        for srv in "${servers[@]}"; do
            # the 4k run also measures the server's CPU time per request:
            # on a busy machine that says more than IOPS
            t0=$(cpu_ticks "${spid[$srv]}")
            add "$fmt,$srv,rand" "$(run_fio "$work/$srv-$fmt.sock" randread 4k 32)"
            t1=$(cpu_ticks "${spid[$srv]}")
            cpu[$fmt,$srv]="${cpu[$fmt,$srv]:-} $(cpu_per_req "$t0" "$t1") 0"
            add "$fmt,$srv,seq" "$(run_fio "$work/$srv-$fmt.sock" read 1M 8)"
            add "$fmt,$srv,multi" "$(run_fio "$work/$srv-$fmt.sock" randread 4k 32 4)"
        done
    done
done
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
load1=$(cut -d" " -f1-3 /proc/loadavg)

ratio() { /usr/bin/python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2fx' % (a/b) if b else '-')" "$1" "$2"; }
printf "\n%-6s %-10s %14s %12s %16s %18s\n" format server "4k rand IOPS" "CPU us/req" \
    "1M seq MiB/s" "4k rand 4 conns"
for fmt in raw qcow2; do
    for srv in vdisk-nbd qemu-nbd nbdkit; do
        [ -n "${res[$fmt,$srv,rand]:-}" ] || continue
        printf "%-6s %-10s %14s %12s %16s %18s\n" "$fmt" "$srv" "$(med "$fmt,$srv,rand" 1)" \
            "$(med "$fmt,$srv" 1 cpu)" "$(med "$fmt,$srv,seq" 2)" "$(med "$fmt,$srv,multi" 1)"
    done
done
echo "(medians of $rounds runs of ${secs}s; load average $load0 before, $load1 after)"
echo
us() { /usr/bin/python3 -c "import sys; print('%.2f' % (1e6 / float(sys.argv[1])))" "$1"; }
spg() { /usr/bin/python3 -c "import sys; print('%.3f' % (1024 / float(sys.argv[1])))" "$1"; }
# issue 17's targets, as time ratios (lower is better): on qcow2 >= 2.0x
# qemu-nbd's IOPS and 1 MiB throughput (0.5), on raw >= 1.2x nbdkit's
# (1/1.2 = 0.83); the other pairs have none
target() { # FMT REF
    case $1,$2 in
        qcow2,qemu-nbd) echo 0.5 ;;
        raw,nbdkit) echo 0.83 ;;
        *) echo - ;;
    esac
}
for fmt in raw qcow2; do
    for ref in qemu-nbd nbdkit; do
        [ -n "${res[$fmt,$ref,rand]:-}" ] || continue
        tg=$(target "$fmt" "$ref")
        v=$(med "$fmt,vdisk-nbd,rand" 1); q=$(med "$fmt,$ref,rand" 1)
        vs=$(med "$fmt,vdisk-nbd,seq" 2); qs=$(med "$fmt,$ref,seq" 2)
        vm=$(med "$fmt,vdisk-nbd,multi" 1); qm=$(med "$fmt,$ref,multi" 1)
        echo "$fmt: vdisk-nbd/$ref  4k rand $(ratio "$v" "$q")  1M seq $(ratio "$vs" "$qs")  4k rand 4 conns $(ratio "$vm" "$qm")"
        note="IOPS $v vs $q; load $load1"
        bench_result "nbd-$fmt 4k randread QD32 vs $ref (us/req)" "$(us "$v")" "$(us "$q")" "$note" "$tg"
        note="MiB/s $vs vs $qs; load $load1"
        bench_result "nbd-$fmt 1M seq read vs $ref (s/GiB)" "$(spg "$vs")" "$(spg "$qs")" "$note" "$tg"
        note="IOPS $vm vs $qm; load $load1"
        bench_result "nbd-$fmt 4k randread 4 conns vs $ref (us/req)" "$(us "$vm")" "$(us "$qm")" "$note"
        note="server CPU per 4k random read, QD32; load $load1"
        bench_result "nbd-$fmt 4k randread CPU vs $ref (us/req)" "$(med "$fmt,vdisk-nbd" 1 cpu)" \
            "$(med "$fmt,$ref" 1 cpu)" "$note"
    done
done
