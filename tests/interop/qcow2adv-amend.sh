#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk amend on qcow2, checked with QEMU.  Images with data, compressed
# clusters, zero clusters (plain and allocated), snapshots and a backing
# file go through refcount width changes, compat downgrade and upgrade,
# lazy refcounts on/off and size changes; after each step `qemu-img check`
# finds nothing, the image and every snapshot read as before (QEMU reads),
# and qemu-img info reports the new options.  QEMU then amends what vdisk
# wrote and vdisk reads and checks it.  Refusals name the problem.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

spec() { qemu-img info --output=json "$1" | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['format-specific']['data'].get('$2'))"; }

same_data() { # image what
    qemu-img compare -q -f qcow2 -F raw "$1" ref.raw || fail "content changed: $2"
    qemu-img convert -l s1 -O raw "$1" s1.now
    cmp -s s1.now s1.raw || fail "snapshot s1 changed: $2"
}

for cs in 512 4096 65536; do
    rm -f base.qcow2 a.qcow2 ref.raw s1.raw
    qemu-img create -q -f qcow2 -o cluster_size=$cs base.qcow2 4M
    qemu-io -c 'write -P 0x11 0 4M' base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o cluster_size=$cs -b base.qcow2 -F qcow2 a.qcow2
    qemu-io -c 'write -P 1 0 256k' -c "write -c -P 2 512k $cs" -c 'write -z 1M 128k' \
        -c 'write -z -u 1536k 64k' -c 'write -P 3 2M 64k' a.qcow2 >/dev/null
    qemu-img snapshot -c s1 a.qcow2
    qemu-img convert -O raw a.qcow2 s1.raw
    # after the snapshot: zero writes over shared clusters (zero-allocated
    # entries whose clusters the snapshot still uses as data)
    qemu-io -c 'write -z 2M 32k' -c 'write -z 0 64k' -c 'write -P 4 3M 64k' a.qcow2 >/dev/null
    "$VDISK_IO" -c 'write -z 128k 64k' -c "write -c -P 5 $((3 * 1024 * 1024 + 512 * 1024)) $cs" \
        a.qcow2 >/dev/null
    qemu-img convert -O raw a.qcow2 ref.raw

    for rb in 8 64 32 4 16; do
        "$VDISK" amend -o refcount_bits=$rb a.qcow2 || fail "cs=$cs refcount_bits=$rb"
        [ "$(spec a.qcow2 refcount-bits)" = $rb ] || fail "cs=$cs: width is $(spec a.qcow2 refcount-bits)"
        qemu-img check -q a.qcow2 || fail "cs=$cs: check after refcount_bits=$rb"
        same_data a.qcow2 "refcount_bits=$rb cs=$cs"
    done
    "$VDISK" amend -o lazy_refcounts=on a.qcow2 || fail "lazy on"
    [ "$(spec a.qcow2 lazy-refcounts)" = True ] || fail "lazy refcounts not on"
    "$VDISK_IO" -c 'write -P 6 3M 4k' a.qcow2 >/dev/null
    qemu-io -f raw -c 'write -P 6 3M 4k' ref.raw >/dev/null
    "$VDISK" amend -p -o lazy_refcounts=off,compat=0.10 a.qcow2 >progress.txt || fail "downgrade"
    grep -q '100.00/100%' progress.txt || fail "no progress output: $(cat progress.txt)"
    [ "$(spec a.qcow2 compat)" = 0.10 ] || fail "compat: $(spec a.qcow2 compat)"
    qemu-img check -q a.qcow2 || fail "cs=$cs: check after downgrade"
    same_data a.qcow2 "downgrade cs=$cs"
    # no zero flag may be left in any table, active or snapshot
    qemu-io -r -c 'read 0 4M' a.qcow2 >/dev/null || fail "QEMU cannot read the v2 image"
    "$VDISK" amend -o compat=1.1,refcount_bits=2 a.qcow2 2>err.txt ||
        grep -q "Cannot decrease refcount entry width" err.txt || fail "upgrade: $(cat err.txt)"
    "$VDISK" amend -o compat=1.1 a.qcow2 || fail "upgrade"
    [ "$(spec a.qcow2 compat)" = 1.1 ] || fail "compat after upgrade"
    qemu-img check -q a.qcow2 || fail "cs=$cs: check after upgrade"
    same_data a.qcow2 "upgrade cs=$cs"

    # QEMU amends what vdisk wrote; vdisk reads and checks it
    qemu-img amend -o refcount_bits=8 a.qcow2
    "$VDISK" check -q a.qcow2 >/dev/null || fail "vdisk check after QEMU's amend"
    "$VDISK" compare -q -f qcow2 -F raw a.qcow2 ref.raw || fail "vdisk reads QEMU's amend"
    "$VDISK" amend -o refcount_bits=16 a.qcow2 || fail "back to 16 bits"
    qemu-img check -q a.qcow2 || fail "check after the last width change"
