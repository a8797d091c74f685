#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Creating an image on an NBD export (QEMU's simple creation for protocols
# without their own: the export is opened, must be large enough, its first
# sector is zeroed, the format writes its header through it).  The same
# creates with qemu-img and vdisk on two exports of the same size must give
# the same bytes and messages.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/nbd-common.bash"
need qemu-img qemu-io qemu-nbd
qemu-img create -q -f raw q.raw 64M
qemu-img create -q -f raw v.raw 64M
qemu-io -f raw -c "write -P 0x77 0 1M" q.raw >/dev/null
qemu-io -f raw -c "write -P 0x77 0 1M" v.raw >/dev/null
start_qemu_nbd "$PWD/q.sock" -t -f raw q.raw
start_qemu_nbd "$PWD/v.sock" -t -f raw v.raw
for c in "qcow2|32M" "raw|1M" "qcow2 -o cluster_size=4096|64M" "qcow|16M" "raw|128M" \
         "raw -o preallocation=full|64M" "raw -o preallocation=off|64M"; do
    read -r -a fmt <<<"${c%|*}"
    size=${c#*|}
    set +e
    qemu-img create -q -f "${fmt[@]}" "nbd+unix://?socket=$PWD/q.sock" "$size" >q.out 2>&1
    echo "rc=$?" >>q.out
    "$VDISK" create -q -f "${fmt[@]}" "nbd+unix://?socket=$PWD/v.sock" "$size" >v.out 2>&1
    echo "rc=$?" >>v.out
    set -e
    sed -i 's/^vdisk:/qemu-img:/; s/v\.sock/q.sock/' v.out
    diff q.out v.out || fail "create $c: output differs"
    cmp q.raw v.raw || fail "create $c: the exports' bytes differ"
done
# the created image works through the export
"$VDISK" create -q -f qcow2 "nbd+unix://?socket=$PWD/v.sock" 16M
"$VDISK_IO" -f qcow2 -c "write -P 0x42 1M 64k" "nbd+unix://?socket=$PWD/v.sock" >/dev/null
qemu-io -f qcow2 -r -U -c "read -P 0x42 1M 64k" "nbd+unix://?socket=$PWD/v.sock" |
    grep -q "read 65536/65536" || fail "image created on the export does not read back"
exit 0
