#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk check reads an L2 table shared by many snapshots once for all of
# them, not once per snapshot (issue 10 item 5), and still counts as QEMU
# 7.2 does: references and corruptions per snapshot, line for line.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io strace
mkdir bin
ln -s "$VDISK" bin/qemu-img
qemu-img create -q -f qcow2 base.qcow2 1M
qemu-io -c 'write -P 7 0 64k' base.qcow2 >/dev/null
for i in $(seq 1 24); do qemu-img snapshot -c "s$i" base.qcow2; done
l2=$(/usr/bin/python3 - base.qcow2 <<'PY'
import struct, sys
f = open(sys.argv[1], 'rb'); h = f.read(104)
l1 = struct.unpack('>Q', h[40:48])[0]
f.seek(l1); print(struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00)
PY
)
[ "$l2" -gt 0 ] || fail "no L2 table found"
out=$(bin/qemu-img check base.qcow2 2>&1) || fail "clean image: $out"
# Reads of the L2 table: open (the active L1's table), the active pass
# and one for all 24 snapshots; before the fix there were 26.
reads=$(strace -f -e trace=pread64 "$VDISK" check base.qcow2 2>&1 |
        grep -c "pread64(.*, 65536, $l2) = 65536")
[ "$reads" -le 3 ] || fail "the shared L2 table was read $reads times"

compare() {   # same output and exit code as qemu-img, on two copies
    local q v qrc=0 vrc=0
    cp base.qcow2 q.qcow2; cp base.qcow2 v.qcow2
    q=$(qemu-img check "$@" q.qcow2 2>&1) || qrc=$?
    v=$(bin/qemu-img check "$@" v.qcow2 2>&1) || vrc=$?
    [ "$q" = "$v" ] || fail "check $*: vdisk
$v
qemu-img
$q"
    [ "$qrc" = "$vrc" ] || fail "check $*: exit $vrc, qemu-img $qrc"
}
compare
# Reserved bits in the shared L2 entry: one corruption per visit.
/usr/bin/python3 - base.qcow2 "$l2" <<'PY'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(int(sys.argv[2]))
    e = struct.unpack('>Q', f.read(8))[0]
    f.seek(int(sys.argv[2]))
    f.write(struct.pack('>Q', e | 0x100))
PY
compare
out=$(qemu-img check base.qcow2 2>&1) || true
case $out in *"25 errors were found"*) ;;
    *) fail "the damaged image no longer shows what this test is about: $out" ;; esac
exit 0
