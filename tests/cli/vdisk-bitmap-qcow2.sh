#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk bitmap on qcow2: the actions change the persistent bitmaps that
# qemu-img info reports, in command-line order.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

qemu-img create -q -f qcow2 b.qcow2 64M
qemu-img create -q -f qcow2 src.qcow2 64M
qemu-img bitmap --add src.qcow2 sb
bitmaps() {
    qemu-img info --output=json "$1" | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
bm = d.get("format-specific", {}).get("data", {}).get("bitmaps", [])
print(" ".join("%s:%d:%s" % (b["name"], b["granularity"], ",".join(sorted(b["flags"]))) for b in bm))'
}
"$VDISK" bitmap --add -g 128k b.qcow2 b0 || fail "--add"
[ "$(bitmaps b.qcow2)" = "b0:131072:auto" ] || fail "after --add: $(bitmaps b.qcow2)"
"$VDISK" bitmap --disable b.qcow2 b0 || fail "--disable"
[ "$(bitmaps b.qcow2)" = "b0:131072:" ] || fail "after --disable: $(bitmaps b.qcow2)"
"$VDISK" bitmap --enable --clear b.qcow2 b0 || fail "--enable --clear"
[ "$(bitmaps b.qcow2)" = "b0:131072:auto" ] || fail "after --enable: $(bitmaps b.qcow2)"
"$VDISK" bitmap --merge sb -b src.qcow2 -F qcow2 b.qcow2 b0 || fail "--merge from another file"
"$VDISK" bitmap --add b.qcow2 b1 || fail "second --add"
"$VDISK" bitmap --merge b0 b.qcow2 b1 || fail "--merge"
expect_fail "Operation add on bitmap b1 failed" "$VDISK" bitmap --add b.qcow2 b1
"$VDISK" bitmap --remove b.qcow2 b1 || fail "--remove"
[ "$(bitmaps b.qcow2)" = "b0:131072:auto" ] || fail "after --remove: $(bitmaps b.qcow2)"
qemu-img check -q b.qcow2 || fail "qemu-img check after bitmap operations"
echo ok
