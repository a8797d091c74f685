#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# An independent reader: libyal's vhdiinfo (libvhdi-utils) reads vdisk's
# dynamic and fixed VHDs -- type, size, identifier -- and, through vhdimount
# when FUSE works, the same data as QEMU.
. "$VDISK_SRC/tests/lib.sh"
need vhdiinfo qemu-img

for o in "" "subformat=fixed" "force_size=on"; do
    rm -f a.vpc
    "$VDISK" create -q -f vpc ${o:+-o $o} a.vpc 20M || fail "create $o"
    "$VDISK_IO" -f vpc -c 'write -P 0x11 0 1M' -c 'write -P 0x22 5M 64k' a.vpc >/dev/null || fail "write $o"
    out=$(vhdiinfo a.vpc) || fail "vhdiinfo rejects vdisk's vpc -o '$o': $out"
    case "$o" in
        *fixed*) echo "$out" | grep -q 'Disk type[[:space:]]*: Fixed' || fail "vhdiinfo type ($o): $out" ;;
        *) echo "$out" | grep -q 'Disk type[[:space:]]*: Dynamic' || fail "vhdiinfo type ($o): $out" ;;
    esac
    size=$(qemu-img info --output=json -f vpc a.vpc | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    echo "$out" | grep -q "Media size.*($size bytes)" || fail "vhdiinfo size ($o), QEMU says $size: $out"
    if command -v vhdimount >/dev/null && [ -e /dev/fuse ]; then
        mkdir -p mnt
        if vhdimount a.vpc mnt >/dev/null 2>&1; then
            qemu-img convert -f vpc -O raw a.vpc ref.raw
            rc=0; cmp -s mnt/vhdi1 ref.raw || rc=1
            fusermount -u mnt 2>/dev/null || umount mnt
            [ "$rc" = 0 ] || fail "libvhdi reads vdisk's vpc ($o) data differently from QEMU"
        fi
    fi
done
echo ok
