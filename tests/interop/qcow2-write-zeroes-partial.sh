#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# write -z on part of a qcow2 cluster: when the cluster holds no data and
# the rest of it reads as zeroes through the backing chain, QEMU turns the
# whole cluster into a zero cluster instead of allocating data (iotest 154).
# Seeded random workloads of zero writes (and some data writes) over images
# with and without a backing file; content and allocation map (offsets
# aside) must equal qemu-io 7.2's.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
SEED=${VDISK_TEST_SEED:-$RANDOM}
echo "seed $SEED"
RANDOM=$SEED
C=65536
qemu-img create -q -f qcow2 base.qcow2 1M
qemu-io -c "write -P 0x11 $((3 * C)) $C" -c "write -P 0x22 $((8 * C + 4096)) 4096" \
        -c "write -z $((10 * C)) $C" base.qcow2 >/dev/null
for round in 1 2 3 4 5 6; do
    cmds=()
    for i in $(seq 1 12); do
        off=$(( (RANDOM % 256) * 4096 ))
        len=$(( (RANDOM % 40 + 1) * 2048 ))
        [ $((off + len)) -gt 1048576 ] && len=$((1048576 - off))
        if [ $((RANDOM % 4)) = 0 ]; then
            cmds+=(-c "write -P $((RANDOM % 200 + 1)) $off $len")
        else
            cmds+=(-c "write -z $off $len")
        fi
    done
    for who in qemu vdisk; do
        if [ $((round % 2)) = 1 ]; then
            qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 $who.qcow2 1M
        else
            qemu-img create -q -f qcow2 $who.qcow2 1M
        fi
        io=qemu-io; [ $who = vdisk ] && io=$VDISK_IO
        $io -f qcow2 "${cmds[@]}" $who.qcow2 >/dev/null || fail "$who: I/O failed: ${cmds[*]}"
        qemu-img map --output=json $who.qcow2 | sed 's/, "offset": [0-9]*//' >$who.map
    done
    qemu-img compare -q qemu.qcow2 vdisk.qcow2 || fail "round $round: content differs: ${cmds[*]}"
    cmp -s qemu.map vdisk.map || fail "round $round: map differs: ${cmds[*]}
$(diff qemu.map vdisk.map)"
    qemu-img check -q vdisk.qcow2 || fail "round $round: check failed"
done
exit 0
