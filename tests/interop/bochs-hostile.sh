#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile bochs headers and catalogs (catalog sizes, extent sizes of zero
# and odd, bitmap sizes, disk sizes, header sizes, catalog entries past the
# end, truncation): a clean error or a consistent result, never a crash, a
# hang, more than 256 MiB or a change to the file (tests/lib.sh
# hostile_sweep); a few verdicts as QEMU's.
. "$VDISK_SRC/tests/lib.sh"
need bximage qemu-img

/usr/bin/python3 - <<'PY'
with open("src.raw", "wb") as f:
    f.truncate(4 << 20)
    for i in range(8):
        f.seek(i * 300000)
        f.write(bytes((i * 7 + j) & 0xff for j in range(5000)))
PY
bximage -func=convert -imgmode=growing -q src.raw good.bochs >/dev/null 2>&1 || fail "bximage"
"$VDISK" convert -O raw good.bochs v.raw && same_content v.raw src.raw
/usr/bin/python3 - <<'PY'
import struct
g = bytearray(open("good.bochs", "rb").read())
def put(name, off, fmt, val, base=None, cut=None):
    d = bytearray(base if base is not None else g)
    struct.pack_into(fmt, d, off, val)
    if cut is not None:
        d = d[:cut]
    open(name, "wb").write(d)
put("magic.bochs", 0, "<B", ord("X"))
put("type.bochs", 32, "<8s", b"Undoable")
put("ver0.bochs", 64, "<I", 0)
put("ver3.bochs", 64, "<I", 0x00030000)
for i, v in enumerate([0, 1, 511, 1 << 20, 0xffffffff]):
    put("hdr%d.bochs" % i, 68, "<I", v)
for i, v in enumerate([0, 1, 255, 4 << 20, (4 << 20) + 1, 0xffffffff]):
    put("cat%d.bochs" % i, 72, "<I", v)
for i, v in enumerate([0, 1, 3, 65537, 0xffffffff]):
    put("bitmap%d.bochs" % i, 76, "<I", v)
for i, v in enumerate([0, 1, 511, 513, 8 << 20, (8 << 20) + 512, 0x80000000, 0xffffffff]):
    put("extent%d.bochs" % i, 80, "<I", v)
for i, v in enumerate([0, 1, 511, 1 << 40, 1 << 63, (1 << 64) - 1]):
    put("disk%d.bochs" % i, 88, "<Q", v)
# version 1 layout: disk size at 84
put("v1.bochs", 64, "<I", 0x00010000)
# catalog entries: past the end, huge, duplicate, the bitmap all set
for i, v in enumerate([0xfffffffe, 0x7fffffff, 1000, 0]):
    put("entry%d.bochs" % i, 512, "<I", v)
b = bytearray(g); b[512 + 1024 * 4:512 + 1024 * 4 + 4] = b"\xff" * 4
open("bits.bochs", "wb").write(b)
put("trunc1.bochs", 0, "<B", g[0], cut=600)
put("trunc2.bochs", 0, "<B", g[0], cut=len(g) - 10000)
put("trunc3.bochs", 0, "<B", g[0], cut=100)
PY
hostile_sweep bochs 40
same_verdict_as_qemu bochs magic.bochs ver3.bochs extent0.bochs extent1.bochs extent6.bochs \
    cat1.bochs cat4.bochs disk3.bochs
echo ok
