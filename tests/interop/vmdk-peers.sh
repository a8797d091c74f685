#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vmdk against independent peers: libyal's vmdkinfo reads every subformat
# vdisk writes (with data in it) and agrees on type, size and CIDs;
# python3-vmdkstream's streamOptimized images and bximage's vmware4 images
# read exactly in vdisk.
. "$VDISK_SRC/tests/lib.sh"
need vmdkinfo bximage qemu-img
/usr/bin/python3 -c 'import VMDKstream' 2>/dev/null ||
    fail "python3-vmdkstream missing (run scripts/deps.sh test)"

/usr/bin/python3 - <<'PY'
import random
r = random.Random(13)
with open("src.raw", "wb") as f:
    f.truncate(12 << 20)
    for _ in range(25):
        off = r.randrange(0, (12 << 20) - 200000)
        f.seek(off - off % 512)
        f.write(r.randbytes(r.choice([512, 65536, 150000])))
PY

declare -A kind=([monolithicSparse]="Monolithic sparse" [monolithicFlat]="Monolithic flat"
    [twoGbMaxExtentSparse]="2GB extent sparse" [twoGbMaxExtentFlat]="2GB extent flat"
    [streamOptimized]="Stream optimized")
for sf in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat streamOptimized; do
    rm -f v*.vmdk
    "$VDISK" convert -O vmdk -o subformat=$sf src.raw v.vmdk || fail "convert to $sf"
    out=$(vmdkinfo v.vmdk 2>&1) || fail "vmdkinfo cannot read vdisk's $sf: $out"
    case $out in *"${kind[$sf]}"*) ;; *) fail "vmdkinfo sees another type for $sf: $out" ;; esac
    case $out in *"(12582912 bytes)"*) ;; *) fail "vmdkinfo sees another size for $sf: $out" ;; esac
    cid=$("$VDISK" info --output=json v.vmdk | sed -n 's/.*"cid": \([0-9]*\).*/\1/p')
    case $out in *"$(printf '0x%08x' "$cid")"*) ;; *) fail "vmdkinfo sees another CID for $sf: $out" ;; esac
    # and the data, through libvmdk's FUSE reader (when FUSE works here)
    # (libvmdk 20200926's vmdkmount says "Unsupported disk type" for every
    # monolithicFlat image, QEMU's too)
    if [ -e /dev/fuse ] && command -v fusermount >/dev/null && [ $sf != monolithicFlat ]; then
        # a mount point per image: an unmount may still be settling
        mkdir -p mnt-$sf
        out=$(vmdkmount v.vmdk mnt-$sf 2>&1) || fail "vmdkmount cannot mount vdisk's $sf: $out"
        r=0; cmp -s mnt-$sf/vmdk1 src.raw || r=1
        fusermount -u mnt-$sf
        [ $r = 0 ] || fail "vmdkmount reads vdisk's $sf differently"
    fi
done

# python3-vmdkstream writes a true stream (footer, GT/GD markers, GD at end)
/usr/bin/python3 -c 'import VMDKstream; VMDKstream.convert_to_stream("src.raw", "py.vmdk")'
"$VDISK" compare -q src.raw py.vmdk || fail "vdisk reads VMDKstream's image differently"
"$VDISK" convert -O raw py.vmdk back.raw || fail "convert VMDKstream's image"
same_content src.raw back.raw
"$VDISK" info py.vmdk | grep -q "create type: streamOptimized" || fail "VMDKstream image type"
out=$("$VDISK" check py.vmdk 2>&1) || fail "vdisk check on VMDKstream's image: $out"

# bximage's vmware4 (VMDK version 4 hosted sparse)
bximage -func=convert -imgmode=vmware4 -q src.raw bx.vmdk >/dev/null 2>&1 || fail "bximage convert"
"$VDISK" compare -q src.raw bx.vmdk || fail "vdisk reads bximage's vmware4 differently"
"$VDISK" convert -O raw bx.vmdk back.raw && same_content src.raw back.raw
bximage -func=create -hd=64M -imgmode=vmware4 -q bxe.vmdk >/dev/null 2>&1 || fail "bximage create"
"$VDISK" info bxe.vmdk | grep -q "virtual size: 64 MiB" || fail "bximage empty vmware4 size"
"$VDISK_IO" -c "write -P 9 1M 100k" bxe.vmdk >/dev/null || fail "write to bximage's vmware4"
qemu-io -c "read -P 9 1M 100k" -c "read -P 0 0 1M" bxe.vmdk | grep -q failed && fail "QEMU reads it differently"
echo ok
