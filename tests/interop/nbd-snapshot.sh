#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-nbd -l: export an internal snapshot read-only (needs internal
# snapshots of qcow2 in the library).
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/nbd-common.bash"
need qemu-img qemu-io nbdinfo

# --- -l: an internal snapshot, read-only ---------------------------------------
qemu-img create -q -f qcow2 snap.qcow2 4M
qemu-io -f qcow2 -c "write -q -P 0x66 0 1M" snap.qcow2 >/dev/null
qemu-img snapshot -c s1 snap.qcow2
qemu-io -f qcow2 -c "write -q -P 0x77 0 1M" snap.qcow2 >/dev/null
start_vdisk_nbd "$PWD/l.sock" -f qcow2 -t -l s1 snap.qcow2
nbdinfo --json "nbd+unix:///?socket=$PWD/l.sock" > l.json || fail "nbdinfo on -l export"
[ "$(json_get l.json "j['exports'][0]['is_read_only']")" = True ] || fail "-l is not read-only"
qemu-io -r -f raw -c "read -q -P 0x66 0 1M" "nbd+unix:///?socket=$PWD/l.sock" |
    grep -q "verification failed" && fail "-l does not show the snapshot"
stop_last
start_vdisk_nbd "$PWD/l2.sock" -f qcow2 -t -l snapshot.name=s1 snap.qcow2
qemu-io -r -f raw -c "read -q -P 0x66 0 1M" "nbd+unix:///?socket=$PWD/l2.sock" |
    grep -q "verification failed" && fail "-l snapshot.name= does not show the snapshot"
stop_last
expect_fail "snapshot" "$VDISK_NBD" -k "$PWD/l3.sock" -f qcow2 -l nosuch snap.qcow2

echo ok
