#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qcow2 cache options (cache-size, l2-cache-size, refcount-cache-size,
# l2-cache-entry-size) accepted and refused as QEMU's (iotest 103): a
# combined size with only one of the two others, or none, derives the rest;
# 0 gives a small working cache; the refusals say what QEMU says.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
qemu-img create -q -f qcow2 t.qcow2 64M
qemu-io -c "write -P 42 0 64k" t.qcow2 >/dev/null
for o in cache-size=0 l2-cache-size=0 refcount-cache-size=0 cache-size=2M \
    cache-size=2M,l2-cache-size=1M cache-size=2M,refcount-cache-size=1M \
    l2-cache-size=1M,refcount-cache-size=0.25M cache-size=1.25M,l2-cache-size=1M,refcount-cache-size=0.25M \
    cache-size=1M,l2-cache-size=2M cache-size=1M,refcount-cache-size=2M \
    cache-size=0,l2-cache-size=0,refcount-cache-size=0 l2-cache-entry-size=256 \
    l2-cache-entry-size=4096 l2-cache-entry-size=3000; do
    q=$(qemu-io -c "open -o $o t.qcow2" -c "read -P 42 0 64k" -c "write -P 42 64k 64k" 2>&1 |
        sed 's/^qemu-io: //; /^64 KiB/d')
    v=$("$VDISK_IO" -c "open -o $o t.qcow2" -c "read -P 42 0 64k" -c "write -P 42 64k 64k" 2>&1 |
        sed 's/^vdisk-io: //; /^64 KiB/d')
    [ "$q" = "$v" ] || fail "open -o $o: qemu-io says
$q
vdisk-io says
$v"
done
echo ok
