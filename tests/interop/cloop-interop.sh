#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# cloop version 2.0 images written by create_compressed_fs (cloop-utils)
# with several block sizes read in vdisk exactly: the source bytes, QEMU's
# reading, the same info and map, odd reads as qemu-io; writes refused.
. "$VDISK_SRC/tests/lib.sh"
need create_compressed_fs extract_compressed_fs qemu-img qemu-io

/usr/bin/python3 - <<'PY'
import random
r = random.Random(5)
with open("src.raw", "wb") as f:
    # a multiple of the largest block size: create_compressed_fs pads the
    # last block, so the image is always whole blocks
    f.truncate(6 << 20)
    for _ in range(30):
        f.seek(r.randrange(0, (6 << 20) - 100000))
        n = r.choice([1, 700, 4096, 90000])
        f.write(bytes(r.getrandbits(8) for _ in range(n)) if r.random() < 0.6 else b"text " * (n // 5 + 1))
PY
for bs in 512 4096 65536 262144 1048576; do
    f=c$bs.cloop
    create_compressed_fs -q -B "$bs" src.raw "$f" >/dev/null 2>&1 || fail "create_compressed_fs -B $bs"
    a=$("$VDISK" info --output=json "$f") || fail "vdisk info $f"
    b=$(qemu-img info --output=json "$f")
    [ "$a" = "$b" ] || fail "info $f differs:
$a
--- qemu-img:
$b"
    [ "$("$VDISK" map --output=json "$f")" = "$(qemu-img map --output=json "$f")" ] \
        || fail "map $f differs from qemu-img's"
    "$VDISK" convert -O raw "$f" v.raw || fail "vdisk convert $f"
    same_content v.raw src.raw
    qemu-img convert -O raw "$f" q.raw
    same_content v.raw q.raw
    for spec in "1 1000" "$((bs - 1)) 2" "1048575 70001" "$(((6 << 20) - 1)) 1"; do
        a=$("$VDISK_IO" -r -f cloop -c "read -v $spec" "$f" | grep -v ' ops;') || fail "read $spec"
        b=$(qemu-io -r -f cloop -c "read -v $spec" "$f" | grep -v ' ops;')
        [ "$a" = "$b" ] || fail "$f: read $spec differs from qemu-io's"
    done
done
# cloop's own reader agrees
extract_compressed_fs c65536.cloop x.raw >/dev/null 2>&1 || fail "extract_compressed_fs"
same_content x.raw src.raw
sum=$(md5sum < c4096.cloop)
expect_fail "read-only" "$VDISK_IO" -f cloop -c "write 0 512" c4096.cloop
expect_fail "read-only" "$VDISK_IO" -r -f cloop -c "write 0 512" c4096.cloop
[ "$(md5sum < c4096.cloop)" = "$sum" ] || fail "a refused write changed the image"
echo ok
