#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
# Add a Parallels Format Extension cluster (docs/interop/parallels.txt) with
# one dirty bitmap to an image, for tests (QEMU 7.2 cannot write one).
# usage: parallels-ext.py IMG UUIDHEX [--bad-md5]
import hashlib, struct, sys
# The bitmap has granularity 1 sector; its L1 entries cycle through 0 (clean),
# 1 (all dirty) and two data clusters of a fixed bit pattern.
img = sys.argv[1]
d = bytearray(open(img, "rb").read())
tracks = struct.unpack_from("<I", d, 28)[0]
nb_sectors = struct.unpack_from("<Q", d, 36)[0]
cs = tracks * 512
end = (len(d) + cs - 1) // cs * cs
d += b"\0" * (end - len(d))
ext_off = len(d)
d += b"\0" * cs
nbits = nb_sectors
ser = (nbits + 63) // 64 * 8
l1 = (ser + cs - 1) // cs
entries = []
for i in range(l1):
    k = i % 4
    if k == 0:
        entries.append(0)
    elif k == 1:
        entries.append(1)
    else:
        off = len(d)
        pat = bytes(((j * 37 + i) ^ (j >> 3)) & 0xff for j in range(cs))
        d += pat
        entries.append(off // 512)
feat = struct.pack("<Q16sII", nb_sectors, bytes.fromhex(sys.argv[2]), 1, l1)
feat += b"".join(struct.pack("<Q", e) for e in entries)
c = bytearray(cs)
pos = 24
struct.pack_into("<QQII", c, pos, 0x20385FAE252CB34A, 0, len(feat), 0)
pos += 24
c[pos:pos + len(feat)] = feat
pos += (len(feat) + 7) // 8 * 8
struct.pack_into("<QQII", c, pos, 0, 0, 0, 0)
struct.pack_into("<Q", c, 0, 0xAB234CEF23DCEA87)
c[8:24] = hashlib.md5(bytes(c[24:])).digest()
if "--bad-md5" in sys.argv:
    c[8] ^= 1
d[ext_off:ext_off + cs] = c
struct.pack_into("<Q", d, 56, ext_off // 512)
open(img, "wb").write(d)
