#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Image locking: vdisk resize fails with the lock message while qemu-nbd
# holds the image read-write, and the image is unchanged; it works again
# once qemu-nbd is gone.
. "$VDISK_SRC/tests/lib.sh"
need qemu-nbd

truncate -s 1M img.raw
cp img.raw ref.raw
qemu-nbd -f raw -k "$PWD/sock" img.raw &
NBD=$!
trap 'kill $NBD 2>/dev/null; wait $NBD 2>/dev/null' EXIT
wait_for test -S sock

rc=0; err=$("$VDISK" resize -f raw img.raw 2M 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "resize under qemu-nbd exits $rc: $err"
case "$err" in *"Failed to get"*"lock"*) ;; *) fail "no lock message: $err" ;; esac
[ "$(stat -c %s img.raw)" = 1048576 ] || fail "resize changed the image"
same_content img.raw ref.raw
# reading with -U still works; info too, as qemu-img's does
"$VDISK" info -U img.raw >/dev/null || fail "info -U under qemu-nbd"
"$VDISK" map -U -f raw img.raw >/dev/null || fail "map -U under qemu-nbd"

kill $NBD; wait $NBD 2>/dev/null || true
trap - EXIT
"$VDISK" resize -f raw img.raw 2M >/dev/null || fail "resize after qemu-nbd exited"
[ "$(stat -c %s img.raw)" = 2097152 ] || fail "resize did not resize"
echo ok
