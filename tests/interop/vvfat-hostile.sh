#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Virtual FAT on hostile host trees and options: a missing DIR, a DIR that
# is a file, too many root entries, a file over 2 GB, trees too big for
# FAT12 / a 1.44 or 2.88 MB floppy / FAT16, a name that is not UTF-8, bad
# labels and FAT types, rw, a write open: a one-line error (QEMU's text
# where QEMU fails too), never a crash.  Symlink loops give QEMU's image;
# 100 000 files in one directory open in bounded time and memory and read
# back with mtools.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io mdir fsck.fat
export MTOOLS_SKIP_CHECK=1

# both SUBSTRING SPEC: vdisk and qemu-img fail to open SPEC with SUBSTRING
both() {
    local want=$1 spec=$2
    expect_fail "$want" bounded "$VDISK" info "$spec"
    expect_fail "$want" qemu-img info "$spec"
}
both_opts() {
    local want=$1 spec=$2
    expect_fail "$want" bounded "$VDISK" info --image-opts "$spec"
    expect_fail "$want" qemu-img info --image-opts "$spec"
}

both "Could not read directory nothere" fat:nothere
: >afile
both "Could not read directory afile" fat:afile

mkdir many
for i in $(seq 1 300); do : >"many/f$i"; done
both "Could not read directory many" fat:many
expect_fail "Too many entries in root directory" "$VDISK" info fat:many

mkdir huge
truncate -s 3G huge/h
both "Could not read directory huge" fat:huge
expect_fail "File huge/h is larger than 2GB" "$VDISK" info fat:huge

mkdir fat12 fl144 fl288 fat16
truncate -s 40M fat12/f
truncate -s 1500K fl144/f
truncate -s 3M fl288/f
for i in 1 2 3 4 5 6; do truncate -s 100M "fat16/f$i"; done
both "Directory does not fit in FAT12 (capacity 32.22 MB)" fat:12:fat12
both "Directory does not fit in FAT12 (capacity 1.44 MB)" fat:floppy:12:fl144
both "Directory does not fit in FAT12 (capacity 2.88 MB)" fat:floppy:fl288
both "Directory does not fit in FAT16 (capacity 2.88 MB)" fat:floppy:16:fl288
both "Directory does not fit in FAT16 (capacity 516.06 MB)" fat:fat16

# QEMU drops the long name of a non-UTF-8 name; vdisk refuses the tree
mkdir badname
: >"badname/$(printf 'x\377y')"
expect_fail "vvfat: invalid UTF-8 name: badname/x" bounded "$VDISK" info fat:badname

mkdir ok
echo data >ok/a
both_opts "vvfat label cannot be longer than 11 bytes" "driver=vvfat,dir=ok,label=123456789012"
both_opts "Valid FAT types are only 12, 16 and 32" "driver=vvfat,dir=ok,fat-type=24"
both_opts "Valid FAT types are only 12, 16 and 32" "driver=vvfat,dir=ok,fat-type=4294967295"
# QEMU keeps the low 32 bits of the number: 2^32 + 12 is FAT12
[ "$("$VDISK" info --image-opts driver=vvfat,dir=ok,fat-type=4294967308 | grep virtual)" = \
  "$(qemu-img info --image-opts driver=vvfat,dir=ok,fat-type=4294967308 | grep virtual)" ] ||
    fail "fat-type 2^32 + 12"
both_opts "vvfat block driver requires a 'dir' option" "driver=vvfat"
expect_fail "Invalid parameter 'bogus'" "$VDISK" info --image-opts "driver=vvfat,dir=ok,bogus=1"
both "Unable to set VVFAT to 'rw' when drive is read-only" fat:rw:ok
expect_fail "Image is read-only" "$VDISK_IO" -c "read 0 512" fat:ok
expect_fail "Image is read-only" qemu-io -c "read 0 512" fat:ok
expect_fail "rw is not supported with FAT32" "$VDISK_IO" -c "read 0 512" fat:rw:32:ok
# rw: a write that leaves the file system inconsistent (a FAT or root
# directory sector of garbage) fails its flush and changes nothing in DIR
for off in 32768 290816; do
    "$VDISK_IO" -f raw -c "write -P 0x5a $off 512" -c flush fat:rw:ok >rw.out 2>&1 &&
        fail "garbage at $off committed: $(cat rw.out)"
done
[ "$(ls ok)" = a ] && [ "$(cat ok/a)" = data ] || fail "a refused commit changed DIR"
"$VDISK_IO" -r -c "read -P 0x55 510 1" fat:ok | grep -q "read 1/1" || fail "MBR signature"

# symlink loops: a link to itself is left out (stat fails), a link to a
# parent directory nests until the path is too long, as in QEMU.  The ".."
# entry of the deepest "up" is the tree's parent: it lives in w/, which the
# two converts do not write into (its time would differ between them)
mkdir -p w/loop/d
ln -s self w/loop/self
ln -s .. w/loop/d/up
head -c 8192 /dev/urandom >w/loop/d/file  # whole clusters: no slack
find w -exec touch -h -a -d "2037-01-01 00:00:00" {} +
timeout 60 qemu-img convert -O raw fat:w/loop q.raw || fail "qemu-img loop"
bounded "$VDISK" convert -O raw fat:w/loop v.raw || fail "vdisk loop"
cmp q.raw v.raw || fail "symlink loop image differs from qemu-img's"
rm -f q.raw v.raw

# 100 000 files in one directory: bounded time and memory (QEMU's
# short-name search is cubic here; vdisk's is linear)
mkdir -p lots/d
/usr/bin/python3 - <<'PY'
import os
for i in range(100000):
    open("lots/d/file%06d.txt" % i, "wb").close()
PY
bounded "$VDISK" info fat:lots >/dev/null || fail "100 000 files"
bounded "$VDISK" convert -O raw fat:lots v.raw || fail "100 000 files: convert"
n=$(mdir -b -i v.raw@@32256 ::/d | wc -l)
[ "$n" = 100000 ] || fail "100 000 files: mtools lists $n"
dd if=v.raw of=part.raw bs=512 skip=63 status=none
fsck.fat -n part.raw >fsck.out 2>&1 || fail "100 000 files: fsck.fat -n: $(head -5 fsck.out)"
rm -f part.raw
rm -f v.raw
echo ok
