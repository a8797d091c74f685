#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile vdi headers and block maps (block count and size, disk size,
# offsets, version, UUIDs, garbage and duplicate map entries, a wrong
# allocation count): a clean error or a consistent result -- never a crash,
# a hang, more than 256 MiB, or a write to the image.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f vdi good.vdi 8M
qemu-io -c "write -P 1 0 20k" -c "write -P 2 3M 4k" good.vdi >/dev/null
/usr/bin/python3 - <<'PY'
import struct
g = bytearray(open("good.vdi", "rb").read())
def put(name, off, fmt, val, base=None):
    d = bytearray(base if base is not None else g)
    struct.pack_into(fmt, d, off, val)
    open(name, "wb").write(d)
put("sig.vdi", 0x40, "<I", 0)
put("ver.vdi", 0x44, "<I", 0x00010000)
for i, v in enumerate([0, 1, 8, 0x3fffffff, 0x40000000, 0xffffffff]):
    put("blocks%d.vdi" % i, 0x180, "<I", v)
for i, v in enumerate([0, 512, 1 << 31, 0xffffffff]):
    put("bs%d.vdi" % i, 0x178, "<I", v)
for i, v in enumerate([0, 1, 1 << 50, 0xffffffffffffffff, 8 << 20 | 1]):
    put("ds%d.vdi" % i, 0x170, "<Q", v)
for i, v in enumerate([1, 0xfffffe00, 0]):
    put("bmap%d.vdi" % i, 0x154, "<I", v)
    put("data%d.vdi" % i, 0x158, "<I", v)
put("ss.vdi", 0x168, "<I", 4096)
put("allocated.vdi", 0x184, "<I", 0xffffffff)
put("allocated2.vdi", 0x184, "<I", 8)
put("parent.vdi", 0x1b8, "<I", 1)
put("link.vdi", 0x1a8, "<I", 1)
for i, v in enumerate([0, 1, 7, 8, 0x3ffffffe, 0xfffffffd]):
    put("e%d.vdi" % i, 0x200 + 4 * 5, "<I", v)
b = bytearray(g); struct.pack_into("<II", b, 0x180, 0x3fffffff, 0)
open("bigmap.vdi", "wb").write(b)
PY
n=0
for f in *.vdi; do
    [ "$f" = good.vdi ] && continue
    n=$((n + 1))
    sum=$(md5sum < "$f")
    for cmd in "info --output=json" "info -f vdi" "convert -f vdi -O raw" "map -f vdi --output=json" "check -f vdi --output=json"; do
        out="$cmd $f"; case $cmd in convert*) out="$cmd $f out.raw" ;; esac
        rc=0
        # at most 256 MiB and 20 s (tests/lib.sh)
        bounded "$VDISK" $out >stdout 2>stderr || rc=$?
        [ "$rc" -lt 124 ] || fail "$cmd $f: exit $rc (crash, hang or out of memory): $(cat stderr)"
        if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ] && [ "$rc" -ne 3 ]; then
            [ -s stderr ] || fail "$cmd $f: exit $rc without a message"
        fi
    done
    [ "$(md5sum < "$f")" = "$sum" ] || fail "reading $f changed it"
done
[ "$n" -gt 30 ] || fail "only $n hostile images"
# a few results must match QEMU's verdict exactly
for f in sig.vdi ver.vdi bs1.vdi ds2.vdi ss.vdi parent.vdi; do
    rc=0; "$VDISK" info -f vdi "$f" >/dev/null 2>&1 || rc=$?
    qrc=0; qemu-img info -f vdi "$f" >/dev/null 2>&1 || qrc=$?
    [ "$rc" = "$qrc" ] || fail "info $f: exit $rc, qemu-img $qrc"
done
echo ok
