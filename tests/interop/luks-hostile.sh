#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile LUKS1 headers (magic, version, strings, key size, payload offset,
# iteration counts, key slot state, offsets and stripes, truncation): info
# without the key and a full read with the key give a result or one clean
# error -- never a crash, a hang, more than 256 MiB, or a write.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img cryptsetup

printf 'pw' > key
truncate -s 3M good.luks
cryptsetup luksFormat -q --type luks1 --pbkdf-force-iterations 1000 \
    --cipher aes-cbc-essiv:sha256 --key-size 128 --hash sha1 --key-file key good.luks
/usr/bin/python3 - <<'PY'
import struct
g = bytearray(open("good.luks", "rb").read())
def put(name, off, fmt, val, base=None):
    d = bytearray(base if base is not None else g)
    if isinstance(val, bytes):
        d[off:off + len(val)] = val
    else:
        struct.pack_into(fmt, d, off, val)
    open(name, "wb").write(d)
put("magic.luks", 0, None, b"LUKS\xba\xbf")
for i, v in enumerate([0, 3, 0xffff]):
    put("ver%d.luks" % i, 6, ">H", v)
put("cipher.luks", 8, None, b"rot13\0")
put("ciphernonul.luks", 8, None, b"a" * 32)
put("mode.luks", 40, None, b"cbc-essiv:sha3\0")
put("mode2.luks", 40, None, b"gcm-plain64\0")
put("mode3.luks", 40, None, b"cbc-essiv\0\0\0\0\0\0")
put("modenonul.luks", 40, None, b"c" * 32)
put("hash.luks", 72, None, b"whirlpool\0")
for i, v in enumerate([0, 1, 8, 100, 0xffffffff]):
    put("payload%d.luks" % i, 104, ">I", v)
for i, v in enumerate([0, 1, 15, 24, 65, 0xffffffff]):
    put("keybytes%d.luks" % i, 108, ">I", v)
for i, v in enumerate([0, 0xffffffff, (1 << 26) + 1]):
    put("mkiter%d.luks" % i, 164, ">I", v)
put("uuid.luks", 168, None, b"u" * 40)
s0 = 208
for i, v in enumerate([0, 1, 0x00ac71f4, 0xffffffff]):
    put("active%d.luks" % i, s0, ">I", v)
for i, v in enumerate([0, 0xffffffff, (1 << 26) + 1]):
    put("iter%d.luks" % i, s0 + 4, ">I", v)
for i, v in enumerate([0, 1, 2, 0xfff0, 0xffffffff, 136]):
    put("keyoff%d.luks" % i, s0 + 40, ">I", v)
for i, v in enumerate([0, 1, 3999, 4001, 0xffffffff]):
    put("stripes%d.luks" % i, s0 + 44, ">I", v)
# a second active slot overlapping the first
b = bytearray(g); struct.pack_into(">II", b, s0 + 48, 0x00ac71f3, 1000)
struct.pack_into(">I", b, s0 + 48 + 40, 8)
open("overlap.luks", "wb").write(b)
# wrong key material: digest mismatch only
b = bytearray(g); b[4096:4096 + 512] = bytes(512)
open("material.luks", "wb").write(b)
b = bytearray(g); b[112:132] = bytes(20)
open("digest.luks", "wb").write(b)
for n in (10, 200, 591, 592, 4096, 40000):
    open("trunc%d.luks" % n, "wb").write(g[:n])
PY
# Under the sanitizers (VDISK_SANITIZED) a tool run costs ~10 s of wall
# time on a loaded machine: every third image, with the two parsing paths
# (info without the key, convert with it) and the write; the fuzz target
# covers the parser under ASan too.
n=0
for f in *.luks; do
    [ "$f" = good.luks ] && continue
    n=$((n + 1))
    cmds=("info --output=json $f" "info -f luks $f"
        "convert --object secret,id=k,file=key --image-opts driver=luks,key-secret=k,file.filename=$f -O raw out.raw"
        "check -f luks $f")
    if [ -n "${VDISK_SANITIZED:-}" ]; then
        [ $((n % 3)) -eq 0 ] || continue
        cmds=("${cmds[0]}" "${cmds[2]}")
    fi
    sum=$(md5sum < "$f")
    for cmd in "${cmds[@]}"; do
        rc=0
        bounded "$VDISK" $cmd >stdout 2>stderr || rc=$?
        [ "$rc" -lt 124 ] || fail "$cmd: exit $rc (crash, hang or out of memory): $(cat stderr)"
        if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ] && [ "$rc" -ne 3 ]; then
            [ -s stderr ] || fail "$cmd: exit $rc without a message"
            [ "$(wc -l < stderr)" -eq 1 ] || fail "$cmd: more than one error line: $(cat stderr)"
        fi
    done
    # writes through vdisk-io: refused at open, never half done
    rc=0
    bounded "$VDISK_IO" --object secret,id=k,file=key \
        --image-opts "driver=luks,key-secret=k,file.filename=$f" -c "write 0 512" \
        >stdout 2>stderr || rc=$?
    [ "$rc" -lt 124 ] || fail "vdisk-io write $f: exit $rc"
    [ "$rc" -eq 0 ] || [ "$(md5sum < "$f")" = "$sum" ] || fail "a refused open changed $f"
done
[ "$n" -gt 40 ] || fail "only $n hostile images"
# the key slot checks give the messages QEMU gives
expect_fail "stripes" "$VDISK" info stripes0.luks
expect_fail "overlapping" "$VDISK" info overlap.luks
expect_fail "Invalid password" "$VDISK" convert --object secret,id=k,file=key \
    --image-opts driver=luks,key-secret=k,file.filename=material.luks -O raw out.raw
expect_fail "iteration count" "$VDISK" info iter1.luks
same_verdict_as_qemu luks magic.luks ver1.luks cipher.luks hash.luks stripes2.luks \
    keyoff1.luks overlap.luks payload1.luks
echo ok
