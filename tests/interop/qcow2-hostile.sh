#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile qcow2 headers: every header field QEMU's 2014 CVE fixes validate
# (L1 size/offset, refcount table size/offset, cluster bits, backing file
# offset/length, snapshot count/offset, header length, refcount order,
# unknown incompatible bits, size ...) is patched with bad values in a
# valid image (data, backing file name, snapshot, bitmap).  vdisk info,
# vdisk check and a vdisk-io read must end cleanly (exit < 128, no
# timeout) within 256 MiB of address space, and the clearly invalid ones
# must fail with a message.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io prlimit python3

qemu-img create -q -f qcow2 base.qcow2 16M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 good.qcow2 16M
qemu-io -c 'write -P 0x61 0 1M' -c 'write -P 0x62 8M 64k' good.qcow2 >/dev/null
qemu-img snapshot -c snap1 good.qcow2
qemu-img bitmap --add good.qcow2 bm0
qemu-io -c 'write -P 0x63 2M 64k' good.qcow2 >/dev/null

limit() { bounded "$@"; }

# patch FILE OFFSET WIDTH VALUE (big endian)
patch() {
    python3 - "$@" <<'EOF'
import sys
f, off, width, val = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3]), int(sys.argv[4], 0)
with open(f, "r+b") as fh:
    fh.seek(off)
    fh.write((val & ((1 << (8 * width)) - 1)).to_bytes(width, "big"))
EOF
}

n=0
try() { # try OFFSET WIDTH VALUE [must-fail]
    local img=h$n.qcow2
    n=$((n + 1))
    cp good.qcow2 "$img"
    patch "$img" "$1" "$2" "$3"
    local rc=0 out
    out=$(limit "$VDISK" info -f qcow2 "$img" 2>&1) || rc=$?
    [ $rc -lt 124 ] || fail "vdisk info: exit $rc (crash/timeout) for field $1=$3: $out"
    if [ "${4:-}" = must-fail ]; then
        [ $rc -ne 0 ] || fail "vdisk info accepted field $1=$3"
        [ -n "$out" ] || fail "vdisk info failed silently for field $1=$3"
    fi
    rc=0
    out=$(limit "$VDISK" check -f qcow2 "$img" 2>&1) || rc=$?
    [ $rc -lt 124 ] || fail "vdisk check: exit $rc (crash/timeout) for field $1=$3: $out"
    rc=0
    out=$(limit "$VDISK_IO" -f qcow2 -r -c 'read 0 1M' -c 'read 8M 128k' -c 'map' "$img" 2>&1) || rc=$?
    [ $rc -lt 124 ] || fail "vdisk-io read: exit $rc (crash/timeout) for field $1=$3: $out"
    # writes to a corrupt image must not crash either
    rc=0
    out=$(limit "$VDISK_IO" -f qcow2 -c 'write -P 1 4M 64k' "$img" 2>&1) || rc=$?
    [ $rc -lt 124 ] || fail "vdisk-io write: exit $rc (crash/timeout) for field $1=$3: $out"
}

M64=0xffffffffffffffff
# version
try 4 4 0 must-fail; try 4 4 1 must-fail; try 4 4 4 must-fail; try 4 4 0xffffffff must-fail
# backing file offset and size
try 8 8 0x1000000 must-fail; try 8 8 $M64 must-fail; try 8 8 0xfff0
try 16 4 1024 must-fail; try 16 4 0xffffffff must-fail; try 16 4 0
# cluster bits
for v in 0 8 22 31 64 0xffffffff; do try 20 4 $v must-fail; done
# virtual size
try 24 8 0; try 24 8 0x7fffffffffffffff must-fail; try 24 8 $M64 must-fail
try 24 8 0x4000000000000000 must-fail; try 24 8 0x100000000000
# encryption
# 1 (AES) opens for info without a key, as in qemu-img; 2 (LUKS) needs its
# header extension (qemu-img info crashes on it)
try 32 4 1; try 32 4 2 must-fail; try 32 4 3 must-fail
# L1 size and offset
try 36 4 0 must-fail; try 36 4 0xffffffff must-fail; try 36 4 0x400001 must-fail
try 36 4 0x3fffff; try 36 4 0x100000
try 40 8 0 ; try 40 8 1 must-fail; try 40 8 $M64 must-fail; try 40 8 0x7ffffffffffffe00 must-fail
try 40 8 0x10000000000
# refcount table offset and clusters
try 48 8 0 ; try 48 8 1 must-fail; try 48 8 $M64 must-fail; try 48 8 0x10000000000
try 56 4 0 must-fail; try 56 4 0xffffffff must-fail; try 56 4 129 must-fail; try 56 4 128
# snapshots
try 60 4 65537 must-fail; try 60 4 0xffffffff must-fail; try 60 4 65536; try 60 4 2
try 64 8 1 must-fail; try 64 8 $M64 must-fail; try 64 8 0; try 64 8 0x10000
# feature bits
try 72 8 0x20 must-fail; try 72 8 $M64 must-fail; try 72 8 0x4 must-fail; try 72 8 0x2
try 72 8 0x1; try 72 8 0x8 must-fail
try 80 8 $M64; try 88 8 $M64
# refcount order
try 96 4 7 must-fail; try 96 4 0xffffffff must-fail; try 96 4 0; try 96 4 6
# header length
try 100 4 0 must-fail; try 100 4 103 must-fail; try 100 4 0x100000 must-fail
try 100 4 0xffffffff must-fail; try 100 4 120; try 100 4 0x8000
# compression type
try 104 1 1 must-fail; try 104 1 2 must-fail; try 104 1 0xff must-fail
# header extensions: a huge length, a bad backing format length
try 0x74 4 0xffffffff must-fail; try 0x74 4 0x10000

# the messages for a few of them
cp good.qcow2 v.qcow2; patch v.qcow2 36 4 0xffffffff
expect_fail "L1 table too large" "$VDISK" info v.qcow2
cp good.qcow2 v.qcow2; patch v.qcow2 20 4 22
expect_fail "cluster size" "$VDISK" info v.qcow2
cp good.qcow2 v.qcow2; patch v.qcow2 72 8 0x20
expect_fail "Unsupported qcow2 feature" "$VDISK" info v.qcow2
# extended L2 entries (supported since issue 6) need subclusters of >= 512 B
cp good.qcow2 v.qcow2; patch v.qcow2 72 8 0x10; patch v.qcow2 20 4 12
expect_fail "subcluster size" "$VDISK" info v.qcow2
cp good.qcow2 v.qcow2; patch v.qcow2 96 4 7
expect_fail "Reference count entry width too large" "$VDISK" info v.qcow2
cp good.qcow2 v.qcow2; patch v.qcow2 60 4 65537
expect_fail "Snapshot table too large" "$VDISK" info v.qcow2
# QEMU's words for the table checks its iotest 080 matches (refcount
# table, snapshot table, L1 table offsets; snapshot count; an extension
# header running past the header)
for spec in "48 8 1" "60 4 65537" "64 8 1" "40 8 1" "100 4 108"; do
    set -- $spec
    cp good.qcow2 "w$1.qcow2"; patch "w$1.qcow2" "$1" "$2" "$3"
    same_open_error "w$1.qcow2"
done

# the unpatched image reads back fine
"$VDISK_IO" -r -c 'read -P 0x61 0 1M' -c 'read -P 0x62 8M 64k' -c 'read -P 0x63 2M 64k' good.qcow2 \
    >/dev/null || fail "good image does not read back"
echo "ok: $n hostile headers"
