#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk convert with a backing chain: without -B the whole chain is copied;
# with -B only what the top layer defines (the rest shows through the new
# backing file), zero areas past the backing file's end, compared with
# qemu-img convert's output (content, allocation, depth).
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

mapd() { # allocation with depth, no offsets
    qemu-img map --output=json "$1" | /usr/bin/python3 -c '
import json, sys
for e in json.load(sys.stdin):
    print(e["start"], e["length"], e["depth"], e["zero"], e["data"])'
}

qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -f qcow2 -c "write -q -P 0x11 0 1M" -c "write -q -P 0x22 2M 512k" base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 6M
qemu-io -f qcow2 -c "write -q -P 0x33 512k 64k" -c "write -q -z 2M 64k" \
    -c "write -q -P 0x44 5M 128k" -c "write -q -z 4608k 64k" top.qcow2

# the whole chain, flattened
"$VDISK" convert -O raw top.qcow2 flat.v
qemu-img convert -O raw top.qcow2 flat.q
same_content flat.q flat.v

# only the top layer above a new backing file
"$VDISK" convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 v.qcow2
qemu-img convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 q.qcow2
qemu-img check -q v.qcow2 || fail "check v.qcow2"
qemu-img compare -q top.qcow2 v.qcow2 || fail "content with -B"
diff <(mapd q.qcow2) <(mapd v.qcow2) >/dev/null || fail "allocation with -B: $(diff <(mapd q.qcow2) <(mapd v.qcow2) | head -6 | tr '\n' ' ')"
qemu-img info v.qcow2 | grep -q '^backing file: base.qcow2' || fail "no backing file"
qemu-img info v.qcow2 | grep -q '^backing file format: qcow2' || fail "no backing format"

# -o backing_file works as -B; -B needs a backing format
"$VDISK" convert -O qcow2 -o backing_file=base.qcow2,backing_fmt=qcow2 top.qcow2 o.qcow2
qemu-img compare -q top.qcow2 o.qcow2 || fail "content with -o backing_file"
expect_fail "backing format" "$VDISK" convert -O qcow2 -B base.qcow2 top.qcow2 nofmt.qcow2
[ ! -e nofmt.qcow2 ] || fail "image created despite the error"
expect_fail "not supported" "$VDISK" convert -O raw -B base.qcow2 -F qcow2 top.qcow2 r.raw
[ ! -e r.raw ] || fail "raw image created despite the error"
expect_fail "concatenating" "$VDISK" convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 top.qcow2 two.qcow2

# a raw source above a backing file: holes become zero clusters as in qemu-img
qemu-img convert -O raw -f qcow2 top.qcow2 src.raw
"$VDISK" convert -f raw -O qcow2 -B base.qcow2 -F qcow2 src.raw vr.qcow2
qemu-img convert -f raw -O qcow2 -B base.qcow2 -F qcow2 src.raw qr.qcow2
qemu-img compare -q -f raw src.raw vr.qcow2 || fail "raw source with -B"
diff <(mapd qr.qcow2) <(mapd vr.qcow2) >/dev/null || fail "raw source allocation with -B"

# --target-is-zero with a backing file: qemu-img 7.2 refuses but exits 0
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 t.qcow2
rc=0
out=$("$VDISK" convert -n --target-is-zero -B base.qcow2 -O qcow2 top.qcow2 t.qcow2 2>&1) || rc=$?
[ $rc -eq 0 ] || fail "exit $rc (qemu-img exits 0)"
case "$out" in *"backing file"*) ;; *) fail "no message: $out" ;; esac
echo ok
