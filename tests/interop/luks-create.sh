#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# LUKS1 images made by vdisk (several cipher/mode/ivgen/hash settings),
# written by vdisk with a seeded random workload: QEMU reads them
# identically (qemu-img compare --image-opts), cryptsetup luksDump parses
# the header and, for AES, cryptsetup accepts the passphrase; create
# options, errors and preallocation as qemu-img.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io cryptsetup

SEED=${SEED:-$RANDOM}
echo "seed $SEED"
OBJ="--object secret,id=s0,data=s3cr3t"
n=0
for spec in "" "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,hash-alg=sha1" \
    "cipher-alg=twofish-256,cipher-mode=xts,ivgen-alg=plain" \
    "cipher-alg=serpent-128,cipher-mode=cbc,ivgen-alg=plain64,hash-alg=sha512" \
    "cipher-alg=cast5-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=md5" \
    "cipher-alg=aes-256,cipher-mode=ctr,ivgen-alg=plain64,hash-alg=sha224" \
    "cipher-alg=twofish-128,cipher-mode=ecb" \
    "cipher-alg=serpent-256,cipher-mode=xts,ivgen-alg=essiv,ivgen-hash-alg=sha256" \
    "cipher-alg=aes-128,cipher-mode=xts,ivgen-alg=plain64,ivgen-hash-alg=sha384,hash-alg=ripemd160"; do
    n=$((n + 1))
    img=v$n.luks
    "$VDISK" create -q -f luks $OBJ -o "key-secret=s0,iter-time=10${spec:+,$spec}" "$img" 3M ||
        fail "create $spec"
    IMG="driver=luks,key-secret=s0,file.filename=$img"
    /usr/bin/python3 - "$SEED" "$n" > cmds <<'PY'
import random, sys
seed, n = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed * 100 + n)
size = 3 << 20
ref = bytearray(size)
print("-c", "write -z 0 %d" % size)
for i in range(20):
    off = r.randrange(0, size - 1)
    ln = min(r.randrange(1, 200000), size - off)
    pat = r.randrange(1, 255)
    ref[off:off + ln] = bytes([pat]) * ln
    print("-c", "write -P %d %d %d" % (pat, off, ln))
open("ref.raw", "wb").write(ref)
PY
    cmdline=()
    while read -r opt rest; do cmdline+=("$opt" "$rest"); done < cmds
    "$VDISK_IO" $OBJ --image-opts "$IMG" "${cmdline[@]}" >/dev/null || fail "vdisk-io $spec"
    qemu-img compare -q $OBJ --image-opts "$IMG" "driver=raw,file.filename=ref.raw" ||
        fail "QEMU reads $img ($spec) differently"
    "$VDISK" compare -q $OBJ --image-opts "$IMG" "driver=raw,file.filename=ref.raw" ||
        fail "vdisk reads $img ($spec) differently"
    cryptsetup luksDump "$img" > dump || fail "luksDump $spec"
    grep -q "^Version:.*1" dump || fail "luksDump: $(cat dump)"
    "$VDISK" info --output=json "$img" > v.json
    qemu-img info --output=json "$img" > q.json
    cmp -s v.json q.json || fail "info differs for $spec: $(diff v.json q.json)"
done
# cryptsetup's own key slot check (AES only: its kernel has no other cipher here)
printf 's3cr3t' > pass
cryptsetup luksOpen --test-passphrase --key-file pass v1.luks || fail "cryptsetup rejects v1.luks"
cryptsetup luksOpen --test-passphrase --key-file pass v2.luks || fail "cryptsetup rejects v2.luks"
printf 'other' > bad
expect_exit 2 cryptsetup luksOpen --test-passphrase --key-file bad v1.luks
echo ok
