#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# host_device (and host_cdrom's refusal) on a real loop device over a file
# in the test directory: probing picks host_device, size, reads, writes,
# zero writes (with and without unmap), discard, O_DIRECT with unaligned
# requests, create (first sector cleared, no growing), and the results
# read back from the backing file with qemu-io.  Runs as root.
. "$VDISK_SRC/tests/lib.sh"
need losetup qemu-io qemu-img
[ "$(id -u)" = 0 ] || fail "needs root for losetup"

truncate -s 16M back.img
qemu-io -f raw -c 'write -P 0x5a 0 16M' back.img >/dev/null
LOOP=$(losetup -f --show back.img) || fail "losetup failed"
trap 'losetup -d "$LOOP"' EXIT
[ -b "$LOOP" ] || fail "$LOOP is not a block device"

# probing: a block device path opens with host_device, as raw
"$VDISK" info --output=json "$LOOP" >v.json
qemu-img info --output=json "$LOOP" >q.json
grep -q '"virtual-size": 16777216' v.json || fail "size: $(cat v.json)"
grep -q '"format": "raw"' v.json || fail "format: $(cat v.json)"
"$VDISK" map --output=json "$LOOP" >v.map
qemu-img map --output=json "$LOOP" >q.map
same_content v.map q.map

# I/O through host_device, buffered
"$VDISK_IO" -f raw \
    -c 'write -P 0x11 1M 64k' \
    -c 'write -P 0x22 1000 3000' \
    -c 'write -z 2M 1M' \
    -c 'write -z -u 3M 1M' \
    -c 'discard 4M 1M' \
    "$LOOP" >/dev/null || fail "vdisk-io on $LOOP"
# ... and unbuffered with unaligned requests (logical block alignment)
"$VDISK_IO" --image-opts \
    -c 'write -P 0x33 6000 10000' \
    -c 'read -P 0x33 6000 10000' \
    -c 'read -P 0x11 1M 64k' \
    "driver=raw,file.driver=host_device,file.filename=$LOOP,cache.direct=on" >/dev/null ||
    fail "vdisk-io cache.direct=on on $LOOP"
# what the backing file holds now
qemu-io -f raw \
    -c 'read -P 0x5a 0 1000' -c 'read -P 0x22 1000 3000' -c 'read -P 0x5a 4000 2000' \
    -c 'read -P 0x33 6000 10000' -c 'read -P 0x5a 16000 1032576' \
    -c 'read -P 0x11 1M 64k' -c 'read -P 0x5a 1114112 983040' \
    -c 'read -P 0 2M 3M' -c 'read -P 0x5a 5M 11M' \
    back.img | grep -q 'Pattern verification failed' && fail "backing file content"
qemu-io -f raw -c 'read -P 0 2M 3M' back.img >/dev/null || fail "zeroes"

# the same checks through vdisk-io's own reads of the device
"$VDISK_IO" -r -f raw -c 'read -P 0 2M 3M' -c 'read -P 0x5a 5M 11M' "$LOOP" |
    grep -q 'Pattern verification failed' && fail "device content"

# the wrong drivers are refused with QEMU's messages
expect_fail "'file' driver requires '$LOOP' to be a regular file" \
    "$VDISK_IO" --image-opts -c 'read 0 512' "driver=file,filename=$LOOP"
expect_fail "'host_device' driver requires 'back.img' to be either a character or block device" \
    "$VDISK_IO" --image-opts -c 'read 0 512' "driver=host_device,filename=back.img"
# host_cdrom opens any block device; without a disc, I/O fails as QEMU's
expect_fail "No medium found" \
    "$VDISK_IO" --image-opts -c 'read 0 512' "driver=host_cdrom,filename=$LOOP"
qemu-io --image-opts -c 'read 0 512' "driver=host_cdrom,filename=$LOOP" 2>&1 |
    grep -q "No medium found" || fail "qemu-io's host_cdrom differs"

# create on a device: cannot grow, clears the first sector otherwise
expect_fail "Cannot grow device files" "$VDISK" create -f raw "$LOOP" 32M
qemu-io -f raw -c 'write -P 0x5a 0 4096' back.img >/dev/null
"$VDISK" create -f raw "$LOOP" 8M >/dev/null || fail "create on $LOOP"
qemu-io -f raw -c 'read -P 0 0 512' -c 'read -P 0x5a 512 3584' back.img |
    grep -q 'Pattern verification failed' && fail "create did not clear exactly one sector"
expect_fail "Unsupported preallocation mode" \
    "$VDISK" create -f raw -o preallocation=full "$LOOP" 8M
# resize (exact, as qemu-img's) cannot change a device's size
expect_fail "Cannot resize device files" "$VDISK" resize -f raw "$LOOP" 32M
expect_fail "Cannot resize device files" qemu-img resize -f raw "$LOOP" 32M
[ "$(blockdev --getsize64 "$LOOP")" = 16777216 ] || fail "device size changed"
echo ok
