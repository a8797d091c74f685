#!/usr/bin/python3
# SPDX-License-Identifier: BSD-3-Clause
"""Write a UDIF (.dmg) image of a raw file, for tests: Debian has no dmg
writer.  The raw file is cut into chunks of a few sizes; each chunk gets one
of the chosen types in turn (all-zero chunks become zero-fill or ignore
chunks; data chunks raw, zlib or bzip2), the sectors are split over two or
more partitions (mish blocks), each with a comment entry and a terminator,
and the block tables go in an XML property list (default) or a classic
resource fork (--rsrc).  dmg2img must decode the result to the raw file.

usage: dmg-gen.py IN.raw OUT.dmg [--rsrc] [--types zero,ignore,raw,zlib,bzip2]
                  [--seed N] [--parts N] [--mish-offset]
--mish-offset stores chunk offsets relative to a non-zero mish data offset
(QEMU and vdisk honour it; dmg2img does not, so only for those two).
Prints how many chunks of each type it wrote.  The type "lzfse" stores the
bytes uncompressed under the lzfse type, for tests of the refusal.
"""
import base64
import bz2
import random
import struct
import sys
import zlib

ZERO, RAW, IGNORE, ZLIB, BZIP2, COMMENT, END = 0, 1, 2, 0x80000005, 0x80000006, 0x7FFFFFFE, 0xFFFFFFFF
LZFSE = 0x80000007
NAMES = {"zero": ZERO, "ignore": IGNORE, "raw": RAW, "zlib": ZLIB, "bzip2": BZIP2}


def main(argv):
    args = argv[1:]
    src, dst = args[0], args[1]
    rsrc = "--rsrc" in args
    mish_offset = "--mish-offset" in args
    types = ["zero", "ignore", "raw", "zlib", "bzip2"]
    seed, nparts = 1, 2
    for i, a in enumerate(args):
        if a == "--types":
            types = args[i + 1].split(",")
        if a == "--seed":
            seed = int(args[i + 1])
        if a == "--parts":
            nparts = int(args[i + 1])
    rng = random.Random(seed)
    data = open(src, "rb").read()
    if len(data) % 512:
        data += b"\0" * (512 - len(data) % 512)
    sectors = len(data) // 512
    zero_types = [NAMES[t] for t in types if t in ("zero", "ignore")] or [RAW]
    data_types = [NAMES.get(t, LZFSE) for t in types if t not in ("zero", "ignore")] or [RAW]

    # partition boundaries (in sectors)
    cuts = sorted(set([0, sectors] + [rng.randrange(1, max(2, sectors)) for _ in range(nparts - 1)]))
    # with --mish-offset the data starts after 4 KiB of junk that only the
    # mish data offset skips
    out = bytearray(b"\xaa" * 4096 if mish_offset else b"")
    blocks = []  # mish blocks (bytes)
    zi = di = 0
    used = {}
    for p in range(len(cuts) - 1):
        first, last = cuts[p], cuts[p + 1]
        base = 4096 if mish_offset else 0
        entries = []
        s = first
        if p == 0:
            entries.append(struct.pack(">IIQQQQ", COMMENT, 0x2B626567, 0, 0, 0, 0))
        while s < last:
            n = min(last - s, rng.choice([1, 7, 64, 128, 2048]))
            piece = data[s * 512:(s + n) * 512]
            if piece.count(0) == len(piece):
                t = zero_types[zi % len(zero_types)]
                zi += 1
            else:
                t = data_types[di % len(data_types)]
                di += 1
            if t == RAW:
                blob = piece
            elif t == ZLIB:
                blob = zlib.compress(piece, 6)
            elif t == BZIP2:
                blob = bz2.compress(piece, 9)
            elif t == LZFSE:
                # not real lzfse (Python has none): only for refusal tests
                blob = piece
            else:
                blob = b""
            used[t] = used.get(t, 0) + 1
            off = len(out)
            out += blob
            entries.append(struct.pack(">IIQQQQ", t, 0, s - first, n,
                                       off - base if blob else 0, len(blob)))
            s += n
        # terminator: its offset is the end of the data (dmg2img relies on it)
        entries.append(struct.pack(">IIQQQQ", END, 0, last - first, 0, len(out) - base, 0))
        mish = struct.pack(">IIQQQII", 0x6D697368, 1, first, last - first, base, 0x208, p)
        mish += b"\0" * 24  # reserved
        mish += struct.pack(">II", 2, 32) + b"\0" * 128  # checksum (unused)
        mish += struct.pack(">I", len(entries)) + b"".join(entries)
        assert len(mish) == 204 + 40 * len(entries)
        blocks.append(mish)

    data_len = len(out)
    if rsrc:
        rs_off = len(out)
        body = b"".join(struct.pack(">I", len(b)) + b for b in blocks)
        fork = struct.pack(">IIII", 0x100, 0x100 + len(body), len(body), 32)
        fork += b"\0" * (0x100 - len(fork)) + body + b"\0" * 32
        out += fork
        rs_len, xml_off, xml_len = len(fork), 0, 0
    else:
        items = []
        for i, b in enumerate(blocks):
            b64 = base64.b64encode(b).decode()
            lines = "\n".join("\t\t\t\t" + b64[j:j + 52] for j in range(0, len(b64), 52))
            items.append(
                "\t\t\t<dict>\n"
                "\t\t\t\t<key>Attributes</key>\n\t\t\t\t<string>0x0050</string>\n"
                "\t\t\t\t<key>CFName</key>\n\t\t\t\t<string>part %d</string>\n"
                "\t\t\t\t<key>Data</key>\n\t\t\t\t<data>\n%s\n\t\t\t\t</data>\n"
                "\t\t\t\t<key>ID</key>\n\t\t\t\t<string>%d</string>\n"
                "\t\t\t\t<key>Name</key>\n\t\t\t\t<string>part %d</string>\n"
                "\t\t\t</dict>\n" % (i, lines, i - 1, i))
        xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
               '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" '
               '"http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
               '<plist version="1.0">\n<dict>\n\t<key>resource-fork</key>\n\t<dict>\n'
               '\t\t<key>blkx</key>\n\t\t<array>\n' + "".join(items) +
               '\t\t</array>\n\t</dict>\n</dict>\n</plist>\n').encode()
        xml_off, xml_len = len(out), len(xml)
        out += xml
        rs_off = rs_len = 0
    koly = bytearray(512)
    struct.pack_into(">4sIII", koly, 0, b"koly", 4, 512, 1)
    struct.pack_into(">QQQQQII", koly, 0x10, 0, 0, data_len, rs_off, rs_len, 1, 1)
    struct.pack_into(">QQ", koly, 0xD8, xml_off, xml_len)
    struct.pack_into(">I", koly, 0x1E8, 1)
    struct.pack_into(">Q", koly, 0x1EC, sectors)
    out += koly
    open(dst, "wb").write(out)
    # which chunk types the image holds, for the tests to check
    print(" ".join("%s=%d" % (k, used.get(v, 0)) for k, v in NAMES.items()))


if __name__ == "__main__":
    main(sys.argv)
