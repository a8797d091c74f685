#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# VHDX images made by qemu-img create -f vhdx (dynamic and fixed, several
# block and log sizes, block_state_zero on and off) with data written by
# qemu-io at seeded random offsets read in vdisk exactly as in QEMU: the
# same bytes (convert -O raw, cmp), the same info and map; libvhdi's
# vhdiinfo reports the size vdisk does.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io vhdiinfo

n=0
for spec in "dynamic 0 1M 64M on" "dynamic 1M 1M 40M off" "dynamic 32M 4M 100M on" \
    "fixed 0 1M 24M on" "fixed 2M 8M 30M off" "dynamic 256M 1M 300M on" \
    "dynamic 8M 1M 1000000000 on"; do
    set -- $spec
    n=$((n + 1))
    f=img$n.vhdx
    qemu-img create -q -f vhdx -o subformat=$1,block_size=$2,log_size=$3,block_state_zero=$5 \
        "$f" "$4" || fail "qemu-img create $spec"
    size=$(qemu-img info --output=json "$f" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    # seeded writes: patterns, zeroes, some across block boundaries
    cmds=$(/usr/bin/python3 - "$size" "$n" <<'PY'
import random, sys
size, seed = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
for _ in range(25):
    ln = r.choice([512, 4096, 65536, 1 << 20, 3 << 20]) 
    ln = min(ln, size)
    off = r.randrange(0, size - ln + 1) & ~511
    if r.random() < 0.2:
        print("-c 'write -z %d %d'" % (off, ln))
    else:
        print("-c 'write -P %d %d %d'" % (r.randrange(1, 256), off, ln))
PY
)
    eval qemu-io -f vhdx $cmds "$f" >/dev/null || fail "qemu-io $spec"
    a=$("$VDISK" info --output=json "$f") || fail "vdisk info $f"
    b=$(qemu-img info --output=json "$f")
    [ "$a" = "$b" ] || fail "info $f differs:
$a
--- qemu-img:
$b"
    [ "$("$VDISK" map --output=json "$f")" = "$(qemu-img map --output=json "$f")" ] \
        || fail "map $f differs from qemu-img's"
    "$VDISK" convert -O raw "$f" v.raw || fail "vdisk convert $f"
    qemu-img convert -O raw "$f" q.raw
    same_content v.raw q.raw
    "$VDISK" compare -f vhdx -F raw "$f" q.raw >/dev/null || fail "compare $f"
    # odd offsets and lengths match qemu-io's
    for r in "1 1000" "1048575 70001" "$((size - 1)) 1"; do
        a=$("$VDISK_IO" -r -f vhdx -c "read -v $r" "$f" | grep -v ' ops;') || fail "read $r"
        b=$(qemu-io -r -f vhdx -c "read -v $r" "$f" | grep -v ' ops;')
        [ "$a" = "$b" ] || fail "read $r of $f differs from qemu-io's"
    done
    m=$(vhdiinfo "$f" | sed -n 's/.*Media size.*(\([0-9]*\) bytes).*/\1/p')
    [ "$m" = "$size" ] || fail "vhdiinfo says $m bytes for $f, vdisk $size"
done
# read-write (vhdx-write.sh tests writes): a write of vdisk's reads back in qemu-io
"$VDISK_IO" -f vhdx -c "write -P 77 4096 512" img1.vhdx >/dev/null || fail "vdisk-io write"
qemu-io -r -f vhdx -c "read -P 77 4096 512" img1.vhdx >/dev/null || fail "qemu-io reads vdisk's write"
qemu-img check img1.vhdx >/dev/null || fail "qemu-img check after a vdisk write"
echo ok
