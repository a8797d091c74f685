#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk convert -c: compressed qcow2 that qemu-img reads and checks, with
# zero clusters left out as qemu-img does; the parallel workers give the
# same content as one worker; refusals of formats without compression.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/bench/lib.sh"
need qemu-img

bench_sparse_raw in.raw 8M 11 40 small
# compressible data too (text)
/usr/bin/python3 -c "
f = open('in.raw', 'r+b'); f.seek(6 << 20)
f.write(b''.join(b'line %d of some text\n' % i for i in range(20000)))"
# an odd size: the last cluster is partial
head -c $(((8 << 20) + 1536)) in.raw > odd.raw

for m in "" "-m 1" "-m 16 -W"; do
    # shellcheck disable=SC2086
    "$VDISK" convert -c $m -f raw -O qcow2 in.raw v.qcow2 || fail "convert -c $m"
    qemu-img check -q v.qcow2 || fail "check after -c $m"
    qemu-img compare -q -f raw in.raw v.qcow2 || fail "content after -c $m"
    rm -f v.qcow2
done
"$VDISK" convert -c -f raw -O qcow2 in.raw v.qcow2
qemu-img convert -c -f raw -O qcow2 in.raw q.qcow2
qemu-img info --output=json v.qcow2 >/dev/null
# the same clusters are allocated (compressed or not) as with qemu-img
[ "$(qemu-img check v.qcow2 | grep -o '^[0-9]*/[0-9]*')" = "$(qemu-img check q.qcow2 | grep -o '^[0-9]*/[0-9]*')" ] ||
    fail "allocated clusters differ: $(qemu-img check v.qcow2 | grep allocated) vs $(qemu-img check q.qcow2 | grep allocated)"
qemu-img check v.qcow2 | grep -q '[1-9][0-9.]*% compressed' || fail "nothing compressed"
vs=$(stat -c %s v.qcow2); qs=$(stat -c %s q.qcow2)
[ "$vs" -le $((qs + qs / 20)) ] || fail "compressed image much bigger than qemu-img's ($vs > $qs)"

"$VDISK" convert -c -O qcow2 -o cluster_size=4k odd.raw odd.qcow2
qemu-img check -q odd.qcow2 || fail "check odd"
qemu-img compare -q -f raw odd.raw odd.qcow2 || fail "odd content"

# qemu-img's compressed image read back by vdisk
"$VDISK" convert -f qcow2 -O raw q.qcow2 back.raw
same_content in.raw back.raw

expect_fail "Compression not supported" "$VDISK" convert -c -O raw in.raw c.raw
[ ! -e c.raw ] || fail "raw created despite -c"
expect_fail "preallocation" "$VDISK" convert -c -O qcow2 -o preallocation=full in.raw p.qcow2
expect_fail "encryption" "$VDISK" convert -c -O qcow2 -o encrypt.format=luks in.raw e.qcow2
expect_fail "copy offloading" "$VDISK" convert -c -C -O qcow2 in.raw o.qcow2
[ ! -e p.qcow2 ] && [ ! -e e.qcow2 ] && [ ! -e o.qcow2 ] || fail "image created on error"
echo ok
