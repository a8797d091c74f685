#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The nbd driver's legacy host=, port=, path= options (QEMU's
# nbd_process_legacy_socket_options): they open the same export as server.*,
# and their conflicts are refused with qemu-img 7.2's messages.
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/nbd-common.bash"
need qemu-img qemu-io qemu-nbd
qemu-img create -q -f raw d.raw 1M
qemu-io -f raw -c "write -P 0x5a 0 64k" d.raw >/dev/null
PORT=$(free_port)
start_qemu_nbd "$PWD/s.sock" -t -f raw d.raw
qemu-nbd -t -f raw -b 127.0.0.1 -p "$PORT" d.raw &
NBD_PIDS+=($!)
wait_for_port "$PORT"
for o in "driver=nbd,path=$PWD/s.sock" "driver=nbd,host=127.0.0.1,port=$PORT" \
         "driver=nbd,path=$PWD/s.sock,port=1" "driver=nbd,path=x,host=y" \
         "driver=nbd,server.type=unix,server.path=$PWD/s.sock,host=x" "driver=nbd,port=$PORT"; do
    set +e
    qemu-img info --image-opts "$o" >q.out 2>&1; echo "rc=$?" >>q.out
    "$VDISK" info --image-opts "$o" >v.out 2>&1; echo "rc=$?" >>v.out
    set -e
    sed -i 's/^vdisk:/qemu-img:/' v.out
    diff q.out v.out || fail "info through '$o' differs"
done
"$VDISK_IO" --image-opts -c "read -P 0x5a 0 64k" "driver=nbd,host=127.0.0.1,port=$PORT" |
    grep -q "read 65536/65536" || fail "read through host=/port= failed"
"$VDISK_IO" --image-opts -c "read -P 0x5a 0 64k" "driver=nbd,path=$PWD/s.sock" |
    grep -q "read 65536/65536" || fail "read through path= failed"
exit 0
