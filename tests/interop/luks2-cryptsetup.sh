#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# LUKS2 (beyond QEMU 7.2, which reads LUKS1 only): headers made by
# cryptsetup luksFormat --type luks2 (argon2id, argon2i and pbkdf2 key
# slots; aes-xts-plain64 with 4 KiB and 512-byte sectors; aes-cbc-plain64)
# open in vdisk; a seeded random workload written by vdisk reads back
# identically in a second vdisk open and, decrypted independently with the
# volume key cryptsetup dumps (python3-cryptography), gives the same data;
# the header is never changed and cryptsetup still accepts the passphrase;
# header changes are refused; hostile LUKS2 metadata gives clean errors.
. "$VDISK_SRC/tests/lib.sh"
need cryptsetup
/usr/bin/python3 -c "import cryptography" 2>/dev/null || fail "python3-cryptography missing"

SEED=${SEED:-$RANDOM}
echo "seed $SEED"
printf 'luks2 pass' > key
printf 'wrong pass' > bad
O="--object secret,id=k,file=key"
n=0
for spec in "--pbkdf argon2id --pbkdf-memory 32768 --pbkdf-force-iterations 4" \
    "--pbkdf argon2i --pbkdf-memory 16384 --pbkdf-force-iterations 4 --sector-size 512" \
    "--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --hash sha512" \
    "--pbkdf pbkdf2 --pbkdf-force-iterations 1000 --cipher aes-cbc-plain64 --key-size 256"; do
    n=$((n + 1))
    img=l$n.img
    truncate -s 24M "$img"
    # shellcheck disable=SC2086
    cryptsetup luksFormat -q --type luks2 $spec --key-file key "$img" || fail "luksFormat $spec"
    "$VDISK" info --output=json "$img" > info.json || fail "info $spec"
    grep -q '"format": "luks"' info.json || fail "info: $(cat info.json)"
    size=$(sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p' info.json)
    hdr=$(head -c 16M "$img" | md5sum)
    I="driver=luks,key-secret=k,file.filename=$img"
    /usr/bin/python3 - "$SEED" "$n" "$size" > cmds <<'PY'
import random, sys
seed, n, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed * 10 + n)
ref = bytearray(size)
print("-c", "write -z 0 %d" % size)
for i in range(20):
    off = r.randrange(0, size // 4096) * 4096
    ln = min(r.randrange(1, 64) * 4096, size - off)
    pat = r.randrange(1, 255)
    ref[off:off + ln] = bytes([pat]) * ln
    print("-c", "write -P %d %d %d" % (pat, off, ln))
open("ref.raw", "wb").write(ref)
PY
    cmdline=()
    while read -r opt rest; do cmdline+=("$opt" "$rest"); done < cmds
    "$VDISK_IO" $O --image-opts "$I" "${cmdline[@]}" >/dev/null || fail "vdisk-io $spec"
    "$VDISK" compare -q $O --image-opts "$I" "driver=raw,file.filename=ref.raw" ||
        fail "vdisk reads $img back differently"
    [ "$(head -c 16M "$img" | md5sum)" = "$hdr" ] || fail "writing data changed the header"
    # independent decryption with the volume key
    rm -f vk.bin
    cryptsetup luksDump -q --dump-volume-key --volume-key-file vk.bin --key-file key "$img" \
        >/dev/null || fail "cryptsetup rejects the passphrase after vdisk's writes"
    cryptsetup luksDump --dump-json-metadata "$img" > meta.json
    /usr/bin/python3 - "$img" <<'PY' || fail "independent decryption differs for $spec"
import json, sys
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
img = sys.argv[1]
meta = json.load(open("meta.json"))
seg = meta["segments"]["0"]
off, ss, enc = int(seg["offset"]), seg["sector_size"], seg["encryption"]
key = open("vk.bin", "rb").read()
ref = open("ref.raw", "rb").read()
data = open(img, "rb").read()[off:off + len(ref)]
out = bytearray()
for i in range(0, len(ref), ss):
    iv = (i // 512).to_bytes(16, "little")   # plain64 in 512-byte units
    mode = modes.XTS(iv) if enc == "aes-xts-plain64" else modes.CBC(iv)
    d = Cipher(algorithms.AES(key), mode).decryptor()
    out += d.update(data[i:i + ss]) + d.finalize()
sys.exit(0 if bytes(out) == ref else 1)
PY
    # wrong passphrase, header changes
    sum=$(md5sum < "$img")
    expect_fail "Invalid password" "$VDISK_IO" --object secret,id=b,file=bad \
        --image-opts "driver=luks,key-secret=b,file.filename=$img" -c "write 0 4096"
    expect_fail "LUKS2" "$VDISK" amend $O --object secret,id=k2,file=bad \
        -o state=active,new-secret=k2,iter-time=10 --image-opts "$I"
    [ "$(md5sum < "$img")" = "$sum" ] || fail "a refused operation changed $img"
done

# hostile LUKS2 metadata (checksums recomputed so that the JSON is parsed)
/usr/bin/python3 - <<'PY'
import hashlib, json, struct
g = bytearray(open("l1.img", "rb").read(16 << 20))
hsize = struct.unpack(">Q", g[8:16])[0]
meta = json.loads(bytes(g[4096:hsize]).split(b"\0")[0])
def save(name, m=None, raw=None):
    d = bytearray(g)
    if m is not None:
        t = json.dumps(m).encode()
        d[4096:hsize] = t + bytes(hsize - 4096 - len(t))
    if raw:
        raw(d)
    d[448:512] = bytes(64)
    d[448:480] = hashlib.sha256(bytes(d[:hsize])).digest()
    open(name, "wb").write(d + bytes(8 << 20))
def mut(name, f):
    m = json.loads(json.dumps(meta)); f(m); save(name, m)
ks = lambda m: m["keyslots"]["0"]
mut("mem.luks2", lambda m: ks(m)["kdf"].update(memory=0xffffffff))
mut("time.luks2", lambda m: ks(m)["kdf"].update(time=1 << 40))
mut("cpus.luks2", lambda m: ks(m)["kdf"].update(cpus=0))
mut("salt.luks2", lambda m: ks(m)["kdf"].update(salt="!!!"))
mut("kdf.luks2", lambda m: ks(m)["kdf"].update(type="scrypt"))
mut("area.luks2", lambda m: ks(m)["area"].update(offset="99999999999"))
mut("area2.luks2", lambda m: ks(m)["area"].update(size="1"))
mut("area3.luks2", lambda m: ks(m)["area"].update(offset="-5"))
mut("stripes.luks2", lambda m: ks(m)["af"].update(stripes=1 << 30))
mut("keysize.luks2", lambda m: ks(m).update(key_size=100000))
mut("segoff.luks2", lambda m: m["segments"]["0"].update(offset="12345"))
mut("segss.luks2", lambda m: m["segments"]["0"].update(sector_size=3))
mut("segsize.luks2", lambda m: m["segments"]["0"].update(size="banana"))
mut("segs.luks2", lambda m: m["segments"].update({"1": m["segments"]["0"]}))
mut("enc.luks2", lambda m: m["segments"]["0"].update(encryption="rot13-ecb"))
mut("digest.luks2", lambda m: m["digests"]["0"].update(iterations=0))
mut("nokeyslots.luks2", lambda m: m.update(keyslots={}))
mut("types.luks2", lambda m: m.update(segments=[1, 2]))
save("nojson.luks2", None, lambda d: d.__setitem__(slice(4096, hsize), b"{" * (hsize - 4096)))
save("hsize.luks2", None, lambda d: d.__setitem__(slice(8, 16), struct.pack(">Q", 1 << 40)))
d = bytearray(g); d[5000] ^= 1; open("csum.luks2", "wb").write(d)
PY
nh=0
for f in *.luks2; do
    nh=$((nh + 1))
    sum=$(md5sum < "$f")
    for cmd in "info $f" "convert $O --image-opts driver=luks,key-secret=k,file.filename=$f -O raw out.raw"; do
        rc=0
        bounded "$VDISK" $cmd >stdout 2>stderr || rc=$?
        [ "$rc" -lt 124 ] || fail "$cmd: exit $rc (crash, hang or out of memory): $(cat stderr)"
        [ "$rc" -eq 0 ] || [ -s stderr ] || fail "$cmd: exit $rc without a message"
    done
    [ "$(md5sum < "$f")" = "$sum" ] || fail "reading $f changed it"
done
[ "$nh" -ge 20 ] || fail "only $nh hostile images"
expect_fail "checksum mismatch" "$VDISK" info csum.luks2
expect_fail "argon2 parameters out of range" "$VDISK" info mem.luks2
echo ok
