#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vmdk against QEMU 7.2: every subformat and create option as qemu-img
# writes it (same bytes but the random CID), seeded random workloads both
# ways on every writable subformat (across the 2 GiB extent boundary of
# the split ones), qemu-img check/compare/map on what vdisk writes,
# streamOptimized by convert both ways, backing chains (-b) read by QEMU,
# zeroed grains, and the option errors qemu-img gives.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

cat > gen.py <<'PY'
import random, sys
seed, size = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
hot = [0, size // 2, min(size, 2 << 30) - (1 << 20), size - (3 << 20)]
for _ in range(r.randint(15, 35)):
    ln = min(r.choice([512, 4096, 5000, 65536, 100000, 1 << 20, 3 << 20]), size)
    if r.random() < 0.5:
        off = max(0, min(size - ln, r.choice(hot) + r.randrange(-(2 << 20), 2 << 20)))
    else:
        off = r.randrange(0, size - ln + 1)
    off -= off % 512
    ln -= ln % 512
    if r.random() < 0.1:
        print("write -z %d %d" % (off, ln))
    else:
        print("write -P 0x%02x %d %d" % (r.randrange(1, 256), off, ln))
PY
run_io() {
    local tool=$1 fmt=$2 img=$3 args=()
    while IFS= read -r c; do args+=(-c "$c"); done < "$4"
    "$tool" -f "$fmt" "${args[@]}" "$img" >/dev/null || fail "$tool workload on $img"
}
# files differ only in the random CID of the descriptor
# (CIDs have no leading zeroes: the descriptor text is compared without its
# NUL padding)
mask() {
    /usr/bin/python3 -c '
import re, sys
d = open(sys.argv[1], "rb").read()
a, b = (512, 512 + 20 * 512) if d[:4] == b"KDMV" else (0, len(d))
t = re.sub(rb"\nCID=[0-9a-f]+\n", b"\nCID=x\n", d[a:b].rstrip(b"\0"))
sys.stdout.buffer.write(d[:a] + t + b"|" + d[b:])' "$1"
}

# 1. create: same bytes as qemu-img (CID aside), every subformat and option
cases=""
for sf in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat streamOptimized; do
    cases="$cases $sf::5G $sf::1000"
done
for o in adapter_type=lsilogic compat6=on hwversion=7,toolsversion=123 \
    adapter_type=legacyESX,zeroed_grain=on adapter_type=buslogic; do
    cases="$cases monolithicSparse:$o:3G"
done
cases="$cases twoGbMaxExtentSparse:zeroed_grain=on,adapter_type=lsilogic:5G
    streamOptimized:compat6=on:1G monolithicFlat:hwversion=10,toolsversion=9:1G"
for c in $cases; do
    IFS=: read -r sf o size <<< "$c"
    rm -rf q v.vmdk v-*
    mkdir q
    (cd q && qemu-img create -q -f vmdk -o subformat=$sf${o:+,$o} v.vmdk $size)
    "$VDISK" create -q -f vmdk -o subformat=$sf${o:+,$o} v.vmdk $size ||
        fail "create $sf $o $size"
    for q in q/*; do
        v=${q#q/}
        [ -e "$v" ] || fail "create $sf $o: vdisk made no $v"
        if [ "$(stat -c %s "$q")" -gt 1048576 ]; then
            # flat extents: sparse files of the right size
            [ "$(stat -c %s "$q")" = "$(stat -c %s "$v")" ] || fail "create $sf $o $size: size of $v differs"
            continue
        fi
        cmp -s <(mask "$q") <(mask "$v") || fail "create $sf $o $size: $v differs from qemu-img's"
    done
    [ "$(ls v.vmdk v-* 2>/dev/null | wc -l)" = "$(ls q | wc -l)" ] || fail "extra files"
    out=$(qemu-img check v.vmdk 2>&1) || fail "qemu-img check $sf $o: $out"
done

# option errors as qemu-img
expect_fail "compat6 cannot be enabled with hwversion set" \
    "$VDISK" create -f vmdk -o compat6=on,hwversion=7 e.vmdk 1M
expect_fail "Flat image can't have backing file" \
    "$VDISK" create -f vmdk -o subformat=monolithicFlat,backing_file=v.vmdk,backing_fmt=vmdk e.vmdk 1M
expect_fail "Flat image can't enable zeroed grain" \
    "$VDISK" create -f vmdk -o subformat=twoGbMaxExtentFlat,zeroed_grain=on e.vmdk 1M
expect_fail "backing_file must be a vmdk image" \
    "$VDISK" create -f vmdk -o backing_file=v.vmdk,backing_fmt=raw e.vmdk 1M
expect_fail "subformat" "$VDISK" create -f vmdk -o subformat=nope e.vmdk 1M
expect_fail "adapter_type" "$VDISK" create -f vmdk -o adapter_type=scsi e.vmdk 1M
[ ! -e e.vmdk ] || fail "a refused create left e.vmdk"

# 2. seeded random workloads both ways
seed=0
for sf in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat zeroed; do
    o="subformat=$sf"; [ $sf = zeroed ] && o="zeroed_grain=on"
    size=25165824
    case $sf in twoGb*) size=$(( (2 << 30) + (6 << 20) )) ;; esac
    reps="1 2"; case $sf in twoGb*) reps=1 ;; esac
    for rep in $reps; do
        seed=$((seed + 1))
        /usr/bin/python3 gen.py $seed $size > w.txt
        rm -f ref.raw v*.vmdk q*.vmdk
        truncate -s $size ref.raw
        run_io qemu-io raw ref.raw w.txt
        "$VDISK" create -q -f vmdk -o $o v.vmdk $size || fail "create $o"
        run_io "$VDISK_IO" vmdk v.vmdk w.txt
        qemu-img compare -q -f vmdk -F raw v.vmdk ref.raw ||
            fail "QEMU reads vdisk's vmdk differently ($o, seed $seed)"
        out=$(qemu-img check v.vmdk 2>&1) || fail "qemu-img check on vdisk's vmdk ($o, seed $seed): $out"
        a=$("$VDISK" map --output=json -f vmdk v.vmdk) || fail "vdisk map"
        b=$(qemu-img map --output=json -f vmdk v.vmdk)
        [ "$a" = "$b" ] || fail "map differs ($o, seed $seed):
$a
--- qemu-img:
$b"
        a=$("$VDISK" info --output=json v.vmdk | grep -v actual-size)
        b=$(qemu-img info --output=json v.vmdk | grep -v actual-size)
        [ "$a" = "$b" ] || fail "info differs ($o, seed $seed):
$a
--- qemu-img:
$b"
        qemu-img create -q -f vmdk -o $o q.vmdk $size
        run_io qemu-io vmdk q.vmdk w.txt
        "$VDISK" compare -f vmdk -F raw q.vmdk ref.raw >/dev/null ||
            fail "vdisk reads QEMU's vmdk differently ($o, seed $seed)"
        out=$("$VDISK" check q.vmdk 2>&1) || fail "vdisk check on QEMU's vmdk: $out"
    done
done

# 3. streamOptimized by convert, both ways, random content with holes
/usr/bin/python3 - <<'PY'
import random
r = random.Random(7)
with open("src.raw", "wb") as f:
    f.truncate(40 << 20)
    for _ in range(40):
        off = r.randrange(0, (40 << 20) - (1 << 20))
        f.seek(off - off % 512)
        n = r.choice([512, 70000, 1 << 20])
        f.write(bytes([r.randrange(256)]) * (n // 2) + r.randbytes(n - n // 2))
PY
truncate -s $(( (40 << 20) + 4096 )) src.raw  # a short last grain
"$VDISK" convert -O vmdk -o subformat=streamOptimized src.raw vs.vmdk || fail "convert to streamOptimized"
qemu-img compare -q src.raw vs.vmdk || fail "QEMU reads vdisk's streamOptimized differently"
out=$(qemu-img check vs.vmdk 2>&1) || fail "qemu-img check on vdisk's streamOptimized: $out"
qemu-img info vs.vmdk | grep -q "create type: streamOptimized" || fail "not a stream"
a=$("$VDISK" map --output=json vs.vmdk); b=$(qemu-img map --output=json vs.vmdk)
[ "$a" = "$b" ] || fail "stream map differs: $a / $b"
"$VDISK" convert -c -O vmdk -o subformat=streamOptimized src.raw vs2.vmdk || fail "convert -c"
qemu-img compare -q src.raw vs2.vmdk || fail "convert -c to streamOptimized"
qemu-img convert -O vmdk -o subformat=streamOptimized src.raw qs.vmdk
"$VDISK" compare -q src.raw qs.vmdk || fail "vdisk reads QEMU's streamOptimized differently"
"$VDISK" convert -O raw qs.vmdk back.raw && same_content back.raw src.raw
# QEMU appends grains to vdisk's stream (after its footer) and vdisk reads them
qemu-img create -q -f vmdk -o subformat=streamOptimized part.vmdk 1M
"$VDISK" convert -n -O vmdk src.raw part.vmdk 2>/dev/null || true
"$VDISK" create -q -f vmdk -o subformat=streamOptimized app.vmdk 2M
"$VDISK_IO" -c "write -P 5 0 64k" app.vmdk >/dev/null || fail "stream grain write"
expect_fail "" "$VDISK_IO" -c "write -P 5 0 64k" app.vmdk
expect_fail "" "$VDISK_IO" -c "write -P 5 64k 4k" app.vmdk
qemu-io -c "write -P 6 128k 64k" app.vmdk >/dev/null
"$VDISK_IO" -c "write -P 7 1M 64k" app.vmdk >/dev/null || fail "stream append after QEMU"
qemu-io -c "read -P 5 0 64k" -c "read -P 6 128k 64k" -c "read -P 7 1M 64k" -c "read -P 0 64k 64k" \
    app.vmdk | grep -q "Pattern verification failed" && fail "QEMU reads the appended stream wrongly"
"$VDISK_IO" -c "read -P 5 0 64k" -c "read -P 6 128k 64k" -c "read -P 7 1M 64k" app.vmdk >/dev/null ||
    fail "vdisk reads the appended stream wrongly"

# 4. backing chains written by vdisk, read by QEMU (CIDs checked)
"$VDISK" create -q -f vmdk base.vmdk 8M
"$VDISK_IO" -c "write -P 0x11 0 8M" base.vmdk >/dev/null
"$VDISK" create -q -f vmdk -b base.vmdk -F vmdk mid.vmdk
"$VDISK_IO" -c "write -P 0x22 1000k 70k" mid.vmdk >/dev/null
"$VDISK" create -q -f vmdk -o backing_file=mid.vmdk,backing_fmt=vmdk,zeroed_grain=on top.vmdk 8M
"$VDISK_IO" -c "write -P 0x33 4M 3" -c "write -z 6M 64k" top.vmdk >/dev/null
out=$(qemu-io -c "read -P 0x11 0 1000k" -c "read -P 0x22 1000k 70k" -c "read -P 0x11 1070k 100k" \
    -c "read -P 0x33 4M 3" -c "read -P 0x11 4194307 65533" -c "read -P 0 6M 64k" \
    -c "read -P 0x11 6400k 1600k" top.vmdk)
case $out in *failed*|*error*) fail "QEMU reads vdisk's chain wrongly: $out" ;; esac
qemu-img info top.vmdk | grep -q "backing file: mid.vmdk" || fail "backing name"
out=$(qemu-img check top.vmdk 2>&1) || fail "check chain: $out"
a=$("$VDISK" map --output=json top.vmdk); b=$(qemu-img map --output=json top.vmdk)
[ "$a" = "$b" ] || fail "chain map differs: $a / $b"
qemu-img convert -O raw top.vmdk q.raw; "$VDISK" convert -O raw top.vmdk v.raw
same_content q.raw v.raw
# a parent changed behind the child's back: both refuse to read through it
"$VDISK_IO" -c "write -P 0x44 0 512" mid.vmdk >/dev/null
qemu-io -c "read 0 512" top.vmdk 2>&1 | grep -q "Invalid argument" ||
    echo "note: QEMU read through a changed parent"
expect_fail "" "$VDISK_IO" -c "read 0 512" top.vmdk
echo ok
