#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Snapshot table entries with short or unknown extra data (iotest 261): an
# upgrade to compat=1.1 writes every entry with the 24 bytes QEMU knows (64-bit
# VM state size, disk size, icount = -1 when unknown), unknown extra data
# kept; `check -r all` on a v3 image whose entries lack the 16 bytes v3 needs
# reports "Repairing snapshot table entry N is incomplete" and rewrites the
# table.  Both compared with qemu-img 7.2 doing the same on the same file.
. "$(dirname "$0")/../lib.sh"
need qemu-img
# The v2 template: three snapshots whose entries get 0, 50 (26 unknown
# bytes) and 8 bytes of extra data.
cat >mk.py <<'PY'
import struct, sys
f = bytearray(open(sys.argv[1], 'rb').read())
n, off = struct.unpack('>IQ', f[60:72])
ents, o = [], off
for i in range(n):
    idl, nl = struct.unpack('>HH', f[o + 12:o + 16])
    ex = struct.unpack('>I', f[o + 36:o + 40])[0]
    ents.append((bytes(f[o:o + 40]), bytes(f[o + 40:o + 40 + ex]),
                 bytes(f[o + 40 + ex:o + 40 + ex + idl + nl])))
    o += (40 + ex + idl + nl + 7) // 8 * 8
out = b''
for (h, ex, ids), size in zip(ents, (0, 50, 8)):
    ex = (ex + bytes(50))[:size]
    if size == 50:
        ex = ex[:24] + b'very important data'.ljust(26, b'\0')
    h = h[:36] + struct.pack('>I', size)
    e = h + ex + ids
    out += e + bytes((-len(e)) % 8)
f[off:off + len(out)] = out
open(sys.argv[1], 'wb').write(f)
PY
cat >table.py <<'PY'
import struct, sys
f = open(sys.argv[1], 'rb').read()
n, o = struct.unpack('>IQ', f[60:72])
for i in range(n):
    idl, nl = struct.unpack('>HH', f[o + 12:o + 16])
    ex = struct.unpack('>I', f[o + 36:o + 40])[0]
    d = f[o + 40:o + 40 + ex]
    print(i, f[o + 40 + ex:o + 40 + ex + idl + nl], ex, d.hex())
    o += (40 + ex + idl + nl + 7) // 8 * 8
PY
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 64M
for s in sn0 sn1 sn2; do qemu-img snapshot -c $s v2.qcow2; done
/usr/bin/python3 mk.py v2.qcow2
qemu-img check -q v2.qcow2 || fail "template broken"
# upgrade
for who in qemu vdisk; do
    IMG=qemu-img; [ $who = vdisk ] && IMG=$VDISK
    cp v2.qcow2 up-$who.qcow2
    "$IMG" amend -o compat=1.1 up-$who.qcow2 || fail "$who: amend failed"
    qemu-img check -q up-$who.qcow2 || fail "$who: check after the upgrade failed"
    /usr/bin/python3 table.py up-$who.qcow2 >up-$who.txt
done
diff up-qemu.txt up-vdisk.txt || fail "snapshot table after the upgrade differs"
# a v2 file forced to v3: entries without the 16 bytes v3 needs
for who in qemu vdisk; do
    IMG=qemu-img; [ $who = vdisk ] && IMG=$VDISK
    cp v2.qcow2 b-$who.qcow2
    printf '\x00\x00\x00\x03' | dd of=b-$who.qcow2 bs=1 seek=4 conv=notrunc status=none
    printf '\x00\x00\x00\x04' | dd of=b-$who.qcow2 bs=1 seek=96 conv=notrunc status=none
    printf '\x00\x00\x00\x68' | dd of=b-$who.qcow2 bs=1 seek=100 conv=notrunc status=none
    cp b-$who.qcow2 c-$who.qcow2
    set +e
    "$IMG" check c-$who.qcow2 >chk-$who.txt 2>&1; echo "rc=$?" >>chk-$who.txt
    "$IMG" check -r all b-$who.qcow2 >fix-$who.txt 2>&1; echo "rc=$?" >>fix-$who.txt
    set -e
    sed -i 's/^[a-z-]*: //' chk-$who.txt fix-$who.txt
    /usr/bin/python3 table.py b-$who.qcow2 >b-$who.txt
done
diff chk-qemu.txt chk-vdisk.txt || fail "check output differs"
diff fix-qemu.txt fix-vdisk.txt || fail "check -r all output differs"
diff b-qemu.txt b-vdisk.txt || fail "snapshot table after the repair differs"
qemu-img check -q b-vdisk.qcow2 || fail "repaired image does not check"
exit 0
