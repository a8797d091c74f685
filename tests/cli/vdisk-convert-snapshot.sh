#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk convert -l (internal snapshots by name, id and snapshot.* params),
# --salvage past unreadable clusters, --image-opts / --target-image-opts
# and --object, each against qemu-img convert.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f qcow2 s.qcow2 4M
qemu-io -c "write -q -P 1 0 1M" s.qcow2
qemu-img snapshot -c snap1 s.qcow2
qemu-io -c "write -q -P 2 512k 1M" s.qcow2
qemu-img snapshot -c snap2 s.qcow2
qemu-io -c "write -q -P 3 0 64k" s.qcow2
for l in snap1 snap2 1 2 snapshot.name=snap2 snapshot.id=1 snapshot.id=2,snapshot.name=snap2; do
    rm -f v.raw q.raw
    "$VDISK" convert -l "$l" -O raw s.qcow2 v.raw || fail "convert -l $l"
    qemu-img convert -l "$l" -O raw s.qcow2 q.raw
    same_content q.raw v.raw
done
"$VDISK" convert -O raw s.qcow2 cur.raw
qemu-io -f raw -c "read -q -P 3 0 64k" cur.raw >/dev/null || fail "current state not converted"
expect_fail "Failed to load snapshot" "$VDISK" convert -l nope -O raw s.qcow2 n.raw
[ ! -e n.raw ] || fail "n.raw created"

# --salvage: a compressed cluster that cannot be decompressed reads as zeroes
/usr/bin/python3 -c "
open('t.raw', 'wb').write(b''.join(b'text line %d\n' % i for i in range(30000)).ljust(1 << 20, b'\0'))"
qemu-img convert -c -O qcow2 -o cluster_size=64k t.raw bad.qcow2
/usr/bin/python3 -c "
f = open('bad.qcow2', 'r+b'); f.seek(0x50000); f.write(b'\xff' * 20000)"
qemu-io -c "read 0 1M" bad.qcow2 >/dev/null 2>&1 && fail "the corruption did not take"
expect_fail "error while reading" "$VDISK" convert -O raw bad.qcow2 nosalv.raw
out=$("$VDISK" convert --salvage -O raw bad.qcow2 v.raw 2>&1) || fail "--salvage failed: $out"
case "$out" in *warning*) ;; *) fail "no warning: $out" ;; esac
[ -z "$("$VDISK" convert -q --salvage -O raw bad.qcow2 vq.raw 2>&1)" ] || fail "-q --salvage printed"
qemu-img convert --salvage -O raw bad.qcow2 q.raw 2>/dev/null
same_content q.raw v.raw

# option strings instead of file names
truncate -s 4M io.raw
printf 'abc' | dd of=io.raw conv=notrunc status=none
"$VDISK" convert --image-opts driver=raw,file.filename=io.raw -O qcow2 io1.qcow2
qemu-img compare -q io.raw io1.qcow2 || fail "--image-opts"
qemu-img create -q -f qcow2 io2.qcow2 4M
"$VDISK" convert -n --target-image-opts io.raw driver=qcow2,file.filename=io2.qcow2
qemu-img compare -q io.raw io2.qcow2 || fail "--target-image-opts"
"$VDISK" convert --object secret,id=s0,data=x -O raw io.raw io3.raw || fail "--object secret"
expect_fail "" "$VDISK" convert --object bogus,id=x io.raw io4.raw
[ ! -e io4.raw ] || fail "io4.raw created"
echo ok
