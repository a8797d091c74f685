#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile qcow2 snapshot tables, snapshot L1 tables, bitmap extensions,
# bitmap directories and bitmap tables: every field patched with bad
# values in a valid image (data, two snapshots, two bitmaps).  Every vdisk
# operation that reads or rewrites them (info, check, snapshot -l/-a/-c/-d,
# convert -l, bitmap actions, a dirtying write, amend) ends cleanly within
# 256 MiB of address space and 20 s (exit < 124), and the clearly invalid
# ones fail with a message.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io prlimit

qemu-img create -q -f qcow2 -o cluster_size=4k good.qcow2 16M
qemu-io -c 'write -P 0x61 0 1M' good.qcow2 >/dev/null
qemu-img snapshot -c snap1 good.qcow2
qemu-io -c 'write -P 0x62 512k 64k' good.qcow2 >/dev/null
qemu-img snapshot -c snap2 good.qcow2
qemu-img bitmap --add good.qcow2 bm0
qemu-img bitmap --add -g 512 good.qcow2 bm1
qemu-io -c 'write -P 0x63 2M 64k' good.qcow2 >/dev/null

# offsets of the structures to patch, from the header
eval "$(/usr/bin/python3 - good.qcow2 <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
be = lambda o, n: int.from_bytes(d[o:o + n], "big")
snap = be(64, 8)
print("SNAP=%d" % snap)
print("SNAP_L1=%d" % be(snap, 8))
hl = be(100, 4)
o = hl
while o + 8 <= 4096:
    magic, ln = be(o, 4), be(o + 4, 4)
    if magic == 0:
        break
    if magic == 0x23852875:
        print("BMEXT=%d" % (o + 8))
        dirp = be(o + 8 + 16, 8)
        print("BMDIR=%d" % dirp)
        print("BMTABLE=%d" % be(dirp, 8))
    o += 8 + ((ln + 7) & ~7)
EOF
)"
[ -n "${BMDIR:-}" ] || fail "could not find the bitmap directory"

limit() { bounded "$@"; }

patch() { # FILE OFFSET WIDTH VALUE (big endian)
    /usr/bin/python3 - "$@" <<'EOF'
import sys
f, off, width, val = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3]), int(sys.argv[4], 0)
with open(f, "r+b") as fh:
    fh.seek(off)
    fh.write((val & ((1 << (8 * width)) - 1)).to_bytes(width, "big"))
EOF
}

n=0
run() { # what cmd...: must end cleanly
    local rc=0 out
    out=$(limit "$@" 2>&1) || rc=$?
    [ $rc -lt 124 ] || fail "$what: exit $rc (crash/timeout): $* -- $out"
    last_rc=$rc
    last_out=$out
}

try() { # OFFSET WIDTH VALUE [must-fail]
    local img=h$n.qcow2
    n=$((n + 1))
    cp good.qcow2 "$img"
    patch "$img" "$1" "$2" "$3"
    what="field $1=$3"
    run "$VDISK" info "$img"
    if [ "${4:-}" = must-fail ]; then
        [ $last_rc -ne 0 ] || fail "vdisk info accepted $what"
        [ -n "$last_out" ] || fail "vdisk info failed silently for $what"
    fi
    run "$VDISK" check "$img"
    run "$VDISK" snapshot -l "$img"
    run "$VDISK" convert -l snap1 -O raw "$img" out.raw
    run "$VDISK" snapshot -a snap2 "$img"
    run "$VDISK" snapshot -c new "$img"
    run "$VDISK" snapshot -d snap1 "$img"
    run "$VDISK" bitmap --merge bm1 --clear "$img" bm0
    run "$VDISK" bitmap --add "$img" new
    run "$VDISK_IO" -c 'write -P 1 0 64k' -c 'write -z 8M 1M' "$img"
    run "$VDISK" bitmap --remove "$img" bm1
    run "$VDISK" amend -o compat=0.10 "$img"
    run "$VDISK" check "$img"
    rm -f "$img" out.raw
}

