#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The parallels write path against QEMU 7.2: vdisk create writes the same
# bytes as qemu-img create (cluster sizes 1 MiB, 64 KiB, 63 sectors, 4 KiB);
# the same seeded random writes through vdisk-io and qemu-io give the same
# file, byte for byte, for version 2 and version 1 images; qemu-img check
# and vdisk check find them clean; convert -O parallels passes qemu-img
# compare and check; a writer that dies leaves the in-use flag, which both
# report (exit 2) and both refuse to open read-write; images with a Format
# Extension open read-only only.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

RANDOM=${SEED:-777}
SIZE=$((40 * 1024 * 1024))

writes() { # count -> qemu-io style -c arguments in $cmds
    cmds=()
    local i off len
    for i in $(seq 1 "$1"); do
        off=$(((RANDOM * 32768 + RANDOM) % (SIZE - 400000)))
        len=$((RANDOM % 300000 + 1))
        cmds+=(-c "write -P $((RANDOM % 255 + 1)) $off $len")
    done
    cmds+=(-c "write -z 3000 70000" -c "write -P 1 $((SIZE - 1)) 1")
}
check_clean() { # image
    qemu-img check -f parallels "$1" >/dev/null || fail "qemu-img check $1: $(qemu-img check -f parallels "$1" 2>&1)"
    "$VDISK" check -f parallels "$1" >/dev/null || fail "vdisk check $1"
    a=$("$VDISK" check -f parallels --output=json "$1")
    b=$(qemu-img check -f parallels --output=json "$1")
    [ "$a" = "$b" ] || fail "check $1 differs:
$a
--- qemu-img:
$b"
}

for cs in 1M 64k 32256 4k; do
    rm -f v.hds q.hds
    "$VDISK" create -q -f parallels -o cluster_size=$cs v.hds $SIZE || fail "vdisk create $cs"
    qemu-img create -q -f parallels -o cluster_size=$cs q.hds $SIZE
    same_content v.hds q.hds
    writes 30
    "$VDISK_IO" "${cmds[@]}" v.hds >/dev/null || fail "vdisk-io writes ($cs)"
    qemu-io "${cmds[@]}" q.hds >/dev/null
    qemu-img compare -f parallels -F parallels v.hds q.hds >/dev/null || fail "content differs ($cs)"
    same_content v.hds q.hds
    check_clean v.hds
    # version 1 (BAT in sectors): allocation in sector units
    for f in v.hds q.hds; do
        /usr/bin/python3 - "$f" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
tracks, bat = struct.unpack_from("<II", d, 28)
d[0:16] = b"WithoutFreeSpace"
for i in range(bat):
    e = struct.unpack_from("<I", d, 64 + 4 * i)[0]
    struct.pack_into("<I", d, 64 + 4 * i, e * tracks)
open(sys.argv[1], "wb").write(d)
PY
    done
    writes 10
    "$VDISK_IO" "${cmds[@]}" v.hds >/dev/null || fail "vdisk-io writes to v1 ($cs)"
    qemu-io "${cmds[@]}" q.hds >/dev/null
    same_content v.hds q.hds
    check_clean v.hds
done

# convert into parallels
/usr/bin/python3 -c "
import random
r = random.Random(3)
f = open('src.raw', 'wb'); f.truncate(20 << 20)
for _ in range(30):
    f.seek(r.randrange(0, 20 << 20)); f.write(bytes(r.getrandbits(8) for _ in range(r.choice([100, 5000, 80000]))))
"
"$VDISK" convert -f raw -O parallels src.raw c.hds || fail "convert -O parallels"
qemu-img compare -f raw -F parallels src.raw c.hds >/dev/null || fail "converted image differs"
check_clean c.hds

# a writer that dies leaves the image in use
cp c.hds d.hds
rc=0; "$VDISK_IO" -c "write -P 7 0 4k" -c abort d.hds >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] || fail "abort did not abort"
expect_exit 2 qemu-img check -f parallels d.hds
expect_exit 2 "$VDISK" check -f parallels d.hds
expect_fail "not closed correctly" "$VDISK_IO" -c "write 0 512" d.hds
"$VDISK" convert -f parallels -O raw d.hds d.raw || fail "read-only read of a dirty image"
qemu-img convert -f parallels -O raw d.hds q.raw
same_content d.raw q.raw

# a Format Extension: read-only only, the file unchanged
cp c.hds e.hds
/usr/bin/python3 "$VDISK_SRC/tests/helpers/parallels-ext.py" e.hds 00112233445566778899aabbccddeeff
sum=$(md5sum < e.hds)
expect_fail "read-only" "$VDISK_IO" -c "write 0 512" e.hds
"$VDISK" info e.hds >/dev/null || fail "info of an image with an extension"
[ "$(md5sum < e.hds)" = "$sum" ] || fail "a refused open changed the image"
echo ok