done

# vdisk's downgrade reads like QEMU's
qemu-img create -q -f qcow2 z.qcow2 4M
qemu-io -c 'write -P 9 0 1M' -c 'write -z 256k 64k' -c 'write -z -u 512k 64k' z.qcow2 >/dev/null
cp z.qcow2 zq.qcow2
"$VDISK" amend -o compat=0.10 z.qcow2 || fail "downgrade z"
qemu-img amend -o compat=0.10 zq.qcow2
qemu-img compare -q z.qcow2 zq.qcow2 || fail "downgrades read differently"
qemu-img check -q z.qcow2 || fail "check z"

# size, backing file (vdisk rewrites the reference; qemu-img 7.2 refuses)
"$VDISK" amend -o size=8M z.qcow2 || fail "size grow"
[ "$(qemu-img info --output=json z.qcow2 | grep -o '"virtual-size": [0-9]*')" = '"virtual-size": 8388608' ] ||
    fail "size not 8M"
"$VDISK" amend -o size=2M z.qcow2 || fail "size shrink"
qemu-img check -q z.qcow2 || fail "check after size changes"
qemu-img create -q -f raw bb.raw 2M
"$VDISK" amend -o backing_file=bb.raw,backing_fmt=raw z.qcow2 || fail "backing file"
[ "$(qemu-img info --output=json z.qcow2 | grep -o '"backing-filename": "[^"]*"')" = '"backing-filename": "bb.raw"' ] ||
    fail "backing file not set"

# refusals, each with a message naming the problem, the image unchanged
expect_fail "cluster_size" "$VDISK" amend -o cluster_size=4k z.qcow2
expect_fail "Invalid parameter 'foo'" "$VDISK" amend -o foo=1 z.qcow2
expect_fail "Unknown compatibility level 0.9" "$VDISK" amend -o compat=0.9 z.qcow2
expect_fail "Refcount width must be a power of two" "$VDISK" amend -o refcount_bits=3 z.qcow2
expect_fail "compatibility level 1.1" "$VDISK" amend -o refcount_bits=8 z.qcow2
expect_fail "Lazy refcounts only supported" "$VDISK" amend -o lazy_refcounts=on z.qcow2
expect_fail "data-file can only be set" "$VDISK" amend -o data_file=x z.qcow2
expect_fail "data-file-raw cannot be set" "$VDISK" amend -o data_file_raw=on z.qcow2
qemu-img create -q -f qcow2 -o compression_type=zstd zs.qcow2 1M
qemu-io -c 'write -c 0 64k' zs.qcow2 >/dev/null
expect_fail "zstd compression type" "$VDISK" amend -o compat=0.10 zs.qcow2
qemu-img create -q -f qcow2 sn.qcow2 1M
qemu-img snapshot -c s sn.qcow2
qemu-img resize -q sn.qcow2 2M
expect_fail "Internal snapshots prevent downgrade" "$VDISK" amend -o compat=0.10 sn.qcow2
qemu-img create -q -f qcow2 bm.qcow2 1M
qemu-img bitmap --add bm.qcow2 b
"$VDISK" amend -o compat=0.10 bm.qcow2 || fail "downgrade with bitmaps"
qemu-img check -q bm.qcow2 || fail "bitmap clusters leaked by the downgrade"
for f in z zs sn; do qemu-img check -q $f.qcow2 || fail "check $f after refusals"; done
echo ok
