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
      overwrite those ranges of IMAGE with zeroes;
  vvfat-lib.py ops IMAGE PLAIN SEED ROUND COUNT
      COUNT seeded random mtools operations on IMAGE (an mtools drive
      spec such as "img@@32256") and the same operations on the plain
      directory PLAIN: new and overwritten files (mcopy -m, random
      modification times), deleted files, files renamed in place and
      moved to other directories, new directories (nested), removed
      empty directories (mrd), removed trees (mdeltree), directories
      renamed and moved; each operation is printed; exits non-zero when
      an mtools command fails.
"""
import os
import random
import re
import shutil
import struct
import subprocess
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


SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")


def ops(image, plain, seed, rnd_round, count):
    rnd = random.Random(seed * 100 + rnd_round)
    src = os.path.abspath("ops-src.bin")

    def mt(*args):
        print("  " + " ".join(repr(a) for a in args), flush=True)
        r = subprocess.run(list(args[:1]) + ["-i", image] + list(args[1:]),
                           stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if r.returncode != 0 or r.stderr.strip():
            sys.exit("%s failed (%d): %s%s" % (args[0], r.returncode, r.stdout, r.stderr))

    def scan():
        """directories and files of PLAIN with safe names in safe directories"""
        dirs, files = [""], []
        for d, ds, fs in os.walk(plain):
            rel = os.path.relpath(d, plain)
            rel = "" if rel == "." else rel
            if rel and not all(SAFE.match(x) for x in rel.split("/")):
                ds[:] = []
                continue
            if rel:
                dirs.append(rel)
            files += [os.path.join(rel, f) for f in fs if SAFE.match(f)]
        return sorted(dirs), sorted(files)

    def taken(d, name):
        return name.lower() in (x.lower() for x in os.listdir(os.path.join(plain, d)))

    def fresh(d, prefix, k):
        while True:
            # FAT drops trailing spaces: none here
            n = ("%s%d %d %s" % (prefix, rnd_round, k, "x" * rnd.randint(0, 20))).rstrip()
            n += rnd.choice(["", ".txt", ".b", ".longext"])
            if not taken(d, n) and len(os.path.join(plain, d, n)) < 200:
                return n
            k += 1000

    def m(rel):
        return "::/" + rel

    for k in range(count):
        dirs, files = scan()
        op = rnd.choice(["new", "new", "over", "del", "ren", "move", "mkdir", "mkdir",
                         "rmdir", "deltree", "dren", "dmove"])
        subdirs = [d for d in dirs if d]
        if op in ("over", "del", "ren", "move") and not files:
            op = "new"
        if op in ("rmdir", "deltree", "dren", "dmove") and not subdirs:
            op = "mkdir"
        if op in ("new", "over"):
            size = rnd.choice([0, 1, 511, 8192, 8193, rnd.randint(1, 150000)])
            with open(src, "wb") as f:
                f.write(rnd.randbytes(size))
            t = 946684800 + 2 * rnd.randrange(300000000)  # even seconds, 2000 on
            os.utime(src, (t, t))
            if op == "new":
                d = rnd.choice(dirs)
                name = fresh(d, "n", k)
                host = name
                if rnd.random() < 0.25:
                    # an upper-case 8.3 name has no long name: DIR gets it
                    # in lower case, as QEMU reads short names
                    name = "N%d%d.TXT" % (rnd_round, k)
                    host = name.lower()
                    if taken(d, name):
                        continue
                mt("mcopy", "-m", src, m(os.path.join(d, name)))
                shutil.copy2(src, os.path.join(plain, d, host))
            else:
                f = rnd.choice(files)
                mt("mcopy", "-o", "-m", src, m(f))
                b = os.path.basename(f)
                g = f
                if re.match(r"^[A-Z0-9_-]{1,8}(\.[A-Z0-9_-]{1,3})?$", b):
                    # written anew under the name given, without a long name
                    g = os.path.join(os.path.dirname(f), b.lower())
                os.unlink(os.path.join(plain, f))
                shutil.copy2(src, os.path.join(plain, g))
        elif op == "del":
            f = rnd.choice(files)
            mt("mdel", m(f))
            os.unlink(os.path.join(plain, f))
        elif op in ("ren", "move", "dren", "dmove"):
            what = rnd.choice(files if op in ("ren", "move") else subdirs)
            if op in ("ren", "dren"):
                d = os.path.dirname(what)
            else:
                d = rnd.choice([x for x in dirs if x != what and not x.startswith(what + "/")])
                if d == os.path.dirname(what):
                    continue
            if op in ("move", "dmove") and rnd.random() < 0.5 and not taken(d, os.path.basename(what)):
                name = os.path.basename(what)
            else:
                name = fresh(d, "r", k)
            to = os.path.join(d, name)
            mt("mren" if op in ("ren", "dren") else "mmove", m(what), m(to))
            if name.isupper() and re.match(r"^[A-Z0-9_-]{1,8}(\.[A-Z0-9_-]{1,3})?$", name):
                to = os.path.join(d, name.lower())
            os.rename(os.path.join(plain, what), os.path.join(plain, to))
        elif op == "mkdir":
            d = rnd.choice(dirs)
            if d.count("/") > 5:
                continue
            name = fresh(d, "d", k)
            mt("mmd", m(os.path.join(d, name)))
            os.mkdir(os.path.join(plain, d, name))
        elif op == "rmdir":
            empty = [x for x in subdirs if not os.listdir(os.path.join(plain, x))]
            if not empty:
                continue
            d = rnd.choice(empty)
            mt("mrd", m(d))
            os.rmdir(os.path.join(plain, d))
        elif op == "deltree":
            d = rnd.choice(subdirs)
            mt("mdeltree", m(d))
            shutil.rmtree(os.path.join(plain, d))


if __name__ == "__main__":
    if sys.argv[1] == "tree":
        tree(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]),
             len(sys.argv) > 6 and sys.argv[6] == "cluster")
    elif sys.argv[1] == "slack":
        slack(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif sys.argv[1] == "zero":
        zero(sys.argv[2])
    elif sys.argv[1] == "ops":
        ops(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]))
