#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Differencing VHDs (which QEMU reads as if they had no parent): a child
# built here by the specification -- footer type 4, parent UUID, unicode
# name and a W2ru (or MacX) locator, a block whose sector bitmap marks some
# sectors only -- reads as parent data where the bitmap bit is clear and
# child data where it is set; vdisk's writes into it set bitmap bits and
# allocate blocks with an empty bitmap; libyal's vhdiinfo accepts the file.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f vpc parent.vhd 8M
size=$(qemu-img info --output=json parent.vhd | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
qemu-io -f vpc -c "write -P 0x11 0 $size" -c 'write -P 0x22 2M 2M' parent.vhd >/dev/null

# mkchild.py LOCATOR: child.vhd over parent.vhd; expect.raw is its content
cat > mkchild.py <<'PY'
import struct, sys
loc = sys.argv[1]
p = open("parent.vhd", "rb").read()
footer = bytearray(p[:512])
size = struct.unpack_from(">Q", footer, 48)[0]
puuid = bytes(footer[68:84])
def csum(b, at):
    b[at:at + 4] = bytes(4)
    struct.pack_into(">I", b, at, (~sum(b)) & 0xffffffff)
struct.pack_into(">I", footer, 60, 4)                    # differencing
footer[68:84] = bytes(range(1, 17))                      # its own UUID
csum(footer, 64)
entries = (size + (2 << 20) - 1) >> 21
bat_off = 1536
bat_bytes = (entries * 4 + 511) & ~511
loc_off = bat_off + bat_bytes
dyn = bytearray(1024)
dyn[0:8] = b"cxsparse"
struct.pack_into(">QQII", dyn, 8, 0xffffffffffffffff, bat_off, 0x00010000, entries)
struct.pack_into(">I", dyn, 32, 2 << 20)
dyn[40:56] = puuid
name = "parent.vhd".encode("utf-16-be")
dyn[64:64 + len(name)] = name
if loc == "W2ru":
    data = ".\\parent.vhd".encode("utf-16-le")
else:
    data = b"file://./parent.vhd"
struct.pack_into(">4sIIIQ", dyn, 576, loc.encode(), 512, len(data), 0, loc_off)
csum(dyn, 36)
block0 = loc_off + 512
bitmap = bytearray(512)
child = bytearray(2 << 20)
set_sectors = [0, 1, 2, 9, 100, 101, 4095] + list(range(2000, 2100))
for s in set_sectors:
    bitmap[s // 8] |= 0x80 >> (s % 8)
    child[s * 512:(s + 1) * 512] = bytes([0xcc]) * 512
# sectors with a clear bit hold junk that must not be read
for s in range(4096):
    if s not in set_sectors:
        child[s * 512:(s + 1) * 512] = bytes([0xbd]) * 512
bat = bytearray(b"\xff" * bat_bytes)
struct.pack_into(">I", bat, 0, block0 // 512)
out = bytearray()
out += footer + dyn + bat
out += bytearray(loc_off - len(out)) + data + bytearray(512 - len(data))
out += bitmap + child + footer
open("child.vhd", "wb").write(out)
# what the child reads as
exp = bytearray(size)
exp[:] = bytes([0x11]) * size
exp[2 << 20:4 << 20] = bytes([0x22]) * (2 << 20)
for s in set_sectors:
    exp[s * 512:(s + 1) * 512] = bytes([0xcc]) * 512
open("expect.raw", "wb").write(exp)
PY

for loc in W2ru MacX; do
    /usr/bin/python3 mkchild.py $loc
    info=$("$VDISK" info --output=json child.vhd) || fail "vdisk info of a differencing VHD ($loc)"
    echo "$info" | grep -q '"backing-filename": "parent.vhd"' || fail "parent not found through $loc: $info"
    "$VDISK" convert -O raw child.vhd out.raw || fail "vdisk convert of a differencing VHD ($loc)"
    cmp -s out.raw expect.raw || fail "differencing VHD ($loc) reads wrongly"
done

# block status: child sectors are allocated in the top layer, the rest in the parent
"$VDISK_IO" -r -c 'alloc 0 1536' child.vhd | grep -q '^1536/1536 bytes allocated' || fail "alloc of child sectors"
"$VDISK_IO" -r -c 'alloc 1536 512' child.vhd | grep -q '^0/512 bytes allocated' || fail "alloc of parent sectors"

# writes: into a clear sector of an allocated block, and into a new block
"$VDISK_IO" -c 'write -P 0xee 1536 1024' -c 'write -P 0xdd 4M 4096' -c 'write -P 0xaa 6M 1M' child.vhd >/dev/null ||
    fail "writes into a differencing VHD"
qemu-io -f raw -c 'write -P 0xee 1536 1024' -c 'write -P 0xdd 4M 4096' -c 'write -P 0xaa 6M 1M' expect.raw >/dev/null
"$VDISK" convert -O raw child.vhd out.raw || fail "vdisk convert after writes"
cmp -s out.raw expect.raw || fail "differencing VHD reads wrongly after writes"
qemu-io -f vpc -r -c "read -P 0x11 0 2M" -c "read -P 0x22 2M 2M" -c "read -P 0x11 4M $((size - (4 << 20)))" parent.vhd >/dev/null ||
    fail "the parent was written to"
if command -v vhdiinfo >/dev/null; then
    out=$(vhdiinfo child.vhd) || fail "vhdiinfo rejects the differencing VHD: $out"
    echo "$out" | grep -qi 'Differential' || fail "vhdiinfo: $out"
fi
echo ok
