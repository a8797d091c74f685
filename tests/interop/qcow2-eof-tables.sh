#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qcow2 tables that point past the end of the file (and a bitmap directory
# naming one bitmap twice): an L1 or refcount
# table is refused at open (it would be read whole, up to 32 MiB, from a
# file of one cluster); a refcount block past the end is refused for
# writing (it would be written back there, growing a sparse file to any
# size) until `vdisk check -r all` rebuilds the refcounts.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

qemu-img create -q -f qcow2 good.qcow2 64M
qemu-io -c 'write -P 1 0 64k' good.qcow2 >/dev/null 2>&1 || "$VDISK_IO" -c 'write -P 1 0 64k' good.qcow2 >/dev/null
/usr/bin/python3 - <<'PY'
import struct
g = bytearray(open("good.qcow2", "rb").read())
def put(name, off, fmt, val):
    d = bytearray(g); struct.pack_into(fmt, d, off, val); open(name, "wb").write(d)
far = 1 << 40
put("l1.qcow2", 40, ">Q", far)                       # L1 table offset
put("rt.qcow2", 48, ">Q", far)                       # refcount table offset
rt = struct.unpack_from(">Q", g, 48)[0]
put("rb.qcow2", rt, ">Q", far)                       # refcount block 0
PY
for f in l1 rt; do
    cp $f.qcow2 $f.orig
    expect_fail "past the end of the file" bounded "$VDISK" info $f.qcow2
    same_content $f.qcow2 $f.orig
done

cp rb.qcow2 rb.orig
expect_fail "past the end of the file" bounded "$VDISK_IO" -c 'write -P 2 1M 64k' rb.qcow2
same_content rb.qcow2 rb.orig
# reading still works, and check sees the damage
"$VDISK_IO" -r -c 'read -P 1 0 64k' rb.qcow2 >/dev/null || fail "read of rb.qcow2"
expect_exit 2 "$VDISK" check rb.qcow2
bounded "$VDISK" check -q -r all rb.qcow2 || fail "check -r all rb.qcow2"
[ "$(stat -c %s rb.qcow2)" -lt $((64 << 20)) ] || fail "repair grew rb.qcow2"
qemu-img check rb.qcow2 >/dev/null || fail "qemu-img check after the repair"
"$VDISK_IO" -c 'write -P 2 1M 64k' rb.qcow2 >/dev/null || fail "write after the repair"
qemu-io -r -c 'read -P 1 0 64k' -c 'read -P 2 1M 64k' rb.qcow2 >/dev/null || fail "content"

# two bitmaps of one name (the duplicate check sorts the names; it used to
# compare every pair)
qemu-img create -q -f qcow2 dup.qcow2 16M
qemu-img bitmap --add dup.qcow2 bmAA
qemu-img bitmap --add dup.qcow2 bmAB
/usr/bin/python3 -c "
d = open('dup.qcow2', 'rb').read(); i = d.rfind(b'bmAB'); assert i > 0
open('dup.qcow2', 'wb').write(d[:i] + b'bmAA' + d[i + 4:])"
expect_fail "Bitmap already exists: bmAA" "$VDISK" info dup.qcow2
echo ok
