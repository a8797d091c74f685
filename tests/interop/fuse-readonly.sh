#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk fuse -r: every way of writing is refused (open for writing, dd,
# truncate, fallocate) and the image is not changed; qemu-img can read the
# image meanwhile.  Bad command lines: a clear one-line error, exit 1.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/fuse-common.bash"
need fallocate truncate

qemu-img create -q -f qcow2 ro.qcow2 16M
qemu-io -f qcow2 -c "write -q -P 0x61 0 1M" ro.qcow2 >/dev/null
sum=$(md5sum < ro.qcow2)
start_fuse mnt -r ro.qcow2
[ "$(stat -c %a mnt)" = 400 ] || fail "read-only export mode $(stat -c %a mnt)"
expect_fail "Read-only file system" dd if=/dev/zero of=mnt bs=4k count=1 conv=notrunc
expect_fail "Read-only file system" truncate -s 32M mnt
expect_fail "Read-only file system" fallocate -p -o 0 -l 4096 mnt
expect_fail "Read-only file system" /usr/bin/python3 -c "import os; os.open('mnt', os.O_RDWR)"
cmp -n 1M mnt <(head -c 1M /dev/zero | tr '\0' 'a') || fail "read-only export reads wrong data"
# another reader may share the image
qemu-img info ro.qcow2 >/dev/null || fail "qemu-img cannot read the image beside a read-only export"
stop_fuse mnt
[ "$(md5sum < ro.qcow2)" = "$sum" ] || fail "read-only export changed the image"

# a writable export holds the write lock: qemu-io cannot write beside it
start_fuse mnt ro.qcow2
[ "$(stat -c %a mnt)" = 600 ] || fail "writable export mode $(stat -c %a mnt)"
expect_fail "lock" qemu-io -f qcow2 -c "write 0 512" ro.qcow2
stop_fuse mnt

# --allow-other on/off reach the mount options (auto is on for root)
for ao in on off; do
    start_fuse mnt -r --allow-other "$ao" ro.qcow2
    opts=$(findmnt -n -o OPTIONS "$PWD/mnt") || fail "findmnt $PWD/mnt"
    case "$ao,$opts" in
        on,*allow_other*|off,*) ;;
        *) fail "--allow-other $ao: mount options $opts" ;;
    esac
    [ "$ao" = off ] && case "$opts" in *allow_other*) fail "--allow-other off: $opts" ;; esac
    case "$opts" in ro,*|*,ro,*|*,ro) ;; *) fail "read-only export not mounted ro: $opts" ;; esac
    stop_fuse mnt
done

# bad command lines
mkdir adir
: > mp
expect_fail "is not a regular file" "$VDISK" fuse ro.qcow2 adir
expect_fail "Cannot use mount point 'nope'" "$VDISK" fuse ro.qcow2 nope
expect_fail "Could not open 'missing.qcow2'" "$VDISK" fuse missing.qcow2 mp
expect_fail "mutually exclusive" "$VDISK" fuse -r -w ro.qcow2 mp
expect_fail "needs a writable export" "$VDISK" fuse -r --growable ro.qcow2 mp
expect_fail "only be used with --read-only" "$VDISK" fuse -U ro.qcow2 mp
expect_fail "Invalid allow-other" "$VDISK" fuse --allow-other=maybe ro.qcow2 mp
expect_fail "Invalid thread count" "$VDISK" fuse --threads 0 ro.qcow2 mp
expect_fail "Expecting an image and a mount point" "$VDISK" fuse ro.qcow2
expect_fail "Unexpected argument" "$VDISK" fuse ro.qcow2 mp extra
expect_fail "unrecognized option" "$VDISK" fuse --bogus ro.qcow2 mp
# --daemonize reports the failure of the child with a non-zero exit
rc=0; "$VDISK" fuse --daemonize missing.qcow2 mp 2>err || rc=$?
[ "$rc" -eq 1 ] || fail "--daemonize with a missing image exited $rc"
grep -q "Could not open 'missing.qcow2'" err || fail "--daemonize error message: $(cat err)"
is_mounted mp && fail "mp mounted after a failed start"
echo "fuse-readonly: ok"
