#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The nbd driver's x-dirty-bitmap option names a whole metadata context
# ("qemu:dirty-bitmap:NAME", "qemu:allocation-depth") whose flags block
# status reports, as QEMU's: qemu-img map through it shows the bitmap (or the
# allocation depth), not plain allocation (iotests qemu-img-bitmaps,
# nbd-qemu-allocation).  Servers: qemu-nbd and vdisk-nbd; readers: qemu-img
# and vdisk.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/nbd-common.bash"
need qemu-img qemu-io qemu-nbd
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c "write 0 2M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 4M
qemu-img bitmap --add top.qcow2 b0
qemu-io -c "write 1M 1M" -c "write -z 3M 512k" top.qcow2 >/dev/null
qemu-img bitmap --add top.qcow2 b1
qemu-io -c "write 64k 64k" top.qcow2 >/dev/null
for server in qemu vdisk; do
    if [ $server = qemu ]; then
        start_qemu_nbd "$PWD/s.sock" -t -r -f qcow2 -B b0 -B b1 -A top.qcow2
    else
        # (vdisk-nbd exports one bitmap: the last -B)
        start_vdisk_nbd "$PWD/s.sock" -t -r -f qcow2 -B b0 -A top.qcow2
    fi
    ctxs="qemu:dirty-bitmap:b0 qemu:allocation-depth"
    [ $server = qemu ] && ctxs="$ctxs qemu:dirty-bitmap:b1"
    for ctx in $ctxs; do
        IMG="driver=nbd,server.type=unix,server.path=$PWD/s.sock,x-dirty-bitmap=$ctx"
        qemu-img map --output=json --image-opts "$IMG" >q.out || fail "qemu-img map $ctx"
        "$VDISK" map --output=json --image-opts "$IMG" >v.out || fail "vdisk map $ctx ($server)"
        diff q.out v.out || fail "map through $ctx differs ($server server)"
    done
    IMG="driver=nbd,server.type=unix,server.path=$PWD/s.sock"
    expect_fail "requested x-dirty-bitmap qemu:dirty-bitmap:nope not found" \
        "$VDISK" map --image-opts "$IMG,x-dirty-bitmap=qemu:dirty-bitmap:nope"
    expect_fail "requested x-dirty-bitmap b0 not found" "$VDISK" map --image-opts "$IMG,x-dirty-bitmap=b0"
    stop_last
done
exit 0
