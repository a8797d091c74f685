#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk info (human and JSON, with --backing-chain) prints exactly what
# qemu-img info prints for images of every format qemu-img writes, with
# data, backing chains and (qcow2) snapshots and format-specific data.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

imgs=()
for f in qcow2 qed qcow vdi vpc; do
    qemu-img create -q -f $f base.$f 64M
    qemu-io -f $f -c 'write -P 7 1M 256k' -c 'write -P 8 30M 64k' base.$f >/dev/null
    imgs+=(base.$f)
done
for f in qcow2 qed qcow; do
    qemu-img create -q -f $f -b base.$f -F $f top.$f 80M
    qemu-io -f $f -c 'write -P 9 0 64k' top.$f >/dev/null
    imgs+=(top.$f)
done
qemu-img create -q -f qcow2 -o cluster_size=4k,lazy_refcounts=on,compat=1.1 opts.qcow2 1G
qemu-img snapshot -c first opts.qcow2
qemu-io -f qcow2 -c 'write -P 1 0 1M' opts.qcow2 >/dev/null
qemu-img snapshot -c second opts.qcow2
imgs+=(opts.qcow2)
qemu-img create -q -f qcow2 -o compat=0.10 old.qcow2 10M
imgs+=(old.qcow2)
qemu-img create -q -f vdi -o static=on static.vdi 4M
imgs+=(static.vdi)
qemu-img create -q -f vpc -o subformat=fixed fixed.vpc 4M
imgs+=(fixed.vpc)

for img in "${imgs[@]}"; do
    for args in "" "--output=json" "--backing-chain" "--backing-chain --output=json" "-U --output=json"; do
        a=$("$VDISK" info $args "$img" 2>&1) || fail "vdisk info $args $img: $a"
        b=$(qemu-img info $args "$img")
        [ "$a" = "$b" ] || fail "info $args $img differs:
$a
--- qemu-img:
$b"
    done
done
echo ok
