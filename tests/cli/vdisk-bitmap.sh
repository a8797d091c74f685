#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk bitmap: qemu-img's argument rules, and the refusal of a format
# without persistent bitmaps (raw), writing nothing.
. "$VDISK_SRC/tests/lib.sh"

truncate -s 1M r.img
cp r.img ref.img
expect_fail "Need at least one of --add" "$VDISK" bitmap -f raw r.img b0
expect_fail "granularity only supported with --add" "$VDISK" bitmap --remove -g 64k -f raw r.img b0
expect_fail "-F only supported with -b" "$VDISK" bitmap --add -F raw -f raw r.img b0
expect_fail "Merge bitmap source file only supported with --merge" "$VDISK" bitmap --add -b r.img -f raw r.img b0
expect_fail "Expecting filename and bitmap name" "$VDISK" bitmap --add -f raw r.img
expect_fail "Invalid granularity" "$VDISK" bitmap --add -g xyz -f raw r.img b0
for act in --add --remove --clear --enable --disable "--merge b1"; do
    op=${act#--}; op=${op%% *}
    expect_fail "Operation $op on bitmap b0 failed" "$VDISK" bitmap $act -f raw r.img b0
done
expect_fail "Operation merge on bitmap b0 failed" "$VDISK" bitmap --merge b1 -b ref.img -F raw -f raw r.img b0
same_content r.img ref.img
echo ok
