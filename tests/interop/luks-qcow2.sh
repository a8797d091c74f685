#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Encrypted qcow2 (encrypt.format=luks with several settings, legacy AES)
# and qcow (AES): images vdisk makes and writes (seeded random workload,
# partial clusters, zero writes, copy-on-write over a backing file) pass
# qemu-img check and read identically in QEMU; QEMU-made encrypted images
# convert to the right plain data in vdisk and take vdisk's writes; info
# as qemu-img; key slot amend; wrong passphrase and AES warning.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

SEED=${SEED:-$RANDOM}
echo "seed $SEED"
O="--object secret,id=s0,data=pw0 --object secret,id=s1,data=pw1"
workload() { # FILE SIZE: qemu-io -c arguments in cmds.N and the expected ref.raw
    /usr/bin/python3 - "$SEED" "$1" "$2" > cmds <<'PY'
import random, sys, zlib
seed, name, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
r = random.Random(seed * 1000 + zlib.crc32(name.encode()))
ref = bytearray(size)
for i in range(25):
    off = r.randrange(0, size // 512) * 512
    ln = min(r.randrange(1, 300) * 512, size - off)
    if r.random() < 0.15:
        ref[off:off + ln] = bytes(ln)
        print("-c", "write -z %d %d" % (off, ln))
    else:
        pat = r.randrange(1, 255)
        ref[off:off + ln] = bytes([pat]) * ln
        print("-c", "write -P %d %d %d" % (pat, off, ln))
open("ref.raw", "wb").write(ref)
PY
    cmdline=()
    while read -r opt rest; do cmdline+=("$opt" "$rest"); done < cmds
}
n=0
for spec in "encrypt.format=luks" \
    "encrypt.format=luks,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.hash-alg=sha1" \
    "encrypt.format=luks,encrypt.cipher-alg=serpent-256,encrypt.cipher-mode=xts" \
    "encrypt.format=luks,encrypt.cipher-alg=twofish-128,encrypt.cipher-mode=ctr,encrypt.ivgen-alg=plain" \
    "encrypt.format=luks,cluster_size=4096" "encrypt.format=aes" "encryption=on,cluster_size=8192"; do
    n=$((n + 1))
    img=e$n.qcow2
    it=; case $spec in *luks*) it=encrypt.iter-time=10, ;; esac
    "$VDISK" create -q -f qcow2 $O -o "encrypt.key-secret=s0,$it$spec" "$img" 6M ||
        fail "create $spec"
    I="driver=qcow2,encrypt.key-secret=s0,file.filename=$img"
    workload "$img" $((6 << 20))
    "$VDISK_IO" $O --image-opts "$I" "${cmdline[@]}" >/dev/null 2>&1 || fail "vdisk-io $spec"
    qemu-img check -q $O --image-opts "$I" || fail "qemu-img check $img ($spec)"
    "$VDISK" check -q $O --image-opts "$I" || fail "vdisk check $img ($spec)"
    qemu-img compare -q $O --image-opts "$I" "driver=raw,file.filename=ref.raw" ||
        fail "QEMU reads $img ($spec) differently"
    "$VDISK" info --output=json "$img" > v.json
    qemu-img info --output=json "$img" > q.json
    cmp -s v.json q.json || fail "info differs for $spec: $(diff v.json q.json)"
done
# copy-on-write over a backing file, partial clusters, in an encrypted overlay
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c "write -P 0x61 0 4M" base.qcow2 >/dev/null
"$VDISK" create -q -f qcow2 $O -b base.qcow2 -F qcow2 \
    -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 top.qcow2
"$VDISK_IO" $O --image-opts "driver=qcow2,encrypt.key-secret=s0,file.filename=top.qcow2" \
    -c "write -P 0x62 1000448 4096" -c "write -P 0x63 65536 512" >/dev/null
qemu-io $O --image-opts "driver=qcow2,encrypt.key-secret=s0,file.filename=top.qcow2" \
    -c "read -P 0x61 0 65536" -c "read -P 0x63 65536 512" -c "read -P 0x61 66048 934400" \
    -c "read -P 0x62 1000448 4096" -c "read -P 0x61 1004544 3189760" | grep -c "^read" > nreads
[ "$(cat nreads)" = 5 ] || fail "QEMU reads the encrypted overlay wrongly"
qemu-img check -q $O --image-opts "driver=qcow2,encrypt.key-secret=s0,file.filename=top.qcow2" ||
    fail "check top.qcow2"

