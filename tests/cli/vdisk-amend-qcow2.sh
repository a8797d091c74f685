#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk amend on qcow2: compat, lazy_refcounts and refcount_bits change as
# qemu-img info reports them, data is kept; create-only options are refused.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f qcow2 -o compat=1.1 a.qcow2 16M
qemu-io -f qcow2 -c 'write -P 5 1M 1M' a.qcow2 >/dev/null
qemu-img convert -O raw a.qcow2 before.raw
spec() { qemu-img info --output=json a.qcow2 | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['format-specific']['data'].get('$1'))"; }
"$VDISK" amend -o lazy_refcounts=on a.qcow2 || fail "lazy_refcounts=on"
[ "$(spec lazy-refcounts)" = True ] || fail "lazy refcounts not on"
"$VDISK" amend -p -o refcount_bits=64 a.qcow2 >/dev/null || fail "refcount_bits=64"
[ "$(spec refcount-bits)" = 64 ] || fail "refcount bits: $(spec refcount-bits)"
"$VDISK" amend -o lazy_refcounts=off,compat=0.10,refcount_bits=16 a.qcow2 || fail "compat=0.10"
[ "$(spec compat)" = 0.10 ] || fail "compat: $(spec compat)"
expect_fail "cluster_size" "$VDISK" amend -o cluster_size=4k a.qcow2
qemu-img check -q a.qcow2 || fail "qemu-img check after amend"
qemu-img convert -O raw a.qcow2 after.raw
same_content before.raw after.raw
out=$("$VDISK" amend -o help a.qcow2) || fail "-o help"
case "$out" in "Amend options for 'qcow2':"*) ;; *) fail "-o help: $out" ;; esac
echo ok
