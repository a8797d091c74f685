# SPDX-License-Identifier: BSD-3-Clause
# Helpers for the rbd tests (sourced after tests/lib.sh): a one-node Ceph
# cluster of the test's own (scripts/ceph-cluster.sh) in ./ceph, stopped
# by its pids when the test exits; skip (77) when it cannot start here.
need qemu-img qemu-io
"$VDISK" --help 2>&1 | grep -qw rbd || skip "vdisk was built without librbd"
for c in ceph-mon ceph-osd ceph-authtool monmaptool ceph rbd rados; do
    command -v "$c" >/dev/null || skip "$c is not installed (ceph-mon, ceph-osd, ceph-common)"
done
ceph_stop() { "$VDISK_SRC/scripts/ceph-cluster.sh" stop "$PWD/ceph" || true; }
trap ceph_stop EXIT
# a second try with a fresh directory and port (another test may have
# taken the port between the check and the monitor's bind)
CONF=$("$VDISK_SRC/scripts/ceph-cluster.sh" start "$PWD/ceph" 2>ceph-start.err) || {
    rm -rf "$PWD/ceph"
    CONF=$("$VDISK_SRC/scripts/ceph-cluster.sh" start "$PWD/ceph" 2>ceph-start.err) ||
        skip "the Ceph cluster cannot start here: $(tail -n 3 ceph-start.err | tr '\n' ' ')"
}
[ -f "$CONF" ] || fail "ceph-cluster.sh printed no conf path"
export CONF
# leaks inside the libraries librados uses (the sanitized builds)
export LSAN_OPTIONS="${LSAN_OPTIONS:+$LSAN_OPTIONS:}suppressions=$VDISK_SRC/tests/interop/rbd-lsan.supp:print_suppressions=0"
# librados reserves far more address space than lib.sh's `bounded` allows
# (its 256 MiB limit kills it), so rbd commands are bounded in time only
rb() { timeout -k 5 120 "$@"; }
# rbd:rbd/NAME with the cluster's conf
R() { echo "rbd:rbd/$1:conf=$CONF"; }
