#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# parallels check -r, resize (grow) and discard against QEMU 7.2:
#  - damaged copies of a qemu-io written image (in-use flag left set, space
#    leaked after the data, BAT entries past the end of the file, all
#    three): `vdisk check [-r leaks|all]` prints qemu-img's lines, verdict,
#    exit code and JSON, and repairs the file to the same bytes as
#    `qemu-img check -r`; the repaired image is clean for both and opens
#    read-write again;
#  - resize: vdisk grows the disk (qemu-img 7.2 cannot resize parallels):
#    qemu-img reads the old data and zeroes after it, qemu-io writes into the
#    new part, both checks are clean and agree; shrinking and a BAT that
#    would run into the data area are refused with a message;
#  - discard: whole clusters lose their BAT entry, the map (vdisk and
#    qemu-img) shows them unallocated, they read zeroes in qemu-io, the rest
#    is intact, both checks are clean and agree, qemu-io can write again.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

SIZE=$((8 * 1024 * 1024))
qemu-img create -q -f parallels -o cluster_size=64k base.hds $SIZE
qemu-io -f parallels -c "write -P 0x11 0 200k" -c "write -P 0x22 1M 64k" \
    -c "write -P 0x33 5M 130k" base.hds >/dev/null || fail "qemu-io prefill"

poke() { # file offset hex-bytes
    printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
bat_entry() { # file index value (v2: clusters)
    /usr/bin/python3 -c "
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(64 + 4 * int(sys.argv[2])); f.write(struct.pack('<I', int(sys.argv[3])))
" "$1" "$2" "$3"
}
same_check() { # what image [check args...]: same text, exit code, JSON
    local what=$1 img=$2
    shift 2
    cp "$img" q.hds
    cp "$img" v.hds
    local qo vo qr=0 vr=0
    qo=$(qemu-img check -f parallels "$@" q.hds 2>&1) || qr=$?
    vo=$("$VDISK" check -f parallels "$@" v.hds 2>&1) || vr=$?
    [ "$qr" = "$vr" ] || fail "$what: exit $vr, qemu-img $qr:
$vo
--- qemu-img:
$qo"
    [ "$qo" = "$vo" ] || fail "$what: output differs:
$vo
--- qemu-img:
$qo"
    # QEMU closes a read-write image by truncating the file to its data end
    # exactly, which for a BAT entry past the end of the file grows the file
    # to there (sparse leaked space, even after the repair cleared the
    # entry); vdisk only ever cuts the file at close
    [ -n "${GROWS:-}" ] || same_content q.hds v.hds
    cp "$img" q.hds
    cp "$img" v.hds
    qo=$(qemu-img check -f parallels --output=json "$@" q.hds 2>/dev/null | grep -v '"filename"' || :)
    vo=$("$VDISK" check -f parallels --output=json "$@" v.hds 2>/dev/null | grep -v '"filename"' || :)
    [ "$qo" = "$vo" ] || fail "$what: JSON differs:
$vo
--- qemu-img:
$qo"
    [ -n "${GROWS:-}" ] || same_content q.hds v.hds
}
clean_both() { # what image
    qemu-img check -f parallels "$2" >/dev/null 2>&1 ||
        fail "$1: qemu-img check: $(qemu-img check -f parallels "$2" 2>&1)"
    "$VDISK" check -f parallels "$2" >/dev/null 2>&1 ||
        fail "$1: vdisk check: $("$VDISK" check -f parallels "$2" 2>&1)"
    a=$("$VDISK" check -f parallels --output=json "$2")
    b=$(qemu-img check -f parallels --output=json "$2")
    [ "$a" = "$b" ] || fail "$1: check JSON differs:
$a
--- qemu-img:
$b"
}

# --- check and check -r -----------------------------------------------------
cp base.hds unclean.hds
poke unclean.hds 44 'Ynot'
cp base.hds leak.hds
head -c 200000 /dev/urandom >>leak.hds
cp base.hds outside.hds
bat_entry outside.hds 40 100000
bat_entry outside.hds 41 7
cp outside.hds all.hds
poke all.hds 44 'Ynot'
head -c 70000 /dev/urandom >>all.hds
for img in base unclean leak outside all; do
    GROWS=
    case $img in outside | all) GROWS=1 ;; esac
    same_check "$img" $img.hds
    same_check "$img -r leaks" $img.hds -r leaks
    same_check "$img -r all" $img.hds -r all
    # after the repair: clean, and writable again
    cp $img.hds r.hds
    "$VDISK" check -q -f parallels -r all r.hds >/dev/null 2>&1 || :
    clean_both "$img repaired" r.hds
    "$VDISK_IO" -f parallels -c "write -P 0x44 7M 64k" r.hds >/dev/null ||
        fail "$img: repaired image does not open read-write"
    qemu-io -f parallels -c "read -P 0x44 7M 64k" -c "read -P 0x22 1M 64k" r.hds \
        >/dev/null || fail "$img: repaired image reads wrong"
    clean_both "$img repaired, written" r.hds
