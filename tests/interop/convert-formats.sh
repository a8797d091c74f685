#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk convert into and out of every image format vdisk writes, against
# qemu-img: what vdisk writes, qemu-img reads identically and checks clean;
# what qemu-img writes, vdisk converts back byte for byte; converting
# format to format (vdisk both ways) keeps the content.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/bench/lib.sh"
need qemu-img

bench_sparse_raw in.raw 6M 41 35 small
formats="qcow2 qed qcow vdi vpc"
for fmt in $formats; do
    # vdisk writes, qemu-img reads
    "$VDISK" convert -f raw -O "$fmt" in.raw "v.$fmt" || fail "vdisk convert -O $fmt"
    qemu-img compare -q -f raw -F "$fmt" in.raw "v.$fmt" || fail "$fmt written by vdisk differs"
    rc=0; qemu-img check -q -f "$fmt" "v.$fmt" 2>/dev/null || rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 63 ] || fail "qemu-img check of vdisk's $fmt: exit $rc"
    # qemu-img writes, vdisk reads (and its size equals qemu-img's own copy)
    qemu-img convert -f raw -O "$fmt" in.raw "q.$fmt"
    "$VDISK" convert -f "$fmt" -O raw "q.$fmt" "back.$fmt.raw" || fail "vdisk convert -f $fmt"
    qemu-img convert -f "$fmt" -O raw "q.$fmt" "qback.$fmt.raw"
    same_content "qback.$fmt.raw" "back.$fmt.raw"
    qemu-img compare -q -f raw -F raw in.raw "back.$fmt.raw" || fail "$fmt read by vdisk differs"
    # vdisk's compare agrees
    "$VDISK" compare -q -f "$fmt" -F "$fmt" "v.$fmt" "q.$fmt" || fail "vdisk compare v.$fmt q.$fmt"
done
# format to format, both sides vdisk
prev=in.raw; pfmt=raw
for fmt in $formats raw; do
    "$VDISK" convert -f $pfmt -O $fmt "$prev" "chain.$fmt" || fail "convert $pfmt -> $fmt"
    prev=chain.$fmt; pfmt=$fmt
done
qemu-img compare -q -f raw -F raw in.raw chain.raw || fail "format chain changed the content"
echo ok
