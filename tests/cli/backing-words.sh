#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Backing-file messages and names as QEMU's tools print them, for every
# format with backing files (qemu-iotests 069, 111, 126):
#  - an image whose backing file is gone: "Could not open backing file:
#    Could not open 'NAME': No such file or directory" (qemu-io, qemu-img);
#  - create -b of a missing file: the error, then "Could not open backing
#    image." on a line of its own;
#  - "file:NAME" where NAME has a colon before its first slash is the file
#    "./NAME": info shows it so and relative backing names resolve against it.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
for fmt in qcow2 qed qcow vmdk; do
    qemu-img create -q -f $fmt b.$fmt 1M
    qemu-img create -q -f $fmt -b b.$fmt -F $fmt t.$fmt
    rm b.$fmt
    same_output "$fmt missing backing (qemu-io)" qemu-io -c quit t.$fmt
    same_output "$fmt missing backing (info)" qemu-img info t.$fmt
    same_output "$fmt create -b missing" qemu-img create -f $fmt -b "$PWD/none.$fmt" -F $fmt n.$fmt
    [ ! -e n.$fmt ] || fail "$fmt: create with a missing backing file left n.$fmt"
    rm -f t.$fmt

    qemu-img create -q -f $fmt base.$fmt 1M
    qemu-img create -q -f $fmt -b base.$fmt -F $fmt "file:image:top.$fmt"
    [ -f "image:top.$fmt" ] || fail "$fmt: file:image:top.$fmt was not created as image:top.$fmt"
    same_output "$fmt info file:image:top" qemu-img info "file:image:top.$fmt"
    "$VDISK" info "file:image:top.$fmt" | grep -qx "image: ./image:top.$fmt" ||
        fail "$fmt: file:image:top.$fmt is not shown as ./image:top.$fmt"
    rm -f "image:top.$fmt" base.$fmt
done
echo ok
