#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# `vdisk convert` against `qemu-img convert` reading the same ssh:// URL
# (a private sshd on 127.0.0.1 with an agent-held key, as the tests start
# it: tests/helpers/ssh-server.sh), to a local raw file, side by side in
# one run: a sparse raw source with scattered seeded data, and a qcow2 copy
# of it.  Runs alternate (vdisk first on odd runs); the server's page cache
# is warm.  Prints the median of each and the ratio vdisk/qemu-img, and
# checks that both outputs have the source's content.
#
# Usage: bench/ssh.sh [-r RUNS] [-s SIZE] [BUILD]   (defaults: 3 runs, 1G)
set -eu
# the ssh helper re-runs this script in a mount namespace, from elsewhere
case $0 in /*) ;; *) exec bash "$PWD/$0" "$@" ;; esac
. "$(dirname "$0")/lib.sh"

bench_args 3 1G "$@"

if [ -z "${VDISK_SSH_NS:-}" ]; then
    work=$(mktemp -d /tmp/vdisk-bench-ssh.XXXXXX)
    export BENCH_SSH_WORK=$work
else
    work=$BENCH_SSH_WORK
fi
# the namespace re-runs this script: the outer one removes the directory
[ -n "${VDISK_SSH_NS:-}" ] || trap 'rm -rf "$work"' EXIT
cd "$work"
VDISK_SRC=$BENCH_SRC
export VDISK_SRC VDISK
. "$BENCH_SRC/tests/lib.sh"
set -- -r "$runs" -s "$size"
. "$BENCH_SRC/tests/helpers/ssh-server.sh"
ssh_start

echo "== ssh: preparing a $size sparse raw image with scattered data in $work" >&2
bench_sparse_raw in.raw "$size" 42 25
qemu-img convert -f raw -O qcow2 in.raw in.qcow2
cat in.raw in.qcow2 >/dev/null # the server reads from the page cache

for fmt in raw qcow2; do
    url="$SSH_URL/in.$fmt"
    vcmd=("$VDISK" convert -f "$fmt" -O raw "$url" out.vdisk)
    qcmd=(qemu-img convert -f "$fmt" -O raw "$url" out.qemu)
    tv=(); tq=()
    for i in $(seq 1 "$runs"); do
        if [ $((i % 2)) = 1 ]; then
            tv+=("$(bench_time "${vcmd[@]}")"); tq+=("$(bench_time "${qcmd[@]}")")
        else
            tq+=("$(bench_time "${qcmd[@]}")"); tv+=("$(bench_time "${vcmd[@]}")")
        fi
    done
    cmp -s in.raw out.vdisk || { echo "vdisk output differs from the source" >&2; exit 1; }
    cmp -s in.raw out.qemu || { echo "qemu-img output differs from the source" >&2; exit 1; }
    v=$(bench_median "${tv[@]}")
    q=$(bench_median "${tq[@]}")
    echo "ssh $fmt -> local raw ($size): vdisk ${tv[*]} s, qemu-img ${tq[*]} s;" \
        "median $v / $q = $(bench_ratio "$v" "$q")x" >&2
    bench_result "ssh-convert-$fmt-$size" "$v" "$q" ok
    rm -f out.vdisk out.qemu
done
