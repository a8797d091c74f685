#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Image locking between vdisk's tools and QEMU 7.2's, both ways:
#  - while qemu-nbd holds an image read-write, vdisk opens that need what
#    qemu-nbd keeps (writing a qcow2 image, resizing a raw one) fail with
#    the lock message, as qemu-io's/qemu-img's do, and -U read-only opens
#    work;
#  - while vdisk-io holds a qcow2 image, qemu-io and qemu-img resize fail
#    with QEMU's lock message, and vdisk-io holds the same lock bytes as
#    qemu-io does.
# (The raw-format cases where QEMU shares everything are in locking.sh.)
. "$VDISK_SRC/tests/lib.sh"
need qemu-nbd qemu-io qemu-img

PIDS=()
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap stop_all EXIT

held() {
    local ino
    ino=$(stat -c %i "$1")
    grep ":$ino " /proc/locks | awk '{for (b = $(NF-1); b <= $NF; b++) print b}' |
        sort -n | tr '\n' ' ' | sed 's/ $//'
}
wait_held() { # FILE: until someone holds a lock on FILE
    for _ in $(seq 2400); do [ -n "$(held "$1")" ] && return 0; sleep 0.05; done
    fail "nobody locked $1 (waited 120 s)"
}
works() { "$@" >/dev/null 2>&1 || fail "expected to work: $*"; }

qemu-img create -q -f raw r.img 1M
qemu-img create -q -f qcow2 q.qcow2 1M
qemu-io -f qcow2 -c 'write -P 7 0 64k' q.qcow2 >/dev/null

# --- qemu-nbd holds a raw image read-write
qemu-nbd -f raw -k "$PWD/r.sock" r.img &
PIDS+=($!)
wait_held r.img
expect_fail 'Failed to get "resize" lock' "$VDISK" resize -f raw r.img 2M
expect_fail 'Failed to get "resize" lock' qemu-img resize -f raw r.img 2M
[ "$(stat -c %s r.img)" = 1048576 ] || fail "r.img was resized"
works "$VDISK_IO" -r -U -f raw -c 'read 0 512' r.img
works "$VDISK" info -U r.img
stop_all

# --- qemu-nbd holds a qcow2 image read-write
qemu-nbd -f qcow2 -k "$PWD/q.sock" q.qcow2 &
PIDS+=($!)
wait_held q.qcow2
expect_fail 'Failed to get "write" lock' "$VDISK_IO" -f qcow2 -c 'write 0 512' q.qcow2
expect_fail 'Failed to get "write" lock' qemu-io -f qcow2 -c 'write 0 512' q.qcow2
expect_fail 'Failed to get shared "write" lock' "$VDISK_IO" -r -f qcow2 -c 'read 0 512' q.qcow2
expect_fail 'Failed to get shared "write" lock' "$VDISK" info q.qcow2
expect_fail 'Failed to get shared "write" lock' qemu-img info q.qcow2
# the whole refusal as QEMU's tools print it: the message, then the hint
# naming the image on its own line (iotests 153, 182)
same_output "write lock refusal" qemu-io -f qcow2 -c 'write 0 512' q.qcow2
same_output "shared lock refusal" qemu-img info q.qcow2
works "$VDISK_IO" -r -U -f qcow2 -c 'read -P 7 0 64k' q.qcow2
works "$VDISK" info -U q.qcow2
out=$("$VDISK_IO" -f qcow2 -c 'write 0 512' q.qcow2 2>&1) || true
case "$out" in *q.qcow2*) ;; *) fail "the message does not name the file: $out" ;; esac
stop_all

# --- vdisk-io holds the qcow2 image read-write (sleep is in ms; stopped by pid)
qemu-io -f qcow2 -c 'sleep 20000' q.qcow2 >/dev/null &
PIDS+=($!)
wait_held q.qcow2
want=$(held q.qcow2)
stop_all
"$VDISK_IO" -f qcow2 -c 'sleep 20000' q.qcow2 >/dev/null &
PIDS+=($!)
wait_held q.qcow2
[ "$(held q.qcow2)" = "$want" ] || fail "vdisk-io holds '$(held q.qcow2)', qemu-io '$want'"
expect_fail 'Failed to get "write" lock' qemu-io -f qcow2 -c 'write 0 512' q.qcow2
expect_fail 'Failed to get "write" lock' qemu-img resize -f qcow2 q.qcow2 2M
expect_fail 'Failed to get shared "write" lock' qemu-img info q.qcow2
expect_fail 'Failed to get "write" lock' "$VDISK" resize -f qcow2 q.qcow2 2M
works qemu-io -r -U -f qcow2 -c 'read -P 7 0 64k' q.qcow2
works qemu-img info -U q.qcow2
stop_all
[ -z "$(held q.qcow2)" ] || fail "locks left on q.qcow2"
works qemu-img resize -f qcow2 q.qcow2 2M
echo ok
