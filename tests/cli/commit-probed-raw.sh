#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A backing file probed as raw (qcow v1 stores no backing format) stays
# protected on commit: data that would make its first block probe as a format
# is refused with EPERM, as QEMU's commit job does (iotest 301); data that
# keeps it raw commits.  qemu-io on a probed raw image refuses the same.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
S=$((1 << 20))
for who in qemu vdisk; do
    IMG=qemu-img
    [ $who = vdisk ] && IMG=$VDISK
    truncate -s $S base-$who.raw
    qemu-img create -q -f qcow -b base-$who.raw -F raw $who.qcow $S
    qemu-img create -q -f qcow2 hdr.qcow2 $S
    truncate -s $S hdr.qcow2
    qemu-img convert -n -f raw -O qcow hdr.qcow2 $who.qcow
    set +e
    "$IMG" commit -f qcow $who.qcow >out-$who 2>&1
    echo "rc=$?" >>out-$who
    set -e
    sed -i "s/^$(basename "$IMG"): //; s/^qemu-img: //" out-$who
done
cat out-vdisk
grep -q "rc=1" out-vdisk || fail "commit over a probed raw block 0 did not fail"
diff out-qemu out-vdisk || fail "commit output differs from qemu-img's"
[ "$(qemu-img info --output=json base-vdisk.raw | grep '"format"')" = '    "format": "raw",' ] ||
    fail "the raw base now probes as another format"
# (QEMU's commit is a mirror job: chunks already in flight past block 0 may
# land; vdisk stops at the first failing write.  Block 0 is what matters.)
cmp -n 65536 base-vdisk.raw /dev/zero || fail "block 0 of the raw base was written"
# data that keeps block 0 raw commits
qemu-img create -q -f qcow -b base-vdisk.raw -F raw top.qcow $S
qemu-io -c "write -P 0x5a 0 64k" -c "write -P 0xa5 512k 4k" top.qcow >/dev/null
"$VDISK" commit -q -f qcow top.qcow || fail "plain commit into a probed raw base failed"
qemu-io -f raw -c "read -P 0x5a 0 64k" -c "read -P 0xa5 512k 4k" base-vdisk.raw | grep -q Pattern &&
    fail "committed data missing"
# qemu-io's own writes to a probed raw image follow the same rule
truncate -s $S p.raw
qemu-img create -q -f qcow2 q.qcow2 64k
dd if=q.qcow2 of=hdr.bin bs=512 count=1 status=none
qemu-io -c "write -P 0 0 512" p.raw >/dev/null 2>&1
"$VDISK_IO" -c "write -s hdr.bin 0 512" p.raw >io.out 2>&1 || true
grep -q "Operation not permitted" io.out || fail "vdisk-io wrote a format header into probed raw: $(cat io.out)"
"$VDISK_IO" -f raw -c "write -s hdr.bin 0 512" p.raw >/dev/null 2>&1 || fail "explicit raw refused"
exit 0
