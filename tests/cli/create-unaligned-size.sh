#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# create with a size that is not a multiple of 512: qemu-img rounds it up to
# whole sectors in every format's create (iotest 104: qed of 1234 bytes is
# 1536 bytes), then applies the format's own limits.  vdisk must accept the
# same sizes, print the same lines and make images of the same virtual size
# (qed's file byte for byte).
. "$(dirname "$0")/../lib.sh"
need qemu-img
for fmt in qed qcow2 raw vdi vpc qcow vmdk vhdx parallels; do
    for size in 1 511 513 1234 1048577; do
        for who in qemu vdisk; do
            IMG=qemu-img
            [ $who = vdisk ] && IMG=$VDISK
            rm -f $who.img
            set +e
            "$IMG" create -f $fmt $who.img $size >out-$who 2>&1
            echo "rc=$?" >>out-$who
            set -e
            sed -i "s/^$(basename "$IMG"): //; s/^qemu-img: //; s/$who\.img/IMG/g" out-$who
            if [ -f $who.img ]; then
                qemu-img info -f $fmt --output=json $who.img |
                    grep '"virtual-size"' >>out-$who
            fi
        done
        diff out-qemu out-vdisk || fail "$fmt of $size bytes: create differs from qemu-img's"
        if [ $fmt = qed ]; then
            cmp qemu.img vdisk.img || fail "qed of $size bytes differs from qemu-img's"
        fi
    done
done
exit 0
