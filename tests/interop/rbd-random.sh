#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A seeded random workload (writes at any byte offset, aio writes in
# flight together, zero writes with and without unmap, discards, flushes)
# through vdisk-io on RBD images and through qemu-io on twins: raw on RBD
# against raw on RBD, qcow2 on RBD against qcow2 on RBD; then every pair
# compares equal, each side reads the other's, and map agrees.  (A raw
# file is no model for raw on RBD: librbd skips discards of partial
# objects, so what a discard leaves differs from a punched hole.)
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/rbd-common.bash"

SEED=${RBD_SEED:-4242}
SIZE=$((16 << 20))
/usr/bin/python3 - "$SEED" "$SIZE" >cmds <<'PY'
import random, sys
rnd = random.Random(int(sys.argv[1])); size = int(sys.argv[2])
for i in range(160):
    ln = rnd.choice([1, 511, 512, 4096, 65536, 300000, 1 << 20, 4 << 20])
    off = rnd.randrange(0, size - ln)
    if rnd.random() < 0.5:
        off &= ~511
        ln = max(512, ln & ~511)
    k = rnd.random()
    if k < 0.55:
        print("write -q -P 0x%02x %d %d" % (rnd.randrange(1, 256), off, ln))
    elif k < 0.65:
        # a batch of aio writes in flight together, disjoint
        base = rnd.randrange(0, size - 8 * 65536) & ~511
        for j in range(8):
            print("aio_write -q -P 0x%02x %d 65536" % (rnd.randrange(1, 256), base + j * 65536))
        print("aio_flush")
    elif k < 0.75:
        print("write -q -z %d %d" % (off, ln))
    elif k < 0.85:
        print("write -q -z -u %d %d" % (off, ln))
    elif k < 0.95:
        print("discard -q %d %d" % (off, ln))
    else:
        print("flush")
PY
args=()
while IFS= read -r l; do args+=(-c "$l"); done <cmds

rb "$VDISK" create -f raw "$(R v)" $SIZE >/dev/null || fail "create v"
rb qemu-img create -f raw "$(R q)" $SIZE >/dev/null || fail "create q"
rb "$VDISK" create -f qcow2 "$(R vq)" $SIZE >/dev/null || fail "create vq"
rb qemu-img create -q -f qcow2 "$(R qq)" $SIZE || fail "create qq"

rb "$VDISK_IO" -f raw "${args[@]}" "$(R v)" >v.out 2>&1 || fail "vdisk-io on raw/rbd: $(tail -n 3 v.out)"
rb qemu-io -f raw "${args[@]}" "$(R q)" >q.out 2>&1 || fail "qemu-io on raw/rbd: $(tail -n 3 q.out)"
rb "$VDISK_IO" -f qcow2 "${args[@]}" "$(R vq)" >vq.out 2>&1 || fail "vdisk-io on qcow2/rbd"
rb qemu-io -f qcow2 "${args[@]}" "$(R qq)" >qq.out 2>&1 || fail "qemu-io on qcow2/rbd"
for f in v.out q.out vq.out qq.out; do
    if grep -qi "error\|fail" $f; then fail "$f: $(grep -i 'error\|fail' $f | head -3)"; fi
done

rb qemu-img compare -f raw -F raw "$(R q)" "$(R v)" || fail "raw on rbd: vdisk's and qemu's differ (seed $SEED)"
rb qemu-img compare -f qcow2 -F qcow2 "$(R qq)" "$(R vq)" || fail "qcow2: vdisk's on rbd and qemu's differ (seed $SEED)"
rb qemu-img check -f qcow2 "$(R vq)" >/dev/null || fail "qemu-img check of vdisk's qcow2 on rbd"
rb "$VDISK" compare -f raw -F raw "$(R v)" "$(R q)" || fail "vdisk compare v q"
rb "$VDISK" compare -f qcow2 -F qcow2 "$(R vq)" "$(R qq)" || fail "vdisk compare vq qq"
# each reads the other's: convert off the cluster
rb "$VDISK" convert -f raw -O raw "$(R q)" q-by-vdisk.raw || fail "vdisk reads q"
rb qemu-img convert -f raw -O raw "$(R v)" v-by-qemu.raw || fail "qemu-img reads v"
same_content q-by-vdisk.raw v-by-qemu.raw
rb qemu-img convert -f qcow2 -O raw "$(R vq)" vq-by-qemu.raw || fail "qemu-img reads vq"
rb "$VDISK" convert -f qcow2 -O raw "$(R qq)" qq-by-vdisk.raw || fail "vdisk reads qq"
same_content vq-by-qemu.raw qq-by-vdisk.raw
# block status from the object map
for img in v q; do
    a=$(rb "$VDISK" map -f raw --output=json "$(R $img)"); b=$(rb qemu-img map -f raw --output=json "$(R $img)")
    [ "$a" = "$b" ] || fail "map of $img differs (seed $SEED):
$a
---
$b"
done
for img in vq qq; do
    a=$(rb "$VDISK" map -f qcow2 --output=json "$(R $img)"); b=$(rb qemu-img map -f qcow2 --output=json "$(R $img)")
    [ "$a" = "$b" ] || fail "qcow2 map of $img differs (seed $SEED)"
done
echo ok
