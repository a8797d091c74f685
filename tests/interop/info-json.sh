#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk info --output=json agrees with qemu-img info --output=json on every
# key both print (and prints no key qemu-img lacks), for raw images of
# several shapes, opened by path, absolute path, -f and probing; with
# --backing-chain too.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

truncate -s 0 empty.img
truncate -s 1G big.img
truncate -s 5000 odd.img
dd if=/dev/urandom of=data.img bs=1M count=2 status=none
cp --sparse=always data.img holes.img
truncate -s 10M holes.img
dd if=/dev/urandom of=holes.img bs=4k seek=1000 count=3 conv=notrunc status=none

cat > cmp.py <<'PY'
import json, sys
a = json.load(open(sys.argv[1]))
b = json.load(open(sys.argv[2]))
if not isinstance(a, list):
    a, b = [a], [b]
assert len(a) == len(b), (len(a), len(b))
for x, y in zip(a, b):
    shared = set(x) & set(y)
    for k in sorted(shared):
        assert x[k] == y[k], "%s: vdisk %r qemu-img %r" % (k, x[k], y[k])
    extra = set(x) - set(y)
    assert not extra, "keys qemu-img does not print: %s" % extra
    missing = set(y) - set(x)
    assert not missing, "keys vdisk does not print: %s" % missing
PY

for f in empty.img big.img odd.img data.img holes.img "$PWD/holes.img"; do
    for args in "--output=json" "-f raw --output=json" "--output=json --backing-chain" "-U --output=json"; do
        "$VDISK" info $args "$f" > v.json || fail "vdisk info $args $f"
        qemu-img info $args "$f" > q.json
        /usr/bin/python3 cmp.py v.json q.json || fail "info $args $f disagrees with qemu-img"
        # and the text itself (member order and layout)
        cmp -s v.json q.json || fail "info $args $f: JSON text differs from qemu-img's"
    done
done
echo ok
