#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Parallels images written by QEMU (qemu-img create, seeded random qemu-io
# writes; cluster sizes 1 MiB, 64 KiB and 63 sectors) and version 1
# ("WithoutFreeSpace", BAT in sectors) images made from them read in vdisk
# exactly as in QEMU: info, map, data, odd reads.  A Format Extension with a
# dirty bitmap is exported by vdisk-nbd -B as qemu-nbd -B exports it; a bad
# checksum is refused by both.  (Writing: parallels-write.sh.)
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io qemu-nbd nbdinfo

RANDOM=${SEED:-4242}
SIZE=$((48 * 1024 * 1024))

compare() { # image
    local f=$1 a b spec
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
    for spec in "1 1000" "32255 2" "1048575 70001" "$((SIZE - 1)) 1"; do
        a=$("$VDISK_IO" -r -f parallels -c "read -v $spec" "$f" | grep -v ' ops;') || fail "read $spec"
        b=$(qemu-io -r -f parallels -c "read -v $spec" "$f" | grep -v ' ops;')
        [ "$a" = "$b" ] || fail "$f: read $spec differs from qemu-io's"
    done
}

n=0
for cs in 1M 64k 32256; do
    n=$((n + 1))
    f=p$n.hds
    qemu-img create -q -f parallels -o cluster_size=$cs "$f" $SIZE
    cmds=()
    for i in $(seq 1 25); do
        off=$(((RANDOM * 32768 + RANDOM) % (SIZE / 512) * 512))
        len=$(((RANDOM % 256 + 1) * 512))
        [ $((off + len)) -le $SIZE ] || len=512
        cmds+=(-c "write -P $((RANDOM % 255 + 1)) $off $len")
    done
    qemu-io "${cmds[@]}" "$f" >/dev/null || fail "qemu-io writes"
    qemu-img check -q "$f" || fail "qemu-img check $f"
    compare "$f"
    # the same image as version 1: BAT entries in sectors, 32-bit size
    /usr/bin/python3 - "$f" "v1-$f" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
tracks, bat = struct.unpack_from("<II", d, 28)
d[0:16] = b"WithoutFreeSpace"
for i in range(bat):
    e = struct.unpack_from("<I", d, 64 + 4 * i)[0]
    struct.pack_into("<I", d, 64 + 4 * i, e * tracks)
open(sys.argv[2], "wb").write(d)
PY
    compare "v1-$f"
    "$VDISK" compare -f parallels -F parallels "$f" "v1-$f" >/dev/null || fail "v1 and v2 differ"
done

# the Format Extension: a dirty bitmap both export identically
qemu-img create -q -f parallels -o cluster_size=4k b.hds 64M
qemu-io -c "write -P 3 0 1M" b.hds >/dev/null
/usr/bin/python3 "$VDISK_SRC/tests/helpers/parallels-ext.py" b.hds 0123456789abcdef0123456789abcdef
U=01234567-89ab-cdef-0123-456789abcdef
dmap() { # server command...
    local sock=$PWD/nbd.sock pid
    rm -f "$sock"
    "$@" --socket="$sock" --persistent b.hds >/dev/null 2>&1 &
    pid=$!
    wait_for test -S "$sock"
    nbdinfo --map="qemu:dirty-bitmap:$U" "nbd+unix:///?socket=$sock"
    kill $pid 2>/dev/null; wait $pid 2>/dev/null || true
}
a=$(dmap qemu-nbd -r -f parallels -B "$U")
v=$(dmap "$VDISK_NBD" -r -f parallels -B "$U")
[ -n "$a" ] || fail "qemu-nbd exported no bitmap"
[ "$a" = "$v" ] || fail "dirty bitmap differs: qemu [$a] vdisk [$v]"
compare b.hds
qemu-img create -q -f parallels -o cluster_size=4k bad.hds 64M
/usr/bin/python3 "$VDISK_SRC/tests/helpers/parallels-ext.py" bad.hds 0123456789abcdef0123456789abcdef --bad-md5
expect_fail "checksum" "$VDISK" info bad.hds
same_verdict_as_qemu parallels bad.hds b.hds

echo ok
