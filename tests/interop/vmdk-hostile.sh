#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile vmdk descriptors (absurd extent sizes, json:/protocol/absolute
# extent names, thousands of extents, broken lines, missing CIDs) and sparse
# headers (grain size 0, capacity 2^60, grain directories past the end,
# broken footers, bad compressed grains): a clean error or a consistent
# result -- never a crash, a hang, more than 256 MiB, or a write to the image.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f vmdk good.vmdk 8M
qemu-io -c "write -P 1 0 20k" -c "write -P 2 3M 4k" good.vmdk >/dev/null
qemu-img create -q -f vmdk -o subformat=streamOptimized goods.sx 1M
qemu-io -c "write -P 3 0 64k" goods.sx >/dev/null
truncate -s 1M flat.raw
cp good.vmdk sp.sx

/usr/bin/python3 - <<'PY'
import struct
g = bytearray(open("good.vmdk", "rb").read())
st = bytearray(open("goods.sx", "rb").read())
def put(name, off, fmt, val, base=None):
    d = bytearray(base if base is not None else g)
    struct.pack_into(fmt, d, off, val)
    open(name, "wb").write(d)
# sparse header: version 4, flags 8, capacity 12, granularity 20, desc 28/36,
# num_gtes 44, rgd 48, gd 56, grain_offset 64, compress 77
for i, v in enumerate([0, 0xffffffff]):
    put("ver%d.vmdk" % i, 4, "<I", v)
for i, v in enumerate([0, 1, 0x200001, (1 << 64) - 1]):
    put("gran%d.vmdk" % i, 20, "<Q", v)
for i, v in enumerate([0, 1 << 60, (1 << 64) - 1, 1 << 32]):
    put("cap%d.vmdk" % i, 12, "<Q", v)
for i, v in enumerate([0, 513]):
    put("gtes%d.vmdk" % i, 44, "<I", v)
for i, v in enumerate([0, 1 << 40, (1 << 55), 16000]):
    put("gd%d.vmdk" % i, 56, "<Q", v)
    if i < 2:
        put("rgd%d.vmdk" % i, 48, "<Q", v)
for i, v in enumerate([(1 << 64) - 1]):
    put("grainoff%d.vmdk" % i, 64, "<Q", v)
for i, v in enumerate([(1 << 64) - 1, 0]):
    put("desc%d.vmdk" % i, 28, "<Q", v)
    put("descsz%d.vmdk" % i, 36, "<Q", v)
put("zg.vmdk", 8, "<I", 0x3 | 4)
put("comp.vmdk", 77, "<H", 1)
put("compmark.vmdk", 8, "<I", 0x3 | (1 << 16) | (1 << 17), put("x.tmp", 77, "<H", 1) or open("x.tmp","rb").read())
# grain directory / tables pointing past the end or at the header
gd = struct.unpack_from("<Q", g, 56)[0] * 512
gt = struct.unpack_from("<I", g, gd)[0] * 512
for i, v in enumerate([0xffffffff, 1, 0x7fffffff]):
    if i == 0:
        put("gde%d.vmdk" % i, gd, "<I", v)
    put("gte%d.vmdk" % i, gt, "<I", v)
# capacity 0 with the embedded descriptor as the real one
put("cap0desc.vmdk", 12, "<Q", 0)
# streams: GD at end without a footer, bad markers, bad deflate data
put("s_gdend.vmdk", 56, "<Q", (1 << 64) - 1, st)
gd = struct.unpack_from("<Q", st, 56)[0] * 512
gt = struct.unpack_from("<I", st, gd)[0] * 512
grain = struct.unpack_from("<I", st, gt)[0] * 512
put("s_marksize0.vmdk", grain + 8, "<I", 0, st)
put("s_marksizebig.vmdk", grain + 8, "<I", 0xffffffff, st)
put("s_data.vmdk", grain + 12, "<Q", 0x0123456789abcdef, st)
put("s_grain.vmdk", gt, "<I", 0xfffffff0, st)
d = bytearray(st) + bytes(1536); d[-1536 + 12] = 3; d[-1024:-1024 + 4] = b"KDMV"
struct.pack_into("<Q", d, 56, (1 << 64) - 1)
open("s_footer.vmdk", "wb").write(d)

# descriptors
def desc(name, extents, extra="", ctype="monolithicFlat", cid="CID=12345678\nparentCID=ffffffff\n"):
    open(name, "w").write("# Disk DescriptorFile\nversion=1\n" + cid +
                          'createType="%s"\n%s\n# Extent description\n%s\n' % (ctype, extra, extents))
