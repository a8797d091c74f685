#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Virtual FAT against QEMU 7.2: random trees (seeded: nested directories,
# long, 8.3, odd and non-ASCII names, "~N" collisions, empty files and
# files of up to 2 MiB) presented by `qemu-img convert fat:...` and
# `vdisk convert fat:...` give the same image, in every layout (hard disk
# FAT12/16/32, floppies 1.44 MB FAT12 and 2.88 MB FAT12/16/32), through the
# filename and the --image-opts forms (label, fat-type, floppy).  The only
# bytes allowed to differ are those after a file's end in its last cluster,
# where QEMU leaves stale buffer contents and vdisk zeroes (they are
# zeroed in QEMU's image, located by walking the directories); a tree
# whose files are whole clusters compares with no masking at all.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img
lib="$VDISK_SRC/tests/interop/vvfat/lib.py"
seed=${VDISK_SEED:-$RANDOM}
echo "seed $seed"

# Reading the files must not change what the image shows: access times
# are pinned in the future, where relatime leaves them alone.
settle() {
    find "$1" -exec touch -h -a -d "2037-01-01 00:00:00" {} + || fail "touch $1"
}

# compare IMAGE-SPEC PARTOFF FATTYPE [vdisk/qemu-img options...]
compare() {
    local spec=$1 off=$2 ft=$3; shift 3
    rm -f q.raw v.raw
    qemu-img convert "$@" -O raw "$spec" q.raw 2>q.err || fail "qemu-img convert $spec: $(cat q.err)"
    "$VDISK" convert "$@" -O raw "$spec" v.raw || fail "vdisk convert $spec"
    [ "$(stat -c %s q.raw)" = "$(stat -c %s v.raw)" ] || fail "$spec: sizes differ"
    /usr/bin/python3 "$lib" slack v.raw "$off" "$ft" >slack || fail "slack $spec"
    /usr/bin/python3 "$lib" zero q.raw <slack || fail "zero $spec"
    cmp q.raw v.raw || fail "$spec: image differs from qemu-img's (seed $seed)"
    a=$("$VDISK" info "$@" --output=json "$spec" | grep virtual-size)
    b=$(qemu-img info "$@" --output=json "$spec" 2>/dev/null | grep virtual-size)
    [ "$a" = "$b" ] || fail "$spec: virtual size $a, qemu-img $b"
}

# hard disks
mkdir disk
/usr/bin/python3 "$lib" tree disk "$seed" 2097152 160 || fail "tree"
settle disk
compare fat:disk 32256 16
compare fat:16:disk 32256 16
compare fat:32:disk 32256 32
# FAT12 disks hold 31 MiB
mkdir small
/usr/bin/python3 "$lib" tree small "$((seed + 3))" 300000 90 || fail "tree"
settle small
compare fat:12:small 32256 12
compare "driver=vvfat,dir=small,label=MY LABEL,fat-type=12" 32256 12 --image-opts
compare "json:{\"driver\":\"vvfat\",\"dir\":\"disk/\",\"label\":\"x\"}" 32256 16

# floppies: a small tree
mkdir flop
/usr/bin/python3 "$lib" tree flop "$((seed + 1))" 30000 25 || fail "tree"
settle flop
compare fat:floppy:flop 0 12
compare fat:floppy:12:flop 0 12
compare fat:floppy:16:flop 0 16
compare fat:floppy:32:flop 0 32
compare "driver=vvfat,dir=flop,floppy=on,fat-type=16,label=FLOPPY" 0 16 --image-opts

# whole clusters only: no byte may differ
mkdir whole
/usr/bin/python3 "$lib" tree whole "$((seed + 2))" 65536 80 cluster || fail "tree"
settle whole
for spec in fat:whole fat:12:whole fat:floppy:whole; do
    rm -f q.raw v.raw
    qemu-img convert -O raw "$spec" q.raw || fail "qemu-img $spec"
    "$VDISK" convert -O raw "$spec" v.raw || fail "vdisk $spec"
    cmp q.raw v.raw || fail "$spec differs from qemu-img's (seed $seed)"
done

# short-name collisions: 1200 names sharing a prefix ("~N" tails of one to
# four digits, moving left as they grow), literal names that look like
# tails, names equal but for case, leading dots, a 0xE5 first character
mkdir -p coll/d
/usr/bin/python3 - <<'PY'
for i in range(1200):
    open("coll/d/same prefix %04d.txt" % i, "w").close()
for n in ["SAMEPR~7.TXT", "SAMEP~12.TXT", "same.txt", "SAME.TXT", "Same.Txt", ".profile",
          "..x", "a.b.c", "\u00e5ngstr\u00f6m", "\u00c5NGSTR\u00d6M", "\u0117lan", "\u0112a", "\u0125ome", "\u0129x.\u0121",
          "x" * 200, "with space.tx t", "[brackets]+;=,.txt", "\u65e5\u672c\u8a9e.\u6587\u66f8"]:
    open("coll/d/" + n, "w").close()
PY
settle coll
for spec in fat:coll fat:32:coll fat:floppy:coll; do
    rm -f q.raw v.raw
    qemu-img convert -O raw "$spec" q.raw 2>/dev/null || fail "qemu-img $spec"
    "$VDISK" convert -O raw "$spec" v.raw || fail "vdisk $spec"
    cmp q.raw v.raw || fail "$spec differs from qemu-img's"
done

# the same tree from an absolute path with a trailing slash, and the DOS
# drive form QEMU also parses ("fat:x:C:..." names the directory C:...)
mkdir C:d && cp -a whole/. C:d/ && settle C:d
rm -f q.raw v.raw
qemu-img convert -O raw "fat:rw:C:d" q.raw 2>/dev/null && fail "qemu-img accepted rw read-only"
qemu-img convert -O raw "fat:floppy:C:d" q.raw || fail "qemu-img DOS drive form"
"$VDISK" convert -O raw "fat:floppy:C:d" v.raw || fail "vdisk DOS drive form"
cmp q.raw v.raw || fail "DOS drive form differs"
rm -f q.raw v.raw
qemu-img convert -O raw "fat:$PWD/whole/" q.raw || fail "qemu-img absolute"
"$VDISK" convert -O raw "fat:$PWD/whole/" v.raw || fail "vdisk absolute"
cmp q.raw v.raw || fail "absolute path differs"
rm -f q.raw v.raw
echo "ok (seed $seed)"
