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
# the header as QEMU lays it out
grep -q "payload-offset\": 2068480" <("$VDISK" info --output=json v1.luks) ||
    fail "payload offset is not QEMU's"
# iterations are measured (not the minimum) with the default iter-time share
it=$("$VDISK" info --output=json v1.luks | sed -n 's/.*"iters": \([0-9]*\).*/\1/p' | head -1)
[ "$it" -ge 1000 ] || fail "iterations $it"
# errors as qemu-img
expect_fail "key-secret" "$VDISK" create -f luks x.luks 1M
expect_fail "No secret with id 'nope'" "$VDISK" create -f luks -o key-secret=nope x.luks 1M
expect_fail "cipher-alg" "$VDISK" create -f luks $OBJ -o key-secret=s0,cipher-alg=des x.luks 1M
expect_fail "XTS" "$VDISK" create -f luks $OBJ -o key-secret=s0,cipher-alg=cast5-128 x.luks 1M
expect_fail "essiv" "$VDISK" create -f luks $OBJ \
    -o key-secret=s0,cipher-alg=cast5-128,cipher-mode=cbc,ivgen-alg=essiv x.luks 1M
# preallocation=full allocates the whole file, as QEMU does
"$VDISK" create -q -f luks $OBJ -o key-secret=s0,iter-time=10,preallocation=full p.luks 1M
[ "$(stat -c %s p.luks)" = $((2068480 + 1048576)) ] || fail "size of p.luks"
[ "$(du -k p.luks | cut -f1)" -ge 3040 ] || fail "p.luks not preallocated"
# resize grows the payload
"$VDISK" resize $OBJ --image-opts driver=luks,key-secret=s0,file.filename=v1.luks 4M
qemu-img info v1.luks | grep -q "virtual size: 4 MiB" || fail "resize"
# measure as qemu-img (luks, and qcow2 with its LUKS header clusters)
head -c 1M /dev/urandom > m.raw
for a in "luks -o key-secret=s0" "luks -o key-secret=s0,cipher-alg=aes-128,cipher-mode=cbc" \
    "qcow2 -o encrypt.format=luks,encrypt.key-secret=s0" \
    "qcow2 -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.cipher-alg=serpent-128,cluster_size=4096" \
    "qcow2 -o encrypt.format=aes,encrypt.key-secret=s0"; do
    # shellcheck disable=SC2086
    [ "$(qemu-img measure $OBJ -O $a m.raw)" = "$("$VDISK" measure $OBJ -O $a m.raw)" ] ||
        fail "measure differs: $a"
    # shellcheck disable=SC2086
    [ "$(qemu-img measure $OBJ -O $a --size 5G)" = "$("$VDISK" measure $OBJ -O $a --size 5G)" ] ||
        fail "measure --size differs: $a"
done
# the passphrase leaves the process listing: vdisk-io waits for commands on
# a pipe; once it answered one, its /proc cmdline no longer holds the value
mkfifo cmds.fifo
exec 7<>cmds.fifo
"$VDISK_IO" --object secret,id=s9,data=s3cr3t \
    --image-opts driver=luks,key-secret=s9,file.filename=v1.luks <&7 >io.out 2>&1 &
iopid=$!
echo "read 0 512" >&7
for _ in $(seq 1 600); do grep -q "read 512/512" io.out && break; kill -0 "$iopid" || break; sleep 0.1; done
grep -q "read 512/512" io.out || fail "vdisk-io did not answer: $(cat io.out)"
tr '\0' ' ' < /proc/$iopid/cmdline > cmdline
echo quit >&7
wait "$iopid" || true
exec 7>&-
grep -q "data=xxxxxx " cmdline || fail "cmdline: $(cat cmdline)"
if grep -q s3cr3t cmdline io.out; then fail "passphrase visible"; fi
echo ok
