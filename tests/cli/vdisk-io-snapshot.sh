#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-io -s (and `open -s`): writes go to a temporary qcow2 overlay in
# $TMPDIR over the image, which stays unchanged; the overlay is removed on
# close.  Output compared with qemu-io 7.2 doing the same (timings filtered).
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
mkdir tmp
export TMPDIR=$PWD/tmp
filter() { sed -e 's/[0-9.]* [KMGT]*i*B\/sec and [0-9.]* ops\/sec/X/' -e 's/[0-9][0-9]\.[0-9][0-9] sec/T/' \
               -e 's/^vdisk-io/qemu-io/'; }
qemu-img create -q -f qcow2 a.qcow2 1M
qemu-io -c "write -P 1 0 64k" -c "write -P 3 512k 64k" a.qcow2 >/dev/null
qemu-img create -q -f raw a.raw 1M
qemu-io -f raw -c "write -P 1 0 64k" a.raw >/dev/null
cp a.qcow2 a0.qcow2
cp a.raw a0.raw
cmds=(-c "write -P 2 0 4k" -c "read -P 2 0 4k" -c "read -P 1 4k 60k" -c "read -P 3 512k 64k"
      -c "write -z 512k 4k" -c "read -P 0 512k 4k" -c "discard 0 64k" -c "read -P 0 0 64k" -c "map")
for img in "a.qcow2" "-f raw a.raw"; do
    read -r -a a <<<"$img"
    qemu-io -s "${a[@]}" "${cmds[@]}" 2>&1 | filter >q.out
    "$VDISK_IO" -s "${a[@]}" "${cmds[@]}" 2>&1 | filter >v.out
    diff q.out v.out || fail "-s $img: output differs"
    [ -z "$(ls tmp)" ] || fail "-s $img: temporary overlay left behind: $(ls tmp)"
done
cmp a.qcow2 a0.qcow2 || fail "image written through -s"
cmp a.raw a0.raw || fail "raw image written through -s"
# -r -s: the overlay is read-only too
"$VDISK_IO" -r -s -c "write 0 4k" -c "read -P 1 0 64k" a.qcow2 >v.out 2>&1 || true
grep -q "Block node is read-only" v.out || fail "-r -s wrote"
grep -q "read 65536/65536" v.out || fail "-r -s read failed"
# the open command
"$VDISK_IO" -c "open -s a.qcow2" -c "write -P 9 0 64k" -c "read -P 9 0 64k" -c "close" \
    -c "open -r a.qcow2" -c "read -P 1 0 64k" | grep -c "^read 65536/65536" | grep -qx 2 ||
    fail "open -s: the overlay's data leaked or was lost"
cmp a.qcow2 a0.qcow2 || fail "image written through open -s"
[ -z "$(ls tmp)" ] || fail "open -s: temporary overlay left behind"
exit 0
