#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A raw image opened without a format (probed) must refuse writes that
# would make its first sector probe as another format, as QEMU does: the
# write fails with "Operation not permitted" and nothing changes.  Writes
# that keep it raw, writes past sector 0 and images opened with -f raw are
# not restricted.  Side by side with qemu-io.
. "$VDISK_SRC/tests/lib.sh"
need qemu-io qemu-img

mask() { sed -E 's/^[0-9.]+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), [0-9]+ ops; .*$/STATS/'; }

tested=0
for fmt in qcow2 qed vdi vpc qcow; do
    qemu-img create -f $fmt hdr.$fmt 1M >/dev/null
    # only formats this build knows can be recognised
    "$VDISK_IO" -r -f $fmt hdr.$fmt -c 'length' >/dev/null 2>&1 || continue
    tested=$((tested + 1))
    cmds=(-c "write -s hdr.$fmt 0 512" -c "write -s hdr.$fmt 0 4k" -c "write -s hdr.$fmt 1 511"
        -c "write -s hdr.$fmt 512 512" -c 'write -P 1 0 10' -c 'read -v 0 16' -c 'write -z 0 512'
        -c "aio_write -P 0 0 512" -c 'aio_flush')
    for mode in probed raw; do
        fopt=()
        [ $mode = raw ] && fopt=(-f raw)
        truncate -s 1M q.img
        truncate -s 1M v.img
        qrc=0 vrc=0
        qemu-io "${fopt[@]}" q.img "${cmds[@]}" >q.out 2>q.err || qrc=$?
        "$VDISK_IO" "${fopt[@]}" v.img "${cmds[@]}" >v.out 2>v.err || vrc=$?
        mask <q.out >q.m
        mask <v.out >v.m
        diff -u q.m v.m || fail "$fmt header, $mode: output differs"
        [ "$qrc" = "$vrc" ] || fail "$fmt header, $mode: exit qemu-io=$qrc vdisk-io=$vrc"
        cmp -s q.img v.img || fail "$fmt header, $mode: content differs"
        if [ $mode = probed ]; then
            grep -q "Operation not permitted" v.out || fail "$fmt header: write not refused"
            grep -q "probing guessed raw" v.err || fail "no warning about probing raw"
        else
            grep -q "Operation not permitted" v.out && fail "$fmt header: -f raw must not refuse"
        fi
        rm -f q.img v.img
    done
done
[ $tested -gt 0 ] || fail "no format known to this build to probe"

# read-only probing prints no warning (nothing will be restricted)
truncate -s 1M v.img
"$VDISK_IO" -r v.img -c 'read 0 512' >/dev/null 2>v.err
grep -q "probing guessed raw" v.err && fail "warning printed for a read-only image"
echo "probed raw protects sector 0 like QEMU ($tested formats)"
