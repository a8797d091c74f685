#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile parallels headers, BATs and Format Extensions (tracks of zero and
# huge, BAT sizes, disk sizes, BAT entries past the end or duplicated,
# extension offsets, feature flags and sizes, bitmap sizes, granularities
# and L1 tables, truncation): a clean error or a consistent result, never a
# crash, a hang, more than 256 MiB or a change to the file; writes to
# copies of them end cleanly too; a few verdicts as QEMU's.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f parallels -o cluster_size=4k good.hds 8M
qemu-io -c "write -P 1 0 20k" -c "write -P 2 3M 4k" good.hds >/dev/null
/usr/bin/python3 - <<'PY'
import hashlib, struct
g = bytearray(open("good.hds", "rb").read())
def put(name, off, fmt, val, base=None, cut=None):
    d = bytearray(base if base is not None else g)
    struct.pack_into(fmt, d, off, val)
    if cut is not None:
        d = d[:cut]
    open(name, "wb").write(d)
put("magic.hds", 0, "<B", ord("X"))
put("ver.hds", 16, "<I", 3)
for i, v in enumerate([0, 1, 63, 0x7fffffff // 513, 0x7fffffff // 513 + 1, 0xffffffff]):
    put("tracks%d.hds" % i, 28, "<I", v)
for i, v in enumerate([0, 1, 1 << 20, (16 << 20) + 1, 0x7fffffff, 0xffffffff]):
    put("bat%d.hds" % i, 32, "<I", v)
for i, v in enumerate([0, 1, 1 << 40, 1 << 63, (1 << 64) - 1]):
    put("size%d.hds" % i, 36, "<Q", v)
put("inuse.hds", 44, "<I", 0x746F6E59)
for i, v in enumerate([0, 1, 0xffffffff]):
    put("dataoff%d.hds" % i, 48, "<I", v)
for i, v in enumerate([0xffffffff, 0x7fffffff, 1, 0]):
    put("entry%d.hds" % i, 64 + 4 * 3, "<I", v)
d = bytearray(g); d[64:72] = struct.pack("<II", 2, 2)
open("dup.hds", "wb").write(d)
v1 = bytearray(g); v1[0:16] = b"WithoutFreeSpace"
open("v1.hds", "wb").write(v1)
put("v1big.hds", 36, "<Q", (1 << 40) + 16384, base=v1)
for i, v in enumerate([1, 1 << 40, (1 << 64) - 1, 8]):
    put("extoff%d.hds" % i, 56, "<Q", v)
put("trunc1.hds", 0, "<B", g[0], cut=60)
put("trunc2.hds", 0, "<B", g[0], cut=70)

# Format Extensions with a valid checksum and bad contents
cs = 4096
nb = struct.unpack_from("<Q", g, 36)[0]
def ext(name, features, magic=0xAB234CEF23DCEA87):
    d = bytearray(g)
    d += b"\0" * ((-len(d)) % cs)
    off = len(d)
    c = bytearray(cs)
    struct.pack_into("<Q", c, 0, magic)
    pos = 24
    for f in features:
        c[pos:pos + len(f)] = f[:cs - pos]
        pos += (len(f) + 7) // 8 * 8
    c[8:24] = hashlib.md5(bytes(c[24:])).digest()
    d += c
    d += bytes(range(256)) * (cs // 256)  # one data cluster for L1 entries
    struct.pack_into("<Q", d, 56, off // 512)
    open(name, "wb").write(d)
def fh(magic, size, flags=0):
    return struct.pack("<QQII", magic, flags, size, 0)
BM = 0x20385FAE252CB34A
def bm(size=nb, gran=8, l1=None, entries=None):
    ser = ((size * 512 // (gran * 512 or 1)) + 63) // 64 * 8 if gran else 8
    l1 = l1 if l1 is not None else max(1, (ser + cs - 1) // cs)
    entries = entries if entries is not None else [0] * l1
    body = struct.pack("<Q16sII", size, b"\x11" * 16, gran, l1) + b"".join(struct.pack("<Q", e) for e in entries)
    return fh(BM, len(body)) + body
END = fh(0, 0)
ext("ext-ok.hds", [bm(), END])
ext("ext-magic.hds", [END], magic=1)
ext("ext-flags.hds", [fh(BM, 0, flags=1), END])
ext("ext-unknown.hds", [fh(0x1234, 8) + b"\0" * 8, END])
ext("ext-dsize.hds", [fh(BM, 0xfffffff0), END])
ext("ext-noend.hds", [bm()] * 200)
ext("ext-size.hds", [bm(size=nb + 1), END])
ext("ext-gran0.hds", [bm(gran=0), END])
ext("ext-gran3.hds", [bm(gran=3), END])
ext("ext-granbig.hds", [bm(gran=1 << 31), END])
ext("ext-l1.hds", [bm(l1=0xffffffff, entries=[0]), END])
ext("ext-l1b.hds", [bm(l1=5, entries=[0] * 5), END])
ext("ext-entries.hds", [bm(entries=[1]), END])
ext("ext-entryeof.hds", [bm(entries=[1 << 40]), END])
ext("ext-entryhuge.hds", [bm(entries=[(1 << 64) - 1]), END])
ext("ext-many.hds", [bm()] * 20 + [END])
d = bytearray(open("ext-ok.hds", "rb").read()); d[len(g) + 100] ^= 1
open("ext-md5.hds", "wb").write(d)
PY
hostile_sweep hds 50
# writes to them (on copies): a result or a clean error, never a crash or hang
for f in *.hds; do
    cp "$f" w.img
    rc=0
    bounded "$VDISK_IO" -f parallels -c "write -P 5 0 64k" -c "write -P 6 3M 4k" \
        -c "write -P 7 7M 8k" w.img >stdout 2>stderr || rc=$?
    [ "$rc" -lt 124 ] || fail "writing to $f: exit $rc: $(cat stderr)"
    # (vdisk-io, like qemu-io, reports a failed command on stdout)
    [ "$rc" -eq 0 ] || [ -s stdout ] || [ -s stderr ] || fail "writing to $f failed without a message"
done
# (QEMU 7.2 aborts on a granularity that is not a power of two: ext-gran3)
same_verdict_as_qemu parallels magic.hds ver.hds tracks0.hds tracks4.hds bat5.hds \
    ext-ok.hds ext-magic.hds ext-md5.hds ext-flags.hds ext-unknown.hds ext-size.hds \
    ext-l1b.hds
echo ok
