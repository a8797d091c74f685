#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qemu-img check's per-problem lines ("Leaked cluster N refcount=R
# reference=F", "ERROR cluster ...", "Repairing ...", the OFLAG_COPIED lines)
# and summary are QEMU 7.2's, line for line, on images with damaged refcounts,
# with and without -r.  vdisk runs under the name qemu-img for the comparison.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
mkdir bin
ln -s "$VDISK" bin/qemu-img

setref() {   # IMAGE CLUSTER REFCOUNT: write a 16-bit refcount in the first block
    /usr/bin/python3 - "$@" <<'PY'
import struct, sys
path, cl, rc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, 'r+b') as f:
    h = f.read(104)
    f.seek(struct.unpack('>Q', h[48:56])[0])
    blk = struct.unpack('>Q', f.read(8))[0]
    f.seek(blk + 2 * cl)
    f.write(struct.pack('>H', rc))
PY
}
compare() {   # NAME ARGS...: same output and exit code, on two copies
    local n=$1 q v qrc=0 vrc=0; shift
    cp base.qcow2 q.qcow2; cp base.qcow2 v.qcow2
    q=$(qemu-img check "$@" q.qcow2 2>&1) || qrc=$?
    v=$(bin/qemu-img check "$@" v.qcow2 2>&1) || vrc=$?
    [ "$q" = "$v" ] || fail "$n check $*: vdisk
$v
qemu-img
$q"
    [ "$qrc" = "$vrc" ] || fail "$n check $*: exit $vrc, qemu-img $qrc"
}
# cluster 0 header, 1 refcount table, 2 refcount block, 3 L1, 4 L2, 5.. data
for c in "leak 5:2" "leak-l2 4:2" "error 5:1 6:0 7:3" "leak-header 0:3"; do
    set -- $c
    qemu-img create -q -f qcow2 base.qcow2 1M
    qemu-io -c 'write 0 192k' base.qcow2 >/dev/null
    n=$1; shift
    for r in "$@"; do setref base.qcow2 "${r%%:*}" "${r##*:}"; done
    set -- "$n"
    compare "$1"
    compare "$1" -r leaks
    compare "$1" -r all
done
# A refcount of 1 on data shared by a snapshot (refcount should be 2).
qemu-img create -q -f qcow2 base.qcow2 1M
qemu-io -c 'write 0 64k' base.qcow2 >/dev/null
qemu-img snapshot -c s1 base.qcow2
out=$(qemu-img check base.qcow2 2>&1) || fail "snapshot image not clean: $out"
data=$(qemu-img map --output=json base.qcow2 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["offset"] // 65536)')
setref base.qcow2 "$data" 1
compare snapshot-shared
compare snapshot-shared -r all
out=$(qemu-img check base.qcow2 2>&1) || true
case $out in *"ERROR cluster $data refcount=1 reference=2"*) ;;
    *) fail "the damaged image no longer shows what this test is about: $out" ;; esac
exit 0
