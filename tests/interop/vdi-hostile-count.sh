#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A vdi header claiming a huge block count (up to QEMU's 0x1fffff80: a
# 2 GiB block map) in a file of a few bytes (issue 10): info, map, check,
# convert, a write at a high offset and its read back all take bounded time
# and memory (`bounded`: 512 MiB of address space, 20 s), as the map kept
# in memory and every walk over it follow what the file holds, not what the
# header claims.  QEMU 7.2 opens these files too (it allocates the whole
# 2 GiB map and reads the missing part as zeroes, i.e. every block as data
# block 0): the verdicts agree, and where QEMU's answer is sane (info of a
# small map, reading back what vdisk wrote) so do the results.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io prlimit

# make NAME BLOCKS DISK_SIZE [FILE_SIZE]: a dynamic vdi header with its map
# right after it and its data area after the whole map; the file holds the
# header (and FILE_SIZE - 512 bytes of 0xff map entries) only.
mkvdi() {
    /usr/bin/python3 - "$@" <<'PY'
import struct, sys
name, blocks, disk = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0)
size = int(sys.argv[4], 0) if len(sys.argv) > 4 else 512
h = bytearray(512)
text = b"<<< QEMU VM Virtual Disk Image >>>\n"
h[:len(text)] = text
bmap = (blocks * 4 + 511) // 512 * 512
struct.pack_into("<IIII", h, 0x40, 0xbeda107f, 0x00010001, 0x180, 1)
struct.pack_into("<II", h, 0x154, 512, 512 + bmap)
struct.pack_into("<I", h, 0x168, 512)
struct.pack_into("<QIIII", h, 0x170, disk, 1 << 20, 0, blocks, 0)
h[0x188:0x198] = bytes(range(1, 17))
open(name, "wb").write(h + b"\xff" * (size - 512))
PY
}
big=0x1fffff80
mkvdi huge.vdi $big $((big << 20))            # 512 TiB less 128 MiB
mkvdi small.vdi $big $((64 << 20))            # 64 MiB disk, same 2 GiB map
mkvdi part.vdi $big $((big << 20)) 4096       # 7 sectors of the map
mkvdi mid.vdi 0x100000 $((1 << 40))           # 1 TiB, a 4 MiB map
cp huge.vdi holes.vdi; truncate -s 3G holes.vdi   # the whole map a hole
# 16 MiB of map as written zeroes (no holes): entries read as unallocated
cp huge.vdi zeros.vdi; head -c 16M /dev/zero >> zeros.vdi
# unchanged: size, blocks used and the first MiB (holes.vdi is 3 GiB)
sig() { stat -c '%s %b' "$1"; head -c 1M "$1" | md5sum; }
for f in huge small part holes zeros mid; do
    sig $f.vdi > $f.orig
done

# run NAME CMD...: CMD within the bounds, must succeed
run() {
    local what=$1 rc=0; shift
    bounded "$@" >stdout 2>stderr || rc=$?
    [ "$rc" -eq 0 ] || fail "$what: exit $rc: $(head -c 600 stderr)"
}

size_of() { sed -n 's/^virtual size: .*(\([0-9]*\) bytes)$/\1/p' stdout; }
for f in huge small part holes zeros mid; do
    run "info $f" "$VDISK" info -f vdi $f.vdi
    case $f in
        small) want=$((64 << 20)) ;;
        mid) want=$((1 << 40)) ;;
        *) want=$((big << 20)) ;;
    esac
    [ "$(size_of)" = "$want" ] || fail "info $f: $(cat stdout)"
    run "map $f" "$VDISK" map -f vdi --output=json $f.vdi
    [ "$(grep -c '"start"' stdout)" = 1 ] && grep -q '"zero": true, "data": false' stdout \
        || fail "map $f: not one zero extent: $(head -c 600 stdout)"
    run "check $f" "$VDISK" check -f vdi $f.vdi
    grep -q "No errors were found" stdout || fail "check $f: $(cat stdout)"
    [ "$(sig $f.vdi)" = "$(cat $f.orig)" ] || fail "reading $f changed it"
done

# convert to raw (the 512 TiB one goes to qcow2 below, after a write: ext4
# takes no 512 TiB file)
run "convert small" "$VDISK" convert -f vdi -O raw small.vdi small.raw
cmp -s small.raw <(head -c 64M /dev/zero) || fail "small.raw is not 64 MiB of zeroes"
run "convert mid" "$VDISK" convert -f vdi -O raw mid.vdi mid.raw
[ "$(stat -c %s mid.raw)" = $((1 << 40)) ] && [ "$(stat -c %b mid.raw)" -lt 64 ] \
    || fail "mid.raw: $(stat -c '%s bytes, %b blocks' mid.raw)"

