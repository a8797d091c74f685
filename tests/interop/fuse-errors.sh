#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk fuse when the image fails: an I/O error injected by blkdebug reaches
# the reader as EIO while the export keeps serving other ranges and still
# ends cleanly; a damaged or truncated image is refused with one error line
# and nothing is mounted.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/fuse-common.bash"

qemu-img create -q -f qcow2 d.qcow2 4M
qemu-io -f qcow2 -c "write -q -P 1 0 1M" d.qcow2 >/dev/null
printf '[inject-error]\nevent = "read_aio"\nerrno = "5"\n' > bd.cfg
start_fuse mnt -r -f qcow2 "blkdebug:bd.cfg:d.qcow2"
expect_fail "Input/output error" dd if=mnt of=/dev/null bs=4k count=1 iflag=direct
# unallocated clusters are not read from the file: zeroes, no error
dd if=mnt of=unalloc bs=4k skip=768 count=4 iflag=direct status=none || fail "read of a hole failed"
cmp -n 16384 unalloc /dev/zero || fail "hole not zero"
is_mounted mnt || fail "the export died after an I/O error"
stop_fuse mnt

# damaged images: one clear error, exit 1, nothing mounted
# (--daemonize: should an open wrongly succeed, the command still returns)
: > mp
FUSE_MOUNTS+=(mp)
printf 'QFI\xfb\0\0\0\3garbage' > bad.qcow2
expect_fail "Could not open 'bad.qcow2'" "$VDISK" fuse --daemonize -f qcow2 bad.qcow2 mp
head -c 70000 d.qcow2 > short.qcow2
rc=0; "$VDISK" fuse --daemonize -r short.qcow2 mp 2>err || rc=$?
if [ "$rc" -eq 0 ]; then
    fail "a truncated qcow2 was exported"
fi
[ "$rc" -lt 128 ] || fail "crash on a truncated qcow2: $rc"
[ -s err ] || fail "no message for a truncated qcow2"
is_mounted mp && fail "mounted after a failed open"
echo "fuse-errors: ok"
