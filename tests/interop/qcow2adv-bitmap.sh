#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qcow2 persistent dirty bitmaps, both directions.  The same seeded
# sequence of bitmap actions and guest writes is applied by QEMU's tools to
# one image and by vdisk's to another; the dirty extents QEMU reads from
# both (qemu-nbd -B, the qemu:dirty-bitmap meta context) are identical, the
# bitmap lists in `info` are identical, and `qemu-img check` is clean.
# Then: QEMU's bitmaps read and merged by vdisk, vdisk's by QEMU; a crashed
# writer leaves its bitmaps in-use (inconsistent) for both; resize keeps
# bitmaps valid; refusals with clear messages; measure's bitmaps size.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io qemu-nbd nbdinfo

RANDOM=${SEED:-31337}
SIZE=$((64 * 1024 * 1024))

# dirty extents of bitmap $2 in image $1, as QEMU reads them
dmap() {
    local sock=$PWD/nbd.sock pid i
    rm -f "$sock"
    qemu-nbd -r -f qcow2 -B "$2" --socket="$sock" --persistent "$1" >/dev/null 2>&1 &
    pid=$!
    wait_for test -S "$sock"
    nbdinfo --map="qemu:dirty-bitmap:$2" "nbd+unix:///?socket=$sock" | awk '$3 == 1 { print $1, $2 }'
    kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
}

bitmaps() {
    "$@" | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
bm = d.get("format-specific", {}).get("data", {}).get("bitmaps", [])
print(" ".join("%s:%d:%s" % (b["name"], b["granularity"], ",".join(b["flags"])) for b in bm))'
}

same_maps() { # what
    for b in $names; do
        a=$(dmap q.qcow2 "$b"); v=$(dmap v.qcow2 "$b")
        [ "$a" = "$v" ] || fail "$1: bitmap $b differs: qemu [$a] vdisk [$v]"
    done
    a=$(bitmaps qemu-img info --output=json q.qcow2)
    v=$(bitmaps qemu-img info --output=json v.qcow2)
    [ "$a" = "$v" ] || fail "$1: bitmap lists differ: [$a] [$v]"
    v=$(bitmaps "$VDISK" info --output=json v.qcow2)
    [ "$a" = "$v" ] || fail "$1: vdisk info lists [$v], qemu-img [$a]"
    qemu-img check -q q.qcow2 || fail "$1: qemu-img check of QEMU's image"
    qemu-img check -q v.qcow2 || fail "$1: qemu-img check of vdisk's image"
}

both_bitmap() { # args for `bitmap` (image first, name last)
    qemu-img bitmap "$@" || fail "qemu-img bitmap $*"
    local a=("$@")
    a=("${a[@]/#q.qcow2/v.qcow2}")
    "$VDISK" bitmap "${a[@]}" || fail "vdisk bitmap ${a[*]}"
}

random_writes() { # count
    local i off len cmd
    for i in $(seq 1 "$1"); do
        off=$(((RANDOM * 32768 + RANDOM) % (SIZE / 512) * 512))
        len=$(((RANDOM % 512 + 1) * 512))
        [ $((off + len)) -le $SIZE ] || len=$((SIZE - off))
        case $((RANDOM % 5)) in
        0 | 1) cmd="write -P $((RANDOM % 200 + 1)) $off $len" ;;
        2) cmd="write -z $off $len" ;;
        3) cmd="write -z -u $off $len" ;;
        4) cmd="discard $off $len" ;;
        esac
        qemu-io -f qcow2 -c "$cmd" q.qcow2 >/dev/null
        "$VDISK_IO" -f qcow2 -c "$cmd" v.qcow2 >/dev/null || fail "vdisk-io $cmd"
    done
}

qemu-img create -q -f qcow2 q.qcow2 $SIZE
"$VDISK" create -q -f qcow2 v.qcow2 $SIZE
names="b64 g512 g1m dis"
both_bitmap --add q.qcow2 b64
both_bitmap --add -g 512 q.qcow2 g512
both_bitmap --add -g 1M q.qcow2 g1m
both_bitmap --add --disable q.qcow2 dis
random_writes 25
same_maps "after writes"
both_bitmap --clear q.qcow2 g512
random_writes 10
same_maps "after clear"
both_bitmap --enable q.qcow2 dis
both_bitmap --disable q.qcow2 b64
random_writes 10
same_maps "after enable/disable"
both_bitmap --merge g1m q.qcow2 g512
both_bitmap --merge dis --merge b64 q.qcow2 g1m
same_maps "after merges"
both_bitmap --remove q.qcow2 dis
names="b64 g512 g1m"
same_maps "after remove"

