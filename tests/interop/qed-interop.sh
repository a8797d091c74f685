#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qed against QEMU 7.2: vdisk creates the same bytes as qemu-img; seeded
# random workloads written by vdisk-io read identically in QEMU (qemu-img
# compare against a raw reference, qemu-img check clean) and the other way
# round; a backing chain written by vdisk reads correctly in QEMU; map,
# info and resize agree.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

# gen.py SEED SIZE: qemu-io commands of a random workload (writes with
# patterns, zero writes; some unaligned)
cat > gen.py <<'PY'
import random, sys
seed, size = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
for _ in range(r.randint(15, 40)):
    ln = r.choice([1, 512, 4096, 5000, 65536, 100000, 1 << 20, 3 << 20])
    ln = min(ln, size)
    off = r.randrange(0, size - ln + 1)
    if r.random() < 0.6:
        off -= off % 512
    k = r.random()
    if k < 0.15:
        print("write -z %d %d" % (off, ln))
    else:
        print("write -P 0x%02x %d %d" % (r.randrange(1, 256), off, ln))
PY
# run_io TOOL FORMAT IMAGE CMDFILE
run_io() {
    local tool=$1 fmt=$2 img=$3 args=()
    while IFS= read -r c; do args+=(-c "$c"); done < "$4"
    "$tool" -f "$fmt" "${args[@]}" "$img" >/dev/null || fail "$tool workload on $img"
}
vsize() { qemu-img info --output=json -f "$1" "$2" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'; }

# 1. create: byte-identical headers and tables
for o in "" "cluster_size=4k" "cluster_size=1M,table_size=16" "table_size=1" "cluster_size=8k,table_size=2"; do
    qemu-img create -q -f qed ${o:+-o $o} q.qed 48M
    "$VDISK" create -q -f qed ${o:+-o $o} v.qed 48M || fail "create -o '$o'"
    cmp -s q.qed v.qed || fail "create -o '$o' differs from qemu-img"
done
truncate -s 20M base.raw
qemu-img create -q -f qed -b base.raw -F raw q.qed
"$VDISK" create -q -f qed -b base.raw -F raw v.qed || fail "create with backing"
cmp -s q.qed v.qed || fail "create -b base.raw -F raw differs"
# create errors as qemu-img
expect_fail "QED cluster size must be within range" "$VDISK" create -f qed -o cluster_size=128M x.qed 1G
expect_fail "QED table size must be within range" "$VDISK" create -f qed -o table_size=3 x.qed 1G
expect_fail "QED image size must be a non-zero multiple" "$VDISK" create -f qed -o cluster_size=4k,table_size=1 x.qed 1T

# 2. random workloads, both directions, for several geometries
seed=0
for o in "cluster_size=4k,table_size=2" "" "cluster_size=1M"; do
    for size in 33554432 10000896; do
        seed=$((seed + 1))
        /usr/bin/python3 gen.py $seed $size > w.txt
        rm -f ref.raw v.qed q.qed
        truncate -s $size ref.raw
        run_io qemu-io raw ref.raw w.txt
        # vdisk writes, QEMU reads
        "$VDISK" create -q -f qed ${o:+-o $o} v.qed $size || fail "create $o"
        run_io "$VDISK_IO" qed v.qed w.txt
        qemu-img compare -q -f qed -F raw v.qed ref.raw || fail "QEMU reads vdisk's qed differently (-o '$o', seed $seed)"
        qemu-img check -q -f qed v.qed || fail "qemu-img check finds errors in vdisk's qed (-o '$o', seed $seed)"
        [ "$(qemu-img check --output=json v.qed | grep -c leaks)" = 0 ] || fail "vdisk's qed leaks (seed $seed)"
        a=$("$VDISK" map --output=json -f qed v.qed) || fail "vdisk map"
        b=$(qemu-img map --output=json -f qed v.qed)
        [ "$a" = "$b" ] || fail "map differs (seed $seed):
$a
--- qemu-img:
$b"
        # QEMU writes, vdisk reads
        qemu-img create -q -f qed ${o:+-o $o} q.qed $size
        run_io qemu-io qed q.qed w.txt
        "$VDISK" convert -f qed -O raw q.qed out.raw || fail "vdisk convert of QEMU's qed"
        cmp -s out.raw ref.raw || fail "vdisk reads QEMU's qed differently (-o '$o', seed $seed)"
        a=$("$VDISK" check --output=json q.qed) || fail "vdisk check of QEMU's qed"
        b=$(qemu-img check --output=json q.qed)
        [ "$a" = "$b" ] || fail "check differs:
$a
--- qemu-img:
$b"
    done
done

# 3. backing chain written by vdisk: raw <- qed <- qed
/usr/bin/python3 - <<'PY'
import random
r = random.Random(7)
with open("base.raw", "wb") as f:
    f.write(bytes(r.getrandbits(8) for _ in range(3 << 20)))
    f.truncate(24 << 20)
PY
cp base.raw ref.raw
rm -f mid.qed top.qed
"$VDISK" create -q -f qed -o cluster_size=4k -b base.raw -F raw mid.qed || fail "create mid"
"$VDISK" create -q -f qed -b mid.qed -F qed top.qed || fail "create top"
/usr/bin/python3 gen.py 101 $((24 << 20)) > w1.txt
/usr/bin/python3 gen.py 102 $((24 << 20)) > w2.txt
run_io "$VDISK_IO" qed mid.qed w1.txt
run_io qemu-io raw ref.raw w1.txt
run_io "$VDISK_IO" qed top.qed w2.txt
run_io qemu-io raw ref.raw w2.txt
qemu-img compare -q -f qed -F raw top.qed ref.raw || fail "QEMU reads vdisk's qed chain differently"
qemu-img check -q top.qed || fail "qemu-img check top"
qemu-img check -q mid.qed || fail "qemu-img check mid"
"$VDISK" convert -O raw top.qed out.raw || fail "vdisk convert chain"
cmp -s out.raw ref.raw || fail "vdisk reads its own chain differently"
a=$("$VDISK" info --output=json --backing-chain top.qed) || fail "vdisk info chain"
b=$(qemu-img info --output=json --backing-chain top.qed)
# actual-size may differ by allocation granularity; compare the rest
strip() { grep -v '"actual-size"'; }
[ "$(echo "$a" | strip)" = "$(echo "$b" | strip)" ] || fail "info --backing-chain differs:
$a
--- qemu-img:
$b"

# 4. need-check flag: a writer repairs and clears it, as QEMU
qemu-img create -q -f qed n.qed 8M
qemu-io -c 'write -P 9 0 200k' n.qed >/dev/null
printf '\x02' | dd of=n.qed bs=1 seek=16 conv=notrunc 2>/dev/null
"$VDISK_IO" -r -c 'read -P 9 0 200k' n.qed >/dev/null || fail "read of need-check image"
[ "$(od -An -tx1 -j16 -N1 n.qed | tr -d ' ')" = 02 ] || fail "a reader cleared need-check"
"$VDISK_IO" -c 'write -P 8 300k 4k' n.qed >/dev/null || fail "write to need-check image"
[ "$(od -An -tx1 -j16 -N1 n.qed | tr -d ' ')" = 00 ] || fail "need-check still set after a clean close"
qemu-img check -q n.qed || fail "check after repair"

# 5. corruption: an L2 entry pointing past the end (qemu-img check's counts and exits)
qemu-img create -q -f qed c.qed 10M
qemu-io -c 'write -P 1 0 100k' c.qed >/dev/null
l2=$(od -An -tu8 -j65536 -N8 c.qed | tr -d ' ')
printf '\x00\x90\x78\x56\x34\x12\x00\x00' | dd of=c.qed bs=1 seek=$l2 conv=notrunc 2>/dev/null
cp c.qed c2.qed
rc=0; a=$("$VDISK" check --output=json c.qed 2>/dev/null) || rc=$?
qrc=0; b=$(qemu-img check --output=json c2.qed 2>/dev/null) || qrc=$?
[ "$rc" = "$qrc" ] && [ "$rc" = 2 ] || fail "check corrupt: exit $rc, qemu-img $qrc"
[ "$a" = "$(echo "$b" | sed 's/c2.qed/c.qed/')" ] || fail "check corrupt output differs:
$a
--- qemu-img:
$b"
rc=0; "$VDISK" check -r all c.qed >/dev/null 2>&1 || rc=$?
qrc=0; qemu-img check -r all c2.qed >/dev/null 2>&1 || qrc=$?
[ "$rc" = "$qrc" ] || fail "check -r all: exit $rc, qemu-img $qrc"
cmp -s c.qed c2.qed || fail "repair wrote different bytes than qemu-img's"
# the same damage in an image left with need-check: check -r reports and
# repairs it (opening for the check must not repair it silently first)
qemu-io -c 'write -P 3 1M 100k' c.qed >/dev/null
l2=$(od -An -tu8 -j65536 -N8 c.qed | tr -d " ")
printf '\x00\x90\x78\x56\x34\x12\x00\x00' | dd of=c.qed bs=1 seek=$((l2 + 128)) conv=notrunc 2>/dev/null
printf '\x02' | dd of=c.qed bs=1 seek=16 conv=notrunc 2>/dev/null
cp c.qed c2.qed
a=$("$VDISK" check -r all c.qed 2>&1; echo "exit $?")
b=$(qemu-img check -r all c2.qed 2>&1; echo "exit $?")
[ "$a" = "$b" ] || fail "check -r all of a need-check image differs:
$a
--- qemu-img:
$b"
cmp -s c.qed c2.qed || fail "need-check repair wrote different bytes than qemu-img's"

# 6. resize: grow works, shrink refused, QEMU sees the new size
qemu-img create -q -f qed r.qed 10M
"$VDISK" resize r.qed 30M >/dev/null || fail "resize grow"
[ "$(vsize qed r.qed)" = 31457280 ] || fail "QEMU sees size $(vsize qed r.qed) after resize"
expect_fail "Shrinking" "$VDISK" resize --shrink r.qed 5M
qemu-img check -q r.qed || fail "check after resize"
echo ok
