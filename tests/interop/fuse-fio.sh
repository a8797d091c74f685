#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk fuse under fio: parallel random writes with crc32c verification on
# the FUSE file of a qcow2 (several jobs, buffered and O_DIRECT), then the
# image is checked clean and read back by qemu-img identical to the mount.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/fuse-common.bash"
need fio

qemu-img create -q -f qcow2 -o cluster_size=64k f.qcow2 64M
start_fuse mnt --threads 8 f.qcow2

# 4 jobs, each on its own 16M region, random 4k-64k writes then a verify pass
fio --name=fusew --filename=mnt --ioengine=psync --rw=randwrite --bsrange=4k-64k \
    --size=16M --offset_increment=16M --numjobs=4 --io_size=8M --randseed=2026 \
    --verify=crc32c --verify_fatal=1 --do_verify=1 --group_reporting \
    --output=fio1.out || fail "fio (buffered) failed: $(tail -n 20 fio1.out)"
grep -q "err= 0" fio1.out || fail "fio reported errors: $(cat fio1.out)"

# O_DIRECT with libaio-style queueing through the threads
fio --name=fused --filename=mnt --ioengine=psync --direct=1 --rw=randrw --bs=16k \
    --size=32M --numjobs=2 --offset_increment=32M --io_size=4M --randseed=7 \
    --verify=crc32c --verify_fatal=1 --do_verify=1 --group_reporting \
    --output=fio2.out || fail "fio (direct) failed: $(tail -n 20 fio2.out)"
grep -q "err= 0" fio2.out || fail "fio (direct) reported errors: $(cat fio2.out)"

cp mnt seen.raw
stop_fuse mnt
check_clean f.qcow2
qemu-img compare -f qcow2 -F raw f.qcow2 seen.raw || fail "image differs from what the mount showed"
echo "fuse-fio: ok"
