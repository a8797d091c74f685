#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk check: exit codes and messages as qemu-img check.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

truncate -s 1M r.img
cp r.img ref.img
# raw has no check: 63 and qemu-img's message, for both outputs
for o in human json; do
    rc=0; err=$("$VDISK" check -f raw --output=$o r.img 2>&1) || rc=$?
    qrc=0; qemu-img check -f raw --output=$o r.img >/dev/null 2>&1 || qrc=$?
    [ "$rc" = 63 ] && [ "$rc" = "$qrc" ] || fail "check raw: exit $rc (qemu-img $qrc)"
    case "$err" in *"does not support checks"*) ;; *) fail "check raw said: $err" ;; esac
done
# -r on raw: still 63 and nothing written
rc=0; "$VDISK" check -f raw -r all r.img 2>/dev/null || rc=$?
[ "$rc" = 63 ] || fail "check -r all raw: exit $rc"
same_content r.img ref.img
# -q keeps the error (only output is silenced)
rc=0; err=$("$VDISK" check -q -f raw r.img 2>&1) || rc=$?
[ "$rc" = 63 ] && [ -n "$err" ] || fail "check -q raw: exit $rc, '$err'"

expect_exit 1 "$VDISK" check -r bogus r.img
expect_exit 1 "$VDISK" check --output=xml r.img
expect_exit 1 "$VDISK" check nonexist.img
expect_exit 1 "$VDISK" check
expect_exit 1 "$VDISK" check -T bogus r.img
expect_exit 1 "$VDISK" check -U -r leaks r.img
expect_fail "Expecting one image file name" "$VDISK" check a b
echo ok
