#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile VHDX images (truncated headers, bad CRCs, equal sequence numbers
# (valid only when both headers are identical, as Disk2VHD writes them),
# region table entries past the end of the file, absurd BAT sizes, block
# sizes of 0 or not a power of two, bad sector and disk sizes, a parent, a
# pending log, BAT entries past the end or in bad states): a clean error or
# a consistent result, never a crash, a hang, more than 256 MiB or a change
# to the file (tests/lib.sh hostile_sweep); a few verdicts as QEMU's.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f vhdx -o block_size=1M,log_size=1M good.vhdx 8M
qemu-io -f vhdx -c "write -P 7 0 1536k" -c "write -P 9 7M 4k" good.vhdx >/dev/null
"$VDISK" convert -O raw good.vhdx v.raw && qemu-img convert -O raw good.vhdx q.raw
same_content v.raw q.raw
/usr/bin/python3 - <<'PY'
import struct
g = bytes(open("good.vhdx", "rb").read())
T = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    T.append(c)
def crc(b):
    c = 0xFFFFFFFF
    for x in b:
        c = T[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
def fix(d, off, size):
    struct.pack_into("<I", d, off + 4, 0)
    struct.pack_into("<I", d, off + 4, crc(bytes(d[off:off + size])))
H1, H2, RT = 64 << 10, 128 << 10, 192 << 10
# the current header's location of regions
regions = {}
for i in range(struct.unpack_from("<I", g, RT + 8)[0]):
    e = RT + 16 + 32 * i
    regions[g[e:e + 4]] = (e, struct.unpack_from("<Q", g, e + 16)[0])
bat_e, bat = regions[bytes.fromhex("6677c22d")]
meta_e, meta = regions[bytes.fromhex("06a27c8b")]
# metadata items by their GUID's first 4 bytes
items = {}
for i in range(struct.unpack_from("<H", g, meta + 10)[0]):
    e = meta + 32 + 32 * i
    items[g[e:e + 4]] = (e, meta + struct.unpack_from("<I", g, e + 16)[0])
params = items[bytes.fromhex("3767a1ca")][1]
dsize = items[bytes.fromhex("2442a52f")][1]
lsect = items[bytes.fromhex("1dbf4181")][1]
psect = items[bytes.fromhex("c748a3cd")][1]
def mk(name, edits, refix=True, cut=None):
    d = bytearray(g)
    for off, fmt, val in edits:
        struct.pack_into(fmt, d, off, val)
    if refix:
        fix(d, H1, 4096); fix(d, H2, 4096); fix(d, RT, 65536)
    if cut is not None:
        d = d[:cut]
    open(name + ".vhdx", "wb").write(d)
for i, c in enumerate([100, 70000, 140000, 200000, (1 << 20) + 5, bat + 8, len(g) - 4096]):
    mk("trunc%d" % i, [], cut=c)
mk("sig", [(0, "<B", ord("X"))])
mk("crc1", [(H1 + 4, "<I", 1)], refix=False)
mk("crcboth", [(H1 + 4, "<I", 1), (H2 + 4, "<I", 1)], refix=False)
mk("crcrt", [(RT + 4, "<I", 1)], refix=False)
mk("seqeq", [(H1 + 8, "<Q", 5), (H2 + 8, "<Q", 5)])
mk("ver2", [(H1 + 66, "<H", 2), (H2 + 66, "<H", 2)])
mk("log", [(H1 + 48, "<Q", 0x1234), (H2 + 48, "<Q", 0x1234)])
for i, v in enumerate([0, 5000, 0xFFFFFFFF]):
    mk("rtcount%d" % i, [(RT + 8, "<I", v)])
for i, v in enumerate([0, 4096, len(g), len(g) - (1 << 20), 1 << 62, (1 << 64) - 1]):
    mk("batoff%d" % i, [(bat_e + 16, "<Q", v)])
    mk("metaoff%d" % i, [(meta_e + 16, "<Q", v)])
for i, v in enumerate([0, 8, 0xFFFFFFFF, 0x7FFFFFFF]):
    mk("batlen%d" % i, [(bat_e + 24, "<I", v)])
    mk("metalen%d" % i, [(meta_e + 24, "<I", v)])
mk("overlap", [(bat_e + 16, "<Q", meta)])
mk("unknownreq", [(bat_e, "<B", 0x99), (bat_e + 28, "<I", 1)])
for i, v in enumerate([0, 1, 512, 3 << 20, 512 << 20, 0x80000000, 0xFFFFFFFF]):
    mk("bs%d" % i, [(params, "<I", v)])
mk("parent", [(params + 4, "<I", 2)])
for i, v in enumerate([0, 1, 1000, 4097, 1 << 46, 1 << 63, (1 << 64) - 1]):
    mk("dsize%d" % i, [(dsize, "<Q", v)])
for i, v in enumerate([0, 1000, 0xFFFFFFFF]):
    mk("lsect%d" % i, [(lsect, "<I", v)])
    mk("psect%d" % i, [(psect, "<I", v)])
mk("lsect4k", [(lsect, "<I", 4096)])
mk("metacount", [(meta + 10, "<H", 5000)])
mk("metasig", [(meta, "<B", 0)])
for k, (e, _) in enumerate(items.values()):
    mk("itemoff%d" % k, [(e + 16, "<I", 0xFFFFFF00)])
    mk("itemlen%d" % k, [(e + 20, "<I", 0)])
for i, v in enumerate([(1 << 20) * 1000 | 6, 6, 7, 4, 5, (1 << 64) - 1, (1 << 20) | 6]):
    mk("batent%d" % i, [(bat, "<Q", v)])
# two identical headers (same sequence number), as Disk2VHD writes them
d = bytearray(g)
d[H2:H2 + 4096] = d[H1:H1 + 4096]
open("twin.vhdx", "wb").write(d)
PY
hostile_sweep vhdx 70
for f in sig crcboth crcrt seqeq ver2 rtcount1 batoff2 batlen1 bs0 bs3 parent dsize0 \
    lsect1 metasig batent0 batent2 trunc1 trunc3; do
    expect_fail "" "$VDISK" info -f vhdx "$f.vhdx"
done
"$VDISK" convert -O raw crc1.vhdx v.raw || fail "one valid header must do"
same_content v.raw q.raw
# identical headers are valid (QEMU's iotest 070: a Disk2VHD image); vdisk's
# next metadata update moves on to the other header
"$VDISK" convert -O raw twin.vhdx v.raw || fail "two identical headers must open"
same_content v.raw q.raw
cp twin.vhdx tw.vhdx
"$VDISK_IO" -c "write -P 5 6M 64k" tw.vhdx >/dev/null || fail "write to twin headers"
qemu-img check -q tw.vhdx || fail "qemu-img check after a write to twin headers"
qemu-io -r -f vhdx -c "read -P 5 6M 64k" -c "read -P 7 0 1536k" tw.vhdx | grep -c "^read" |
    grep -qx 2 || fail "QEMU reads the twin-header image wrongly after vdisk's write"
# a log GUID with no valid entry in the log: both open it
"$VDISK" info log.vhdx >/dev/null || fail "an empty log must open"
expect_fail "differencing" "$VDISK" info parent.vhdx
same_verdict_as_qemu vhdx sig.vhdx crc1.vhdx crcboth.vhdx seqeq.vhdx ver2.vhdx bs0.vhdx bs3.vhdx \
    parent.vhdx dsize0.vhdx batent0.vhdx batent6.vhdx lsect4k.vhdx psect1.vhdx itemlen0.vhdx \
    trunc1.vhdx log.vhdx twin.vhdx
echo ok
