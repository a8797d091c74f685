#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A short fuzzing run of every libFuzzer target, as part of tests/run.sh:
# builds $VDISK_SRC/build-fuzz when needed (clang, ASan + UBSan) and runs
# each target for a few seconds (less when there are many, to stay within
# about two minutes).  `make fuzz` is the long run.
. "$VDISK_SRC/tests/lib.sh"
need clang meson ninja flock

build=${VDISK_FUZZ_BUILD:-$VDISK_SRC/build-fuzz}
# One build at a time: several test runs may share the source tree.
exec 9>/tmp/vdisk-build-fuzz.lock
flock 9
sh "$VDISK_SRC/tests/fuzz/build.sh" "$build" >build.log 2>&1 || {
    tail -n 40 build.log
    fail "building the fuzz targets failed"
}
flock -u 9

n=$(find "$build/tests/fuzz" -maxdepth 1 -name 'fuzz-*' -type f -perm -u+x | wc -l)
[ "$n" -gt 0 ] || fail "no fuzz targets built"
secs=$(( 90 / n ))
[ "$secs" -gt 5 ] && secs=5
[ "$secs" -lt 2 ] && secs=2
# a corpus of our own: the smoke run must not depend on earlier long runs
VDISK_FUZZ_CORPUS=$PWD/corpus sh "$VDISK_SRC/tests/fuzz/run.sh" "$build" "$secs" \
    || fail "a fuzz target failed (see above)"
