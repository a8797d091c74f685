#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Virtual FAT read by a real FAT implementation: for seeded random trees
# (plus 40 nested directories, a 100 MiB file, empty files), the image
# `vdisk convert fat:...` writes (with a peak RSS under 96 MiB: file
# contents are read lazily) is clean for `fsck.fat -n`, and mtools copies
# the whole tree out of it identical to the host's (contents, names,
# modification times to FAT's 2 s); mtools lists the same files in QEMU
# 7.2's image of the tree.  Hard disk FAT16 and FAT12, floppies 2.88 MB
# and 1.44 MB.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img mcopy mdir fsck.fat
lib="$VDISK_SRC/tests/interop/vvfat/lib.py"
seed=${VDISK_SEED:-$RANDOM}
echo "seed $seed"
export MTOOLS_SKIP_CHECK=1 LANG=C.UTF-8 LC_ALL=C.UTF-8

# check SPEC DIR PARTOFF
check() {
    local spec=$1 dir=$2 off=$3
    rm -rf v.raw q.raw part.raw out
    /usr/bin/python3 - "$VDISK" convert -O raw "$spec" v.raw <<'PY' || fail "vdisk convert $spec"
import resource, subprocess, sys
rc = subprocess.call(sys.argv[1:])
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
if rc:
    sys.exit(rc)
if rss > 96 * 1024:
    sys.exit("peak RSS %d KiB: file contents are not read lazily" % rss)
PY
    dd if=v.raw of=part.raw bs=512 skip=$((off / 512)) status=none
    fsck.fat -n part.raw >fsck.out 2>&1 || fail "$spec: fsck.fat -n: $(cat fsck.out)"
    mkdir out
    mcopy -s -m -n -i "v.raw@@$off" '::*' out/ || fail "$spec: mcopy"
    diff -r "$dir" out >/dev/null || fail "$spec: the tree mtools copied out differs (seed $seed)"
    /usr/bin/python3 - "$dir" out <<'PY' || fail "$spec: modification times differ"
import os, sys
a, b = sys.argv[1], sys.argv[2]
for root, dirs, files in os.walk(a):
    for f in files:
        p = os.path.join(root, f)
        q = os.path.join(b, os.path.relpath(p, a))
        ta, tb = int(os.stat(p).st_mtime), int(os.stat(q).st_mtime)
        if not (tb <= ta < tb + 2):
            sys.exit("%s: %d vs %d" % (p, ta, tb))
PY
    qemu-img convert -O raw "$spec" q.raw 2>/dev/null || fail "qemu-img convert $spec"
    mdir -/ -b -i "v.raw@@$off" :: | sort >v.list
    mdir -/ -b -i "q.raw@@$off" :: | sort >q.list
    [ -s v.list ] || fail "$spec: empty listing"
    cmp -s v.list q.list || fail "$spec: mtools lists other files in QEMU's image"
    rm -rf v.raw q.raw part.raw out
}

mkdir disk
/usr/bin/python3 "$lib" tree disk "$seed" 1048576 120 || fail "tree"
d=disk
for i in $(seq 1 40); do d="$d/level$i"; done
mkdir -p "$d" && echo deep >"$d/bottom.txt"
: >disk/empty.file
truncate -s 100M disk/big.bin
printf 'start' | dd of=disk/big.bin conv=notrunc status=none
printf 'middle' | dd of=disk/big.bin bs=1 seek=52428799 conv=notrunc status=none
printf 'end' | dd of=disk/big.bin bs=1 seek=104857597 conv=notrunc status=none
check fat:disk disk 32256

mkdir small
/usr/bin/python3 "$lib" tree small "$((seed + 1))" 200000 80 || fail "tree"
check fat:12:small small 32256

mkdir flop
/usr/bin/python3 "$lib" tree flop "$((seed + 2))" 40000 20 || fail "tree"
check fat:floppy:flop flop 0
check fat:floppy:12:flop flop 0
echo "ok (seed $seed)"
