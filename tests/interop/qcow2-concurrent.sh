#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Concurrent writes (vdisk-io aio_write runs them on several threads) into
# the same unallocated clusters of a qcow2 overlay: the allocations must be
# serialised so that no write is lost and the copy-on-write from the
# backing file keeps the untouched bytes.  QEMU reads the result.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f qcow2 base.qcow2 16M
qemu-io -c 'write -P 0xbb 0 16M' base.qcow2 >/dev/null
"$VDISK" create -q -f qcow2 -b base.qcow2 -F qcow2 -o cluster_size=65536 top.qcow2

w=(); r=()
for c in 0 1 2 3 4 5 6 7; do          # 8 clusters, 7 writers each, gaps between
    for k in 0 1 2 3 4 5 6; do
        off=$((c * 65536 + k * 9000 + 100)); pat=$(( (c * 7 + k) % 200 + 1 ))
        w+=(-c "aio_write -q -P $pat $off 4000")
        r+=(-c "read -q -P $pat $off 4000" -c "read -q -P 0xbb $((off + 4000)) 5000")
    done
    r+=(-c "read -q -P 0xbb $((c * 65536)) 100")
done
# and large writes racing over cluster boundaries in a second area
for k in 0 1 2 3; do
    w+=(-c "aio_write -q -P $((210 + k)) $((4194304 + k * 100000)) 90000")
    r+=(-c "read -q -P $((210 + k)) $((4194304 + k * 100000)) 90000")
done
w+=(-c aio_flush)
"$VDISK_IO" "${w[@]}" top.qcow2 >/dev/null || fail "vdisk-io aio writes failed"
qemu-img check top.qcow2 >/dev/null || fail "qemu-img check after concurrent writes"
qemu-io -r "${r[@]}" top.qcow2 >/dev/null || fail "a concurrent write was lost"
"$VDISK_IO" -r "${r[@]}" top.qcow2 >/dev/null || fail "vdisk-io reads differ"
echo ok
