#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# make demo: the main job on a small example.  Creates images, writes data,
# converts between formats, serves one over NBD and prints info.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
B=${BUILD:-$top/build}
VDISK=$B/tools/vdisk/vdisk
VDISK_IO=$B/tools/vdisk-io/vdisk-io
VDISK_NBD=$B/tools/vdisk-nbd/vdisk-nbd
dir=$(mktemp -d /tmp/vdisk-demo.XXXXXX)
trap 'rm -rf "$dir"' EXIT
cd "$dir"
step() {
    printf '\n$'
    for a in "$@"; do case "$a" in *[\ \*\?]*) printf " '%s'" "$a" ;; *) printf ' %s' "$a" ;; esac; done
    printf '\n'
    "$@"
}

step "$VDISK" create -f raw disk.raw 64M
step "$VDISK_IO" -f raw -c 'write -P 0xab 0 1M' -c 'write -P 0xcd 32M 512k' -c 'write -z 40M 1M' disk.raw
step "$VDISK" map --output=json -f raw disk.raw
for fmt in qcow2 qed vdi vpc qcow; do
    step "$VDISK" convert -f raw -O "$fmt" disk.raw disk.$fmt
    step "$VDISK" info disk.$fmt
    step "$VDISK" compare -f raw -F "$fmt" disk.raw disk.$fmt
done
step "$VDISK" convert -c -f qcow2 -O qcow2 disk.qcow2 compressed.qcow2
step "$VDISK" check compressed.qcow2
step "$VDISK" convert -f raw -O raw disk.raw copy.raw
step "$VDISK" compare -f raw -F raw disk.raw copy.raw
step "$VDISK_IO" -f raw -c 'read -P 0xab 0 1M' -c 'read -P 0xcd 32M 512k' copy.raw
if [ -x "$VDISK_NBD" ]; then
    "$VDISK_NBD" -f raw -k "$dir/nbd.sock" -t copy.raw &
    pid=$!
    for _ in 1 2 3 4 5 6 7 8 9 10; do [ -S "$dir/nbd.sock" ] && break; sleep 0.2; done
    step "$VDISK" info "nbd+unix:///?socket=$dir/nbd.sock"
    step "$VDISK_IO" -f raw -c 'read -P 0xab 0 1M' "nbd+unix:///?socket=$dir/nbd.sock"
    kill "$pid"; wait "$pid" 2>/dev/null || true
fi
step "$VDISK" info --output=json copy.raw
echo
echo "demo finished"
