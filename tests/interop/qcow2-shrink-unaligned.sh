#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Shrinking a qcow2 with a backing file to a size inside a cluster, then
# growing it again: the partial last cluster keeps its data below the old end
# and the grown area reads as zeroes, not as the backing file (iotest 292).
# Content and map are compared with qemu-img 7.2 doing the same.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
for ext in off on; do
    for who in qemu vdisk; do
        IMG=qemu-img; IO=qemu-io
        [ $who = vdisk ] && { IMG=$VDISK; IO=$VDISK_IO; }
        qemu-img create -q -f qcow2 -o extended_l2=$ext base-$who.qcow2 1M
        qemu-io -c "write -P 0x11 0 1M" base-$who.qcow2 >/dev/null
        qemu-img create -q -f qcow2 -o extended_l2=$ext -b base-$who.qcow2 -F qcow2 $who.qcow2 1M
        qemu-io -c "write -P 0x22 0 1M" $who.qcow2 >/dev/null
        "$IMG" resize -q --shrink $who.qcow2 520k || fail "$who: shrink failed"
        "$IMG" resize -q $who.qcow2 567k || fail "$who: grow failed"
    done
    qemu-io -c "read -P 0x22 0 520k" -c "read -P 0 520k 47k" vdisk.qcow2 | grep -q Pattern &&
        fail "extended_l2=$ext: wrong content after shrink and grow"
    qemu-img compare -q qemu.qcow2 vdisk.qcow2 || fail "extended_l2=$ext: differs from qemu-img's result"
    [ "$(qemu-img map --output=json vdisk.qcow2 | sed 's/"offset": [0-9]*//')" = \
      "$(qemu-img map --output=json qemu.qcow2 | sed 's/"offset": [0-9]*//')" ] ||
        fail "extended_l2=$ext: map differs from qemu-img's"
    qemu-img check -q vdisk.qcow2 || fail "extended_l2=$ext: check failed"
    rm -f ./*.qcow2
done
exit 0
