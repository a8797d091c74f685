#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# convert --salvage as qemu-img's (qemu-iotest 251): blkdebug rules on the
# event "none" fail chosen block-status and read requests of the source;
# the warnings (QEMU's words, in QEMU's order, the block status ones also
# from the first walk over the image) and the target are the same as
# qemu-img's.  vdisk runs under the name qemu-img (a symlink) to speak as it.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
mkdir qbin
ln -s "$VDISK" qbin/qemu-img
qemu-img create -q -f qcow2 orig.qcow2 8M
qemu-io -c "write -P 42 0 8M" orig.qcow2 >/dev/null
rules=
for ofs in $((2 * 1024 * 1024 + 8192)) $((5 * 1024 * 1024 + 512)); do
    rules+="{'event': 'none', 'iotype': 'block-status', 'errno': 5, 'sector': $((ofs / 512))},"
done
for ofs in $((4 * 1024 * 1024 - 65536)) $((5 * 1024 * 1024 + 512)) $((6 * 1024 * 1024)) $((6 * 1024 * 1024 + 1024)); do
    rules+="{'event': 'none', 'iotype': 'read', 'errno': 5, 'sector': $((ofs / 512))},"
done
src="json:{'driver': 'blkdebug', 'image': {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': 'orig.qcow2'}}, 'inject-error': [${rules%,}]}"
q=$(qemu-img convert --salvage -O qcow2 "$src" q.qcow2 2>&1)
v=$(qbin/qemu-img convert --salvage -O qcow2 "$src" v.qcow2 2>&1)
[ "$q" = "$v" ] || fail "warnings differ: qemu-img says
$q
vdisk says
$v"
[ "$(echo "$q" | grep -c warning)" -ge 6 ] || fail "too few warnings: $q"
qemu-img compare q.qcow2 v.qcow2 >/dev/null || fail "salvaged images differ"
qemu-img check -q v.qcow2 || fail "salvaged image fails check"
# without --salvage the first failure stops the convert, as in QEMU
qemu-img convert "$src" q2.qcow2 >/dev/null 2>&1 && fail "qemu-img converted despite errors"
qbin/qemu-img convert "$src" v2.qcow2 >/dev/null 2>&1 && fail "vdisk converted despite errors"
exit 0
