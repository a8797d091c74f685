#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk snapshot on qcow2: -l equals qemu-img's listing; -c / -a / -d work
# and qemu-img sees their result (and vice versa).
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f qcow2 s.qcow2 8M
qemu-io -f qcow2 -c 'write -P 1 0 64k' s.qcow2 >/dev/null
qemu-img snapshot -c one s.qcow2
a=$("$VDISK" snapshot -l s.qcow2) || fail "snapshot -l"
b=$(qemu-img snapshot -l s.qcow2)
[ "$a" = "$b" ] || fail "snapshot -l differs: $a -- $b"
qemu-img convert -O raw s.qcow2 one.raw

"$VDISK" snapshot -c two s.qcow2 || fail "snapshot -c"
qemu-img snapshot -l s.qcow2 | grep -q " two " || fail "qemu-img does not list 'two'"
qemu-io -f qcow2 -c 'write -P 9 0 128k' s.qcow2 >/dev/null
"$VDISK" snapshot -a one s.qcow2 || fail "snapshot -a"
qemu-img convert -O raw s.qcow2 now.raw
same_content now.raw one.raw
"$VDISK" snapshot -d two s.qcow2 || fail "snapshot -d"
qemu-img snapshot -l s.qcow2 | grep -q " two " && fail "'two' still listed"
expect_fail "Could not delete snapshot 'nosuch'" "$VDISK" snapshot -d nosuch s.qcow2
expect_fail "Could not apply snapshot 'nosuch'" "$VDISK" snapshot -a nosuch s.qcow2
qemu-img check -q s.qcow2 || fail "qemu-img check after snapshot operations"
a=$("$VDISK" snapshot -l s.qcow2)
b=$(qemu-img snapshot -l s.qcow2)
[ "$a" = "$b" ] || fail "final snapshot -l differs: $a -- $b"
echo ok
