#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk dd against qemu-img dd: output size (qemu-img 7.2's rule: count*bs
# or the input size, minus skip*bs), content, formats and errors.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/bench/lib.sh"
need qemu-img

bench_sparse_raw in.raw 2M 31 50 small
printf 'odd' >> in.raw                       # 2 MiB + 3 bytes
qemu-img convert -f raw -O qcow2 in.raw in.qcow2

cases=(
    "" "bs=4k count=10" "bs=4k count=10 skip=3" "bs=4k skip=3" "bs=4k skip=3000"
    "bs=1000 count=7 skip=2" "count=5k" "bs=1M" "bs=3 count=5 skip=1" "-f qcow2 bs=64k skip=2"
    "-O qcow2 bs=1M count=1" "-O qcow2 bs=512 skip=100"
)
for c in "${cases[@]}"; do
    rm -f q.out v.out
    case "$c" in *"-f qcow2"*) in=in.qcow2 ;; *) in=in.raw ;; esac
    # shellcheck disable=SC2086
    qemu-img dd $c if=$in of=q.out >/dev/null 2>&1 || fail "qemu-img dd $c"
    # shellcheck disable=SC2086
    "$VDISK" dd $c if=$in of=v.out >/dev/null 2>&1 || fail "vdisk dd $c"
    fmt=raw; case "$c" in *"-O qcow2"*) fmt=qcow2 ;; esac
    qs=$(qemu-img info -f $fmt --output=json q.out | grep '"virtual-size"')
    vs=$(qemu-img info -f $fmt --output=json v.out | grep '"virtual-size"')
    [ "$qs" = "$vs" ] || fail "dd $c: size $vs, qemu-img $qs"
    qemu-img compare -q -f $fmt -F $fmt q.out v.out || fail "dd $c: content differs"
    [ $fmt = raw ] || qemu-img check -q v.out || fail "dd $c: check"
done

# skip past the end: a message, an empty output, exit 0 (like dd(1))
out=$("$VDISK" dd bs=1M skip=10 if=in.raw of=e.out 2>&1) || fail "skip past end failed"
case "$out" in *"cannot skip"*) ;; *) fail "no message: $out" ;; esac
[ "$(stat -c %s e.out)" = 0 ] || fail "not empty"

expect_fail "bs" "$VDISK" dd bs=0 if=in.raw of=x.out
expect_fail "bs" "$VDISK" dd bs=3G if=in.raw of=x.out
expect_fail "count" "$VDISK" dd count=-1 if=in.raw of=x.out
expect_fail "unrecognized operand" "$VDISK" dd foo=1 if=in.raw of=x.out
expect_fail "unrecognized operand" "$VDISK" dd foo if=in.raw of=x.out
expect_fail "both input and output" "$VDISK" dd if=in.raw
expect_fail "Unknown file format" "$VDISK" dd -O bogus if=in.raw of=x.out
expect_fail "No such file" "$VDISK" dd if=missing.raw of=x.out
[ ! -e x.out ] || fail "x.out created on error"
expect_fail "" "$VDISK" dd if=in.raw of=/nonexistent/x.out
cp in.raw keep.raw
expect_fail "lock" "$VDISK" dd if=in.raw of=in.raw
same_content keep.raw in.raw
echo ok
