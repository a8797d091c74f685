#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk compare against qemu-img compare: the same exit code (0 identical,
# 1 different, 2 open error) and the same first line for each pair, with
# size mismatches, strict mode, raw vs qcow2 and zero vs hole areas.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/bench/lib.sh"
need qemu-img qemu-io

bench_sparse_raw a.raw 8M 21 30 small
cp --sparse=always a.raw same.raw
qemu-img convert -f raw -O raw -S 0 a.raw full.raw   # zeroes allocated
qemu-img convert -f raw -O qcow2 a.raw a.qcow2
cp a.raw diff.raw
printf 'X' | dd of=diff.raw bs=1 seek=3000001 conv=notrunc status=none
cp a.raw big.raw; truncate -s 9M big.raw              # longer, zero tail
cp big.raw bigd.raw
printf 'Y' | dd of=bigd.raw bs=1 seek=$(((8 << 20) + 70000)) conv=notrunc status=none
head -c 5M a.raw > short.raw
qemu-img create -q -f qcow2 z.qcow2 8M
qemu-io -f qcow2 -c "write -q -z 0 8M" z.qcow2
truncate -s 8M z.raw

pairs=(
    "a.raw same.raw" "a.raw full.raw" "-s a.raw full.raw" "a.raw a.qcow2" "-s a.raw a.qcow2"
    "a.raw diff.raw" "diff.raw a.qcow2" "-q a.raw diff.raw" "a.raw big.raw" "big.raw a.raw"
    "-s a.raw big.raw" "a.raw bigd.raw" "bigd.raw a.qcow2" "a.raw short.raw" "short.raw a.raw"
    "z.qcow2 z.raw" "-s z.qcow2 z.raw" "-f raw -F qcow2 a.raw a.qcow2" "-f qcow2 a.raw a.qcow2"
    "a.raw missing.raw" "missing.raw a.raw" "-T bogus a.raw same.raw" "a.raw" "a.raw b c"
    "-x a.raw same.raw" "-p a.raw same.raw" "-U a.raw a.qcow2" "-T none a.raw a.qcow2"
)
for p in "${pairs[@]}"; do
    qrc=0; vrc=0
    # shellcheck disable=SC2086
    qout=$(qemu-img compare $p 2>/dev/null | tr '\r' '\n' | grep -v '^ *(' | head -n 2) || qrc=$?
    # shellcheck disable=SC2086
    qemu-img compare $p >/dev/null 2>&1 || qrc=$?
    # shellcheck disable=SC2086
    vout=$("$VDISK" compare $p 2>/dev/null | tr '\r' '\n' | grep -v '^ *(' | head -n 2) || true
    # shellcheck disable=SC2086
    "$VDISK" compare $p >/dev/null 2>&1 || vrc=$?
    [ "$qrc" = "$vrc" ] || fail "compare $p: exit $vrc, qemu-img $qrc"
    [ "$qout" = "$vout" ] || fail "compare $p: '$vout', qemu-img '$qout'"
done

# a read error: exit 4 and QEMU's words (the errno's text; iotest 074)
printf '[inject-error]\nevent = "read_aio"\nerrno = "5"\n' > bd.conf
for p in "blkdebug:bd.conf:a.qcow2 a.raw" "a.raw blkdebug:bd.conf:a.qcow2"; do
    qrc=0; vrc=0
    # shellcheck disable=SC2086
    qerr=$(qemu-img compare $p 2>&1 >/dev/null) || qrc=$?
    # shellcheck disable=SC2086
    verr=$("$VDISK" compare $p 2>&1 >/dev/null) || vrc=$?
    [ "$qrc" = "$vrc" ] || fail "compare $p: exit $vrc, qemu-img $qrc"
    [ "${qerr#qemu-img: }" = "${verr#vdisk: }" ] || fail "compare $p: '$verr', qemu-img '$qerr'"
done

# vdisk's own copies compare equal with qemu-img's compare, and the reverse
"$VDISK" convert -O qcow2 a.raw v.qcow2
qemu-img compare -q a.raw v.qcow2 || fail "qemu-img: vdisk's copy differs"
"$VDISK" compare -q a.qcow2 v.qcow2 || fail "vdisk: qemu-img's and vdisk's copies differ"
echo ok
