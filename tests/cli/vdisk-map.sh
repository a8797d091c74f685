#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk map: human and JSON output equal qemu-img map's, with offsets and
# lengths limited; bad options fail.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

truncate -s 4M r.img
dd if=/dev/urandom of=r.img bs=64k seek=3 count=2 conv=notrunc status=none
dd if=/dev/urandom of=r.img bs=4k seek=700 count=5 conv=notrunc status=none
truncate -s 0 e.img

for f in r.img e.img; do
    for args in "" "--output=json" "--start-offset=64k" "--output=json --start-offset=1M --max-length=1M" \
                "--output=json --max-length=100000" "--output=json --start-offset=8M" "--max-length=0 --output=json"; do
        a=$("$VDISK" map -f raw $args $f) || fail "map $args $f"
        b=$(qemu-img map -f raw $args $f)
        [ "$a" = "$b" ] || fail "map $args $f differs:
$a
--- qemu-img:
$b"
    done
done
expect_fail "Invalid start offset" "$VDISK" map --start-offset=abc r.img
expect_fail "Invalid max length" "$VDISK" map --max-length=-1 r.img
expect_fail "--output must be used" "$VDISK" map --output=yaml r.img
expect_fail "Expecting one image file name" "$VDISK" map
echo ok
