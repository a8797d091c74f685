#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Compressed qcow2 clusters, deflate and zstd, both ways: vdisk convert -c
# output passes qemu-img check and compare; vdisk reads QEMU's compressed
# images; multi-cluster compressed writes (the thread pool), incompressible
# clusters (stored plainly) and the image's partial last cluster.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io python3

python3 - <<'EOF2'
import random
r = random.Random(7)
with open("src.raw", "wb") as f:
    f.truncate((24 << 20) + 4608)          # a partial last cluster
    for i in range(300):
        f.seek(r.randrange(0, 24 << 20))
        f.write((b"vdisk %d " % r.randrange(1000)) * r.randint(1, 3000))
    f.seek(5 << 20)
    f.write(r.randbytes(300000))           # incompressible
    f.seek((24 << 20) + 100)
    f.write(b"tail" * 100)
EOF2

for ct in zlib zstd; do
    rm -f v.qcow2 q.qcow2 back.raw
    "$VDISK" convert -c -O qcow2 -o compression_type=$ct src.raw v.qcow2 ||
        fail "vdisk convert -c ($ct)"
    qemu-img check v.qcow2 >check.out || { cat check.out; fail "qemu-img check ($ct)"; }
    grep -q "compressed clusters" check.out || fail "no compressed clusters ($ct)"
    qemu-img compare -f raw -F qcow2 src.raw v.qcow2 >/dev/null || fail "qemu-img compare ($ct)"
    qemu-img info --output=json v.qcow2 | grep -q "\"compression-type\": \"$ct\"" ||
        fail "compression type $ct not recorded"
    "$VDISK" check v.qcow2 >/dev/null || fail "vdisk check of its own output ($ct)"

    # vdisk reads what QEMU compressed
    qemu-img convert -c -O qcow2 -o compression_type=$ct src.raw q.qcow2
    "$VDISK" convert -O raw q.qcow2 back.raw || fail "vdisk convert of QEMU's compressed image"
    cmp src.raw back.raw || fail "vdisk read QEMU's $ct clusters wrongly"
    "$VDISK" check q.qcow2 >/dev/null || fail "vdisk check of QEMU's compressed image ($ct)"

    # one multi-cluster compressed write (the pool) plus a plain overwrite
    rm -f w.qcow2
    "$VDISK" create -q -f qcow2 -o compression_type=$ct,cluster_size=4k w.qcow2 8M
    "$VDISK_IO" -c 'write -c -s src.raw 0 4M' -c 'write -c -P 0x33 6M 1M' \
        -c 'write -P 0x44 6M 5000' w.qcow2 >/dev/null || fail "vdisk-io write -c ($ct)"
    qemu-img check w.qcow2 >/dev/null || fail "qemu-img check after write -c ($ct)"
    head -c 4M src.raw >head.raw
    qemu-io -r -c 'read -P 0x44 6M 5000' -c 'read -P 0x33 6296456 1043576' w.qcow2 >/dev/null ||
        fail "qemu-io reading vdisk-io's compressed clusters ($ct)"
    qemu-img convert -O raw w.qcow2 w.raw
    cmp -n 4194304 head.raw w.raw || fail "compressed data differs ($ct)"
done
echo ok
