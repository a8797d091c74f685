#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk info prints what qemu-img info prints (human and JSON), for raw
# images opened every way; failures are clear and non-zero.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

truncate -s 1M sparse.img
dd if=/dev/urandom of=full.img bs=64k count=3 status=none
truncate -s 0 empty.img
truncate -s 1000 odd.img

for f in sparse.img full.img empty.img odd.img "$PWD/full.img"; do
    a=$("$VDISK" info "$f") || fail "info $f"
    b=$(qemu-img info "$f")
    [ "$a" = "$b" ] || fail "human info of $f differs:
$a
--- qemu-img:
$b"
    a=$("$VDISK" info -f raw --output=json "$f") || fail "info json $f"
    b=$(qemu-img info -f raw --output=json "$f")
    [ "$a" = "$b" ] || fail "json info of $f differs:
$a
--- qemu-img:
$b"
    a=$("$VDISK" info -U --backing-chain --output=json "$f") || fail "info chain $f"
    b=$(qemu-img info -U --backing-chain --output=json "$f")
    [ "$a" = "$b" ] || fail "json chain info of $f differs: $a -- $b"
done

# --image-opts and json: names
a=$("$VDISK" info --output=json --image-opts driver=raw,file.filename=full.img) || fail "image-opts"
echo "$a" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["format"]=="raw" and d["virtual-size"]==196608, d'
a=$("$VDISK" info --output=json 'json:{"driver":"raw","file":{"driver":"file","filename":"full.img"}}') || fail "json: name"
echo "$a" | /usr/bin/python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["format"]=="raw" and d["virtual-size"]==196608, d'

# info never writes: the file is unchanged, also with --output=json
cp full.img ref.img
"$VDISK" info full.img >/dev/null
same_content full.img ref.img

expect_fail "Expecting one image file name" "$VDISK" info
expect_fail "Expecting one image file name" "$VDISK" info a b
expect_fail "--output must be used with human or json" "$VDISK" info --output=xml full.img
expect_fail "nonexist" "$VDISK" info nonexist
expect_fail "unrecognized option" "$VDISK" info -x full.img
echo ok
