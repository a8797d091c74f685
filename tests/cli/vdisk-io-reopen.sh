#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-io's reopen as qemu-io's (qemu-iotests 133 and 137), outputs
# compared with qemu-io's on the same images:
#  - driver and node-name cannot change (unchanged values are fine);
#  - -r/-w with read-only=, -c with cache.* options are refused;
#  - invalid values in QEMU's words, printed without "can't open device";
#  - qcow2 joins options as QEMU: a new overlap-check template replaces the
#    old ones, a new cache size the old partial ones, and a failed reopen
#    keeps the image as it was (lazy-refcounts not turned on);
#  - a fatal corruption found by a write prints QEMU's "Marking image as
#    corrupt" line and fails the write.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
qemu-img create -q -f qcow2 t.qcow2.base 64M
qemu-img create -q -f qcow2 -b t.qcow2.base -F qcow2 t.qcow2
for o in node-name=foo file.node-name=foo backing.node-name=foo driver=raw file.driver=qcow2 \
         backing.driver=file driver=qcow2 file.driver=file backing.driver=qcow2 \
         read-only=foo cache.no-flush=bar cache.direct=baz auto-read-only=qux; do
    same_output "reopen -o $o" qemu-io -c "reopen -o $o" t.qcow2
done
same_output "unchanged node-name" qemu-io -c "open -o node-name=foo t.qcow2" -c "reopen -o node-name=foo"
same_output "-r and read-only" qemu-io -c "reopen -r -o read-only=on" t.qcow2
same_output "-w and read-only" qemu-io -c "reopen -w -o read-only=on" t.qcow2
same_output "-c and cache.direct" qemu-io -c "reopen -c none -o cache.direct=on" t.qcow2
same_output "-c and cache.no-flush" qemu-io -c "reopen -c directsync -o cache.no-flush=on" t.qcow2
same_output "read-only switch" qemu-io -c "reopen -r" -c "write 0 4k" -c "reopen -w" -c "write 0 4k" t.qcow2

# qcow2's option joining (iotest 137)
qemu-img create -q -f qcow2 j.qcow2 64M
args=()
for c in "reopen -o overlap-check=constant" "reopen -o overlap-check.template=all" \
         "reopen -o overlap-check.main-header=off" "reopen -o overlap-check=none" \
         "reopen -o cache-size=1M" "reopen -o l2-cache-size=512k" \
         "reopen -o refcount-cache-size=128k" "reopen -o cache-size=2M" \
         "reopen -o cache-size=1M,l2-cache-size=64k,refcount-cache-size=64k" \
         "reopen -o cache-size=1M,l2-cache-size=2M" "reopen -o overlap-check=blubb" \
         "reopen -o overlap-check.template=blubb" "reopen -o cache-clean-interval=-1" \
         "reopen -o overlap-check=constant,overlap-check.template=all" \
         "reopen -o lazy-refcounts=42" "write -P 7 0 64k" "read -P 7 0 64k"; do
    args+=(-c "$c")
done
same_output "qcow2 option joining" qemu-io "${args[@]}" j.qcow2

# a failed reopen keeps the old options: lazy refcounts stay off, so a
# killed writer leaves no dirty bit
for who in qemu vdisk; do
    IO=qemu-io; [ $who = vdisk ] && IO=$VDISK_IO
    qemu-img create -q -f qcow2 k-$who.qcow2 64M
    "$IO" -c "reopen -o lazy-refcounts=on,overlap-check=blubb" -c "write -P 0x5a 0 512" \
        -c "sigraise 9" k-$who.qcow2 >/dev/null 2>&1 && fail "$who: not killed"
    qemu-img check -q k-$who.qcow2 || fail "$who: killed writer left a bad image"
    # incompatible_features (header offset 72), bit 0: dirty
    [ "$(od -An -j79 -N1 -tu1 k-$who.qcow2 | tr -d ' ')" = 0 ] ||
        fail "$who: dirty bit after a failed reopen"
done

# the corruption notice (the refcount block zeroed: an L2 table would go to
# offset 0)
for who in q v; do
    qemu-img create -q -f qcow2 c-$who.qcow2 64M
    printf '\0\0\0\0\0\0\0\0' | dd of=c-$who.qcow2 bs=1 seek=$((0x20000)) conv=notrunc 2>/dev/null
done
q=$(qemu-io -c "write 64k 64k" c-q.qcow2 2>&1 | sort)
v=$("$VDISK_IO" -c "write 64k 64k" c-v.qcow2 2>&1 | sort)
[ "$q" = "$v" ] || fail "corruption notice: qemu says
$q
vdisk says
$v"
qemu-img info c-v.qcow2 | grep -q "corrupt: true" || fail "not marked corrupt"
exit 0
