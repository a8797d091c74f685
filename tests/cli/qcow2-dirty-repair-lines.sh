#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A qcow2 left dirty (lazy_refcounts=on, killed after writing) is repaired
# when opened read-write, and QEMU's tools print that repair's lines on
# stderr (iotest 039: "ERROR cluster 5 refcount=0 reference=1", "Rebuilding
# refcount structure", "Repairing cluster 1 refcount=1 reference=0").
# Read-only opens and `check` (which reports instead of repairing at open)
# print none of them.  vdisk's tools must print the same lines in the same
# cases and leave the same image.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
qemu-img create -q -f qcow2 -o compat=1.1,lazy_refcounts=on dirty.qcow2 128M
# (in a shell of its own, which reports the kill to /dev/null)
bash -c 'qemu-io -c "write -P 0x5a 0 512" -c "write -P 0x5b 1M 64k" -c "sigraise 9" dirty.qcow2; exit 0' \
    >/dev/null 2>&1 || true
qemu-img info dirty.qcow2 | grep -q "cleanly shut down: no" || fail "the image is not dirty"
run() {   # NAME TOOL ARGS... (the image is the last argument)
    local name=$1 tool=$2
    shift 2
    for who in qemu vdisk; do
        local prog
        case $tool:$who in
            img:qemu) prog=qemu-img ;;
            img:vdisk) prog=$VDISK ;;
            io:qemu) prog=qemu-io ;;
            io:vdisk) prog=$VDISK_IO ;;
        esac
        cp dirty.qcow2 $who.qcow2
        set +e
        "$prog" "$@" $who.qcow2 >out-$who 2>&1
        echo "rc=$?" >>out-$who
        set -e
        sed -i -e "s/$who\.qcow2/IMG/g" -e "s/^$(basename "$prog"): //; s/^qemu-img: //; s/^qemu-io: //" \
            -e 's/[0-9.]* sec (.*)$/TIME/' out-$who
        qemu-img info --output=json $who.qcow2 2>/dev/null | grep -q '"dirty-flag": true' &&
            echo "still dirty" >>out-$who
    done
    diff out-qemu out-vdisk || fail "$name: output differs from QEMU's"
    if [ $tool = io ] || [ "$name" = rebase ]; then
        cmp qemu.qcow2 vdisk.qcow2 || fail "$name: the repaired image differs from QEMU's"
    fi
}
run "qemu-io write" io -c "write -P 0x5c 0 512"
grep -q "^Repairing cluster 1 refcount=1 reference=0" out-vdisk ||
    fail "qemu-io write on a dirty image printed no repair lines"
run "qemu-io read-only" io -r -c "read -P 0x5a 0 512"
run snapshot img snapshot -c s1
run amend img amend -o lazy_refcounts=off
run rebase img rebase -u -b ''
run info img info
run check img check
run "check -r all" img check -r all
exit 0
