#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A VHD made by another writer, Bochs' bximage (-func=convert -imgmode=vpc,
# creator "bxic", CHS geometry 16 heads x 63 sectors), reads in vdisk
# exactly as in QEMU: same virtual size, same data, same map.
. "$VDISK_SRC/tests/lib.sh"
need bximage qemu-img

/usr/bin/python3 - <<'PY'
import random
r = random.Random(4)
with open("src.raw", "wb") as f:
    f.truncate(20 << 20)
    for _ in range(12):
        f.seek(r.randrange(0, 20 << 20) & ~511)
        f.write(bytes(r.getrandbits(8) for _ in range(r.choice([512, 4096, 70000]))))
PY
rm -f bx.vhd
bximage -func=convert -imgmode=vpc -q src.raw bx.vhd >/dev/null 2>&1 || fail "bximage convert"
[ -s bx.vhd ] || fail "bximage made no image"
a=$("$VDISK" info --output=json bx.vhd) || fail "vdisk info of bximage's vhd"
b=$(qemu-img info --output=json bx.vhd)
strip() { grep -v '"actual-size"'; }
[ "$(echo "$a" | strip)" = "$(echo "$b" | strip)" ] || fail "info differs:
$a
--- qemu-img:
$b"
"$VDISK" convert -O raw bx.vhd v.raw || fail "vdisk convert"
qemu-img convert -O raw bx.vhd q.raw
cmp -s v.raw q.raw || fail "vdisk reads bximage's vhd differently from QEMU"
a=$("$VDISK" map --output=json bx.vhd) && b=$(qemu-img map --output=json bx.vhd)
# and vdisk writes into it, QEMU reads
"$VDISK_IO" -c 'write -P 0x5a 8M 3M' bx.vhd >/dev/null || fail "vdisk write into bximage's vhd"
qemu-io -c 'write -P 0x5a 8M 3M' -f raw q.raw >/dev/null
qemu-img compare -q -F raw bx.vhd q.raw || fail "QEMU reads the vhd differently after vdisk wrote"
[ "$a" = "$b" ] || fail "map differs:
$a
--- qemu-img:
$b"
echo ok
