#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile VHDs (max table entries, block size, header and table offsets,
# checksums, geometry and sizes, garbage BAT entries, differencing disks
# naming absent parents): a clean error or a consistent result -- never a
# crash, a hang, more than 256 MiB, or a write to the image.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f vpc good.vpc 8M
qemu-io -c "write -P 1 0 20k" good.vpc >/dev/null
/usr/bin/python3 - <<'PY'
import struct
g = bytearray(open("good.vpc", "rb").read())
def fix(d):
    d[64:68] = bytes(4)
    struct.pack_into(">I", d, 64, (~sum(d[:512])) & 0xffffffff)
    if d[-512:-504] == b"conectix":
        d[-512:] = d[:512]
    return d
def put(name, off, fmt, val, base=None, footer=True):
    d = bytearray(base if base is not None else g)
    struct.pack_into(fmt, d, off, val)
    if footer:
        fix(d)
    open(name, "wb").write(d)
put("csum.vpc", 64, ">I", 0x12345678, footer=False)
for i, v in enumerate([0, 1 << 40, 0xffffffffffffffff, 511]):
    put("doff%d.vpc" % i, 16, ">Q", v)
put("chs.vpc", 56, ">I", 0xffff10ff)
b = bytearray(g); b[28:32] = b"win "
for i, v in enumerate([0, 1 << 62, 0xffffffffffffffff, 2041 << 30]):
    put("cur%d.vpc" % i, 48, ">Q", v, b)
for i, v in enumerate([0, 1, 0x7f000006, 0xffffffff, 1 << 24]):
    put("mte%d.vpc" % i, 512 + 28, ">I", v)
for i, v in enumerate([0, 3, 256, 1 << 31, 0xffffffff, 512]):
    put("bsz%d.vpc" % i, 512 + 32, ">I", v)
for i, v in enumerate([0, 1 << 62, 0xffffffffffffffff, 511]):
    put("toff%d.vpc" % i, 512 + 16, ">Q", v)
put("magic.vpc", 512, ">Q", 0)
for i, v in enumerate([0, 1, 0xfffffffe, 5, 3]):
    put("bat%d.vpc" % i, 1536 + 4, ">I", v)
# differencing disks: parent locators naming nothing usable
b = bytearray(g); struct.pack_into(">I", b, 60, 4)
put("diff0.vpc", 512 + 576, ">I", 0x57327275, b)
b2 = bytearray(b); struct.pack_into(">IIIIQ", b2, 512 + 576, 0x57327275, 1, 0xffffffff, 0, 1 << 60)
put("diff1.vpc", 512 + 64, ">H", 0x61, b2)
b3 = bytearray(b); struct.pack_into(">IIIIQ", b3, 512 + 576, 0x57327275, 1, 12, 0, 2048)
b3[2048:2060] = "nofile.vhd".encode("utf-16-le")[:12]
put("diff2.vpc", 512 + 64, ">H", 0xd800, b3)
# a fixed disk footer at the end only
f = bytearray(512 * 8) + bytearray(g[:512]); struct.pack_into(">IQ", f, 4096 + 60, 2, 0)
struct.pack_into(">Q", f, 4096 + 16, 0xffffffffffffffff)
put("fixed.vpc", 4096 + 48, ">Q", 1 << 62, f, footer=False)
PY
hostile_sweep vpc 30
# a few results must match QEMU's verdict exactly
same_verdict_as_qemu vpc csum.vpc bsz0.vpc magic.vpc mte3.vpc doff1.vpc
# a block size above 256 MiB is refused (QEMU takes any power of two; one
# allocation would then grow the file by gigabytes)
expect_fail "Invalid block size" "$VDISK" info bsz3.vpc
echo ok
