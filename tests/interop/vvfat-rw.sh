#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Virtual FAT rw (fat:rw:DIR): a real FAT driver (mtools) works on a copy
# of the image; the sectors it changed are written through `vdisk-io
# fat:rw:DIR`, and the commit (flush, close) makes DIR equal to the same
# operations done on a plain directory: new files, overwritten files
# (shorter and longer), deleted files, renamed files, in the root and in
# subdirectories, for seeded random trees (also over a vdisk-nbd export,
# several commits in one session: the image reads back what was written);
# then three rounds of seeded random mtools operations on files and
# directories, many per commit; swaps of names and nesting in one commit
# (fsck.fat clean); refusals (a host-only file in a deleted directory, a
# name the host took) with nothing applied; rw on a read-only open, and
# FAT32, fail.  vvfat-rw-fuse.sh does the same through the FUSE export.
. "$VDISK_SRC/tests/lib.sh"
need mcopy mdel mren mmd mrd mmove mdeltree fsck.fat qemu-io qemu-img
export MTOOLS_SKIP_CHECK=1 LANG=C.UTF-8 LC_ALL=C.UTF-8 TZ=UTC
lib="$VDISK_SRC/tests/interop/vvfat/lib.py"
seed=${VDISK_SEED:-$RANDOM}
echo "seed $seed"

# apply BASE MOD SPEC [extra vdisk-io commands]: write MOD's changes to BASE
# through vdisk-io into SPEC
apply() {
    local base=$1 mod=$2 spec=$3; shift 3
    /usr/bin/python3 - "$base" "$mod" >cmds <<'PY'
import os, sys
a = open(sys.argv[1], "rb"); b = open(sys.argv[2], "rb")
off, n, run, start = 0, 0, None, 0
chunks = []
while True:
    x = a.read(1 << 20); y = b.read(1 << 20)
    if not y:
        break
    for i in range(0, len(y), 512):
        if x[i:i + 512] != y[i:i + 512]:
            if run is None:
                run = bytearray(); start = off + i
            run += y[i:i + 512]
        elif run is not None:
            chunks.append((start, bytes(run))); run = None
    off += len(y)
if run is not None:
    chunks.append((start, bytes(run)))
for k, (o, d) in enumerate(chunks):
    open("chunk%d" % k, "wb").write(d)
    print("write -q -s %s/chunk%d %d %d" % (os.getcwd(), k, o, len(d)))
PY
    local args=() c
    while read -r c; do args+=(-c "$c"); done <cmds
    "$VDISK_IO" -f raw "${args[@]}" "$@" "$spec"
}

mkdir host plain
/usr/bin/python3 "$lib" tree host "$seed" 100000 40 || fail "tree"
mkdir host/sub && echo one >host/sub/one.txt && echo keep >host/keep.txt
cp -a host/. plain/
find host -exec touch -h -a -d "2037-01-01 00:00:00" {} +

"$VDISK" convert -O raw fat:host base.raw || fail "convert"
cp base.raw mod.raw
I="-i mod.raw@@32256"
head -c 30000 /dev/urandom >new1.bin
head -c 70000 /dev/urandom >bigger.bin
echo short >shorter.txt
mcopy -m $I new1.bin ::/new1.bin && cp -p new1.bin plain/new1.bin
mcopy -m $I new1.bin "::/sub/A long new name.bin" && cp -p new1.bin "plain/sub/A long new name.bin"
mcopy -o -m $I bigger.bin ::/keep.txt && cp -p bigger.bin plain/keep.txt
mcopy -o -m $I shorter.txt ::/sub/one.txt && cp -p shorter.txt plain/sub/one.txt
mren $I ::/new1.bin ::/renamed.bin && mv plain/new1.bin plain/renamed.bin
# delete two of the random files
find plain -maxdepth 1 -type f -printf '%f\n' | grep -E '^[A-Za-z0-9][A-Za-z0-9 ._-]*$' |
    sort | sed -n '2p;4p' >victims
while IFS= read -r f; do
    mdel $I "::/$f" || fail "mdel $f"
    rm "plain/$f"
done <victims
: >empty.new && mcopy -m $I empty.new ::/empty.new && cp -p empty.new plain/empty.new

apply base.raw mod.raw fat:rw:host -c flush || fail "vdisk-io rw"
diff -r plain host || fail "DIR differs from the same operations on a plain directory (seed $seed)"
ls -a host | grep -q vdisk-vvfat && fail "a temporary file was left"

# through a vdisk-nbd export, over several commits in one session: the
# disk reads back exactly what was written (host files rewritten or
# deleted by a commit no longer back its clusters), and DIR follows
"$VDISK" convert -O raw fat:host base.raw || fail "convert 1b"
sock=$PWD/nbd.sock
"$VDISK_NBD" -t -k "$sock" -f raw fat:rw:host &
pid=$!
trap 'kill $pid 2>/dev/null' EXIT
wait_for qemu-io -f raw -c "read 0 512" "nbd+unix:///?socket=$sock"
url="nbd+unix:///?socket=$sock"
cp base.raw mod.raw
mcopy -o -m $I shorter.txt ::/keep.txt && cp -p shorter.txt plain/keep.txt
mdel $I ::/renamed.bin && rm plain/renamed.bin
apply base.raw mod.raw "$url" -c flush || fail "nbd commit 1"
diff -r plain host || fail "DIR after the first NBD commit (seed $seed)"
cp mod.raw base2.raw
mcopy -m $I bigger.bin ::/sub/bigger.bin && cp -p bigger.bin plain/sub/bigger.bin
mdel $I "::/sub/A long new name.bin" && rm "plain/sub/A long new name.bin"
apply base2.raw mod.raw "$url" -c flush || fail "nbd commit 2"
diff -r plain host || fail "DIR after the second NBD commit (seed $seed)"
qemu-img convert -f raw -O raw "$url" view.raw || fail "read the export"
cmp view.raw mod.raw || fail "the disk does not read back what was written"
kill $pid
wait $pid 2>/dev/null || true
trap - EXIT

