#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The VHDX metadata log.
#  - Pending logs made by QEMU: qemu-io is killed (sigraise 9) while an
#    allocating write is suspended (blkdebug break) at each of its writes.
#    vdisk's verdict on a read-only open is qemu-img's (the same message
#    when the log holds entries); vdisk check -r all replays as qemu-img
#    check -r all does (same report, identical images, qemu-img check
#    clean); a read-write open of vdisk-io replays too.
#  - A pending log made by vdisk (blkdebug fails its in-place BAT write):
#    QEMU replays it and reads the data vdisk wrote.
#  - Hostile logs made from a pending one (bad CRC, absurd descriptor
#    counts, sequence numbers 0 and 2^64-1, an entry that wraps past the end
#    of the log, entries longer than the log, a two-entry sequence,
#    flushed_file_offset past the end of the file, a data sector with the
#    wrong sequence number, a zero descriptor of 2^60 bytes): bounded, same
#    verdict as QEMU read-only and on check -r all, same content after.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f vhdx -o block_size=1M q0.vhdx 16M
qemu-io -f vhdx -c "write -P 3 0 1M" q0.vhdx >/dev/null

# kill qemu-io while the n-th write of "write -P 9 5M 64k" is suspended
kill_at() {
    local n=$1 i c
    c=(-c "break pwritev A" -c "aio_write -P 9 5M 64k" -c "wait_break A")
    for i in $(seq 2 "$n"); do
        c+=(-c "resume A" -c "break pwritev A" -c "wait_break A")
    done
    cp q0.vhdx k$n.vhdx
    qemu-io -f vhdx "${c[@]}" -c "sigraise 9" \
        "json:{\"driver\":\"vhdx\",\"file\":{\"driver\":\"blkdebug\",\"image\":{\"driver\":\"file\",\"filename\":\"k$n.vhdx\"}}}" \
        >/dev/null 2>&1 && fail "qemu-io was not killed"
    return 0
}

# vdisk under qemu-img's name speaks (and advises) as qemu-img
mkdir -p qnames && ln -sf "$VDISK" qnames/qemu-img
# same_replay F: read-only verdict and message, check -r all, content
same_replay() {
    local f=$1 rc qrc a b
    rc=0; a=$(bounded qnames/qemu-img info "$f" 2>&1 >/dev/null) || rc=$?
    qrc=0; b=$(qemu-img info "$f" 2>&1 >/dev/null) || qrc=$?
    [ "$rc" -lt 124 ] || fail "vdisk info $f: exit $rc"
    [ "$rc" = "$qrc" ] || fail "info $f: exit $rc, qemu-img $qrc: $a / $b"
    if [ "$rc" -ne 0 ]; then
        case "$b" in *"needs to be replayed"*)
            [ "$a" = "$b" ] || fail "message for $f: $a -- qemu-img: $b" ;;
        esac
    fi
    cp "$f" v-"$f"; cp "$f" q-"$f"
    rc=0; a=$(bounded "$VDISK" check -r all v-"$f" 2>&1) || rc=$?
    qrc=0; b=$(qemu-img check -r all q-"$f" 2>&1) || qrc=$?
    [ "$rc" -lt 124 ] || fail "vdisk check -r all $f: exit $rc"
    if [ "$qrc" -eq 0 ]; then
        [ "$rc" -eq 0 ] || fail "vdisk check -r all $f failed, qemu-img's did not: $a"
        [ "$a" = "$b" ] || fail "check -r all $f reports differ: $a -- qemu-img: $b"
        qemu-img compare q-"$f" v-"$f" >/dev/null || fail "replays of $f differ"
        qemu-img check v-"$f" >/dev/null || fail "qemu-img check after vdisk's replay of $f"
    else
        [ "$rc" -ne 0 ] || fail "vdisk check -r all $f succeeded, qemu-img's failed: $b"
    fi
}

pending=0
for n in 1 2 3 4 5 6 7 8 9 10; do
    kill_at $n
    same_replay k$n.vhdx
    qemu-img info k$n.vhdx >/dev/null 2>&1 || pending=$((pending + 1))
done
[ "$pending" -ge 2 ] || fail "only $pending pending logs made"
# a read-write open (vdisk-io) replays as well
cp k8.vhdx io.vhdx
"$VDISK_IO" -f vhdx -c "read -P 9 5M 64k" -c "read -P 3 0 1M" io.vhdx >/dev/null ||
    fail "vdisk-io does not read the replayed image as written"
qemu-img compare io.vhdx q-k8.vhdx >/dev/null || fail "vdisk-io's replay differs"

# a pending log written by vdisk, replayed by QEMU
cp q0.vhdx vk.vhdx
printf '[inject-error]\nevent = "bat_update"\niotype = "write"\nerrno = "5"\nonce = "on"\n' >bd.conf
"$VDISK_IO" -c "write -P 9 5M 64k" blkdebug:bd.conf:vk.vhdx >/dev/null 2>&1 &&
    fail "the injected error did not fail the write"