M64=0xffffffffffffffff
# the snapshot table in the header
try 60 4 0xffffffff must-fail
try 60 4 65537 must-fail
try 60 4 3
try 64 8 $((SNAP + 1)) must-fail
try 64 8 0x7ffffffffffff000
try 64 8 $M64 must-fail
try 64 8 0
# snapshot entry 0: L1 table, id and name lengths, extra data
try $SNAP 8 0
try $SNAP 8 0x201
try $SNAP 8 0x7ffffffffffff000
try $SNAP 8 $M64
try $((SNAP + 8)) 4 0xffffffff
try $((SNAP + 8)) 4 0x10000000
try $((SNAP + 8)) 4 0
try $((SNAP + 12)) 2 0xffff
try $((SNAP + 14)) 2 0xffff
try $((SNAP + 36)) 4 0xffffffff must-fail
try $((SNAP + 36)) 4 1025 must-fail
try $((SNAP + 36)) 4 0
try $((SNAP + 36)) 4 8
try $((SNAP + 40)) 8 $M64          # vm state size
try $((SNAP + 48)) 8 0x7ffffffffffffe00   # disk size
try $((SNAP + 48)) 8 $M64
try $((SNAP + 48)) 8 1
# snapshot L1 entries: L2 tables at bad places
try $SNAP_L1 8 0x8000000000000201
try $SNAP_L1 8 0x00fffffffffff000
try $SNAP_L1 8 $M64
# the bitmaps extension
try $BMEXT 4 0 must-fail
try $BMEXT 4 3 must-fail
try $BMEXT 4 65536 must-fail
try $((BMEXT + 4)) 4 1 must-fail
try $((BMEXT + 8)) 8 0
try $((BMEXT + 8)) 8 1
try $((BMEXT + 8)) 8 0x10000000000 must-fail
try $((BMEXT + 16)) 8 $((BMDIR + 8)) must-fail
try $((BMEXT + 16)) 8 0x7ffffffffffff000
try $((BMEXT + 16)) 8 $M64 must-fail
# bitmap directory entry 0
try $BMDIR 8 0 must-fail
try $BMDIR 8 $((BMTABLE + 8)) must-fail
try $BMDIR 8 0x7ffffffffffff000
try $((BMDIR + 8)) 4 0 must-fail
try $((BMDIR + 8)) 4 0xffffffff must-fail
try $((BMDIR + 8)) 4 0x8000000 must-fail
try $((BMDIR + 12)) 4 0x80000000 must-fail
try $((BMDIR + 12)) 4 1
try $((BMDIR + 16)) 1 2 must-fail
try $((BMDIR + 17)) 1 8 must-fail
try $((BMDIR + 17)) 1 32 must-fail
try $((BMDIR + 17)) 1 31
try $((BMDIR + 18)) 2 0xffff must-fail
try $((BMDIR + 18)) 2 0
try $((BMDIR + 20)) 4 8 must-fail
# bitmap table entries: reserved bits, all-ones with an offset, bad places
try $BMTABLE 8 0x8000000000000000
try $BMTABLE 8 0x1001
try $BMTABLE 8 0x1201
try $BMTABLE 8 0x00fffffffffff000
try $BMTABLE 8 1

# QEMU refuses the clearly invalid directories too (same verdicts)
cp good.qcow2 q.qcow2
patch q.qcow2 $((BMDIR + 16)) 1 2
qemu-img info q.qcow2 >/dev/null 2>&1 && fail "qemu-img accepts a bitmap of type 2"
expect_fail "doesn't satisfy the constraints" "$VDISK" info q.qcow2
# flag bit 2 (extra_data_compatible) is reserved for QEMU 7.2 too
cp good.qcow2 q.qcow2
patch q.qcow2 $((BMDIR + 12)) 4 6
out=$(qemu-img info q.qcow2 2>&1) && fail "qemu-img accepts bitmap flag bit 2"
case "$out" in *"doesn't satisfy the constraints"*) ;; *) fail "qemu-img: $out" ;; esac
expect_fail "doesn't satisfy the constraints" "$VDISK" info q.qcow2
# a directory that ends inside its second entry: QEMU's words
cp good.qcow2 q.qcow2
patch q.qcow2 $((BMEXT + 8)) 8 40
out=$(qemu-img info q.qcow2 2>&1) && fail "qemu-img accepts a truncated directory"
case "$out" in *"Broken bitmap directory"*) ;; *) fail "qemu-img: $out" ;; esac
expect_fail "Broken bitmap directory" "$VDISK" info q.qcow2
echo ok