# A write far out (block 100 Mi of 512 Mi): the map grows to that entry
# only, in memory and in the file (one sector; the rest stays a hole that
# reads as unallocated); the data block lands after the whole map.
t=$((100 << 40))
run "write" "$VDISK_IO" -c "write -P 8 1M 4k" -c "write -P 7 $t 64k" \
    -c "read -P 7 $t 64k" huge.vdi
run "read back" "$VDISK_IO" -r -c "read -P 7 $t 64k" -c "read -P 8 1M 4k" \
    -c "read -P 0 $((t + 65536)) 64k" -c "read -P 0 $((200 << 40)) 64k" huge.vdi
grep -q "Pattern verification failed" stdout && fail "read back: $(cat stdout)"
[ "$(stat -c %b huge.vdi)" -lt $((16 << 11)) ] \
    || fail "huge.vdi takes $(stat -c %b huge.vdi) blocks after two writes"
run "check written" "$VDISK" check -f vdi huge.vdi
grep -q "No errors were found" stdout || fail "check written: $(cat stdout)"
run "map written" "$VDISK" map -f vdi --output=json huge.vdi
[ "$(grep -c '"data": true' stdout)" = 2 ] || fail "map written: $(head -c 900 stdout)"
# (2 MiB clusters: a small L1 table; convert's own walk over 512 TiB still
# takes a few seconds)
run "convert written" "$VDISK" convert -f vdi -O qcow2 -o cluster_size=2M huge.vdi written.qcow2
run "compare written" "$VDISK" compare -f vdi -F qcow2 huge.vdi written.qcow2
# discard: freeing the first data block moves the last one (block 100 Mi's)
# into it, found by a walk over the map; then up to the end of the disk
run "discard" "$VDISK_IO" -c "discard 1M 1M" -c "read -P 7 $t 64k" -c "read -P 0 1M 4k" \
    -c "discard $(((big << 20) - (1 << 30))) 1G" huge.vdi
grep -q "Pattern verification failed" stdout && fail "after discard: $(cat stdout)"
run "check discarded" "$VDISK" check -f vdi huge.vdi
grep -q "No errors were found" stdout || fail "check discarded: $(cat stdout)"
run "discard far" "$VDISK_IO" -c "discard $t 1M" -c "read -P 0 $t 64k" huge.vdi
grep -q "Pattern verification failed" stdout && fail "after discard: $(cat stdout)"
run "map discarded" "$VDISK" map -f vdi --output=json huge.vdi
[ "$(grep -c '"start"' stdout)" = 1 ] || fail "map discarded: $(head -c 600 stdout)"

# QEMU: the same verdict (it opens them all, given 2 GiB of memory and
# about 20 s for the big maps, so only the 4 MiB map is asked here), the
# same size, and a write vdisk makes into the small map (written out whole
# first) reads back the same in qemu-io, which finds the image clean.
same_verdict_as_qemu vdi mid.vdi
[ "$(qemu-img info -f vdi mid.vdi | sed -n 's/^virtual size: .*(\([0-9]*\) bytes)$/\1/p')" \
    = $((1 << 40)) ] || fail "qemu-img info mid.vdi: $(qemu-img info -f vdi mid.vdi 2>&1)"
run "write mid" "$VDISK_IO" -c "write -P 5 $((700 << 30)) 64k" mid.vdi
out=$(qemu-io -r -f vdi -c "read -P 5 $((700 << 30)) 64k" -c "read -P 0 $((800 << 30)) 64k" mid.vdi)
case $out in *"Pattern verification failed"* | "") fail "qemu-io reads otherwise: $out" ;; esac
qemu-img check -f vdi mid.vdi >/dev/null || fail "qemu-img check: $(qemu-img check -f vdi mid.vdi 2>&1 | tail -3)"
# one block over QEMU's limit, and a disk larger than the map: refused by both
mkvdi over.vdi 0x1fffff81 $((64 << 20))
mkvdi room.vdi 0x10 $((17 << 20))
expect_fail "unsupported VDI image (too many blocks 536870785, max is 536870784)" \
    "$VDISK" info -f vdi over.vdi
expect_fail "unsupported VDI image (disk size 17825792, image bitmap has room for 16777216)" \
    "$VDISK" info -f vdi room.vdi
same_verdict_as_qemu vdi over.vdi room.vdi
echo ok