expect_fail "needs to be replayed" qemu-img info vk.vhdx
# the advice names the tool the user runs: vdisk, or qemu-img's words
# under its name
expect_fail "vdisk check -r all 'vk.vhdx'" "$VDISK" info vk.vhdx
q=$(qemu-img info vk.vhdx 2>&1) && fail "qemu-img info of a pending log worked"
v=$(qnames/qemu-img info vk.vhdx 2>&1) && fail "vdisk as qemu-img: info of a pending log worked"
[ "$q" = "$v" ] || fail "under qemu-img's name: '$v', qemu-img: '$q'"
qemu-img check -r all vk.vhdx >/dev/null || fail "QEMU cannot replay vdisk's log"
qemu-io -r -f vhdx -c "read -P 9 5M 64k" -c "read -P 3 0 1M" vk.vhdx >/dev/null ||
    fail "QEMU does not read vdisk's replayed write"

# hostile logs, from a pending one
[ -f k8.vhdx ] && qemu-img info k8.vhdx >/dev/null 2>&1 && fail "k8 has no pending log"
/usr/bin/python3 - <<'PY'
import struct
g = bytes(open("k8.vhdx", "rb").read())
T = []
for i in range(256):
    c = i
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    T.append(c)
def crc(b):
    c = 0xFFFFFFFF
    for x in b:
        c = T[(c ^ x) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF
H = [64 << 10, 128 << 10]
cur = max(H, key=lambda h: struct.unpack_from("<Q", g, h + 8)[0])
guid = g[cur + 48:cur + 64]
loglen, logoff = struct.unpack_from("<IQ", g, cur + 68)
ent = [o for o in range(logoff, logoff + loglen, 4096)
       if g[o:o + 4] == b"loge" and g[o + 32:o + 48] == guid][0]
elen = struct.unpack_from("<I", g, ent + 8)[0]
entry = bytearray(g[ent:ent + elen])
def refix(e):
    struct.pack_into("<I", e, 4, 0)
    struct.pack_into("<I", e, 4, crc(bytes(e)))
def put(name, e, at=ent, fixcrc=True, data=None):
    e = bytearray(e)
    if fixcrc:
        refix(e)
    d = bytearray(data if data is not None else g)
    d[ent:ent + elen] = bytes(elen)
    for k in range(0, len(e), 4096):  # circular in the log
        o = logoff + ((at - logoff + k) % loglen)
        d[o:o + 4096] = e[k:k + 4096]
    open(name + ".vhdx", "wb").write(d)
def hdr(e, fmt, off, v):
    e = bytearray(e); struct.pack_into(fmt, e, off, v); return e
put("lcrc", hdr(entry, "<I", 4, 0x1234), fixcrc=False)
put("lcount", hdr(entry, "<I", 24, 0xFFFFFFFF))
put("lcount2", hdr(entry, "<I", 24, elen // 32))
put("lseq0", hdr(hdr(entry, "<Q", 16, 0), "<Q", 64 + 24, 0))
s = (1 << 64) - 1
e = hdr(hdr(entry, "<Q", 16, s), "<Q", 64 + 24, s)
e = hdr(hdr(e, "<I", 4096 + 4, s >> 32), "<I", 8192 - 4, s & 0xFFFFFFFF)
put("lseqmax", e)
put("lwrap", entry, at=logoff + loglen - 4096)
put("llong", hdr(entry, "<I", 8, loglen + 4096))
put("lflushed", hdr(entry, "<Q", 48, 1 << 40))
put("ldataseq", hdr(entry, "<I", 8192 - 4, 77))
z = hdr(entry, "<I", 64, 0x6f72657a)  # the data descriptor becomes "zero"
put("lzero", hdr(z, "<Q", 64 + 8, 1 << 60))
put("lzero1", hdr(z, "<Q", 64 + 8, 4096))
# two entries in sequence: the second writes the next 4 KiB of the BAT
e2 = bytearray(entry)
struct.pack_into("<Q", e2, 16, struct.unpack_from("<Q", e2, 16)[0] + 1)
struct.pack_into("<Q", e2, 64 + 24, struct.unpack_from("<Q", e2, 16)[0])
off = struct.unpack_from("<Q", e2, 64 + 16)[0]
struct.pack_into("<Q", e2, 64 + 16, off + 4096)
sq = struct.unpack_from("<Q", e2, 16)[0]
struct.pack_into("<II", e2, 4096 + 4, sq >> 32, 0)
struct.pack_into("<I", e2, 8192 - 4, sq & 0xFFFFFFFF)
refix(e2)
d = bytearray(g)
d[ent + elen:ent + 2 * elen] = e2
put("ltwo", entry, data=d)
PY
for f in lcrc lcount lcount2 lseq0 lseqmax lwrap llong lflushed ldataseq lzero1 ltwo; do
    same_replay $f.vhdx
done
# QEMU would write 2^60 zero bytes: vdisk refuses, bounded
cp lzero.vhdx v-lzero.vhdx
rc=0; bounded "$VDISK" check -r all v-lzero.vhdx >/dev/null 2>err || rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -lt 124 ] && [ -s err ] || fail "lzero: exit $rc $(cat err)"
expect_fail "needs to be replayed" "$VDISK" info lzero.vhdx
echo ok
