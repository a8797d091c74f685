#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Discard on a compat=0.10 qcow2 with a backing file must not expose the
# backing file's data (v2 has no zero clusters): like QEMU, it leaves the
# clusters alone.  Without a backing file, or with compat=1.1, discarded
# clusters read as zeroes.  Each case is compared with qemu-io 7.2's result.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
qemu-img create -q -f qcow2 -o compat=0.10 base.qcow2 256k
qemu-io -c 'write -P 0x11 0 256k' base.qcow2 >/dev/null
for compat in 0.10 1.1; do
    for backing in yes no; do
        for who in qemu vdisk; do
            if [ $backing = yes ]; then
                qemu-img create -q -f qcow2 -o compat=$compat -b base.qcow2 -F qcow2 $who.qcow2
            else
                qemu-img create -q -f qcow2 -o compat=$compat $who.qcow2 256k
            fi
            io=qemu-io; [ $who = vdisk ] && io=$VDISK_IO
            # whole clusters, a partial cluster, and a range over both
            $io -f qcow2 -c 'write -P 0x22 0 256k' -c 'discard 0 128k' -c 'discard 130000 1000' \
                -c 'discard 192k 64k' $who.qcow2 >/dev/null || fail "$who: I/O failed"
            qemu-img convert -f qcow2 -O raw $who.qcow2 $who.raw
        done
        same_content qemu.raw vdisk.raw
        qemu-img check -q vdisk.qcow2 || fail "vdisk's image does not pass qemu-img check"
        if [ $compat = 0.10 ] && [ $backing = yes ]; then
            qemu-io -f raw -c 'read -P 0x22 0 256k' vdisk.raw | grep -q '^read' ||
                fail "discard on a v2 image with a backing file changed the data"
        fi
    done
done
exit 0
