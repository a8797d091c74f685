#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk check on qcow2: the same report (human and JSON) and exit code as
# qemu-img check for a clean image, one with a leaked cluster (3) and one
# with a corrupted refcount (2); -r leaks / -r all repair them so that
# qemu-img check finds nothing afterwards.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

mk() {
    rm -f "$1"
    qemu-img create -q -f qcow2 "$1" 16M
    qemu-io -f qcow2 -c 'write -P 1 0 1M' -c 'write -P 2 8M 64k' "$1" >/dev/null
}
# set_refcount IMG CLUSTER VALUE: rewrite one 16-bit refcount entry
set_refcount() {
    /usr/bin/python3 - "$@" <<'PY'
import struct, sys
path, cluster, value = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "r+b") as f:
    h = f.read(104)
    cluster_bits = struct.unpack(">I", h[20:24])[0]
    rt_off = struct.unpack(">Q", h[48:56])[0]
    f.seek(rt_off)
    rb_off = struct.unpack(">Q", f.read(8))[0]
    f.seek(rb_off + 2 * cluster)
    f.write(struct.pack(">H", value))
PY
}

same_check() {
    # same_check IMG ARGS...: vdisk check and qemu-img check agree on the
    # report (stdout) and the exit code; qemu-img's per-cluster detail lines
    # on stderr come from inside its block layer and have no equivalent.
    local img=$1; shift
    local a b rca=0 rcb=0
    a=$("$VDISK" check "$@" "$img" 2>/dev/null) || rca=$?
    b=$(qemu-img check "$@" "$img" 2>/dev/null) || rcb=$?
    [ "$rca" = "$rcb" ] || fail "check $* $img: exit $rca, qemu-img $rcb ($a)"
    [ "$a" = "$b" ] || fail "check $* $img differs:
$a
--- qemu-img:
$b"
}

mk clean.qcow2
for o in human json; do same_check clean.qcow2 --output=$o; done

mk leak.qcow2
set_refcount leak.qcow2 0 2        # the header cluster counted twice: a leak
for o in human json; do same_check leak.qcow2 --output=$o; done
expect_exit 3 "$VDISK" check leak.qcow2
out=$("$VDISK" check -r leaks leak.qcow2) || fail "check -r leaks: $out"
case "$out" in *"The following inconsistencies were found and repaired"*) ;; *) fail "repair report: $out" ;; esac
qemu-img check -q leak.qcow2 || fail "leak not repaired"

mk bad.qcow2
set_refcount bad.qcow2 0 0         # the header cluster not counted: corruption
for o in human json; do same_check bad.qcow2 --output=$o; done
expect_exit 2 "$VDISK" check bad.qcow2
"$VDISK" check -q -r all bad.qcow2 || fail "check -r all"
qemu-img check -q bad.qcow2 || fail "corruption not repaired"
qemu-img convert -O raw bad.qcow2 bad.raw
mk ref.qcow2; qemu-img convert -O raw ref.qcow2 ref.raw
same_content bad.raw ref.raw
echo ok
