#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-io -C and the copy-on-read filter (driver=copy-on-read): reads of
# data the top image does not hold copy it in whole clusters into the top
# image (zeroes as zero writes), as qemu-io 7.2's -C.  Seeded random read
# workloads over a backing chain; the resulting images' maps and contents are
# compared with qemu-io doing the same reads.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
SEED=${SEED:-$RANDOM}
echo "seed $SEED"
RANDOM=$SEED
qemu-img create -q -f qcow2 base.qcow2 8M
qemu-io -c "write -P 0x11 0 1M" -c "write -P 0x22 3M 300k" -c "write -z 5M 1M" \
    -c "write -P 0x33 7M 64k" base.qcow2 >/dev/null
# the allocation as qemu-img map shows it (host offsets too: vdisk places
# the copied clusters where QEMU does)
map() {
    qemu-img map --output=json "$1"
}
for round in 1 2 3; do
    for spec in "qcow2|-b base.qcow2 -F qcow2" "qcow2|-o cluster_size=4096 -b base.qcow2 -F qcow2" \
                "qcow2|-o extended_l2=on -b base.qcow2 -F qcow2" "qcow2|"; do
        opts=${spec#*|}
        cmds=()
        for i in $(seq 1 8); do
            off=$(( (RANDOM * 32768 + RANDOM) % (8 << 20) ))
            len=$(( RANDOM % 300000 + 1 ))
            [ $((off + len)) -le $((8 << 20)) ] || len=$(( (8 << 20) - off ))
            cmds+=(-c "read $off $len")
        done
        cmds+=(-c "write -P 0x44 $(( RANDOM % 100 ))k 3k")
        for who in qemu vdisk; do
            # shellcheck disable=SC2086
            qemu-img create -q -f qcow2 $opts $who.qcow2 8M
        done
        qemu-io -C "${cmds[@]}" qemu.qcow2 >/dev/null || fail "qemu-io -C failed"
        if [ $round = 2 ]; then
            "$VDISK_IO" --image-opts "${cmds[@]}" \
                "driver=copy-on-read,file.driver=qcow2,file.file.filename=vdisk.qcow2" >/dev/null ||
                fail "vdisk-io through the filter failed ($opts)"
        else
            "$VDISK_IO" -C "${cmds[@]}" vdisk.qcow2 >/dev/null || fail "vdisk-io -C failed ($opts)"
        fi
        [ "$(map qemu.qcow2)" = "$(map vdisk.qcow2)" ] ||
            fail "map differs after copy-on-read reads ($opts, seed $SEED): ${cmds[*]}"
        qemu-img compare -q qemu.qcow2 vdisk.qcow2 || fail "content differs ($opts)"
        qemu-img check -q vdisk.qcow2 || fail "check failed ($opts)"
    done
done
# read-only: nothing is copied
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 ro.qcow2 8M
"$VDISK_IO" -C -r -c "read -P 0x11 0 64k" ro.qcow2 | grep -q "read 65536/65536" || fail "-C -r read"
[ "$(map ro.qcow2 | grep -c '"depth": 0')" = 0 ] || fail "-C -r copied into a read-only image"
exit 0
