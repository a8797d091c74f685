#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk amend: argument rules, -o help, and refusal for a format without
# amendable options (raw), leaving the image alone.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

truncate -s 1M r.img
cp r.img ref.img
expect_fail "Must specify options (-o)" "$VDISK" amend -f raw r.img
expect_fail "does not support option amendment" "$VDISK" amend -f raw -o size=2M r.img
expect_fail "Expecting one image file name" "$VDISK" amend -f raw -o size=2M
expect_fail "Invalid option list" "$VDISK" amend -f raw -o , r.img
expect_fail "Invalid cache option" "$VDISK" amend -f raw -t bogus -o size=2M r.img
out=$("$VDISK" amend -f raw -o help) || fail "amend -o help"
case "$out" in "Amend options for 'raw':"*) ;; *) fail "amend -o help: $out" ;; esac
same_content r.img ref.img
echo ok