desc("d_ok.vmdk", 'RW 2048 FLAT "flat.raw" 0')
desc("d_huge.vmdk", 'RW 9223372036854775807 FLAT "flat.raw" 0')
desc("d_huge2.vmdk", 'RW 99999999999999999999999 FLAT "flat.raw" 0')
desc("d_big.vmdk", 'RW 4611686018427387904 FLAT "flat.raw" 0\nRW 4611686018427387904 FLAT "flat.raw" 0')
desc("d_offset.vmdk", 'RW 2048 FLAT "flat.raw" 18014398509481983')
desc("d_json.vmdk", 'RW 2048 FLAT "json:{driver:null-co}" 0')
desc("d_jsonq.vmdk", 'RW 2048 FLAT "json:{\\"driver\\":\\"null-co\\"}" 0')
desc("d_nbd.vmdk", 'RW 2048 FLAT "nbd://127.0.0.1:1/x" 0')
desc("d_passwd.vmdk", 'RW 2048 FLAT "/etc/passwd" 0')
desc("d_passwd_sparse.vmdk", 'RW 2048 SPARSE "/etc/passwd"')
desc("d_passwd_se.vmdk", 'RW 2048 SESPARSE "/etc/passwd"')
desc("d_dotdot.vmdk", 'RW 2048 FLAT "../../../../../../etc/passwd" 0')
desc("d_many.vmdk", "\n".join('RW 8 FLAT "flat.raw" %d' % i for i in range(5000)))
desc("d_many2.vmdk", "\n".join('RW 8 FLAT "flat.raw" %d' % i for i in range(3000)))
desc("d_manysparse.vmdk", "\n".join('RW 8 SPARSE "sp.sx"' for i in range(300)), ctype="twoGbMaxExtentSparse")
desc("d_zero.vmdk", "RW 100000000000 ZERO\nRW 2048 FLAT \"flat.raw\" 0")
desc("d_noquote.vmdk", 'RW 2048 FLAT "flat.raw 0')
desc("d_nooffset.vmdk", 'RW 2048 FLAT "flat.raw"')
desc("d_badtype.vmdk", 'RW 2048 FOO "flat.raw"')
desc("d_noext.vmdk", '')
desc("d_empty_name.vmdk", 'RW 2048 FLAT "" 0')
desc("d_dir.vmdk", 'RW 2048 FLAT "." 0')
desc("d_self.vmdk", 'RW 2048 SPARSE "d_self.vmdk"')
desc("d_missing.vmdk", 'RW 2048 SPARSE "nonexistent.vmdk"')
desc("d_nocid.vmdk", 'RW 2048 FLAT "flat.raw" 0', cid="")
desc("d_badcid.vmdk", 'RW 2048 FLAT "flat.raw" 0', cid="CID=zz\nparentCID=\n")
desc("d_ctype.vmdk", 'RW 2048 FLAT "flat.raw" 0', ctype="bogus")
desc("d_parent_json.vmdk", 'RW 2048 SPARSE "sp.sx"', extra='parentFileNameHint="json:{}"', ctype="twoGbMaxExtentSparse")
desc("d_long.vmdk", 'RW 2048 FLAT "%s" 0' % ("a" * 100000))
open("d_hugefile.vmdk", "w").write("version=1\n" + "#" * (3 << 20) + "\n")
open("d_binary.vmdk", "wb").write(b"version=1\n" + bytes(range(256)) * 100)
PY
rm -f x.tmp

# what QEMU 7.2 reads, vdisk reads too, for the well-formed ones
"$VDISK" compare -q d_ok.vmdk flat.raw || fail "d_ok"
"$VDISK" info d_zero.vmdk | grep -q "virtual size: 46.6 TiB" || fail "ZERO extent size"
"$VDISK_IO" -c "read -P 0 51199999488 512" d_zero.vmdk >/dev/null || fail "ZERO extent read"
# names that would leave the file system are refused with a message
for f in d_json d_nbd; do
    expect_fail "refusing to follow" "$VDISK" info $f.vmdk
done
expect_fail "more than 4096 extents" "$VDISK" info d_many.vmdk
expect_fail "not a VMDK sparse extent" "$VDISK" info d_passwd_sparse.vmdk
expect_fail "L1 size too big" "$VDISK" info cap1.vmdk
expect_fail "L1 entry size is invalid" "$VDISK" info gran0.vmdk
# QEMU's words where its iotest 059 matches them: the message after the
# program name is qemu-img's
same_open_error ver1.vmdk gran0.vmdk gran2.vmdk gran3.vmdk gtes0.vmdk gtes1.vmdk \
    grainoff0.vmdk s_gdend.vmdk
# a VMFS extent takes no offset (QEMU: "Invalid extent line: LINE"; QEMU
# names the empty line instead when one comes right before: its sscanf
# skips newlines; vdisk always names the extent line)
printf '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="vmfs"\n\n# Extent description\nRW 2048 VMFS "flat.raw" 1\n' > vmfsoff.vmdk
same_open_error vmfsoff.vmdk
# relative extent names resolve through a filter above the descriptor
# (blkdebug), as QEMU's; the descriptor is in a directory of its own
mkdir -p sub && qemu-img create -q -f vmdk -o subformat=monolithicFlat sub/mf.vmdk 1M
qemu-io -f vmdk -c "write -P 0x5c 4k 4k" sub/mf.vmdk >/dev/null
"$VDISK_IO" --image-opts -c "read -P 0x5c 4k 4k" \
    "driver=vmdk,file.driver=blkdebug,file.image.filename=sub/mf.vmdk" | grep -q "^read 4096" ||
    fail "relative extent under blkdebug"
expect_fail "past the end" "$VDISK" info gd1.vmdk
# a read-write open changes nothing when it fails
for f in gran0 gd1 d_json d_many; do
    sum=$(md5sum < $f.vmdk)
    rc=0; bounded "$VDISK_IO" -c "write 0 512" $f.vmdk >/dev/null 2>&1 || rc=$?
    [ "$rc" -lt 124 ] || fail "write to $f: exit $rc"
    [ "$(md5sum < $f.vmdk)" = "$sum" ] || fail "a refused write changed $f"
done
# stale: vdisk check finds what QEMU's check finds
# (a grain table past the end: QEMU reads zeroes there and finds nothing,
# vdisk reports it as a corruption and fails reads from it)
for f in gte0 gte2; do
    q=0; qemu-img check $f.vmdk >/dev/null 2>&1 || q=$?
    v=0; "$VDISK" check $f.vmdk >/dev/null 2>&1 || v=$?
    [ $q = 0 ] && [ $v != 0 ] && fail "vdisk check fails $f, QEMU's passes"
done

hostile_sweep vmdk 60
echo ok
