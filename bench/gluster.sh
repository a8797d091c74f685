#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# GlusterFS convert speed, side by side in one run on one private volume
# (tests/helpers/gluster-volume.sh): `vdisk convert` vs `qemu-img convert`
#   up:   a local raw image -> qcow2 on the volume
#   down: that qcow2 on the volume -> a local raw image
# Wall time of each whole command, best of ROUNDS interleaved runs, and the
# ratio vdisk/qemu-img (below 1.0: vdisk is faster).  qemu-img's time
# includes its glfs_fini at exit (about 10 s, libgfapi's wait for its call
# pool); vdisk does not finish idle connections at exit (docs/gluster.md),
# so the ratio is also printed without that wait (qemu-img time - FINI).
# Usage: bench/gluster.sh [BUILD]   (env: SIZE=1G, ROUNDS=2)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
size=${SIZE:-1G}
rounds=${ROUNDS:-2}
export VDISK_SRC=$src VDISK_BUILD=$build
work=$(mktemp -d /tmp/vdisk-bench-gluster.XXXXXX)
cd "$work"
. "$src/tests/lib.sh"
. "$src/tests/helpers/gluster-volume.sh"
cleanup() { gluster_down; cd /; rm -rf "$work"; }
gluster_up
trap cleanup EXIT
set +e

echo "preparing a $size raw image (3/4 data, 1/4 hole) in $work ..." >&2
qemu-img create -q -f raw img.raw "$size"
bytes=$(stat -c %s img.raw)
qemu-io -f raw -c "write -q -P 0x5a 0 $((bytes / 4 * 3))" img.raw >/dev/null
cat img.raw >/dev/null

# the cost of one glfs_fini, measured with qemu-img on a tiny image
qemu-img create -q -f raw "$GURL/tiny.raw" 1M 2>/dev/null
t0=$(date +%s.%N)
qemu-img info "$GURL/tiny.raw" >/dev/null 2>&1
fini=$(echo "$(date +%s.%N) - $t0" | bc)

timeit() { # CMD... -> seconds on stdout
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>cmd.err || { echo "failed: $* $(grep -v '^\[' cmd.err | tail -2)" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
min() { if [ -z "$1" ] || [ "$(echo "$2 < $1" | bc)" = 1 ]; then echo "$2"; else echo "$1"; fi; }

vu= qu= vd= qd=
for r in $(seq 1 "$rounds"); do
    t=$(timeit "$VDISK" convert -f raw -O qcow2 img.raw "$GURL/v.qcow2"); vu=$(min "$vu" "$t")
    t=$(timeit qemu-img convert -f raw -O qcow2 img.raw "$GURL/q.qcow2"); qu=$(min "$qu" "$t")
    rm -f out.raw
    t=$(timeit "$VDISK" convert -f qcow2 -O raw "$GURL/q.qcow2" out.raw); vd=$(min "$vd" "$t")
    rm -f out.raw
    t=$(timeit qemu-img convert -f qcow2 -O raw "$GURL/q.qcow2" out.raw); qd=$(min "$qd" "$t")
done
cmp -s img.raw out.raw || { echo "round trip differs" >&2; exit 1; }
qemu-img compare -f raw -F qcow2 img.raw "$GURL/v.qcow2" >/dev/null 2>&1 ||
    { echo "vdisk's qcow2 on the volume differs" >&2; exit 1; }

printf 'glfs_fini at exit (qemu-img): %.2f s\n' "$fini"
printf '%-6s %10s %10s %8s %14s\n' dir vdisk qemu-img ratio "ratio-no-fini"
for d in up down; do
    if [ $d = up ]; then v=$vu; q=$qu; else v=$vd; q=$qd; fi
    qn=$(echo "$q - $fini" | bc)
    printf '%-6s %9.2fs %9.2fs %8.2f %14.2f\n' $d "$v" "$q" "$(echo "$v / $q" | bc -l)" \
        "$(echo "$v / $qn" | bc -l)"
done
