#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Lazy refcounts and crash consistency (QEMU's iotest 039 pattern), both
# ways: a writer killed with lazy refcounts leaves a dirty image whose
# check reports errors (exit 2 or 3 like qemu-img) and whose repair
# (check -r all, or the first read-write open) loses no data; a writer
# killed without lazy refcounts leaves at most leaked clusters.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

dirty_flag() { "$VDISK" info --output=json "$1" | grep -q '"dirty-flag": true'; }

# --- QEMU crashes, vdisk checks and repairs
qemu-img create -q -f qcow2 -o compat=1.1,lazy_refcounts=on q.qcow2 128M
qemu-io -t writethrough -c 'write -P 0x5a 0 512' -c 'write -P 0x5b 1M 64k' \
    -c 'sigraise 9' q.qcow2 >/dev/null 2>&1 || true
dirty_flag q.qcow2 || fail "qemu-io crash left no dirty flag"
cp q.qcow2 q2.qcow2
cp q.qcow2 q3.qcow2
qrc=0; qemu-img check q.qcow2 >/dev/null 2>&1 || qrc=$?
vrc=0; "$VDISK" check q.qcow2 >/dev/null 2>&1 || vrc=$?
[ $vrc -eq 2 ] || [ $vrc -eq 3 ] || fail "vdisk check of the crashed image: exit $vrc"
[ $vrc -eq $qrc ] || fail "vdisk check exit $vrc, qemu-img check exit $qrc"
"$VDISK" check -r all q.qcow2 >/dev/null || fail "vdisk check -r all failed"
qemu-img check q.qcow2 >/dev/null || fail "qemu-img check after vdisk's repair"
dirty_flag q.qcow2 && fail "dirty flag still set after repair"
qemu-io -r -c 'read -P 0x5a 0 512' -c 'read -P 0x5b 1M 64k' q.qcow2 >/dev/null ||
    fail "data lost by the repair"
# a read-write open repairs too (before its first write)
"$VDISK_IO" -c 'write -P 0x5c 2M 64k' q2.qcow2 >/dev/null || fail "write to dirty image"
qemu-img check q2.qcow2 >/dev/null || fail "qemu-img check after repair on open"
qemu-io -r -c 'read -P 0x5a 0 512' -c 'read -P 0x5b 1M 64k' -c 'read -P 0x5c 2M 64k' \
    q2.qcow2 >/dev/null || fail "data lost by the repair on open"
# a read-write open that writes nothing repairs at open, as QEMU does
"$VDISK_IO" -c 'read -P 0x5a 0 512' q3.qcow2 >/dev/null || fail "read of dirty image"
dirty_flag q3.qcow2 && fail "a read-write open left the dirty flag"
qemu-img check q3.qcow2 >/dev/null || fail "qemu-img check after repair at open"

# --- vdisk crashes, QEMU checks and repairs
"$VDISK" create -q -f qcow2 -o lazy_refcounts=on v.qcow2 128M
"$VDISK_IO" -t writethrough -c 'write -P 0x5a 0 512' -c 'write -P 0x5b 1M 64k' \
    -c 'sigraise 9' v.qcow2 >/dev/null 2>&1 || true
dirty_flag v.qcow2 || fail "vdisk-io crash left no dirty flag"
qrc=0; qemu-img check v.qcow2 >/dev/null 2>&1 || qrc=$?
[ $qrc -eq 2 ] || [ $qrc -eq 3 ] || fail "qemu-img check of vdisk's crashed image: exit $qrc"
qemu-img check -r all v.qcow2 >/dev/null 2>&1 || fail "qemu-img repair failed"
qemu-io -r -c 'read -P 0x5a 0 512' -c 'read -P 0x5b 1M 64k' v.qcow2 >/dev/null ||
    fail "vdisk-io's data did not reach the disk"
# a clean close clears the dirty flag
"$VDISK" create -q -f qcow2 -o lazy_refcounts=on c.qcow2 16M
"$VDISK_IO" -c 'write -P 1 0 1M' c.qcow2 >/dev/null
dirty_flag c.qcow2 && fail "dirty flag left after a clean close"
qemu-img check c.qcow2 >/dev/null || fail "qemu-img check after lazy refcounts session"

# --- killed without lazy refcounts: leaks at most (exit 0 or 3)
for i in 1 2 3 4; do
    rm -f k.qcow2
    "$VDISK" create -q -f qcow2 -o cluster_size=4k k.qcow2 64M
    "$VDISK_IO" -c "write -P 1 0 $((i * 300))k" -c 'write -P 2 10M 1M' -c 'write -z 20M 2M' \
        -c 'discard 0 8k' -c "write -P 3 $((i * 5))M 100k" -c 'sigraise 9' k.qcow2 >/dev/null 2>&1 || true
    rc=0; qemu-img check k.qcow2 >/dev/null 2>&1 || rc=$?
    [ $rc -eq 0 ] || [ $rc -eq 3 ] || fail "crash $i left corruption (qemu-img check exit $rc)"
done
echo ok
