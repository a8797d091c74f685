#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk map --output=json (and the human form) equals qemu-img map on
# sparse raw files with a seeded random layout of data and holes.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

cat > layout.py <<'PY'
import os, random, sys
seed = int(sys.argv[1]); path = sys.argv[2]
rnd = random.Random(seed)
size = rnd.choice([1, 3, 8, 17]) * 1024 * 1024 + rnd.choice([0, 0, 512, 4096, 12345])
with open(path, "wb") as f:
    f.truncate(size)
    for _ in range(rnd.randint(0, 40)):
        off = rnd.randrange(0, size)
        ln = rnd.choice([512, 4096, 65536, 100000, 1 << 20])
        f.seek(off)
        if rnd.random() < 0.2:
            f.write(b"\0" * min(ln, size - off))   # written zeroes are data
        else:
            f.write(os.urandom(min(ln, size - off)))
    f.flush()
    # punch some holes back
    for _ in range(rnd.randint(0, 10)):
        off = rnd.randrange(0, size) & ~4095
        ln = rnd.choice([4096, 65536, 1 << 20])
        os.system("fallocate -p -o %d -l %d %s 2>/dev/null" % (off, min(ln, size - off), path))
PY

for seed in $(seq 1 25); do
    rm -f r.img
    /usr/bin/python3 layout.py $seed r.img
    for args in "--output=json" "" "--output=json --start-offset=4096 --max-length=3M"; do
        a=$("$VDISK" map -f raw $args r.img) || fail "vdisk map $args (seed $seed)"
        b=$(qemu-img map -f raw $args r.img)
        [ "$a" = "$b" ] || fail "map $args differs for seed $seed:
$a
--- qemu-img:
$b"
    done
done
echo ok
