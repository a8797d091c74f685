#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# preallocation=falloc/full with an external data file allocates the data
# file (QEMU creates it with the image's options), off/metadata leave it
# sparse; sizes and disk usage as qemu-img 7.2's (iotest 243).
. "$(dirname "$0")/../lib.sh"
need qemu-img
for mode in off metadata falloc full; do
    for who in qemu vdisk; do
        IMG=qemu-img; [ $who = vdisk ] && IMG=$VDISK
        rm -f $who.qcow2 $who.data
        "$IMG" create -q -f qcow2 -o data_file=$who.data,preallocation=$mode,extent_size_hint=0 \
            $who.qcow2 64M || fail "$who: create $mode failed"
        # disk usage in MiB: file systems differ in the last blocks
        echo "$(du -b $who.qcow2 | cut -f1) $(du -b $who.data | cut -f1)" \
             "$(( $(du -B1 $who.data | cut -f1) >> 20 ))" >$who.txt
    done
    diff qemu.txt vdisk.txt || fail "preallocation=$mode: sizes or usage differ"
    qemu-img check -q vdisk.qcow2 || fail "preallocation=$mode: check failed"
done
exit 0
