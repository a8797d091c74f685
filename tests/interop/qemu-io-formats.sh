#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-io and qemu-io on images of every format both know (created by
# qemu-img): the same commands print the same lines (timing masked) --
# info with its format-specific dump, map and alloc over allocated, zeroed
# and unallocated ranges and a backing file, compressed writes, discard,
# truncate -- and many aio requests in flight leave the same data.
. "$VDISK_SRC/tests/lib.sh"
need qemu-io qemu-img

# (vmdk's info shows a random CID and the image's own file name)
mask() { sed -E -e 's/^[0-9.]+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), [0-9]+ ops; .*$/STATS/' \
    -e 's/^( *cid: )[0-9]+$/\1N/' -e 's/(qemu-io|vdisk-io)\.vmdk/IMG.vmdk/'; }

cmds=(-c 'info' -c 'length' -c 'map' -c 'write -P 3 100k 200k' -c 'write -z 1M 64k'
    -c 'write -zu 2M 128k' -c 'write 3M 1k' -c 'map' -c 'alloc 0 4M' -c 'alloc 64k 128k'
    -c 'alloc 3M' -c 'alloc 4032k 1M' -c 'alloc 8M' -c 'read -P 3 100k 200k' -c 'read -P 0 1M 64k'
    -c 'discard 0 64k' -c 'write -c 4M CLEN' -c 'read -v 3M 16' -c 'flush' -c 'info')
aio=()
for i in $(seq 0 63); do
    aio+=(-c "aio_write -P $((i + 1)) $((i * 96 + 5))k $(((i % 4 + 1) * 8))k")
done
aio+=(-c 'aio_flush')
for i in $(seq 0 63); do
    aio+=(-c "aio_read -P $((i + 1)) $((i * 96 + 5))k $(((i % 4 + 1) * 8))k")
done
aio+=(-c 'aio_flush')

tested=
for fmt in qcow2 qed vdi vpc qcow vmdk vhdx parallels; do
    qemu-img create -f $fmt probe.$fmt 8M >/dev/null 2>&1 || continue
    "$VDISK_IO" -f $fmt probe.$fmt -c 'write 0 512' >/dev/null 2>&1 || continue
    tested="$tested $fmt"
    # one cluster per compressed write: qcow (4k clusters) takes no more in
    # QEMU (vdisk's qcow accepts several, which convert -c uses)
    clen=64k; [ $fmt = qcow ] && clen=4k
    fcmds=("${cmds[@]/CLEN/$clen}")
    for tool in qemu-io "$VDISK_IO"; do
        n=$(basename "$tool")
        qemu-img create -f $fmt $n.$fmt 8M >/dev/null
        "$tool" -f $fmt $n.$fmt "${fcmds[@]}" 2>&1 | mask >$n.out || true
        "$tool" -f $fmt -t writeback $n.$fmt "${aio[@]}" 2>&1 | mask | sort >$n.aio || true
    done
    diff -u qemu-io.out vdisk-io.out || fail "$fmt: output differs"
    diff -u qemu-io.aio vdisk-io.aio || fail "$fmt: aio reports differ"
    ! grep -q "Pattern verification failed" vdisk-io.aio || fail "$fmt: aio data"
    qemu-img compare -f $fmt -F $fmt qemu-io.$fmt vdisk-io.$fmt >/dev/null ||
        fail "$fmt: images differ"
done
case "$tested" in *qcow2*) ;; *) fail "qcow2 not usable by vdisk-io (tested:$tested)" ;; esac

# a backing chain: alloc/map report the top layer only
qemu-img create -f qcow2 base.qcow2 4M >/dev/null
qemu-io -f qcow2 base.qcow2 -c 'write -P 9 1M 64k' >/dev/null
for tool in qemu-io "$VDISK_IO"; do
    n=$(basename "$tool")
    qemu-img create -f qcow2 -b base.qcow2 -F qcow2 $n.top >/dev/null
    "$tool" -f qcow2 $n.top -c 'write 0 64k' -c 'map' -c 'alloc 0 4M' -c 'alloc 1M 64k' \
        -c 'read -P 9 1M 64k' -c 'write -z 1M 4k' -c 'alloc 1M 64k' -c 'read -P 0 1M 4k' \
        -c 'read -P 9 1028k 60k' 2>&1 | mask >$n.chain || true
done
diff -u qemu-io.chain vdisk-io.chain || fail "backing chain: output differs"
echo "vdisk-io matches qemu-io on:$tested"
