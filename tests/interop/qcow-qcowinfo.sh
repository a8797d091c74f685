#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# An independent reader: libyal's qcowinfo (libqcow-utils) reads vdisk's
# qcow images -- size, version, backing file -- and, through qcowmount when
# FUSE works, the same data as QEMU.
. "$VDISK_SRC/tests/lib.sh"
need qcowinfo qemu-img

"$VDISK" create -q -f qcow a.qcow 10M || fail "create"
"$VDISK_IO" -c 'write -P 0x11 0 1M' -c 'write -P 0x22 5M 64k' a.qcow >/dev/null || fail "write"
out=$(qcowinfo a.qcow) || fail "qcowinfo rejects vdisk's qcow: $out"
echo "$out" | grep -q 'Format version[[:space:]]*: 1' || fail "qcowinfo version: $out"
echo "$out" | grep -q 'Media size.*(10485760 bytes)' || fail "qcowinfo size: $out"
echo "$out" | grep -q 'Encryption method[[:space:]]*: None' || fail "qcowinfo encryption: $out"

truncate -s 4M base.raw
"$VDISK" create -q -f qcow -b base.raw -F raw b.qcow || fail "create with backing"
"$VDISK_IO" -c 'write -P 0x33 512 4k' b.qcow >/dev/null || fail "write"
out=$(qcowinfo b.qcow) || fail "qcowinfo rejects vdisk's qcow with backing: $out"
echo "$out" | grep -q 'Backing filename[[:space:]]*: base.raw' || fail "qcowinfo backing: $out"
echo "$out" | grep -q '(4194304 bytes)' || fail "qcowinfo size with backing: $out"

# data through libqcow when FUSE is usable (qcowmount exposes qcow1 image data)
if command -v qcowmount >/dev/null && [ -e /dev/fuse ]; then
    mkdir -p mnt
    if qcowmount a.qcow mnt >/dev/null 2>&1; then
        qemu-img convert -O raw a.qcow ref.raw
        rc=0; cmp -s mnt/qcow1 ref.raw || rc=1
        fusermount -u mnt 2>/dev/null || umount mnt
        [ "$rc" = 0 ] || fail "libqcow reads vdisk's qcow data differently from QEMU"
    fi
fi
echo ok
