#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Image locking against QEMU 7.2, both ways, through the file protocol
# (helper: tests/unit/file-lock.c, which opens the protocol node the way a
# vdisk tool does).  Each vdisk outcome is checked against what QEMU's own
# tools do in the same situation:
#  - while qemu-nbd holds an image, vdisk opens fail (or work) exactly where
#    qemu-io/qemu-img opens fail (or work), with the same "Failed to get ...
#    lock" phrase, and -U read-only opens work;
#  - while vdisk holds an image, qemu-io/qemu-img/qemu-nbd fail with QEMU's
#    lock message, and vdisk holds exactly the lock bytes QEMU would.
. "$VDISK_SRC/tests/lib.sh"
need qemu-nbd qemu-io qemu-img
HELPER=$VDISK_BUILD/tests/unit-file-lock
[ -x "$HELPER" ] || fail "missing $HELPER (build the unit tests)"

PIDS=()
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap stop_all EXIT

# held FILE: the lock bytes anyone holds on FILE ("100 101 203")
held() {
    local ino
    ino=$(stat -c %i "$1")
    grep ":$ino " /proc/locks | awk '{for (b = $(NF-1); b <= $NF; b++) print b}' |
        sort -n | tr '\n' ' ' | sed 's/ $//'
}
expect_held() {
    local got
    got=$(held "$1")
    [ "$got" = "$2" ] || fail "$1: lock bytes '$got', want '$2' ($3)"
}

serve() { # FMT FILE [qemu-nbd args]: qemu-nbd holds FILE
    local fmt=$1 file=$2; shift 2
    rm -f nbd.sock
    qemu-nbd -f "$fmt" -k "$PWD/nbd.sock" "$@" "$file" &
    PIDS+=($!)
    wait_for test -S nbd.sock
}
hold() { # FILE MODE...: the vdisk helper holds FILE
    rm -f hold.out
    "$HELPER" hold "$@" secs=60 >hold.out 2>&1 &
    PIDS+=($!)
    wait_for grep -q locked hold.out
}
vtry() { "$HELPER" try "$@"; } # FILE MODE...: vdisk opens and closes FILE
works() { "$@" >/dev/null 2>&1 || fail "expected to work: $*"; }

qemu-img create -q -f raw r.img 1M
qemu-img create -q -f qcow2 q.qcow2 1M

# --- qemu-nbd holds a raw image read-write: bytes 100 101 203 (it lets
# others write, but nobody resize the export)
serve raw r.img
expect_held r.img "100 101 203" "qemu-nbd raw rw"
expect_fail 'Failed to get "resize" lock' vtry r.img rw resize
expect_fail 'Failed to get "resize" lock' qemu-img resize -f raw r.img 2M
[ "$(stat -c %s r.img)" = 1048576 ] || fail "resize changed r.img"
# a raw writer, like qemu-io's, shares everything and so coexists
works vtry r.img rw
works qemu-io --image-opts -c 'write 0 512' driver=file,filename=r.img
works vtry r.img share
works qemu-io -r -U -f raw -c 'read 0 512' r.img
# a format that is not raw refuses others' writes: QEMU's storage rule
expect_fail 'Failed to get "resize" lock' vtry r.img rw fmt
expect_fail 'Failed to get shared "write" lock' vtry r.img fmt
expect_fail 'Failed to get shared "write" lock' vtry r.img noio fmt
works vtry r.img share fmt
# locking=off neither checks nor takes anything
works vtry r.img rw resize fmt locking=off
stop_all
expect_held r.img "" "after qemu-nbd"

# --- qemu-nbd holds a qcow2 image read-write: 100 101 103 201 203
serve qcow2 q.qcow2
expect_held q.qcow2 "100 101 103 201 203" "qemu-nbd qcow2 rw"
expect_fail 'Failed to get "write" lock' vtry q.qcow2 rw fmt
expect_fail 'Failed to get "write" lock' qemu-io -f qcow2 -c 'read 0 512' q.qcow2
expect_fail 'Failed to get shared "write" lock' vtry q.qcow2 fmt
expect_fail 'Failed to get shared "write" lock' qemu-io -r -f qcow2 -c 'read 0 512' q.qcow2
expect_fail 'Failed to get shared "write" lock' vtry q.qcow2 noio fmt
expect_fail 'Failed to get shared "write" lock' qemu-img info q.qcow2
works vtry q.qcow2 share fmt
works qemu-io -r -U -f qcow2 -c 'read 0 512' q.qcow2
works qemu-img info -U q.qcow2
# the refusal names the file (in QEMU's hint line)
out=$(vtry q.qcow2 rw fmt 2>&1) || true
case "$out" in *"[q.qcow2]"*) ;; *) fail "message does not name the file: $out" ;; esac
stop_all

# --- vdisk holds an image the way a qcow2 writer does: QEMU must refuse
hold r.img rw fmt
expect_held r.img "100 101 103 201 203" "vdisk storage rw"
expect_fail 'Failed to get "write" lock' qemu-io -f raw -c 'write 0 512' r.img
expect_fail 'Failed to get "write" lock' qemu-img resize -f raw r.img 2M
expect_fail 'Failed to get "write" lock' qemu-nbd -f raw -k "$PWD/x.sock" r.img
expect_fail 'Failed to get "write" lock' qemu-img create -f raw r.img 4M
[ "$(stat -c %s r.img)" = 1048576 ] || fail "qemu-img changed r.img under our lock"
works qemu-io -r -U -f raw -c 'read 0 512' r.img
works qemu-io -r -f raw -c 'read 0 512' r.img # a raw reader shares everything
stop_all

# --- vdisk holds a qcow2 image read-only: 100 201 203
hold q.qcow2 fmt
expect_held q.qcow2 "100 201 203" "vdisk storage ro"
expect_fail 'Failed to get "write" lock' qemu-io -f qcow2 -c 'write 0 512' q.qcow2
expect_fail 'Failed to get "write" lock' qemu-img snapshot -c s1 q.qcow2
works qemu-io -r -f qcow2 -c 'read 0 512' q.qcow2
works qemu-img check q.qcow2
stop_all

# --- vdisk holds a raw image for resizing: qemu-nbd refuses to share resize
hold r.img rw resize
expect_held r.img "100 101 103" "vdisk raw resize"
expect_fail 'Failed to get shared "resize" lock' qemu-nbd -f raw -k "$PWD/y.sock" r.img
works qemu-io -f raw -c 'write 0 512' r.img
stop_all

# --- vdisk holds with force-share: only consistent read
hold q.qcow2 share fmt
expect_held q.qcow2 "100" "vdisk -U"
works qemu-io -f qcow2 -c 'write 0 512' q.qcow2
stop_all

expect_held r.img "" "at the end"
expect_held q.qcow2 "" "at the end"
works qemu-img resize -f raw r.img 2M
echo ok
