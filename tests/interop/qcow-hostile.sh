#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile qcow headers and tables (cluster and L2 bits, size, L1 offset,
# backing name, encryption method, garbage and compressed L2 entries): a
# clean error or a consistent result -- never a crash, a hang, more than
# 256 MiB, or a write to the image.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f qcow good.qcow 8M
qemu-io -c "write -P 1 0 20k" good.qcow >/dev/null
/usr/bin/python3 - <<'PY'
import struct
g = bytearray(open("good.qcow", "rb").read())
def put(name, off, fmt, val, base=None):
    d = bytearray(base if base is not None else g)
    struct.pack_into(fmt, d, off, val)
    open(name, "wb").write(d)
put("ver2.qcow", 4, ">I", 2)
put("ver0.qcow", 4, ">I", 0)
for i, v in enumerate([0, 8, 17, 63, 255]):
    put("cb%d.qcow" % i, 32, "B", v)
for i, v in enumerate([0, 5, 14, 255]):
    put("l2b%d.qcow" % i, 33, "B", v)
for i, v in enumerate([0, 1, 511, 1 << 62, 0xffffffffffffffff, 1 << 40]):
    put("size%d.qcow" % i, 24, ">Q", v)
for i, v in enumerate([1, 1 << 62, 0xffffffffffffffff, 7]):
    put("l1o%d.qcow" % i, 40, ">Q", v)
put("crypt1.qcow", 36, ">I", 1)
put("crypt2.qcow", 36, ">I", 2)
b = bytearray(g); struct.pack_into(">QI", b, 8, 48, 0xffffffff)
open("bf0.qcow", "wb").write(b)
b = bytearray(g); struct.pack_into(">QI", b, 8, 1 << 62, 100)
open("bf1.qcow", "wb").write(b)
# a 4 TiB image whose 1M L1 entries all name one empty 64 KiB L2 table
h = bytearray(48)
struct.pack_into(">IIQIIQBBHIQ", h, 0, 0x514649fb, 1, 0, 0, 0, 1 << 42, 9, 13, 0, 0, 48)
l1 = struct.pack(">Q", 9 << 20) * (1 << 20)
open("sametab.qcow", "wb").write(h + l1 + bytearray((9 << 20) + 65536 - 48 - len(l1)))
l1o = struct.unpack_from(">Q", g, 40)[0]
l2 = struct.unpack_from(">Q", g, l1o)[0]
for i, v in enumerate([1, 1 << 62, 0xffffffffffffffff, (1 << 63) | 100, (1 << 63) | (4095 << 51) | 48, 48, l2]):
    put("l1e%d.qcow" % i, l1o, ">Q", v)
    put("l2e%d.qcow" % i, l2, ">Q", v)
PY
hostile_sweep qcow 30
# a few results must match QEMU's verdict exactly
same_verdict_as_qemu qcow ver2.qcow cb0.qcow l2b0.qcow size0.qcow crypt2.qcow
echo ok
