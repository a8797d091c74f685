#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qcow2 headers against qemu-img 7.2: created images are byte-identical for
# every create option combination; info's format-specific data matches;
# unknown header extensions survive header rewrites; unknown incompatible
# features are named by the image's feature table; a write that would hit
# metadata marks the image corrupt (QEMU then refuses to write it) and
# check -r all makes it consistent again.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io python3

qemu-img create -q -f qcow2 base.qcow2 32M
for o in "" compat=0.10 compat=v2 compat=1.1,lazy_refcounts=on cluster_size=512 cluster_size=2M \
    cluster_size=4k,refcount_bits=1 refcount_bits=64 compression_type=zstd \
    "cluster_size=16k,refcount_bits=2,lazy_refcounts=on" preallocation=metadata \
    preallocation=falloc "cluster_size=512,refcount_bits=64,preallocation=metadata" \
    "backing_file=base.qcow2,backing_fmt=qcow2" \
    "backing_file=base.qcow2,backing_fmt=qcow2,cluster_size=512" ; do
    sizes="1M 1G"
    [ -n "$o" ] || sizes="0 3000 1M 1G"
    for size in $sizes; do
        case "$o,$size" in *preallocation*,1G) continue ;; esac
        rm -f q.qcow2 v.qcow2
        qemu-img create -q -f qcow2 ${o:+-o "$o"} q.qcow2 $size
        "$VDISK" create -q -f qcow2 ${o:+-o "$o"} v.qcow2 $size || fail "vdisk create -o '$o' $size"
        case "$o" in
        *falloc*)
            # QEMU lays falloc out through its refcount-area code; the
            # layout may differ, the meaning may not
            qemu-img check v.qcow2 >/dev/null || fail "qemu-img check -o '$o' size $size"
            [ "$(qemu-img map --output=json q.qcow2 | sed 's/, "offset": [0-9]*//')" = \
              "$(qemu-img map --output=json v.qcow2 | sed 's/, "offset": [0-9]*//')" ] ||
                fail "maps differ for -o '$o' size $size" ;;
        *)
            cmp -s q.qcow2 v.qcow2 || fail "created images differ for -o '$o' size $size" ;;
        esac
        a=$(qemu-img info --output=json v.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"])')
        b=$("$VDISK" info --output=json v.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"])')
        [ "$a" = "$b" ] || fail "format-specific info differs for -o '$o': qemu $a, vdisk $b"
    done
done

# bitmaps in info; kept by a read-write open that changes nothing
qemu-img create -q -f qcow2 bm.qcow2 16M
qemu-img bitmap --add bm.qcow2 b0
qemu-img bitmap --add -g 128k --disable bm.qcow2 b1
a=$(qemu-img info --output=json bm.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"])')
b=$("$VDISK" info --output=json bm.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"])')
[ "$a" = "$b" ] || fail "bitmap info differs: qemu $a, vdisk $b"
"$VDISK" check bm.qcow2 >/dev/null || fail "vdisk check counts bitmap clusters wrongly"

# an unknown header extension survives a header rewrite
rm -f u.qcow2
qemu-img create -q -f qcow2 u.qcow2 16M
python3 - <<'EOF2'
import struct
with open("u.qcow2", "r+b") as f:
    hdr = bytearray(f.read(65536))
    hlen = struct.unpack(">I", hdr[100:104])[0]
    # append an unknown extension after the existing ones
    off = hlen
    while True:
        magic, ln = struct.unpack(">II", hdr[off:off + 8])
        if magic == 0:
            break
        off += 8 + (ln + 7) // 8 * 8
    ext = struct.pack(">II", 0x12345678, 5) + b"hello\0\0\0" + bytes(8)
    hdr[off:off + len(ext)] = ext
    f.seek(0)
    f.write(hdr)
EOF2
"$VDISK" rebase -u -b base.qcow2 -F qcow2 u.qcow2 || fail "vdisk rebase -u"
grep -q hello u.qcow2 || fail "unknown header extension lost on header rewrite"
qemu-img info u.qcow2 | grep -q "backing file: base.qcow2" || fail "backing file not recorded"
qemu-img check u.qcow2 >/dev/null || fail "check after header rewrite"

# an unknown incompatible feature is named from the feature table
cp u.qcow2 f.qcow2
python3 - <<'EOF2'
import struct
with open("f.qcow2", "r+b") as f:
    hdr = bytearray(f.read(65536))
    hdr[72:80] = struct.pack(">Q", 1 << 40)
    off = struct.unpack(">I", hdr[100:104])[0]
    while True:
        magic, ln = struct.unpack(">II", hdr[off:off + 8])
        if magic == 0x6803f857:
            e = off + 8           # rename the first entry: incompatible bit 40
            hdr[e:e + 48] = bytes([0, 40]) + b"teleportation".ljust(46, b"\0")
            break
        off += 8 + (ln + 7) // 8 * 8
    f.seek(0)
    f.write(hdr)
EOF2
expect_fail "teleportation" "$VDISK" info f.qcow2

# a write onto metadata marks the image corrupt
rm -f c.qcow2
"$VDISK" create -q -f qcow2 c.qcow2 16M
"$VDISK_IO" -c 'write -P 1 0 64k' c.qcow2 >/dev/null
python3 - <<'EOF2'
import struct
with open("c.qcow2", "r+b") as f:
    f.seek(40); l1 = struct.unpack(">Q", f.read(8))[0]
    f.seek(l1); l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
    f.seek(l2); f.write(struct.pack(">Q", (1 << 63) | 0x10000))  # data := refcount table
EOF2
cp c.qcow2 c0.qcow2
"$VDISK_IO" -c 'write -P 2 0 512' c.qcow2 >/dev/null 2>&1 && fail "write onto metadata succeeded"
cmp -s -i 65536:65536 -n 65536 c.qcow2 c0.qcow2 || fail "the refcount table was overwritten"
qemu-img info c.qcow2 | grep -q "corrupt: true" || fail "corrupt bit not set"
qemu-io -c 'write 0 512' c.qcow2 >/dev/null 2>&1 && fail "qemu-io wrote a corrupt image"
"$VDISK_IO" -c 'write -P 2 1M 512' c.qcow2 >/dev/null 2>&1 && fail "vdisk-io wrote a corrupt image"
"$VDISK" check -r all c.qcow2 >/dev/null || fail "check -r all did not repair"
qemu-img info c.qcow2 | grep -q "corrupt: false" || fail "corrupt bit not cleared by the repair"
echo ok
