#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Image locking with QEMU, both ways: while one side holds a qcow2 image
# open for writing, the other cannot write it (and read-only -U works).
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

"$VDISK" create -q -f qcow2 l.qcow2 16M

wait_locked() { # wait until qemu-img info (without -U) sees the lock
    for _ in $(seq 1 100); do
        qemu-img info l.qcow2 >/dev/null 2>&1 || return 0
        sleep 0.1
    done
    fail "the holder never locked the image"
}

"$VDISK_IO" -c 'sleep 3000' l.qcow2 >/dev/null 2>&1 & holder=$!
wait_locked
out=$(qemu-io -c 'write 0 512' l.qcow2 2>&1) && fail "qemu-io wrote an image vdisk-io holds"
case "$out" in *lock*) ;; *) fail "qemu-io did not report the lock: $out" ;; esac
qemu-io -U -r -c 'read 0 512' l.qcow2 >/dev/null || fail "qemu-io -U could not read"
wait $holder || fail "vdisk-io holder failed"

qemu-io -c 'sleep 3000' l.qcow2 >/dev/null 2>&1 & holder=$!
wait_locked
out=$("$VDISK_IO" -c 'write 0 512' l.qcow2 2>&1) && fail "vdisk-io wrote an image qemu-io holds"
case "$out" in *lock*) ;; *) fail "vdisk-io did not report the lock: $out" ;; esac
"$VDISK_IO" -U -r -c 'read 0 512' l.qcow2 >/dev/null || fail "vdisk-io -U could not read"
wait $holder || fail "qemu-io holder failed"
qemu-img check l.qcow2 >/dev/null || fail "check after the lock test"
echo ok
