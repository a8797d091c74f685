#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# LUKS1 headers made by cryptsetup (several ciphers, modes, IV generators
# and hashes) with data written through qemu-io's luks driver read
# identically in vdisk; vdisk's writes read back identically in qemu-io;
# info matches qemu-img's; a wrong passphrase changes nothing.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io cryptsetup

printf 'correct horse' > key
printf 'battery staple' > bad
OBJ="--object secret,id=s0,file=key"
SEED=${SEED:-$RANDOM}
echo "seed $SEED"
n=0
# cryptsetup can only format with the ciphers of the kernel's crypto API
# here (AES); the other ciphers are covered by luks-create.sh
for spec in "aes-xts-plain64 256 sha256" "aes-cbc-essiv:sha256 128 sha1" \
    "aes-xts-plain64 512 sha512" "aes-cbc-plain 256 ripemd160" \
    "aes-ctr-plain64 128 sha224" "aes-cbc-essiv:sha256 256 sha256"; do
    set -- $spec
    n=$((n + 1))
    img=c$n.luks
    truncate -s 5M "$img"
    cryptsetup luksFormat -q --type luks1 --pbkdf-force-iterations 1000 --cipher "$1" \
        --key-size "$2" --hash "$3" --key-file key "$img" ||
        fail "cryptsetup luksFormat $spec"
    IO="$OBJ --image-opts driver=luks,key-secret=s0,file.filename=$img"
    size=$(qemu-img info --output=json "$img" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    # random data at random places through QEMU, the rest zeroes
    /usr/bin/python3 - "$SEED" "$n" "$size" > cmds <<'PY'
import random, sys
seed, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed * 100 + n)
ref = bytearray(size)
print("-c", "write -z 0 %d" % size)
for i in range(12):
    off = r.randrange(0, size // 512) * 512
    ln = min(r.choice([512, 4096, 65536, 300 * 512]), size - off)
    pat = r.randrange(1, 255)
    ref[off:off + ln] = bytes([pat]) * ln
    print("-c", "write -P %d %d %d" % (pat, off, ln))
open("ref.raw", "wb").write(ref)
PY
    cmdline=()
    while read -r opt rest; do cmdline+=("$opt" "$rest"); done < cmds
    qemu-io $IO "${cmdline[@]}" >/dev/null || fail "qemu-io write $spec"
    "$VDISK" convert $OBJ --image-opts "driver=luks,key-secret=s0,file.filename=$img" \
        -O raw out.raw || fail "vdisk convert $spec"
    same_content out.raw ref.raw
    # info, without the key, as qemu-img prints it
    "$VDISK" info --output=json "$img" > v.json
    qemu-img info --output=json "$img" > q.json
    cmp -s v.json q.json || fail "info differs for $spec: $(diff v.json q.json)"
    "$VDISK" info "$img" > v.txt
    qemu-img info "$img" > q.txt
    cmp -s v.txt q.txt || fail "human info differs for $spec: $(diff v.txt q.txt)"
    # vdisk writes, QEMU reads
    "$VDISK_IO" $IO -c "write -P 0x5a 4096 8192" -c "write -P 0xa5 1M 512" >/dev/null ||
        fail "vdisk-io write $spec"
    qemu-io $IO -c "read -P 0x5a 4096 8192" -c "read -P 0xa5 1M 512" | grep -q "^read 512" ||
        fail "qemu-io does not read vdisk's writes for $spec"
    qemu-io $IO -c "read -P 0x5a 4096 8192" | grep -q "^read 8192" || fail "qemu-io read $spec"
    # a wrong passphrase: a clear error, the image byte-for-byte unchanged
    sum=$(md5sum < "$img")
    expect_fail "Invalid password, cannot unlock any keyslot" "$VDISK_IO" \
        --object secret,id=s1,file=bad --image-opts "driver=luks,key-secret=s1,file.filename=$img" \
        -c "write 0 512"
    expect_fail "Invalid password" "$VDISK" convert --object secret,id=s1,file=bad \
        --image-opts "driver=luks,key-secret=s1,file.filename=$img" -O raw wrong.raw
    expect_fail "key-secret" "$VDISK" convert -f luks "$img" -O raw wrong.raw
    [ "$(md5sum < "$img")" = "$sum" ] || fail "a failed open changed $img"
done
# a mode without IV generator, which cryptsetup writes, is refused as QEMU does
truncate -s 4M ecb.luks
cryptsetup luksFormat -q --type luks1 --pbkdf-force-iterations 1000 --cipher aes-ecb \
    --key-file key ecb.luks
expect_fail "Unexpected cipher mode string format 'ecb'" "$VDISK" info ecb.luks
same_verdict_as_qemu luks ecb.luks
# the passphrase never shows in a message
out=$("$VDISK" info --object "secret,id=s0,data=hunter2hunter2,format=base64" c1.luks 2>&1) || true
case $out in *hunter2*) fail "passphrase printed: $out" ;; esac
echo ok
