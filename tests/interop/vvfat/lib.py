# SPDX-License-Identifier: BSD-3-Clause
"""Helpers for the vvfat tests (not a test itself: used by tests/interop/vvfat-*.sh).

  vvfat-lib.py tree DIR SEED MAXBYTES NFILES [cluster]
      a random tree: nested directories, long, 8.3, odd and non-ASCII
      names (no two equal ignoring case), empty files and files up to
      MAXBYTES (with "cluster", sizes are multiples of 8192);
  vvfat-lib.py slack IMAGE PARTOFF FAT_TYPE
      print "offset length" of the bytes after each file's end in its last
      cluster (what QEMU fills from a stale buffer), walking the image's
      directories (vvfat's layout: contiguous clusters, cluster c at the
      root directory + c * cluster size);
  vvfat-lib.py zero IMAGE < ranges
      overwrite those ranges of IMAGE with zeroes.
"""
import os
import random
import struct
import sys


def tree(root, seed, maxbytes, nfiles, cluster_only):
    rnd = random.Random(seed)
    plain = "abcdefghijklmnopqrstuvwxyz0123456789"
    odd = " $%'-_@~`!(){}^#&+,;=[]."
    uni = "\u00e9\u00fc\u00df\u00f1\u65e5\u672c\u0142\u03a9"
    used = set()

    def name():
        while True:
            kind = rnd.randrange(6)
            if kind == 0:   # 8.3, lower or upper case
                n = "".join(rnd.choice(plain) for _ in range(rnd.randint(1, 8)))
                if rnd.random() < 0.7:
                    n += "." + "".join(rnd.choice(plain) for _ in range(rnd.randint(1, 3)))
                if rnd.random() < 0.5:
                    n = n.upper()
            elif kind == 1:  # long
                n = "".join(rnd.choice(plain + "ABC") for _ in range(rnd.randint(9, 60)))
                n += ".txt" if rnd.random() < 0.5 else ""
            elif kind == 2:  # odd characters
                n = "".join(rnd.choice(plain + odd) for _ in range(rnd.randint(1, 20)))
            elif kind == 3:  # non-ASCII
                n = "".join(rnd.choice(plain + uni) for _ in range(rnd.randint(1, 15)))
            elif kind == 4:  # shared prefixes: ~N tails
                n = "common prefix %d.data" % rnd.randrange(1000)
            else:            # several dots
                n = ".".join("".join(rnd.choice(plain) for _ in range(rnd.randint(1, 4)))
                             for _ in range(rnd.randint(2, 4)))
            n = n.strip(" .")
            if n and n.lower() not in used:
                used.add(n.lower())
                return n

    dirs = [root]
    # the root directory holds at most 511 entries, long names included
    root_files = 0
    for _ in range(nfiles):
        if rnd.random() < 0.15 and len(dirs) < 60:
            parent = rnd.choice(dirs)
            if parent == root:
                root_files += 1
                if root_files > 25:
                    parent = dirs[-1] if len(dirs) > 1 else root
            d = os.path.join(parent, name())
            if len(d) > 900:
                continue
            os.mkdir(d)
            dirs.append(d)
            continue
        parent = rnd.choice(dirs)
        if parent == root:
            root_files += 1
            if root_files > 25 and len(dirs) > 1:
                parent = rnd.choice(dirs[1:])
        r = rnd.random()
        if r < 0.15:
            size = 0
        elif cluster_only:
            size = 8192 * rnd.randint(1, max(1, maxbytes // 8192))
        elif r < 0.3:
            size = rnd.randint(1, 600)
        else:
            size = rnd.randint(1, maxbytes)
        with open(os.path.join(parent, name()), "wb") as f:
            f.write(rnd.randbytes(size))


def slack(image, partoff, fat_type):
    f = open(image, "rb")
    f.seek(partoff)
    bs = f.read(512)
    spc = bs[13]
    reserved, nfats, root_entries = struct.unpack_from("<HBH", bs, 14)
    spf = struct.unpack_from("<H", bs, 22)[0]
    cs = spc * 512
    root = partoff + (reserved + nfats * spf) * 512

    def entries(start, limit):
        i = 0
        while limit is None or i < limit:
            f.seek(start + i * 32)
            e = f.read(32)
            if len(e) < 32 or e[0] == 0:
                return
            i += 1
            yield e

    todo = [(root, 512)]
    while todo:
        start, limit = todo.pop()
        for e in entries(start, limit):
            if e[0] == 0xE5 or e[11] == 0x0F or e[11] & 0x08 or e[0] == ord("."):
                continue
            begin = struct.unpack_from("<H", e, 26)[0] | (struct.unpack_from("<H", e, 20)[0] << 16)
            size = struct.unpack_from("<I", e, 28)[0]
            if e[11] & 0x10:
                todo.append((root + begin * cs, None))
            elif size % cs:
                last = begin + (size - 1) // cs
                print(root + last * cs + size % cs, cs - size % cs)


def zero(image):
    with open(image, "r+b") as f:
        for line in sys.stdin:
            off, n = map(int, line.split())
            f.seek(off)
            f.write(b"\0" * n)


if __name__ == "__main__":
    if sys.argv[1] == "tree":
        tree(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
             len(sys.argv) > 6 and sys.argv[6] == "cluster")
    elif sys.argv[1] == "slack":
        slack(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "zero":
        zero(sys.argv[2])