# QEMU's bitmaps merged by vdisk into another image, and the reverse
"$VDISK" create -q -f qcow2 m.qcow2 $SIZE
"$VDISK" bitmap --add -g 512 m.qcow2 fromq
"$VDISK" bitmap --merge g512 -b q.qcow2 -F qcow2 m.qcow2 fromq || fail "vdisk merge from QEMU's image"
[ "$(dmap m.qcow2 fromq)" = "$(dmap q.qcow2 g512)" ] || fail "vdisk's merge of a QEMU bitmap"
qemu-img create -q -f qcow2 n.qcow2 $SIZE
qemu-img bitmap --add -g 512 n.qcow2 fromv
qemu-img bitmap --merge g512 -b v.qcow2 -F qcow2 n.qcow2 fromv
[ "$(dmap n.qcow2 fromv)" = "$(dmap v.qcow2 g512)" ] || fail "QEMU's merge of a vdisk bitmap"
# vdisk writes through QEMU's bitmaps and the reverse
qemu-io -f qcow2 -c 'write 60M 64k' v.qcow2 >/dev/null
"$VDISK_IO" -f qcow2 -c 'write 60M 64k' q.qcow2 >/dev/null
same_maps "after crossed writes"

# a writer killed before close leaves enabled bitmaps in-use (inconsistent)
for side in vdisk qemu; do
    qemu-img create -q -f qcow2 c.qcow2 16M
    qemu-img bitmap --add c.qcow2 on
    qemu-img bitmap --add --disable c.qcow2 off
    # QEMU and vdisk mark every bitmap in-use at a read-write open
    off="off:65536:in-use"
    if [ $side = vdisk ]; then
        "$VDISK_IO" -t writethrough -c 'write 0 64k' -c 'sigraise 9' c.qcow2 >/dev/null 2>&1 || true
    else
        qemu-io -t writethrough -c 'write 0 64k' -c 'sigraise 9' c.qcow2 >/dev/null 2>&1 || true
        off="off:65536:in-use"
    fi
    [ "$(bitmaps qemu-img info --output=json c.qcow2)" = "on:65536:in-use,auto $off" ] ||
        fail "$side crash: qemu-img sees $(bitmaps qemu-img info --output=json c.qcow2)"
    [ "$(bitmaps "$VDISK" info --output=json c.qcow2)" = "on:65536:in-use,auto $off" ] ||
        fail "$side crash: vdisk sees $(bitmaps "$VDISK" info --output=json c.qcow2)"
    expect_fail "inconsistent" "$VDISK" bitmap --disable c.qcow2 on
    expect_fail "inconsistent" "$VDISK" bitmap --merge on c.qcow2 off
    "$VDISK_IO" -c 'write 1M 64k' c.qcow2 >/dev/null || fail "write with an inconsistent bitmap"
    "$VDISK" bitmap --remove c.qcow2 on || fail "remove of an inconsistent bitmap"
    [ "$(bitmaps qemu-img info --output=json c.qcow2)" = "$off" ] || fail "$side: after remove"
    qemu-img check -q c.qcow2 || fail "$side crash: check after remove"
done

# resize keeps bitmaps valid for QEMU (grow and shrink)
"$VDISK" resize v.qcow2 128M || fail "grow with bitmaps"
"$VDISK_IO" -c 'write 100M 1M' v.qcow2 >/dev/null
qemu-img check -q v.qcow2 || fail "check after grow"
dmap v.qcow2 g1m | grep -q "^104857600 " || fail "write past the old end not tracked: $(dmap v.qcow2 g1m)"
"$VDISK" resize --shrink v.qcow2 32M || fail "shrink with bitmaps"
qemu-img check -q v.qcow2 || fail "check after shrink"
qemu-io -c 'write 1M 64k' v.qcow2 >/dev/null || fail "QEMU cannot use the image after shrink"

# measure counts the bitmaps as qemu-img does
for args in "-O qcow2" "-O qcow2 -o cluster_size=4k"; do
    a=$(qemu-img measure --output=json $args q.qcow2)
    v=$("$VDISK" measure --output=json $args q.qcow2) || fail "vdisk measure $args"
    [ "$a" = "$v" ] || fail "measure $args: qemu-img $a vdisk $v"
done

# refusals
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1M
expect_fail "Cannot store dirty bitmaps in qcow2 v2 files" "$VDISK" bitmap --add v2.qcow2 x
expect_fail "Bitmap already exists: b64" "$VDISK" bitmap --add v.qcow2 b64
expect_fail "Dirty bitmap 'nb' not found" "$VDISK" bitmap --remove v.qcow2 nb
expect_fail "Dirty bitmap 'nb' not found" "$VDISK" bitmap --merge nb v.qcow2 b64
expect_fail "Granularity must be power of 2" "$VDISK" bitmap --add -g 1000 v.qcow2 x
expect_fail "Granularity must be power of 2" "$VDISK" bitmap --add -g 256 v.qcow2 x
expect_fail "Bitmap name cannot be empty" "$VDISK" bitmap --add v.qcow2 ""
expect_fail "different sizes" "$VDISK" bitmap --merge b64 -b q.qcow2 v.qcow2 b64
qemu-img check -q v.qcow2 || fail "check after refusals"
echo ok
