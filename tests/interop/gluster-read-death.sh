#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Reads through glfs_preadv_async and its callback (src/protocols/gluster.c):
# a brick that dies between two reads of one vdisk-io session (commands fed
# through a fifo, each step waiting for the previous one's output) fails
# the read after it with libgfapi's error, promptly, where the reads before
# it returned the right bytes (2 MiB ones, beyond libgfapi's pooled buffers,
# and small ones); the session then quits normally.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
. "$VDISK_SRC/tests/helpers/gluster-volume.sh"
gluster_up

qemu-img create -q -f raw data.raw 8M
qemu-io -f raw -c "write -q -P 0x5a 0 4M" -c "write -q -P 0xa5 4M 4M" data.raw >/dev/null
"$VDISK" convert -f raw -O raw data.raw "$GURL/d.raw" 2>/dev/null
mkfifo cmds
"$VDISK_IO" -f raw "$GURL/d.raw" <cmds >io.out 2>io.err &
iopid=$!
exec 7>cmds
said() { grep -q "$1" io.out io.err; }
echo "read -P 0x5a 0 2M" >&7
wait_for said "read 2097152/2097152 bytes at offset 0"
echo "read -P 0xa5 4M 4k" >&7
wait_for said "read 4096/4096 bytes at offset 4194304"
said "verification failed" && fail "wrong bytes read: $(cat io.out)"
bp=$(gluster_brick_pid) || fail "no brick pid"
kill -9 "$bp"
echo "read -P 0xa5 6M 2M" >&7
wait_for said "read failed"
msg=$(grep -h "read failed" io.out io.err | head -n 1)
case $msg in
*"Transport endpoint is not connected"* | *"Input/output error"* | *"No such file"* | *"Bad file"*) ;;
*) fail "read after the brick died: '$msg'" ;;
esac
echo "quit" >&7
exec 7>&-
rc=0
wait_for_exit() { ! kill -0 "$iopid" 2>/dev/null; }
wait_for wait_for_exit
wait "$iopid" || rc=$?
[ "$rc" -lt 128 ] || fail "vdisk-io died (exit $rc)"
echo "brick killed between reads: $msg"
exit 0
