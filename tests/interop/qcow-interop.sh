#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qcow (v1) against QEMU 7.2: same bytes at create; seeded random workloads
# both ways; backing chains written by vdisk read in QEMU; compressed
# clusters both ways; AES-encrypted images without their key refused with a
# clear message.
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

# 1. create: identical bytes
for size in 10M 1000 7G; do
    qemu-img create -q -f qcow q.qcow $size
    "$VDISK" create -q -f qcow v.qcow $size || fail "create $size"
    cmp -s q.qcow v.qcow || fail "create $size differs from qemu-img"
done
truncate -s 20M base.raw
qemu-img create -q -f qcow -b base.raw -F raw q.qcow
"$VDISK" create -q -f qcow -b base.raw -F raw v.qcow || fail "create with backing"
cmp -s q.qcow v.qcow || fail "create -b differs from qemu-img"
expect_fail "cannot be zero length" "$VDISK" create -f qcow z.qcow 0
expect_fail "encrypt.key-secret" "$VDISK" create -f qcow -o encryption=on e.qcow 1M
[ ! -e e.qcow ] || [ ! -s e.qcow ] || fail "refused encrypted create left a file with data"

# 2. random workloads both ways
for seed in 1 2 3; do
    size=$(( (seed * 13 + 20) << 20 ))
    /usr/bin/python3 gen.py $seed $size > w.txt
    rm -f ref.raw v.qcow q.qcow
    truncate -s $size ref.raw
    run_io qemu-io raw ref.raw w.txt
    "$VDISK" create -q -f qcow v.qcow $size || fail "create"
    run_io "$VDISK_IO" qcow v.qcow w.txt
    qemu-img compare -q -f qcow -F raw v.qcow ref.raw || fail "QEMU reads vdisk's qcow differently (seed $seed)"
    a=$("$VDISK" map --output=json -f qcow v.qcow) || fail "vdisk map"
    b=$(qemu-img map --output=json -f qcow v.qcow)
    [ "$a" = "$b" ] || fail "map differs (seed $seed):
$a
--- qemu-img:
$b"
    qemu-img create -q -f qcow q.qcow $size
    run_io qemu-io qcow q.qcow w.txt
    "$VDISK" convert -f qcow -O raw q.qcow out.raw || fail "vdisk convert of QEMU's qcow"
    cmp -s out.raw ref.raw || fail "vdisk reads QEMU's qcow differently (seed $seed)"
done

# 3. backing chains: raw <- qcow (512-byte clusters) <- qcow
/usr/bin/python3 - <<'PY'
import random
r = random.Random(5)
with open("base.raw", "wb") as f:
    f.write(bytes(r.getrandbits(8) for _ in range(2 << 20)))
    f.truncate(16 << 20)
PY
cp base.raw ref.raw
rm -f mid.qcow top.qcow
"$VDISK" create -q -f qcow -b base.raw -F raw mid.qcow || fail "create mid"
"$VDISK" create -q -f qcow -b mid.qcow -F qcow top.qcow || fail "create top"
/usr/bin/python3 gen.py 11 $((16 << 20)) > w1.txt
/usr/bin/python3 gen.py 12 $((16 << 20)) > w2.txt
run_io "$VDISK_IO" qcow mid.qcow w1.txt
run_io qemu-io raw ref.raw w1.txt
run_io "$VDISK_IO" qcow top.qcow w2.txt
run_io qemu-io raw ref.raw w2.txt
qemu-img compare -q -f qcow -F raw top.qcow ref.raw || fail "QEMU reads vdisk's qcow chain differently"
"$VDISK" convert -O raw top.qcow out.raw || fail "vdisk convert of the chain"
cmp -s out.raw ref.raw || fail "vdisk reads its own chain differently"
# commit (make_empty) and QEMU reads the result
"$VDISK" commit top.qcow >/dev/null 2>&1 || fail "vdisk commit"
qemu-img compare -q -f qcow -F raw top.qcow ref.raw || fail "QEMU reads the chain differently after commit"
qemu-img compare -q -f qcow -F raw mid.qcow ref.raw || fail "QEMU reads mid differently after commit"

# 4. compressed clusters: QEMU's read by vdisk, vdisk's read by QEMU
/usr/bin/python3 - <<'PY'
import random
r = random.Random(9)
with open("c.raw", "wb") as f:
    for i in range(96):
        if i % 3 == 0:
            f.write(bytes(r.getrandbits(8) for _ in range(4096)))     # incompressible
        elif i % 3 == 1:
            f.write(((b"vdisk qcow %d " % i) * 400)[:4096])          # compressible
        else:
            f.write(b"\0" * 4096)
    f.write(b"tail" * 384)                                           # partial last cluster
PY
# QEMU 7.2 writes the image, then fails its final zero-length compressed
# write ("end of image" marker) with EINVAL: exit 1 without a message
qemu-img convert -c -O qcow c.raw qc.qcow || true
qemu-img compare -q -F raw qc.qcow c.raw || fail "qemu-img convert -c made a wrong reference"
"$VDISK" convert -O raw qc.qcow out.raw || fail "vdisk convert of compressed qcow"
cmp -s out.raw c.raw || fail "vdisk reads QEMU's compressed qcow differently"
a=$("$VDISK" map --output=json qc.qcow) && b=$(qemu-img map --output=json qc.qcow)
[ "$a" = "$b" ] || fail "map of compressed qcow differs:
$a
--- qemu-img:
$b"
"$VDISK" convert -c -O qcow c.raw vc.qcow || fail "vdisk convert -c"
qemu-img compare -q -F raw vc.qcow c.raw || fail "QEMU reads vdisk's compressed qcow differently"
[ "$(stat -c %s vc.qcow)" -lt "$(stat -c %s c.raw)" ] || fail "vdisk's compressed qcow is not smaller"
# overwrite part of a compressed cluster
qemu-io -c 'write -P 0x55 4100 100' -f raw c.raw >/dev/null
"$VDISK_IO" -c 'write -P 0x55 4100 100' qc.qcow >/dev/null || fail "write into compressed cluster"
qemu-img compare -q -F raw qc.qcow c.raw || fail "compressed cluster rewrite"

# 5. encrypted (AES) images: without the key a clear refusal, info still
# works (reading with the key: tests/interop/luks-qcow2.sh)
qemu-img create -q -f qcow --object secret,id=s0,data=abc -o encrypt.format=aes,encrypt.key-secret=s0 e.qcow 1M
expect_fail "encrypt.key-secret" "$VDISK_IO" -c 'read 0 512' e.qcow
expect_fail "encrypt.key-secret" "$VDISK" convert -O raw e.qcow e.raw
"$VDISK" info e.qcow | grep -q "^encrypted: yes" || fail "info of e.qcow"
echo ok
