#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Images made by the native tools of other products: the sample images
# that QEMU's qemu-iotests keep (each made by the format's own tool, per
# their README: Hyper-V's vhd and vhdx, one with a metadata log left to
# replay, Disk2VHD, VMware ESXi's version-3 vmdk, Virtual PC, Parallels,
# bochs, cloop, dmg).  They are QEMU's files, so they are not copied into
# this tree: the test reads them from the QEMU source that `make iotests`
# unpacks (scripts/iotests.sh; IOTESTS_CACHE) and skips without it.
# Every image reads in vdisk as in qemu-img: virtual size and format from
# `info --output=json`, the same map, the same bytes converted to raw.
# The vhdx with a pending log is refused read-only by both, and replayed
# by a read-write open in both to the same bytes.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io bzip2

dir=
for d in "${IOTESTS_CACHE:-/var/cache/vdisk-iotests}"/qemu-*/tests/qemu-iotests/sample_images \
    "${XDG_CACHE_HOME:-$HOME/.cache}"/vdisk-iotests/qemu-*/tests/qemu-iotests/sample_images; do
    [ -d "$d" ] && dir=$d
done
[ -n "$dir" ] || skip "no QEMU source unpacked (make iotests fetches it)"

# FILE FORMAT: the images this test knows (the others are fuzzer finds or
# need a script of their own)
images="hyperv2012r2-dynamic.vhd:vpc virtualpc-dynamic.vhd:vpc d2v-zerofilled.vhd:vpc
iotest-dynamic-1G.vhdx:vhdx test-disk2vhd.vhdx:vhdx iotest-version3.vmdk:vmdk
parallels-v1:parallels parallels-v2:parallels empty.bochs:bochs
simple-pattern.cloop:cloop grub_mbr.raw:raw"
# dmg: Debian's qemu-img has no dmg-bz2 module, so QEMU cannot be the
# reference for simple-dmg.dmg (docs/readonly-formats.md)

jq_size_fmt() { # JSON on stdin -> "virtual-size format"
    /usr/bin/python3 -c 'import json, sys; d = json.load(sys.stdin); print(d["virtual-size"], d["format"])'
}

n=0
for e in $images; do
    f=${e%%:*} fmt=${e##*:}
    [ -f "$dir/$f.bz2" ] || fail "missing sample image $f.bz2 in $dir"
    bzip2 -dc "$dir/$f.bz2" >"$f"
    chmod a-w "$f"
    q=$(qemu-img info -f "$fmt" --output=json "$f" | jq_size_fmt) || fail "$f: qemu-img info"
    v=$("$VDISK" info -f "$fmt" --output=json "$f" | jq_size_fmt) || fail "$f: vdisk info"
    [ "$q" = "$v" ] || fail "$f: info says '$v', qemu-img '$q'"
    qemu-img map -f "$fmt" --output=json "$f" >map.q || fail "$f: qemu-img map"
    "$VDISK" map -f "$fmt" --output=json "$f" >map.v || fail "$f: vdisk map"
    # host offsets of the read-only formats' compressed chunks mean
    # nothing comparable; allocation and zero flags must agree
    strip() { sed -E 's/, *"offset": *[0-9]+//' "$1"; }
    diff <(strip map.q) <(strip map.v) >/dev/null || {
        diff <(strip map.q) <(strip map.v) | head -20
        fail "$f: map differs from qemu-img's"
    }
    qemu-img convert -f "$fmt" -O raw "$f" out.q || fail "$f: qemu-img convert"
    "$VDISK" convert -f "$fmt" -O raw "$f" out.v || fail "$f: vdisk convert"
    # not cmp: the Virtual PC disks are 127 GiB, nearly all holes
    qemu-img compare -q -f raw -F raw out.q out.v || fail "$f: content differs from qemu-img's"
    rm -f out.q out.v
    n=$((n + 1))
done

# Hyper-V's image with a metadata log to replay (iotest 070's sample)
f=iotest-dirtylog-10G-4M.vhdx
bzip2 -dc "$dir/$f.bz2" >q.vhdx
cp q.vhdx v.vhdx
expect_fail "needs to be replayed" qemu-img info -f vhdx -U q.vhdx
expect_fail "needs to be replayed" "$VDISK" info -f vhdx -U v.vhdx
# a read-write open replays the log; then both read the same
qemu-io -f vhdx -c "read -q 0 512" q.vhdx >/dev/null || fail "qemu-io: replay"
"$VDISK_IO" -f vhdx -c "read -q 0 512" v.vhdx >/dev/null || fail "vdisk-io: replay"
qemu-img check -f vhdx v.vhdx >/dev/null || fail "$f: qemu-img check after vdisk's replay"
qemu-img compare -f vhdx -F vhdx q.vhdx v.vhdx || fail "$f: replays differ"
qemu-img convert -f vhdx -O raw q.vhdx out.q
"$VDISK" convert -f vhdx -O raw v.vhdx out.v
qemu-img compare -q -f raw -F raw out.q out.v || fail "$f: content differs from qemu-img's"
n=$((n + 1))
echo "ok: $n images made by other tools read as in qemu-img"
