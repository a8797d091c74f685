#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# GlusterFS convert speed, side by side in one run on one private volume
# (tests/helpers/gluster-volume.sh): `vdisk convert` vs `qemu-img convert`
#   up:   a local raw image -> qcow2 on the volume
#   down: that qcow2 on the volume -> a local raw image
# Wall time of each whole command, median of RUNS interleaved runs, and the
# ratio vdisk/qemu-img (below 1.0: vdisk is faster).  qemu-img's time
# includes its glfs_fini at exit (about 10 s, libgfapi waits for its
# client's disconnect); vdisk does not finish idle connections at exit
# (docs/gluster.md), so a second RESULT line per direction compares with
# qemu-img's time less that wait (measured on a tiny image).  A third
# compares CPU time (user + system, median), which the shared machine's
# load changes far less than wall time.
# Usage: bench/gluster.sh [-r RUNS] [-s SIZE] [BUILD]   (defaults: 3 runs, 1G)
set -eu
. "$(dirname "$0")/lib.sh"

bench_args 3 1G "$@"
"$VDISK" --help | grep -qw gluster || { echo "vdisk was built without libgfapi: skipped" >&2; exit 0; }
export VDISK_SRC=$BENCH_SRC
work=$(mktemp -d /tmp/vdisk-bench-gluster.XXXXXX)
cd "$work"
. "$BENCH_SRC/tests/lib.sh"
fail() { echo "   FAIL: $*" >&2; exit 1; }
skip() { echo "   skipped: $*" >&2; exit 0; }
. "$BENCH_SRC/tests/helpers/gluster-volume.sh"
gluster_up
trap 'gluster_down; cd /; rm -rf "$work"' EXIT

echo "== gluster: preparing a $size raw image (3/4 data, 1/4 hole) in $work" >&2
qemu-img create -q -f raw img.raw "$size"
bytes=$(stat -c %s img.raw)
qemu-io -f raw -c "write -q -P 0x5a 0 $((bytes / 4 * 3))" img.raw >/dev/null
cat img.raw >/dev/null

# the cost of one glfs_fini, measured with qemu-img on a tiny image
qemu-img create -q -f raw "$GURL/tiny.raw" 1M 2>/dev/null
fini=$(bench_time qemu-img info -f raw "$GURL/tiny.raw" 2>/dev/null)

# timed CMD...: "WALL CPU" seconds of CMD (CPU = user + system); its
# stderr (libgfapi's log lines) kept out of sight unless it fails
timed() {
    /usr/bin/time -o cmd.time -f '%e %U %S' "$@" >/dev/null 2>cmd.err ||
        { echo "failed: $* $(grep -v '^\[' cmd.err | tail -2)" >&2; return 1; }
    tail -n 1 cmd.time | awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }'
}
# up first (the down runs read the qcow2 that qemu-img wrote), then down;
# wall times in vu qu vd qd, CPU times in cvu cqu cvd cqd
vu=() qu=() vd=() qd=() cvu=() cqu=() cvd=() cqd=()
for i in $(seq 1 "$runs"); do
    for who in $([ $((i % 2)) -eq 1 ] && echo "v q" || echo "q v"); do
        if [ $who = v ]; then
            r=$(timed "$VDISK" convert -f raw -O qcow2 img.raw "$GURL/v.qcow2")
            vu+=("${r% *}"); cvu+=("${r#* }")
        else
            r=$(timed qemu-img convert -f raw -O qcow2 img.raw "$GURL/q.qcow2")
            qu+=("${r% *}"); cqu+=("${r#* }")
        fi
    done
    echo "   up run $i: vdisk ${vu[-1]} s (cpu ${cvu[-1]}), qemu-img ${qu[-1]} s (cpu ${cqu[-1]}), load $(cut -d' ' -f1 /proc/loadavg)" >&2
done
for i in $(seq 1 "$runs"); do
    for who in $([ $((i % 2)) -eq 1 ] && echo "v q" || echo "q v"); do
        rm -f out.raw
        if [ $who = v ]; then
            r=$(timed "$VDISK" convert -f qcow2 -O raw "$GURL/q.qcow2" out.raw)
            vd+=("${r% *}"); cvd+=("${r#* }")
        else
            r=$(timed qemu-img convert -f qcow2 -O raw "$GURL/q.qcow2" out.raw)
            qd+=("${r% *}"); cqd+=("${r#* }")
        fi
        cmp -s img.raw out.raw || fail "$who: the round trip differs"
    done
    echo "   down run $i: vdisk ${vd[-1]} s (cpu ${cvd[-1]}), qemu-img ${qd[-1]} s (cpu ${cqd[-1]}), load $(cut -d' ' -f1 /proc/loadavg)" >&2
done
qemu-img compare -f raw -F qcow2 img.raw "$GURL/v.qcow2" >/dev/null 2>&1 ||
    fail "vdisk's qcow2 on the volume differs"

echo "   qemu-img's glfs_fini at exit: $fini s" >&2
for d in up down; do
    if [ $d = up ]; then
        v=$(bench_median "${vu[@]}"); q=$(bench_median "${qu[@]}")
        cv=$(bench_median "${cvu[@]}"); cq=$(bench_median "${cqu[@]}")
        name="gluster convert raw -> qcow2 on the volume"
    else
        v=$(bench_median "${vd[@]}"); q=$(bench_median "${qd[@]}")
        cv=$(bench_median "${cvd[@]}"); cq=$(bench_median "${cqd[@]}")
        name="gluster convert qcow2 on the volume -> raw"
    fi
    qn=$(/usr/bin/python3 -c "import sys; print('%.3f' % max(float(sys.argv[1]) - float(sys.argv[2]), 0.001))" "$q" "$fini")
    bench_result "$name ($size, median of $runs)" "$v" "$q" ok
    bench_result "$name, qemu-img less its exit wait" "$v" "$qn" ok
    bench_result "$name, CPU time" "$cv" "$cq" ok
done
