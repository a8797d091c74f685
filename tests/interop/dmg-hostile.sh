#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile dmg trailers, property lists, resource forks and chunk tables
# (fork and plist offsets and lengths, malformed XML and base64, chunk
# counts, sector counts and lengths over the caps, offsets past the end,
# overlapping and overflowing sector ranges, corrupt zlib/bzip2 data,
# truncation): a clean error or a consistent result, never a crash, a hang,
# more than 256 MiB or a change to the file; a few verdicts as QEMU's.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img
gen() { /usr/bin/python3 "$VDISK_SRC/tests/helpers/dmg-gen.py" "$@" >/dev/null; }

/usr/bin/python3 - <<'PY'
with open("src.raw", "wb") as f:
    f.truncate(2 << 20)
    for i in range(6):
        f.seek(i * 350000)
        f.write(bytes((i * 11 + j * 3) & 0xff for j in range(40000)))
PY
gen src.raw good.dmg --seed 2
gen src.raw rsrc.img --rsrc --seed 2
"$VDISK" convert -f dmg -O raw good.dmg v.raw && same_content v.raw src.raw
/usr/bin/python3 - <<'PY'
import base64, re, struct
g = bytes(open("good.dmg", "rb").read())
r = bytes(open("rsrc.img", "rb").read())
k = len(g) - 512
xml_off, xml_len = struct.unpack_from(">QQ", g, k + 0xD8)
data = g[:xml_off]
xml = g[xml_off:xml_off + xml_len]
koly = bytearray(g[k:])

def put(name, off, fmt, val, base=g, cut=None):
    d = bytearray(base)
    struct.pack_into(fmt, d, off, val)
    if cut is not None:
        d = d[:cut]
    open(name, "wb").write(d)

def with_xml(name, x, kfix=None):
    kk = bytearray(koly)
    struct.pack_into(">QQ", kk, 0xD8, len(data), len(x))
    if kfix:
        kfix(kk)
    open(name, "wb").write(data + x + kk)

blocks = [base64.b64decode(re.sub(rb"\s", b"", m)) for m in re.findall(rb"<data>(.*?)</data>", xml, re.S)]
def with_mish(name, fix, which=0):
    bl = [bytearray(b) for b in blocks]
    fix(bl[which])
    x = xml
    parts = re.split(rb"(<data>.*?</data>)", xml, flags=re.S)
    out, i = b"", 0
    for p in parts:
        if p.startswith(b"<data>"):
            out += b"<data>" + base64.b64encode(bytes(bl[i])) + b"</data>"
            i += 1
        else:
            out += p
    with_xml(name, out)

def chunk(idx, off, fmt, val):
    def f(m):
        struct.pack_into(fmt, m, 204 + 40 * idx + off, val)
    return f

# trailer
put("nokoly.dmg", k, "4s", b"xxxx")
put("small.dmg", 0, "B", 0, cut=300)
put("dfo.dmg", k + 0x18, ">Q", k + 1)
for i, v in enumerate([0, 1, xml_off, xml_len + 1, 1 << 40, (1 << 64) - 1]):
    put("xlen%d.dmg" % i, k + 0xE0, ">Q", v)
for i, v in enumerate([k, k - 1, 1 << 62, (1 << 64) - 1]):
    put("xoff%d.dmg" % i, k + 0xD8, ">Q", v)
for i, v in enumerate([1, 16, k]):
    put("rlen%d.dmg" % i, k + 0x30, ">Q", v)
for i, v in enumerate([0, 100, 1 << 55, 1 << 60, (1 << 64) - 1]):
    put("sectors%d.dmg" % i, k + 0x1EC, ">Q", v)
# property list text
with_xml("nodata.dmg", xml.replace(b"</data>", b"</dat>", 1))
with_xml("b64.dmg", xml.replace(b"<data>", b"<data>!!@@", 1))
with_xml("empty.dmg", b"<plist></plist>")
with_xml("opendata.dmg", xml[:xml.index(b"<data>") + 20])
# mish blocks and chunks
with_mish("count0.dmg", lambda m: struct.pack_into(">I", m, 200, 0))
with_mish("countbig.dmg", lambda m: struct.pack_into(">I", m, 200, 0xffffffff))
with_mish("magic.dmg", lambda m: struct.pack_into(">I", m, 0, 0))
with_mish("first.dmg", lambda m: struct.pack_into(">Q", m, 8, (1 << 64) - 2))
with_mish("dataoff.dmg", lambda m: struct.pack_into(">Q", m, 0x18, (1 << 64) - 1))
with_mish("short.dmg", lambda m: m.__delitem__(slice(210, None)))
for n in range(4):
    with_mish("type%d.dmg" % n, chunk(n, 0, ">I", [0x80000004, 0x80000007, 0x12345678, 0x80000005][n]))
    with_mish("scount%d.dmg" % n, chunk(n, 16, ">Q", [0, 131073, 1 << 40, (1 << 64) - 1][n]))
    with_mish("len%d.dmg" % n, chunk(n, 32, ">Q", [0, (64 << 20) + 1, 1 << 40, (1 << 64) - 1][n]))
    with_mish("coff%d.dmg" % n, chunk(n, 24, ">Q", [len(g), 1 << 40, (1 << 64) - 10, 0][n]))
    with_mish("sector%d.dmg" % n, chunk(n, 8, ">Q", [0, 1, 1 << 60, (1 << 64) - 1][n]))
# corrupt compressed bytes everywhere in the data fork
d = bytearray(g)
for o in range(100, xml_off, 997):
    d[o] ^= 0x5A
open("corrupt.dmg", "wb").write(d)
# resource fork form
rk = len(r) - 512
ro, rl = struct.unpack_from(">QQ", r, rk + 0x28)
open("rgood.dmg", "wb").write(r)
put("rdata.dmg", ro, ">I", 0xffffffff, base=r)
put("rcount.dmg", ro + 8, ">I", 0, base=r)
put("rcount2.dmg", ro + 8, ">I", 0xffffffff, base=r)
put("rres.dmg", ro + 0x100, ">I", 0, base=r)
put("rres2.dmg", ro + 0x100, ">I", 0xfffffff0, base=r)
put("rres3.dmg", ro + 0x100, ">I", 100, base=r)
put("rlen.dmg", rk + 0x30, ">Q", rl + 1000000, base=r)
put("roff.dmg", rk + 0x28, ">Q", (1 << 64) - 1, base=r)
PY
hostile_sweep dmg 55
same_verdict_as_qemu dmg nokoly.dmg small.dmg dfo.dmg xlen4.dmg xoff0.dmg rlen2.dmg \
    scount1.dmg len1.dmg empty.dmg rgood.dmg rcount.dmg rres2.dmg
expect_fail "Input/output error" "$VDISK" convert -f dmg -O raw corrupt.dmg out.raw
echo ok
