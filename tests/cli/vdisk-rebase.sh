#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk rebase: qemu-img's argument rules; a format without backing files
# (raw) refuses; nothing is written by a refused rebase.
. "$VDISK_SRC/tests/lib.sh"

truncate -s 1M r.img
truncate -s 1M base.img
cp r.img ref.img
expect_fail "Must specify backing file (-b) or use unsafe mode (-u)" "$VDISK" rebase -f raw r.img
expect_fail "Invalid format name: 'nope'" "$VDISK" rebase -f raw -b base.img -F nope r.img
expect_fail "backing format must be specified" "$VDISK" rebase -f raw -b base.img r.img
expect_fail "Could not change the backing file to 'base.img'" "$VDISK" rebase -f raw -b base.img -F raw r.img
expect_fail "Could not change the backing file to 'base.img'" "$VDISK" rebase -f raw -u -b base.img -F raw r.img
expect_fail "Could not open new backing file 'nonexist.img'" "$VDISK" rebase -f raw -b nonexist.img -F raw r.img
expect_fail "Invalid cache option" "$VDISK" rebase -f raw -t bogus -b '' r.img
expect_fail "Invalid cache option" "$VDISK" rebase -f raw -T bogus -b '' r.img
expect_fail "Expecting one image file name" "$VDISK" rebase -b base.img -F raw
same_content r.img ref.img

# Safe rebase of a qed overlay onto another base keeps what it presents;
# -b '' removes the backing file, copying the old base's data in; -u only
# rewrites the reference.
need qemu-img qemu-io
qemu-img create -q -f qed b.qed 8M
qemu-io -f qed -c 'write -P 1 0 1M' -c 'write -P 3 4M 1M' b.qed >/dev/null
qemu-img create -q -f qed nb.qed 8M
qemu-io -f qed -c 'write -P 1 0 512k' -c 'write -P 9 6M 1M' nb.qed >/dev/null
qemu-img create -q -f qed -b b.qed -F qed o.qed 8M
qemu-io -f qed -c 'write -P 2 512k 1M' o.qed >/dev/null
qemu-img convert -O raw o.qed before.raw
cp nb.qed nb.ref
"$VDISK" rebase -p -b nb.qed -F qed o.qed >/dev/null || fail "safe rebase"
qemu-img info o.qed | grep -qx "backing file: nb.qed" || fail "backing file not changed"
# (qed records a backing format only for raw, as QEMU's qed does)
qemu-img convert -O raw o.qed after.raw
same_content before.raw after.raw
same_content nb.qed nb.ref
qemu-img check -q o.qed || fail "qemu-img check after rebase"
"$VDISK" rebase -q -b '' o.qed || fail "rebase -b ''"
qemu-img info o.qed | grep -q "backing file" && fail "backing file not removed"
qemu-img convert -O raw o.qed after2.raw
same_content before.raw after2.raw
"$VDISK" rebase -q -u -b renamed.qed -F qed o.qed || fail "unsafe rebase"
qemu-img info o.qed | grep -qx "backing file: renamed.qed" || fail "-u did not rewrite the reference"
echo ok
