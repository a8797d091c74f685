#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Virtual FAT rw through the FUSE export: `vdisk fuse fat:rw:12:DIR FILE`,
# and mtools working on FILE (each command's close flushes, and the flush
# commits to DIR).  Seeded random sequences of mtools operations (new,
# overwritten, deleted, renamed and moved files; new, removed, renamed and
# moved directories, nested) leave DIR equal to the same operations done on
# a plain directory, modification times included (mcopy -m); fsck.fat -n
# finds the image clean after each round; no temporary file is left.
# Then the refusals, each in a session of its own: a directory the FAT side
# deletes that holds a file the host added, a name the host took, a
# directory that is a symbolic link on the host: a warning, DIR untouched.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/fuse-common.bash"
need mcopy mdel mren mmd mrd mmove mdeltree fsck.fat
export MTOOLS_SKIP_CHECK=1 LANG=C.UTF-8 LC_ALL=C.UTF-8 TZ=UTC TMPDIR=$PWD
lib="$VDISK_SRC/tests/interop/vvfat/lib.py"
seed=${VDISK_SEED:-$RANDOM}
echo "seed $seed"
part=32256 # the FAT partition of a hard disk starts at sector 63

# same_tree: DIR equals the plain directory, contents, names and the
# modification times of files (to FAT's 2 seconds: an empty file has no
# identity but its name, so a renamed one is a new file with the FAT time)
times() {
    (cd "$1" && find . -type f -printf '%T@ %p\n' |
        awk '{ t = int($1 / 2) * 2; $1 = ""; print t $0 }' | sort)
}
same_tree() {
    diff -r plain host || fail "$1: DIR differs from the plain directory (seed $seed)"
    times plain >plain.times
    times host >host.times
    diff plain.times host.times || fail "$1: modification times differ (seed $seed)"
    [ -z "$(find host -name '.vdisk-vvfat*')" ] || fail "$1: a temporary file was left"
}

# fsck_clean: fsck.fat -n on the partition, read through the export
fsck_clean() {
    dd if=img of=part.raw bs=512 skip=63 status=none || fail "read the export"
    fsck.fat -n part.raw >fsck.out 2>&1 || fail "$1: fsck.fat -n: $(cat fsck.out)"
}

mkdir host plain
/usr/bin/python3 "$lib" tree host "$seed" 60000 40 || fail "tree"
mkdir -p host/sub/deeper && echo one >host/sub/one.txt && echo two >host/sub/deeper/two.txt
cp -a host/. plain/

start_fuse img -f raw fat:rw:12:host
for round in 1 2 3 4; do
    /usr/bin/python3 "$lib" ops "img@@$part" plain "$seed" "$round" 25 >ops.$round ||
        fail "round $round: $(tail -n 3 ops.$round) (seed $seed)"
    same_tree "round $round"
    fsck_clean "round $round"
done
stop_fuse img
[ -s fuse.err ] && fail "warnings: $(cat fuse.err)"
# a fresh export of the tree reads back the same files
start_fuse img -f raw -r fat:host
rm -rf back && mkdir back
mcopy -s -m -i "img@@$part" '::/*' back/ || fail "mcopy -s back"
stop_fuse img
diff -r plain back || fail "the tree read back differs (seed $seed)"

# refused: nothing applied, a warning that says why
# (the export then fails its last flush at exit: non-zero, with the error)
refused() {
    local what=$1 before
    fusermount3 -u img || fail "fusermount3 -u"
    wait_exit "$FUSE_PID"
    [ "$EXIT_RC" != 0 ] && [ "$EXIT_RC" != 255 ] || fail "export exit $EXIT_RC after a refused commit"
    grep -q "Failed to flush" fuse.err || fail "no flush error at exit: $(cat fuse.err)"
    grep -q "nothing written back: .*$what" fuse.err ||
        fail "no warning about '$what': $(cat fuse.err)"
    before=$2
    [ "$(cd host && find . -printf '%p %y %s\n' | sort | md5sum)" = "$before" ] ||
        fail "a refused commit changed DIR ($what)"
}
snapshot() { (cd host && find . -printf '%p %y %s\n' | sort | md5sum); }
I="-i img@@$part"

mkdir -p host/fixed/deeper && echo one >host/fixed/one.txt && echo two >host/fixed/deeper/two.txt
start_fuse img -f raw fat:rw:12:host
echo host >host/fixed/deeper/host-only.txt
before=$(snapshot)
mdeltree $I ::/fixed >/dev/null 2>&1
refused "was never seen by the FAT side" "$before"
[ -f host/fixed/one.txt ] && [ -f host/fixed/deeper/two.txt ] || fail "files of a refused delete"

start_fuse img -f raw fat:rw:12:host
echo host >host/taken
before=$(snapshot)
mmd $I ::/taken >/dev/null 2>&1
refused "exists on the host but not on the FAT side" "$before"
rm host/taken

mkdir -p elsewhere/real && echo precious >elsewhere/real/keep.txt
ln -s "$PWD/elsewhere/real" host/link
start_fuse img -f raw fat:rw:12:host
before=$(snapshot)
mdeltree $I ::/link >/dev/null 2>&1
refused "is a symbolic link on the host" "$before"
[ "$(cat elsewhere/real/keep.txt)" = precious ] || fail "a file behind a symbolic link was deleted"
echo "ok (seed $seed)"
