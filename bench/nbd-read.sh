#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# NBD read speed, side by side in one run: vdisk-nbd vs qemu-nbd vs nbdkit
# `file`, with fio's nbd engine over a unix socket, one connection:
#   4k random read at queue depth 32, and 1 MiB sequential read (QD 8),
#   on a raw image and on a qcow2 copy of it (nbdkit serves raw only: its
#   file plugin does not interpret qcow2).
# Each figure is the best of ROUNDS interleaved runs.
# Usage: bench/nbd-read.sh [BUILD]   (env: SECS=5 per run, ROUNDS=3, SIZE=1G)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
nbd="$build/tools/vdisk-nbd/vdisk-nbd"
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

start() { # NAME SOCK CMD...
    local sock=$2; shift 2
    rm -f "$sock"
    "$@" &
    pids+=($!)
    last=$!
    for _ in $(seq 1 200); do [ -S "$sock" ] && return 0; sleep 0.05; done
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

declare -A res
best() { # KEY "iops MiB/s": keep the better run (the machine may be busy)
    local old=${res[$1]:-}
    if [ -z "$old" ] || /usr/bin/python3 -c "import sys; sys.exit(not float(sys.argv[1]) > float(sys.argv[2]))" \
        "${2%% *}" "${old%% *}"; then
        res[$1]=$2
    fi
}
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
            best "$fmt,$srv,rand" "$(run_fio "$work/$srv-$fmt.sock" randread 4k 32)"
            v=$(run_fio "$work/$srv-$fmt.sock" read 1M 8)
            best "$fmt,$srv,seq" "${v#* } ${v#* }"
        done
    done
done
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done

ratio() { /usr/bin/python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2fx' % (a/b) if b else '-')" "$1" "$2"; }
printf "\n%-6s %-10s %14s %16s\n" format server "4k rand IOPS" "1M seq MiB/s"
for fmt in raw qcow2; do
    for srv in vdisk-nbd qemu-nbd nbdkit; do
        v=${res[$fmt,$srv,rand]:-}
        [ -n "$v" ] || continue
        printf "%-6s %-10s %14s %16s\n" "$fmt" "$srv" "${v%% *}" "${res[$fmt,$srv,seq]%% *}"
    done
done
echo
for fmt in raw qcow2; do
    v=${res[$fmt,vdisk-nbd,rand]}; q=${res[$fmt,qemu-nbd,rand]}
    vs=${res[$fmt,vdisk-nbd,seq]}; qs=${res[$fmt,qemu-nbd,seq]}
    echo "$fmt: vdisk-nbd/qemu-nbd  4k rand $(ratio "${v%% *}" "${q%% *}")  1M seq $(ratio "${vs%% *}" "${qs%% *}")"
    if [ -n "${res[$fmt,nbdkit,rand]:-}" ]; then
        k=${res[$fmt,nbdkit,rand]}; ks=${res[$fmt,nbdkit,seq]}
        echo "$fmt: vdisk-nbd/nbdkit    4k rand $(ratio "${v%% *}" "${k%% *}")  1M seq $(ratio "${vs%% *}" "${ks%% *}")"
    fi
done
