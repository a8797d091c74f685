#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile qed headers and tables (cluster and table sizes, image size,
# offsets, feature bits, backing name, garbage table entries): vdisk info,
# convert, map and check end with a clean error or a consistent result --
# never a crash, a hang, more than 256 MiB, or a write to the image.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f qed -o cluster_size=4k,table_size=2 good.qed 8M
qemu-io -c 'write -P 1 0 20k' -c 'write -z 64k 8k' good.qed >/dev/null
/usr/bin/python3 - <<'PY'
import struct
g = bytearray(open("good.qed", "rb").read())
def put(name, off, fmt, val, base=None):
    d = bytearray(base if base is not None else g)
    struct.pack_into(fmt, d, off, val)
    open(name, "wb").write(d)
for i, v in enumerate([0, 3, 512, 1 << 31, 128 << 20, 64 << 20, 0xffffffff]):
    put("cs%d.qed" % i, 4, "<I", v)
for i, v in enumerate([0, 3, 32, 1 << 31, 0xffffffff]):
    put("ts%d.qed" % i, 8, "<I", v)
for i, v in enumerate([0, 0xffffffff, 1 << 20]):
    put("hs%d.qed" % i, 12, "<I", v)
put("feat.qed", 16, "<Q", 1 << 40)
put("nc.qed", 16, "<Q", 2)
for i, v in enumerate([0, 1, 4097, 1 << 62, 0xfffffffffffff000, 4096 * 1000]):
    put("l1_%d.qed" % i, 40, "<Q", v)
for i, v in enumerate([1, 1 << 62, 0xffffffffffffffff, 1 << 50]):
    put("size%d.qed" % i, 48, "<Q", v)
b = bytearray(g); struct.pack_into("<QII", b, 16, 1, 0, 0)
put("bf0.qed", 56, "<I", 0xfffffff0, b)
put("bf1.qed", 60, "<I", 0xfffffff0, b)
put("bf2.qed", 60, "<I", 4000, b)
# huge tables for a zero-size image (allowed by QEMU's wrapping maximum)
b = bytearray(g); struct.pack_into("<IIIQ", b, 4, 64 << 20, 16, 1, 0); struct.pack_into("<QQ", b, 40, 64 << 20, 0)
open("bigtab.qed", "wb").write(b)
# garbage in L1 and L2
l1 = struct.unpack_from("<Q", g, 40)[0]
l2 = struct.unpack_from("<Q", g, l1)[0]
for i, v in enumerate([1, 4097, 1 << 60, 0xffffffffffffffff, 4096]):
    put("l1e%d.qed" % i, l1, "<Q", v)
    put("l2e%d.qed" % i, l2, "<Q", v)
    put("l2f%d.qed" % i, l2 + 8, "<Q", v)
# every L1 entry naming one empty 1 MiB L2 table of a 1 PiB image: a walk
# of the image must not scan that table once per entry (or it takes hours)
b = bytearray(65536 * 18)
struct.pack_into("<IIIIQQQQQ", b, 0, 0x00444551, 65536, 16, 1, 0, 0, 0, 65536, 1 << 50)
for i in range(131072):
    struct.pack_into("<Q", b, 65536 + 8 * i, 65536 * 17)
open("sametab.qed", "wb").write(b)
b2 = bytearray(b) + bytearray(b"\x01\0\0\0\0\0\0\0" * 131072)
b2 = b2[:65536 * 17] + b2[65536 * 18:]
open("samezero.qed", "wb").write(b2)
# an L2 table and the L1 table sharing clusters; L2 pointing at itself
put("share.qed", l1, "<Q", l1)
put("self.qed", l2, "<Q", l2)
PY
hostile_sweep qed 40
# a few results must match QEMU's verdict exactly
same_verdict_as_qemu qed cs0.qed ts2.qed feat.qed l1_0.qed size0.qed

# a contiguous run whose later entries point past the end of the file: every
# entry of the run is checked, not only the first (reads and writes refuse
# it; a write there would share the cluster with the next allocation)
qemu-img create -q -f qed -o cluster_size=4k run.qed 1M
qemu-io -c 'write -P 1 0 4k' -c 'write -P 1 4k 4k' run.qed >/dev/null
/usr/bin/python3 - <<'PY'
import os, struct
d = bytearray(open("run.qed", "rb").read())
l1 = struct.unpack_from("<Q", d, 40)[0]
l2 = struct.unpack_from("<Q", d, l1)[0]
x = struct.unpack_from("<Q", d, l2 + 8)[0]
assert x + 4096 == len(d), (x, len(d))
struct.pack_into("<Q", d, l2 + 16, x + 4096)
open("run.qed", "wb").write(d)
PY
cp run.qed run.orig
expect_fail "read failed" "$VDISK_IO" -c "read 4k 8k" run.qed
same_content run.qed run.orig
size=$(stat -c %s run.qed)
expect_fail "write failed" "$VDISK_IO" -c "write -P 5 4k 8k" run.qed
[ "$(stat -c %s run.qed)" = "$size" ] || fail "a write went past the end of run.qed"
"$VDISK_IO" -c 'read -P 1 0 4k' run.qed >/dev/null || fail "the valid first cluster of the run"
echo ok