# seeded random sequences of mtools operations (files new, overwritten,
# deleted, renamed and moved; directories new, removed, renamed and moved,
# nested), many in one commit: three rounds, each applied through vdisk-io
# and compared with a plain directory (contents, names, file mtimes to
# FAT's 2 seconds)
times() {
    (cd "$1" && find . -type f -printf '%T@ %p\n' |
        awk '{ t = int($1 / 2) * 2; $1 = ""; print t $0 }' | sort)
}
for round in 1 2 3; do
    "$VDISK" convert -O raw fat:host base.raw || fail "convert round $round"
    cp base.raw mod.raw
    /usr/bin/python3 "$lib" ops mod.raw@@32256 plain "$seed" "$round" 30 >ops ||
        fail "round $round: $(tail -n 3 ops)"
    apply base.raw mod.raw fat:rw:host -c flush || fail "round $round: vdisk-io"
    diff -r plain host || fail "round $round: DIR differs (seed $seed): $(cat ops)"
    times plain >plain.times
    times host >host.times
    diff plain.times host.times || fail "round $round: mtimes differ (seed $seed)"
    [ -z "$(find host -name '.vdisk-vvfat*')" ] || fail "round $round: a temporary file was left"
done

# in one commit: two files swap names, two directories swap names, a
# directory and its subdirectory swap nesting, a tree is deleted and a
# directory of the same name made, a file is replaced by a directory of
# its name and a directory by a file
rm -rf host/* plain/*
mkdir -p host/da/inner host/db host/outer/nested host/gone/sub host/fd host/dir2file/x
echo a >host/fa.txt && echo b >host/fb.txt && echo c >host/da/inner/c.txt &&
    echo d >host/db/d.txt && echo n >host/outer/nested/n.txt && echo o >host/outer/o.txt &&
    echo g >host/gone/sub/g.txt && echo f >host/was-file && echo x >host/dir2file/x/x.txt
cp -a host/. plain/
"$VDISK" convert -O raw fat:host base.raw || fail "convert swaps"
cp base.raw mod.raw
mren $I ::/fa.txt ::/tmp-swap && mren $I ::/fb.txt ::/fa.txt && mren $I ::/tmp-swap ::/fb.txt &&
    mren $I ::/da ::/tmp-swap && mren $I ::/db ::/da && mren $I ::/tmp-swap ::/db &&
    mmove $I ::/outer/nested ::/nested && mmove $I ::/outer ::/nested/outer &&
    mdeltree $I ::/gone && mmd $I ::/gone && mdel $I ::/was-file && mmd $I ::/was-file &&
    mdeltree $I ::/dir2file && mcopy -m $I new1.bin ::/dir2file ||
    fail "mtools swaps"
(cd plain && mv fa.txt t && mv fb.txt fa.txt && mv t fb.txt && mv da t && mv db da && mv t db &&
    mv outer/nested nested && mv outer nested/outer && rm -r gone && mkdir gone && rm was-file &&
    mkdir was-file && rm -r dir2file && cp -p ../new1.bin dir2file)
apply base.raw mod.raw fat:rw:host -c flush || fail "vdisk-io swaps"
diff -r plain host || fail "swaps: DIR differs"
ls -a host | grep -q vdisk-vvfat && fail "swaps: a temporary name was left"
fsck_part() {
    dd if="$1" of=part.raw bs=512 skip=63 status=none
    fsck.fat -n part.raw >fsck.out 2>&1 || fail "fsck.fat -n: $(cat fsck.out)"
}
fsck_part mod.raw

# refused, with nothing applied: a directory the FAT side deleted holds a
# file the host added since the open; a new name the host took since the
# open (a vdisk-nbd export, so that the host changes while it is open; the
# warning is the server's)
refusal() {
    local what=$1 before rc=0
    before=$(cd host && find . | sort | md5sum)
    apply base.raw mod.raw "$url" -c flush >nbd-client.out 2>&1 && fail "accepted ($what)"
    kill $pid
    wait $pid 2>/dev/null || rc=$?
    trap - EXIT
    grep -q "nothing written back: $what" nbd.err || fail "no clear refusal: $(cat nbd.err)"
    [ "$(cd host && find . | sort | md5sum)" = "$before" ] || fail "a refused commit changed DIR"
}
start_nbd() {
    rm -f "$sock"
    "$VDISK_NBD" -t -k "$sock" -f raw fat:rw:host 2>nbd.err &
    pid=$!
    trap 'kill $pid 2>/dev/null' EXIT
    wait_for qemu-io -f raw -c "read 0 512" "$url"
}
"$VDISK" convert -O raw fat:host base.raw || fail "convert 2"
cp base.raw mod.raw
mdeltree $I ::/gone ::/db
mcopy $I new1.bin ::/another.bin
start_nbd
echo host >host/db/host-only
refusal "host/db/host-only was never seen by the FAT side"
rm host/db/host-only
cp base.raw mod.raw
mmd $I ::/taken
start_nbd
echo host >host/taken
refusal "host/taken exists on the host but not on the FAT side"

expect_fail "Unable to set VVFAT to 'rw' when drive is read-only" "$VDISK_IO" -r -c "read 0 512" fat:rw:host
expect_fail "rw is not supported with FAT32" "$VDISK_IO" -c "read 0 512" fat:rw:32:host
echo "ok (seed $seed)"
