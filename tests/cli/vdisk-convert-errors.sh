#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk convert failure paths: exit 1 as qemu-img, one clear message, and
# nothing created (or an existing target left unchanged) when qemu-img
# creates nothing.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

truncate -s 4M in.raw
printf 'data' | dd of=in.raw conv=notrunc status=none
qemu-img create -q -f qcow2 in.qcow2 4M

# expect_none MESSAGE ARGS...: fails, and out.img does not exist afterwards
expect_none() {
    local want=$1; shift
    rm -f out.img
    expect_fail "$want" "$VDISK" convert "$@"
    [ ! -e out.img ] || fail "out.img created by: convert $*"
    # qemu-img agrees that this fails
    rm -f out.img
    if qemu-img convert "$@" >/dev/null 2>&1; then fail "qemu-img accepts: $*"; fi
    rm -f out.img
}
expect_none "Must specify image file name" -O raw
expect_none "Unknown file format" -O foo in.raw out.img
expect_none "Invalid parameter 'bogus'" -O qcow2 -o bogus=1 in.raw out.img
expect_none "Invalid option list" -O qcow2 -o ,, in.raw out.img
expect_none "No such file" -O raw missing.raw out.img
expect_none "" -f qcow2 in.raw out.img
expect_none "sparse" -S 3 in.raw out.img
expect_none "sparse" -S foo in.raw out.img
expect_none "coroutines" -m 0 in.raw out.img
expect_none "coroutines" -m 17 in.raw out.img
expect_none "rate limit" -r foo in.raw out.img
expect_none "cache" -T bogus in.raw out.img
expect_none "requires use of -n" --target-is-zero in.raw out.img
expect_none "requires use of -n" --target-image-opts in.raw out.img
expect_none "requires --bitmaps" --skip-broken-bitmaps in.raw out.img
expect_none "bitmap" --bitmaps in.raw out.img
expect_none "copy offloading" -C -S 4k in.raw out.img
expect_none "salvag" -C --salvage in.raw out.img
expect_none "unrecognized option" -x in.raw out.img
expect_none "missing argument" in.raw -O
expect_none "snapshot" -l snap1 in.raw out.img
expect_none "snapshot" -l snapshot.foo=1 in.qcow2 out.img
expect_none "multiple snapshot" -l snap1 in.qcow2 in.qcow2 out.img
expect_none "Cluster size" -O qcow2 -o cluster_size=3 in.raw out.img
expect_fail "No such file" "$VDISK" convert -O raw in.raw /nonexistent/dir/out.img

# -n: the target must exist and be large enough; -o makes no sense
expect_fail "No such file" "$VDISK" convert -n -O raw in.raw out.img
[ ! -e out.img ] || fail "-n created out.img"
truncate -s 1M small.img
cp small.img small.orig
expect_fail "smaller than input" "$VDISK" convert -n -O raw in.raw small.img
same_content small.orig small.img
expect_fail "no effect" "$VDISK" convert -n -o cluster_size=4k -O qcow2 in.raw small.img
same_content small.orig small.img

# a read-only target file cannot be opened for writing (as non-root)
if [ "$(id -u)" != 0 ]; then
    cp small.orig ro.img; chmod 444 ro.img
    expect_fail "" "$VDISK" convert -n -O raw in.raw ro.img
fi

# the source is also the target: its lock refuses it, the source is unchanged
cp in.raw keep.raw
expect_fail "lock" "$VDISK" convert -O raw in.raw in.raw
same_content keep.raw in.raw

# -o help lists the options and exits 0
out=$("$VDISK" convert -O qcow2 -o help)
case "$out" in *"cluster_size"*) ;; *) fail "-o help: $out" ;; esac
"$VDISK" convert -o help >/dev/null || fail "-o help for raw"
echo ok