done
# the dirty flag alone keeps the image from opening read-write until -r
expect_fail "Image was not closed correctly" "$VDISK_IO" -f parallels -c "write 0 512" \
    unclean.hds

# --- resize (grow) ------------------------------------------------------------
cp base.hds g.hds
"$VDISK" resize -q -f parallels g.hds 24M || fail "vdisk resize 24M"
[ "$(qemu-img info --output=json g.hds | grep -c '"virtual-size": 25165824')" = 1 ] ||
    fail "qemu-img sees the wrong size: $(qemu-img info g.hds)"
qemu-io -f parallels -c "read -P 0x11 0 200k" -c "read -P 0x22 1M 64k" \
    -c "read -P 0x33 5M 130k" -c "read -P 0 8M 16M" g.hds >/dev/null ||
    fail "grown image reads wrong in qemu-io"
clean_both "grown" g.hds
qemu-io -f parallels -c "write -P 0x55 20M 100k" -c "write -P 0x66 $((24 * 1024 * 1024 - 512)) 512" \
    g.hds >/dev/null || fail "qemu-io write into the grown part"
"$VDISK_IO" -f parallels -r -c "read -P 0x55 20M 100k" \
    -c "read -P 0x66 $((24 * 1024 * 1024 - 512)) 512" g.hds >/dev/null ||
    fail "vdisk-io reads the grown part wrong"
clean_both "grown, written" g.hds
"$VDISK" resize -q -f parallels g.hds +1M || fail "vdisk resize +1M"
clean_both "grown twice" g.hds
expect_fail "Cannot shrink a parallels image" "$VDISK" resize -q -f parallels --shrink g.hds 8M
# 64k clusters: the BAT has room for 16368 entries before the data at 64k
expect_fail "Cannot grow this parallels image" "$VDISK" resize -q -f parallels g.hds 2G
clean_both "after refused resizes" g.hds
# version 1 image (BAT in sectors, 32-bit size): grows too
cp base.hds v1.hds
/usr/bin/python3 - v1.hds <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
tracks, bat = struct.unpack_from("<II", d, 28)
d[0:16] = b"WithoutFreeSpace"
for i in range(bat):
    e = struct.unpack_from("<I", d, 64 + 4 * i)[0]
    struct.pack_into("<I", d, 64 + 4 * i, e * tracks)
open(sys.argv[1], "wb").write(d)
PY
"$VDISK" resize -q -f parallels v1.hds 16M || fail "vdisk resize of a version 1 image"
qemu-io -f parallels -c "read -P 0x33 5M 130k" -c "read -P 0 8M 8M" -c "write -P 7 15M 4k" \
    v1.hds >/dev/null || fail "grown version 1 image reads wrong"
clean_both "grown v1" v1.hds

# --- discard ------------------------------------------------------------------
cp base.hds d.hds
# 0..192k: three whole clusters of the 200k written; 5M+64k..: one whole
# cluster inside the 130k; 1M+512: no whole cluster
"$VDISK_IO" -f parallels -c "discard 0 192k" -c "discard $((5 * 1024 * 1024 + 65536)) 64k" \
    -c "discard $((1024 * 1024 + 512)) 32k" d.hds >/dev/null || fail "vdisk-io discard"
a=$("$VDISK" map -f parallels --output=json d.hds)
b=$(qemu-img map -f parallels --output=json d.hds)
[ "$a" = "$b" ] || fail "map after discard differs:
$a
--- qemu-img:
$b"
qemu-io -f parallels -c "read -P 0 0 192k" -c "read -P 0x11 192k 8k" -c "read -P 0x22 1M 64k" \
    -c "read -P 0x33 5M 64k" -c "read -P 0 $((5 * 1024 * 1024 + 65536)) 64k" \
    -c "read -P 0x33 $((5 * 1024 * 1024 + 131072)) 2k" d.hds >/dev/null ||
    fail "discarded image reads wrong: $(qemu-io -f parallels -c 'read -P 0 0 192k' d.hds)"
clean_both "discarded" d.hds
qemu-io -f parallels -c "write -P 0x77 64k 4k" d.hds >/dev/null || fail "qemu-io after discard"
"$VDISK_IO" -f parallels -r -c "read -P 0x77 64k 4k" -c "read -P 0 0 64k" d.hds >/dev/null ||
    fail "rewritten discarded cluster reads wrong"
clean_both "discarded, rewritten" d.hds
echo ok
