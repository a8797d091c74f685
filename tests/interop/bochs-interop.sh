#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Bochs growing images written by Bochs's own bximage (-func=convert and
# -func=create, -imgmode=growing) read in vdisk exactly: the source bytes,
# QEMU's reading, the same info and map; the format is read-only.
. "$VDISK_SRC/tests/lib.sh"
need bximage qemu-img qemu-io

/usr/bin/python3 - <<'PY'
import random
r = random.Random(11)
with open("src.raw", "wb") as f:
    f.truncate(24 << 20)
    for _ in range(40):
        # sector-granular writes, some inside one 32 KiB extent, some across
        f.seek(r.randrange(0, (24 << 20) - 200000) & ~511)
        f.write(bytes(r.getrandbits(8) for _ in range(r.choice([512, 1536, 4096, 70000, 150000]))))
PY
bximage -func=convert -imgmode=growing -q src.raw g.bochs >/dev/null 2>&1 || fail "bximage convert"
bximage -func=create -imgmode=growing -hd=100M -q empty.bochs >/dev/null 2>&1 || fail "bximage create"
for f in g.bochs empty.bochs; do
    a=$("$VDISK" info --output=json "$f") || fail "vdisk info $f"
    b=$(qemu-img info --output=json "$f")
    [ "$a" = "$b" ] || fail "info $f differs:
$a
--- qemu-img:
$b"
    [ "$("$VDISK" map --output=json "$f")" = "$(qemu-img map --output=json "$f")" ] \
        || fail "map $f differs from qemu-img's"
    "$VDISK" convert -O raw "$f" v.raw || fail "vdisk convert $f"
    qemu-img convert -O raw "$f" q.raw
    same_content v.raw q.raw
done
"$VDISK" convert -f bochs -O raw g.bochs v.raw
same_content v.raw src.raw
"$VDISK" compare -f bochs -F raw g.bochs src.raw >/dev/null || fail "compare with the source"
# reads at odd offsets and lengths (512-byte request alignment) match qemu-io's
for spec in "1 1000" "32767 2" "1048575 70001" "25165823 1"; do
    a=$("$VDISK_IO" -r -f bochs -c "read -v $spec" g.bochs | grep -v ' ops;') || fail "read $spec"
    b=$(qemu-io -r -f bochs -c "read -v $spec" g.bochs | grep -v ' ops;')
    [ "$a" = "$b" ] || fail "read $spec differs from qemu-io's"
done
# read-only: opening for writing fails with a clear message, nothing changes
sum=$(md5sum < g.bochs)
expect_fail "read-only" "$VDISK_IO" -f bochs -c "write 0 512" g.bochs
expect_fail "read-only" "$VDISK_IO" -r -f bochs -c "write 0 512" g.bochs
expect_fail "read-only" "$VDISK" resize -f bochs g.bochs 200M
[ "$(md5sum < g.bochs)" = "$sum" ] || fail "a refused write changed the image"
echo ok
