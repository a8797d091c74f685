#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdi against QEMU 7.2: headers as qemu-img writes them (static and
# dynamic), seeded random workloads both ways, qemu-img check clean on what
# vdisk writes (also after discards), check exit codes as qemu-img's.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

cat > gen.py <<'PY'
import random, sys
seed, size, discard = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
r = random.Random(seed)
for _ in range(r.randint(15, 40)):
    ln = min(r.choice([1, 512, 4096, 5000, 65536, 100000, 1 << 20, 3 << 20]), size)
    off = r.randrange(0, size - ln + 1)
    if r.random() < 0.6:
        off -= off % 512
    k = r.random()
    if k < 0.1:
        print("write -z %d %d" % (off, ln))
    elif k < 0.25 and discard:
        # whole blocks only: what a discard leaves elsewhere is undefined
        b = r.randrange(0, size >> 20)
        n = r.randint(1, 3)
        print("discard %d %d" % (b << 20, min(n << 20, size - (b << 20))))
    else:
        print("write -P 0x%02x %d %d" % (r.randrange(1, 256), off, ln))
PY
run_io() {
    local tool=$1 fmt=$2 img=$3 args=()
    while IFS= read -r c; do
        # the raw reference zeroes what the image discards
        [ "$fmt" = raw ] && c=${c/#discard/write -z}
        args+=(-c "$c")
    done < "$4"
    "$tool" -f "$fmt" "${args[@]}" "$img" >/dev/null || fail "$tool workload on $img"
}
# VDI headers differ only in their random UUIDs (0x188..0x1a7)
# (headers and block maps live in the first MiB; the rest of a new image is
# sparse data blocks, compared by size)
mask() { /usr/bin/python3 -c 'import sys; d=bytearray(open(sys.argv[1],"rb").read(1 << 20)); d[0x188:0x1a8]=bytes(32); sys.stdout.buffer.write(d)' "$1"; }

# 1. create: same bytes as qemu-img (UUIDs aside)
for o in "" "static=on"; do
    for size in 10M 1000 5G 0; do
        rm -f q.vdi v.vdi
        qemu-img create -q -f vdi ${o:+-o $o} q.vdi $size
        "$VDISK" create -q -f vdi ${o:+-o $o} v.vdi $size || fail "create $o $size"
        [ "$(stat -c %s q.vdi)" = "$(stat -c %s v.vdi)" ] || fail "create $o $size: file size differs"
        cmp -s <(mask q.vdi) <(mask v.vdi) || fail "create $o $size differs from qemu-img"
    done
done

# 2. random workloads both ways, dynamic and static
seed=0
for o in "" "static=on"; do
    for size in 25165824 9437696; do
        seed=$((seed + 1))
        disc=1; [ -n "$o" ] && disc=0
        /usr/bin/python3 gen.py $seed $size $disc > w.txt
        rm -f ref.raw v.vdi q.vdi
        truncate -s $size ref.raw
        run_io qemu-io raw ref.raw w.txt
        "$VDISK" create -q -f vdi ${o:+-o $o} v.vdi $size || fail "create"
        run_io "$VDISK_IO" vdi v.vdi w.txt
        qemu-img compare -q -f vdi -F raw v.vdi ref.raw || fail "QEMU reads vdisk's vdi differently (-o '$o', seed $seed)"
        out=$(qemu-img check v.vdi 2>&1) || fail "qemu-img check on vdisk's vdi (seed $seed): $out"
        a=$("$VDISK" map --output=json -f vdi v.vdi) || fail "vdisk map"
        b=$(qemu-img map --output=json -f vdi v.vdi)
        [ "$a" = "$b" ] || fail "map differs (seed $seed):
$a
--- qemu-img:
$b"
        # QEMU writes (no discard in QEMU's vdi), vdisk reads
        sed 's/^discard/write -z/' w.txt > wq.txt
        qemu-img create -q -f vdi ${o:+-o $o} q.vdi $size
        run_io qemu-io vdi q.vdi wq.txt
        "$VDISK" convert -f vdi -O raw q.vdi out.raw || fail "vdisk convert of QEMU's vdi"
        cmp -s out.raw ref.raw || fail "vdisk reads QEMU's vdi differently (-o '$o', seed $seed)"
    done
done

# 3. discard gives space back and keeps the image consistent
rm -f d.vdi
"$VDISK" create -q -f vdi d.vdi 8M
"$VDISK_IO" -c 'write -P 1 0 8M' d.vdi >/dev/null
before=$(stat -c %s d.vdi)
"$VDISK_IO" -c 'discard 1M 2M' -c 'discard 0 512k' d.vdi >/dev/null || fail "discard"
after=$(stat -c %s d.vdi)
[ "$after" -eq $((before - (2 << 20))) ] || fail "discard of 2 blocks: file $before -> $after"
qemu-img check -q d.vdi || fail "qemu-img check after discard"
qemu-io -c 'read -P 1 0 1M' -c 'read -P 0 1M 2M' -c 'read -P 1 3M 5M' d.vdi >/dev/null || fail "QEMU reads the discarded image wrongly"

# 4. check: clean 0, -r refused like qemu-img (63), corruption 2
qemu-img create -q -f vdi c.vdi 4M
qemu-io -c 'write -P 1 0 2M' c.vdi >/dev/null
for args in "" "-r all" "-r leaks"; do
    rc=0; "$VDISK" check $args c.vdi >/dev/null 2>&1 || rc=$?
    qrc=0; qemu-img check $args c.vdi >/dev/null 2>&1 || qrc=$?
    [ "$rc" = "$qrc" ] || fail "check $args: exit $rc, qemu-img $qrc"
done
# two map entries sharing block 0, and a wrong allocated count
printf '\x00\x00\x00\x00' | dd of=c.vdi bs=1 seek=$((0x200 + 8)) conv=notrunc 2>/dev/null
rc=0; a=$("$VDISK" check --output=json c.vdi 2>/dev/null) || rc=$?
qrc=0; b=$(qemu-img check --output=json c.vdi 2>/dev/null) || qrc=$?
[ "$rc" = "$qrc" ] && [ "$rc" = 2 ] || fail "check corrupt: exit $rc, qemu-img $qrc"
[ "$a" = "$b" ] || fail "check corrupt output differs:
$a
--- qemu-img:
$b"
echo ok
