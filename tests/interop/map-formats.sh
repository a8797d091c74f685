#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk map (JSON and human) equals qemu-img map for images of each format
# qemu-img writes, with data, written zeroes, discards and backing chains.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

imgs=()
for f in qcow2 qed qcow vdi vpc; do
    qemu-img create -q -f $f base.$f 16M
    qemu-io -f $f -c 'write -P 7 1M 256k' -c 'write -P 8 3M 64k' -c 'write -P 1 15M 1M' base.$f >/dev/null
    imgs+=(base.$f)
done
for f in qcow2 qed qcow; do
    qemu-img create -q -f $f -b base.$f -F $f top.$f 20M
    qemu-io -f $f -c 'write -P 9 0 64k' -c 'write -z 3M 64k' -c 'write -P 3 17M 128k' top.$f >/dev/null
    imgs+=(top.$f)
done
qemu-img create -q -f qcow2 -o preallocation=metadata pre.qcow2 4M
qemu-io -f qcow2 -c 'write -P 2 1M 4k' -c 'discard 2M 64k' pre.qcow2 >/dev/null
imgs+=(pre.qcow2)

for img in "${imgs[@]}"; do
    for args in "--output=json" "" "--output=json --start-offset=1M --max-length=3M"; do
        a=$("$VDISK" map $args "$img" 2>&1) || fail "vdisk map $args $img: $a"
        b=$(qemu-img map $args "$img")
        [ "$a" = "$b" ] || fail "map $args $img differs:
$a
--- qemu-img:
$b"
    done
done
echo ok
