#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# UDIF images from tests/helpers/dmg-gen.py (Debian has no dmg writer) with
# every chunk type (zero fill, ignore, raw, zlib, bzip2), in the XML plist
# and the resource-fork form, several partitions and seeds: dmg2img decodes
# them to the source bytes (proving the generator), vdisk reads the same
# bytes; those QEMU can read (no bzip2 module in Debian) read as in QEMU
# (info, map, odd reads).  lzfse chunks fail to read with a clear message;
# the format is read-only.
. "$VDISK_SRC/tests/lib.sh"
need dmg2img qemu-img qemu-io
gen() { /usr/bin/python3 "$VDISK_SRC/tests/helpers/dmg-gen.py" "$@"; }

/usr/bin/python3 - <<'PY'
import random
r = random.Random(8)
with open("src.raw", "wb") as f:
    # an odd number of sectors, zero runs between data
    f.truncate((9 << 20) + 3 * 512)
    for _ in range(25):
        f.seek(r.randrange(0, 9 << 20) & ~511)
        n = r.choice([512, 5000, 65536, 300000])
        f.write(bytes(r.getrandbits(8) for _ in range(n)) if r.random() < 0.5 else b"dmg " * (n // 4))
PY
for seed in 1 2 3; do
    for form in "" --rsrc; do
        f=s$seed$form.dmg
        stats=$(gen src.raw "$f" --seed $seed --parts $((seed + 1)) $form) || fail "generator"
        case "$stats" in *=0*) fail "$f lacks a chunk type: $stats" ;; esac
        rm -f d.img
        dmg2img -s "$f" d.img >/dev/null 2>&1 || fail "dmg2img $f"
        same_content d.img src.raw
        "$VDISK" convert -f dmg -O raw "$f" v.raw || fail "vdisk convert $f"
        same_content v.raw src.raw
        "$VDISK" compare -f dmg -F raw "$f" src.raw >/dev/null || fail "compare $f"
    done
done

# what QEMU reads too: compared with QEMU directly
qimg() { qemu-img "$@" 2>/dev/null; }
qio() { qemu-io "$@" 2>/dev/null; }
for form in "" --rsrc; do
    f=q$form.dmg
    gen src.raw "$f" --types zero,ignore,raw,zlib --mish-offset --parts 3 --seed 7 $form >/dev/null
    a=$("$VDISK" info --output=json "$f") || fail "vdisk info $f"
    b=$(qimg info --output=json "$f")
    [ "$a" = "$b" ] || fail "info $f differs:
$a
--- qemu-img:
$b"
    [ "$("$VDISK" map --output=json "$f")" = "$(qimg map --output=json "$f")" ] \
        || fail "map $f differs from qemu-img's"
    qimg convert -f dmg -O raw "$f" q.raw
    same_content q.raw src.raw
    "$VDISK" convert -O raw "$f" v.raw
    same_content v.raw src.raw
    for spec in "1 1000" "32767 2" "1048575 70001" "$(((9 << 20) + 3 * 512 - 1)) 1"; do
        a=$("$VDISK_IO" -r -f dmg -c "read -v $spec" "$f" | grep -v ' ops;') || fail "read $spec"
        b=$(qio -r -f dmg -c "read -v $spec" "$f" | grep -v ' ops;')
        [ "$a" = "$b" ] || fail "$f: read $spec differs from qemu-io's"
    done
done

# lzfse: no library in Debian; the image opens, its lzfse chunks fail cleanly
gen src.raw lz.dmg --types zero,lzfse >/dev/null
"$VDISK" info lz.dmg >/dev/null || fail "info of an image with lzfse chunks"
expect_fail "not supported" "$VDISK" convert -f dmg -O raw lz.dmg out.raw

sum=$(md5sum < s1.dmg)
expect_fail "read-only" "$VDISK_IO" -f dmg -c "write 0 512" s1.dmg
expect_fail "read-only" "$VDISK_IO" -r -f dmg -c "write 0 512" s1.dmg
[ "$(md5sum < s1.dmg)" = "$sum" ] || fail "a refused write changed the image"
echo ok
