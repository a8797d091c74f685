#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk measure: same numbers and documents as qemu-img measure (raw target),
# and qemu-img's argument rules.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

truncate -s 3M r.img
dd if=/dev/urandom of=r.img bs=64k count=2 conv=notrunc status=none
for args in "--size 1G" "--size 0" "--output=json --size 1G" "-O raw --size 123456" \
            "-f raw r.img" "--output=json -O raw r.img"; do
    a=$("$VDISK" measure $args) || fail "measure $args"
    b=$(qemu-img measure $args)
    [ "$a" = "$b" ] || fail "measure $args: '$a' vs qemu-img '$b'"
done
expect_fail "Either --size N or one filename must be specified." "$VDISK" measure
expect_fail "--size N cannot be used together with a filename." "$VDISK" measure --size 1M r.img
expect_fail "At most one filename argument is allowed." "$VDISK" measure r.img r.img
expect_fail "require a filename argument" "$VDISK" measure -f raw --size 1M
expect_fail "Unknown file format 'nope'" "$VDISK" measure -O nope --size 1M
expect_fail "Invalid image size" "$VDISK" measure --size 1x
expect_fail "nonexist" "$VDISK" measure nonexist.img
expect_fail "Invalid parameter 'bogus'" "$VDISK" measure -O raw -o bogus=1 --size 1M
expect_fail "Invalid option list" "$VDISK" measure -O raw -o , --size 1M
echo ok
