#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The preallocate filter, side by side with QEMU's:
#  - under a growing format, the file grows in prealloc-size steps aligned
#    to prealloc-align while writing (seen by killing the process before
#    it closes), and is cut back to the data end on close;
#  - as the root node or under raw, lengths, writes and truncation behave
#    as with qemu-io, and the file ends with the same size;
#  - bad options are refused.
. "$VDISK_SRC/tests/lib.sh"
need qemu-io qemu-img

mask() { sed -E 's/^[0-9.]+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), [0-9]+ ops; .*$/STATS/'; }
fsize() { stat -c %s "$1"; }

P=$((1 << 20))   # prealloc-size
A=$((64 << 10))  # prealloc-align
popts="file.driver=preallocate,file.prealloc-size=$P,file.prealloc-align=$A"
writes=(-c 'write -P 1 0 256k' -c 'write -P 2 1M 64k' -c 'write -P 3 3M 512k')
verify=(-c 'read -P 1 0 256k' -c 'read -P 2 1M 64k' -c 'read -P 3 3M 512k' -c 'read -P 0 256k 64k')

# --- under a growing format this build supports
fmt=
for f in qcow2 qed vdi vpc qcow; do
    qemu-img create -f $f probe.$f 16M >/dev/null
    if "$VDISK_IO" -f $f probe.$f -c 'write 0 512' >/dev/null 2>&1; then
        fmt=$f
        break
    fi
done
[ -n "$fmt" ] || fail "no growing format usable for the preallocate test"

for tool in qemu-io "$VDISK_IO"; do
    name=$(basename "$tool")
    # baseline: no filter
    qemu-img create -f $fmt base.$fmt 16M >/dev/null
    "$tool" -f $fmt base.$fmt "${writes[@]}" >/dev/null || fail "$name: baseline writes"
    s0=$(fsize base.$fmt)
    # filter, normal close: no trace of the preallocation
    qemu-img create -f $fmt f.$fmt 16M >/dev/null
    "$tool" --image-opts "driver=$fmt,$popts,file.file.filename=f.$fmt" "${writes[@]}" \
        >/dev/null || fail "$name: writes through the filter"
    s1=$(fsize f.$fmt)
    [ "$s1" = "$s0" ] || fail "$name: file is $s1 bytes after close, expected $s0"
    "$tool" -f $fmt -r f.$fmt "${verify[@]}" >out.txt || fail "$name: data through the filter"
    ! grep -q "Pattern verification failed" out.txt || fail "$name: $(cat out.txt)"
    qemu-io -f $fmt -r f.$fmt "${verify[@]}" >out.txt || fail "$name: qemu-io reading it"
    if [ $fmt = qcow2 ]; then
        qemu-img check -q f.$fmt || fail "$name: qemu-img check"
    fi
    # filter, killed before close: the preallocated tail is still there
    qemu-img create -f $fmt k.$fmt 16M >/dev/null
    rc=0
    "$tool" --image-opts "driver=$fmt,$popts,file.file.filename=k.$fmt" "${writes[@]}" \
        -c 'sigraise 9' >/dev/null 2>&1 || rc=$?
    [ "$rc" = 137 ] || fail "$name: expected to be killed (137), got $rc"
    s2=$(fsize k.$fmt)
    [ "$s2" -gt "$s0" ] || fail "$name: no preallocation seen ($s2 <= $s0)"
    [ $((s2 % A)) = 0 ] || fail "$name: preallocated size $s2 not aligned to $A"
    limit=$(((s0 + P + A - 1) / A * A))
    [ "$s2" -le "$limit" ] || fail "$name: preallocated size $s2 beyond $limit"
    # reopening through the filter keeps the data and drops the tail on close
    "$tool" --image-opts "driver=$fmt,$popts,file.file.filename=k.$fmt" "${verify[@]}" \
        >out.txt || fail "$name: data after a kill"
    echo "$name ($fmt): data end $s0, preallocated $s2"
done

# --- the filter as root, and raw over the filter: same as qemu-io
cmds=(-c 'length' -c 'write -P 5 0 64k' -c 'read -P 5 0 64k' -c 'write 1M 1' -c 'truncate 3M'
    -c 'length' -c 'write -P 6 2M 64k' -c 'read -P 6 2M 64k' -c 'truncate -m falloc 5M'
    -c 'length' -c 'truncate 1536k' -c 'length' -c 'map')
for opts in "driver=preallocate,prealloc-size=$P,prealloc-align=$A,file.filename=IMG" \
    "driver=raw,file.driver=preallocate,file.prealloc-size=$P,file.file.driver=file,file.file.filename=IMG" \
    "driver=preallocate,file.filename=IMG"; do
    for kill in no yes; do
        extra=()
        [ $kill = yes ] && extra=(-c 'sigraise 9')
        truncate -s 1M q.img
        truncate -s 1M v.img
        qemu-io --image-opts "${opts/IMG/q.img}" "${cmds[@]}" "${extra[@]}" >q.out 2>q.err || true
        "$VDISK_IO" --image-opts "${opts/IMG/v.img}" "${cmds[@]}" "${extra[@]}" >v.out 2>v.err ||
            true
        mask <q.out >q.m
        mask <v.out >v.m
        diff -u q.m v.m || fail "$opts (kill $kill): output differs"
        [ "$(fsize q.img)" = "$(fsize v.img)" ] ||
            fail "$opts (kill $kill): file size qemu $(fsize q.img), vdisk $(fsize v.img)"
        cmp -s q.img v.img || fail "$opts (kill $kill): content differs"
        rm -f q.img v.img
    done
done

# --- bad options
truncate -s 1M v.img
for o in "prealloc-align=100" "prealloc-align=1000" "prealloc-size=abc" "bogus=1"; do
    qrc=0 vrc=0
    qemu-io --image-opts "driver=preallocate,$o,file.filename=v.img" -c length >/dev/null 2>&1 ||
        qrc=$?
    "$VDISK_IO" --image-opts "driver=preallocate,$o,file.filename=v.img" -c length \
        >/dev/null 2>v.err || vrc=$?
    [ "$qrc" = "$vrc" ] || fail "$o: exit status qemu-io=$qrc vdisk-io=$vrc"
    [ "$vrc" = 1 ] || fail "$o accepted"
done
expect_fail "not aligned to 512" "$VDISK_IO" --image-opts \
    "driver=preallocate,prealloc-align=1000,file.filename=v.img" -c length
echo "preallocate filter behaves like QEMU's"
