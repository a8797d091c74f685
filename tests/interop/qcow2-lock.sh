#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Image locking with QEMU, both ways: while one side holds a qcow2 image
# open for writing, the other cannot write it (and read-only -U works).
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

"$VDISK" create -q -f qcow2 l.qcow2 16M

wait_locked() { # wait until the holder's locks on the image show in /proc/locks
    # (polling with qemu-img info would take locks itself and could make a
    # holder that is still starting fail to get its write lock)
    local ino
    ino=$(stat -c %i l.qcow2)
    until grep -q ":$ino " /proc/locks; do
        kill -0 $holder 2>/dev/null || fail "the holder exited before locking the image"
        sleep 0.05
    done
}

# A holder keeps the image open until told to quit on its stdin (a FIFO
# this shell holds open), however slow the machine: no time window.
hold() { # hold CMD...: start CMD reading commands from the FIFO
    rm -f ctl && mkfifo ctl
    "$@" l.qcow2 <ctl >/dev/null 2>&1 & holder=$!
    exec 3>ctl
}
release() {
    echo quit >&3
    exec 3>&-
    wait $holder || fail "holder $* failed"
}

hold "$VDISK_IO"
wait_locked
out=$(qemu-io -c 'write 0 512' l.qcow2 2>&1) && fail "qemu-io wrote an image vdisk-io holds"
case "$out" in *lock*) ;; *) fail "qemu-io did not report the lock: $out" ;; esac
qemu-io -U -r -c 'read 0 512' l.qcow2 >/dev/null || fail "qemu-io -U could not read"
release vdisk-io

hold qemu-io
wait_locked
out=$("$VDISK_IO" -c 'write 0 512' l.qcow2 2>&1) && fail "vdisk-io wrote an image qemu-io holds"
case "$out" in *lock*) ;; *) fail "vdisk-io did not report the lock: $out" ;; esac
"$VDISK_IO" -U -r -c 'read 0 512' l.qcow2 >/dev/null || fail "vdisk-io -U could not read"
release qemu-io
qemu-img check l.qcow2 >/dev/null || fail "check after the lock test"
echo ok
