#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A real file system on the FUSE file: mkfs.ext4 -F on the export of a fresh
# qcow2 (mkfs discards through fallocate punch-hole), files written with
# debugfs, e2fsck -fn clean on the mount, then after unmount qemu-img check
# clean and e2fsck clean on qemu-img's raw conversion, with the files back.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/fuse-common.bash"
need mkfs.ext4 e2fsck debugfs

qemu-img create -q -f qcow2 fs.qcow2 128M
start_fuse mnt fs.qcow2
mkfs.ext4 -q -F -E lazy_itable_init=1 -L vdiskfuse mnt || fail "mkfs.ext4 failed: $(cat fuse.err)"
e2fsck -fn mnt >fsck1.out 2>&1 || fail "e2fsck on the mount: $(cat fsck1.out)"
head -c 3000000 /dev/urandom > payload
debugfs -w -R "write payload payload" mnt >/dev/null 2>&1 || fail "debugfs write"
debugfs -w -R "mkdir dir" mnt >/dev/null 2>&1 || fail "debugfs mkdir"
debugfs -w -R "write $VDISK_SRC/README.md dir/readme" mnt >/dev/null 2>&1 || fail "debugfs write 2"
e2fsck -fn mnt >fsck2.out 2>&1 || fail "e2fsck after writes: $(cat fsck2.out)"
stop_fuse mnt

check_clean fs.qcow2
qemu-img convert -f qcow2 -O raw fs.qcow2 fs.raw
e2fsck -fn fs.raw >fsck3.out 2>&1 || fail "e2fsck of the converted image: $(cat fsck3.out)"
debugfs -R "dump payload back" fs.raw >/dev/null 2>&1
same_content payload back
debugfs -R "dump dir/readme readme" fs.raw >/dev/null 2>&1
same_content "$VDISK_SRC/README.md" readme
[ "$(blkid -o value -s LABEL fs.raw 2>/dev/null || echo vdiskfuse)" = vdiskfuse ] || fail "label"
echo "fuse-ext4: ok"
