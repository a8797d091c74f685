#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile cloop headers and offset tables (block sizes of zero, odd and
# huge, block counts up to 2^32-1, offsets decreasing, huge or past the
# end, corrupt zlib data, truncation): a clean error or a consistent result,
# never a crash, a hang, more than 256 MiB or a change to the file; a few
# verdicts as QEMU's.
. "$VDISK_SRC/tests/lib.sh"
need create_compressed_fs qemu-img

/usr/bin/python3 - <<'PY'
with open("src.raw", "wb") as f:
    f.truncate(1 << 20)
    for i in range(6):
        f.seek(i * 150000)
        f.write(bytes((i * 13 + j * j) & 0xff for j in range(9000)))
PY
create_compressed_fs -q -B 65536 src.raw good.cloop >/dev/null 2>&1 || fail "create_compressed_fs"
"$VDISK" convert -O raw good.cloop v.raw && same_content v.raw src.raw
/usr/bin/python3 - <<'PY'
import struct
g = bytearray(open("good.cloop", "rb").read())
def put(name, off, fmt, val, base=None, cut=None):
    d = bytearray(base if base is not None else g)
    struct.pack_into(fmt, d, off, val)
    if cut is not None:
        d = d[:cut]
    open(name, "wb").write(d)
for i, v in enumerate([0, 1, 511, 513, 64 << 20, (64 << 20) + 512, 1 << 31, 0xffffffff]):
    put("bs%d.cloop" % i, 128, ">I", v)
for i, v in enumerate([0, 1, 17, 1000, (8 << 20) - 1, 8 << 20, 0x1fffffff, 0xffffffff]):
    put("n%d.cloop" % i, 132, ">I", v)
# offsets: decreasing, huge, past the end, a zero-length block, the first one huge
put("dec.cloop", 136 + 8 * 3, ">Q", 200)
put("huge.cloop", 136 + 8 * 16, ">Q", (1 << 63))
put("past.cloop", 136 + 8 * 16, ">Q", len(g) + 100000)
put("empty.cloop", 136 + 8 * 2, ">Q", struct.unpack_from(">Q", g, 136 + 8)[0])
put("first.cloop", 136, ">Q", 0xffffffffffffff00)
put("big.cloop", 136 + 8 * 5, ">Q", struct.unpack_from(">Q", g, 136 + 8 * 4)[0] + (200 << 20))
# corrupt compressed data in block 2
o = struct.unpack_from(">Q", g, 136 + 16)[0]
b = bytearray(g); b[o + 2:o + 40] = b"\x55" * 38
open("zlib.cloop", "wb").write(b)
put("trunc1.cloop", 0, ">B", g[0], cut=140)
put("trunc2.cloop", 0, ">B", g[0], cut=len(g) - 3000)
put("trunc3.cloop", 0, ">B", g[0], cut=130)
PY
hostile_sweep cloop 25
same_verdict_as_qemu cloop bs0.cloop bs1.cloop bs5.cloop n7.cloop dec.cloop big.cloop
# damage inside a block is a read error, not a wrong answer
expect_fail "Input/output error" "$VDISK" convert -f cloop -O raw zlib.cloop out.raw
echo ok
