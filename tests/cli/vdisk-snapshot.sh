#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk snapshot on a format without internal snapshots (raw): -l lists
# none, the other actions fail as qemu-img's do and write nothing.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

truncate -s 1M r.img
dd if=/dev/urandom of=r.img bs=4k count=1 conv=notrunc status=none
cp r.img ref.img
out=$("$VDISK" snapshot -l r.img) || fail "snapshot -l raw failed"
ref=$(qemu-img snapshot -l r.img)
[ "$out" = "$ref" ] || fail "snapshot -l: '$out' vs '$ref'"
out=$("$VDISK" snapshot -U -l r.img) || fail "snapshot -U -l raw failed"
for a in c a d; do
    expect_fail "snapshot 's1'" "$VDISK" snapshot -$a s1 r.img
    qrc=0; qemu-img snapshot -$a s1 r.img >/dev/null 2>&1 || qrc=$?
    [ "$qrc" = 1 ] || fail "qemu-img snapshot -$a on raw exits $qrc"
done
expect_fail "Could not create snapshot 's1'" "$VDISK" snapshot -c s1 r.img
expect_fail "Cannot mix" "$VDISK" snapshot -l -c x r.img
expect_fail "Expecting one image file name" "$VDISK" snapshot -l
expect_fail "can only be used with read-only" "$VDISK" snapshot -U -c x r.img
expect_fail "unrecognized option '-f'" "$VDISK" snapshot -f raw -l r.img
same_content r.img ref.img
echo ok
