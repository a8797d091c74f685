#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vpc (VHD) against QEMU 7.2: the CHS size rounding of create for many
# sizes, footers/headers as qemu-img writes them, dynamic/fixed/force_size
# random workloads both ways, the force_size_calc open option, map.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

cat > gen.py <<'PY'
import random, sys
seed, size = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
for _ in range(r.randint(15, 40)):
    ln = min(r.choice([1, 512, 4096, 5000, 65536, 100000, 1 << 20, 3 << 20]), size)
    off = r.randrange(0, size - ln + 1)
    if r.random() < 0.6:
        off -= off % 512
    if r.random() < 0.15:
        print("write -z %d %d" % (off, ln))
    else:
        print("write -P 0x%02x %d %d" % (r.randrange(1, 256), off, ln))
PY
run_io() {
    local tool=$1 fmt=$2 img=$3 args=()
    while IFS= read -r c; do args+=(-c "$c"); done < "$4"
    "$tool" -f "$fmt" "${args[@]}" "$img" >/dev/null || fail "$tool workload on $img"
}
vsize() { "$1" info --output=json -f vpc "$2" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p'; }
# footer fields that are random or time: timestamp 24..27, checksum 64..67, uuid 68..83
mask() {
    /usr/bin/python3 - "$1" <<'PY'
import sys
d = bytearray(open(sys.argv[1], "rb").read())
def clear(base):
    d[base + 24:base + 28] = bytes(4)
    d[base + 64:base + 84] = bytes(20)
if d[:8] == b"conectix":
    clear(0)
if len(d) >= 512 and d[-512:-504] == b"conectix":
    clear(len(d) - 512)
sys.stdout.buffer.write(d)
PY
}

# 1. geometry: the virtual size of a new image for many requested sizes
/usr/bin/python3 - > sizes.txt <<'PY'
import random
r = random.Random(3)
s = [0, 512, 1000, 10 << 20, 10000000, 127 << 20, (65535 * 16 * 17) * 512, (65535 * 16 * 63) * 512,
     (65535 * 16 * 63 + 1) * 512, 65535 * 16 * 255 * 512, 200 << 30, 2040 << 30]
s += [r.randrange(1, 140 << 30) for _ in range(25)]
print("\n".join(map(str, s)))
PY
while read -r size; do
    for o in "" "force_size=on"; do
        rm -f q.vpc v.vpc
        qemu-img create -q -f vpc ${o:+-o $o} q.vpc $size
        "$VDISK" create -q -f vpc ${o:+-o $o} v.vpc $size || fail "create -o '$o' $size"
        [ "$(vsize qemu-img q.vpc)" = "$(vsize "$VDISK" v.vpc)" ] || fail "size $size -o '$o': qemu-img $(vsize qemu-img q.vpc), vdisk $(vsize "$VDISK" v.vpc)"
        cmp -s <(mask q.vpc) <(mask v.vpc) || fail "create -o '$o' $size differs from qemu-img"
    done
done < sizes.txt
for o in "subformat=fixed" "subformat=fixed,force_size=on"; do
    rm -f q.vpc v.vpc
    qemu-img create -q -f vpc -o $o q.vpc 10000000
    "$VDISK" create -q -f vpc -o $o v.vpc 10000000 || fail "create $o"
    cmp -s <(mask q.vpc) <(mask v.vpc) || fail "create $o differs from qemu-img"
done
expect_fail "too large" "$VDISK" create -f vpc x.vpc 3T
expect_fail "too large" "$VDISK" create -f vpc -o force_size=on x.vpc 2041G
expect_fail "subformat" "$VDISK" create -f vpc -o subformat=foo x.vpc 1M

# 2. random workloads both ways
seed=0
map_diff=
for o in "" "force_size=on" "subformat=fixed" "subformat=fixed,force_size=on"; do
    seed=$((seed + 1))
    rm -f ref.raw v.vpc q.vpc
    "$VDISK" create -q -f vpc ${o:+-o $o} v.vpc 30000000 || fail "create $o"
    size=$(vsize qemu-img v.vpc)
    [ -n "$size" ] || fail "QEMU cannot open vdisk's vpc -o '$o'"
    /usr/bin/python3 gen.py $seed $size > w.txt
    truncate -s $size ref.raw
    run_io qemu-io raw ref.raw w.txt
    run_io "$VDISK_IO" vpc v.vpc w.txt
    qemu-img compare -q -f vpc -F raw v.vpc ref.raw || fail "QEMU reads vdisk's vpc differently (-o '$o')"
    a=$("$VDISK" map --output=json -f vpc v.vpc) || fail "vdisk map"
    b=$(qemu-img map --output=json -f vpc v.vpc)
    # checked last: everything else gets checked even when only map differs
    [ "$a" = "$b" ] || map_diff="$map_diff
map differs (-o '$o'):
$a
--- qemu-img:
$b"
    qemu-img create -q -f vpc ${o:+-o $o} q.vpc 30000000
    run_io qemu-io vpc q.vpc w.txt
    "$VDISK" convert -f vpc -O raw q.vpc out.raw || fail "vdisk convert of QEMU's vpc"
    cmp -s out.raw ref.raw || fail "vdisk reads QEMU's vpc differently (-o '$o')"
done

# 3. force_size_calc: a Hyper-V style footer ("win ") uses current_size
qemu-img create -q -f vpc h.vpc 10000000
printf 'win ' | dd of=h.vpc bs=1 seek=28 conv=notrunc 2>/dev/null
/usr/bin/python3 - <<'PY'
d = bytearray(open("h.vpc", "rb").read(512))
d[64:68] = bytes(4)
s = (~sum(d)) & 0xffffffff
f = open("h.vpc", "r+b"); f.seek(64); f.write(s.to_bytes(4, "big"))
PY
for calc in "" chs current_size; do
    q=$(qemu-img info --output=json --image-opts "driver=vpc${calc:+,force_size_calc=$calc},file.filename=h.vpc" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    v=$("$VDISK" info --output=json --image-opts "driver=vpc${calc:+,force_size_calc=$calc},file.filename=h.vpc" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    [ -n "$q" ] && [ "$q" = "$v" ] || fail "force_size_calc=$calc: qemu-img $q, vdisk $v"
done
expect_fail "Invalid size calculation mode" "$VDISK" info --image-opts driver=vpc,force_size_calc=bogus,file.filename=h.vpc

# 4. a corrupt footer checksum is refused as by QEMU
qemu-img create -q -f vpc bad.vpc 1M
printf '\x00' | dd of=bad.vpc bs=1 seek=67 conv=notrunc 2>/dev/null
expect_fail "checksum" "$VDISK" info bad.vpc
[ -z "$map_diff" ] || fail "$map_diff"
echo ok
