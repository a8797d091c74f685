#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk commit: argument rules, and an image without a backing file is
# refused as by qemu-img, unchanged.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

truncate -s 1M r.img
dd if=/dev/urandom of=r.img bs=4k count=2 conv=notrunc status=none
cp r.img ref.img
expect_fail "Image does not have a backing file" "$VDISK" commit -f raw r.img
qrc=0; qemu-img commit -f raw r.img >/dev/null 2>&1 || qrc=$?
[ "$qrc" = 1 ] || fail "qemu-img commit raw exits $qrc"
expect_fail "Did not find 'other.img' in the backing chain" "$VDISK" commit -f raw -b other.img r.img
expect_fail "Invalid rate limit" "$VDISK" commit -f raw -r abc r.img
expect_fail "Invalid cache option" "$VDISK" commit -f raw -t bogus r.img
expect_fail "Expecting one image file name" "$VDISK" commit
same_content r.img ref.img

# A real chain (qed, written by qemu-io): commit copies the overlay's data,
# zeroes included, into the base; the result equals qemu-img commit's.
mk_chain() {
    rm -f "$1.base" "$1.top"
    qemu-img create -q -f qed "$1.base" 8M
    qemu-io -f qed -c 'write -P 1 0 1M' -c 'write -P 3 4M 1M' "$1.base" >/dev/null
    qemu-img create -q -f qed -b "$1.base" -F qed "$1.top" 10M
    qemu-io -f qed -c 'write -P 2 512k 1M' -c 'write -z 4M 64k' -c 'write -P 5 9M 64k' "$1.top" >/dev/null
}
mk_chain v; mk_chain q
qemu-img convert -O raw v.top view.raw
out=$("$VDISK" commit v.top) || fail "commit of a qed chain failed"
[ "$out" = "Image committed." ] || fail "commit said '$out'"
qemu-img commit -q q.top
qemu-img convert -O raw v.base vbase.raw
qemu-img convert -O raw q.base qbase.raw
same_content vbase.raw qbase.raw
same_content vbase.raw view.raw
[ "$(qemu-img info --output=json v.base | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = 10485760 ] \
    || fail "commit did not grow the base to the overlay's size"
qemu-img check -q v.base || fail "qemu-img check finds errors in the committed base"
# the overlay still reads the same
qemu-img convert -O raw v.top top.raw
same_content top.raw view.raw
# -q, -p, -d, -t, -r accepted
mk_chain v
out=$("$VDISK" commit -q -d -t writeback -r 100M v.top) || fail "commit -q -d -t -r"
[ -z "$out" ] || fail "commit -q printed '$out'"
qemu-img convert -O raw v.base vbase.raw
same_content vbase.raw view.raw
# -b names the base by file name
mk_chain v
"$VDISK" commit -q -b v.base v.top || fail "commit -b"
qemu-img convert -O raw v.base vbase.raw
same_content vbase.raw view.raw
echo ok
