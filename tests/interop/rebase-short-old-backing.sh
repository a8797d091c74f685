#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Rebase within one backing chain onto a base, when the old backing file is
# shorter than the image: the part past the old backing file's end read as
# zeroes and must stay zeroes (QEMU writes zero clusters there; iotest 024).
# Content and map are compared with qemu-img 7.2 doing the same rebase.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
C=65536
for sizes in "5 4 5" "3 2 6" "8 1 8"; do
    set -- $sizes
    qemu-img create -q -f qcow2 new.qcow2 $((C * $1))
    qemu-img create -q -f qcow2 -b new.qcow2 -F qcow2 old.qcow2 $((C * $2))
    qemu-io -c "write -P 0x11 0 $((C * $1))" new.qcow2 >/dev/null
    qemu-io -c "write -P 0x22 0 $((C * $2))" old.qcow2 >/dev/null
    for who in qemu vdisk; do
        qemu-img create -q -f qcow2 -b old.qcow2 -F qcow2 $who.qcow2 $((C * $3))
        qemu-io -c "write -P 0x33 $C 1k" $who.qcow2 >/dev/null
        qemu-img convert -O raw $who.qcow2 before-$who.raw
    done
    qemu-img rebase -b new.qcow2 -F qcow2 qemu.qcow2
    "$VDISK" rebase -b new.qcow2 -F qcow2 vdisk.qcow2 || fail "rebase $sizes failed"
    qemu-img convert -O raw vdisk.qcow2 after.raw
    same_content before-vdisk.raw after.raw
    qemu-img compare -q qemu.qcow2 vdisk.qcow2 || fail "$sizes: differs from qemu-img's result"
    [ "$(qemu-img map --output=json vdisk.qcow2 | sed 's/"offset": [0-9]*//')" = \
      "$(qemu-img map --output=json qemu.qcow2 | sed 's/"offset": [0-9]*//')" ] ||
        fail "$sizes: map differs from qemu-img's"
    qemu-img check -q vdisk.qcow2 || fail "$sizes: check failed"
done
exit 0