# QEMU-made images: luks (qcow2), aes (qcow2 and qcow)
# (QEMU may fail to time PBKDF2 here, see qemu_pbkdf: then vdisk makes q1)
rc=0
qemu_pbkdf qemu-img create -q -f qcow2 $O \
    -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 q1.qcow2 6M || rc=$?
case $rc in
0) ;;
75) echo "note: qemu-img could not time PBKDF2 in 10 tries; q1.qcow2 made by vdisk"
    "$VDISK" create -q -f qcow2 $O \
        -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 q1.qcow2 6M ;;
*) fail "qemu-img create q1.qcow2" ;;
esac
qemu-img create -q -f qcow2 $O -o encrypt.format=aes,encrypt.key-secret=s0 q2.qcow2 6M
qemu-img create -q -f qcow $O -o encrypt.format=aes,encrypt.key-secret=s0 q3.qcow 6M
for img in q1.qcow2 q2.qcow2 q3.qcow; do
    fmt=${img##*.}
    I="driver=$fmt,encrypt.key-secret=s0,file.filename=$img"
    workload "$img" $((6 << 20))
    qemu-io $O --image-opts "$I" "${cmdline[@]}" >/dev/null || fail "qemu-io $img"
    "$VDISK" convert $O --image-opts "$I" -O raw out.raw 2>warn || fail "convert $img"
    same_content out.raw ref.raw
    case $img in
    q1*) [ ! -s warn ] || fail "unexpected warning: $(cat warn)" ;;
    *) grep -q "legacy qcow AES-CBC encryption, which is flawed" warn || fail "no AES warning for $img" ;;
    esac
    # vdisk writes into QEMU's image, QEMU reads them
    "$VDISK_IO" $O --image-opts "$I" -c "write -P 0x77 3000 70000" >/dev/null 2>&1 ||
        fail "vdisk-io write $img"
    qemu-io $O --image-opts "$I" -c "read -P 0x77 3000 70000" | grep -q "^read 70000" ||
        fail "QEMU does not read vdisk's write to $img"
    [ "$fmt" = qcow ] || qemu-img check -q $O --image-opts "$I" || fail "check $img"
    "$VDISK" info "$img" > v.txt
    qemu-img info "$img" > q.txt
    cmp -s v.txt q.txt || fail "info differs for $img: $(diff v.txt q.txt)"
done

# a wrong passphrase: clear error, image unchanged (LUKS: key slots; AES has no check)
sum=$(md5sum < q1.qcow2)
expect_fail "Invalid password, cannot unlock any keyslot" "$VDISK_IO" \
    --object secret,id=bad,data=nope \
    --image-opts driver=qcow2,encrypt.key-secret=bad,file.filename=q1.qcow2 -c "write 0 512"
expect_fail "encrypt.key-secret" "$VDISK" convert -f qcow2 q1.qcow2 -O raw x.raw
[ "$(md5sum < q1.qcow2)" = "$sum" ] || fail "a failed open changed q1.qcow2"

# key slots of qcow2's LUKS header
I="driver=qcow2,encrypt.key-secret=s0,file.filename=q1.qcow2"
"$VDISK" amend $O -o encrypt.state=active,encrypt.new-secret=s1,encrypt.iter-time=10 --image-opts "$I"
qemu-io $O --image-opts "driver=qcow2,encrypt.key-secret=s1,file.filename=q1.qcow2" \
    -c "read -P 0x77 3000 70000" | grep -q "^read 70000" || fail "QEMU cannot use the new slot"
"$VDISK" amend $O -o encrypt.state=inactive,encrypt.keyslot=0 --image-opts \
    "driver=qcow2,encrypt.key-secret=s1,file.filename=q1.qcow2"
expect_fail "Invalid password" qemu-io $O --image-opts "$I" -c "read 0 512"
qemu-img check -q $O --image-opts "driver=qcow2,encrypt.key-secret=s1,file.filename=q1.qcow2" ||
    fail "check after amend"
expect_fail "only active keyslot" "$VDISK" amend $O -o encrypt.state=inactive,encrypt.keyslot=1 \
    --image-opts "driver=qcow2,encrypt.key-secret=s1,file.filename=q1.qcow2"
echo ok
