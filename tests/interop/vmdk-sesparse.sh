#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# seSparse (ESXi) extents, read-only as in QEMU.  No tool in Debian writes
# them, so a generator below writes images by the layout QEMU 7.2 reads
# (const and volatile headers, a 64-bit grain directory of table numbers,
# grain table entries unallocated / unmapped / zero / allocated with the
# grain number split over the entry's bits, grains in shuffled order, whole
# tables missing), with a seeded random content; QEMU is the independent
# reader: qemu-img and vdisk convert each image to the generator's expected
# bytes, and info and map are equal.  A read-write open is refused and a
# journal that needs a replay too, in QEMU's words.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
cat >gen.py <<'PY'
# SPDX-License-Identifier: BSD-3-Clause
import random, struct, sys
seed = int(sys.argv[1]); out = sys.argv[2]
r = random.Random(seed)
MB = 1024 * 1024
cap_bytes = r.choice([16, 40, 64]) * MB
cap = cap_bytes // 512
grain = 4096
ngrains = cap_bytes // grain
ntables = (ngrains + 4095) // 4096
gd_sectors = 1
hdr_sec, vol_sec, gd_sec = 0, 1, 2
gt_sec = 8
gt_sectors = ntables * 64
grains_sec = gt_sec + gt_sectors
expected = bytearray(cap_bytes)
gd = [0] * (gd_sectors * 512 // 8)
tables = []
alloc = []  # (idx, data)
next_idx = list(range(ngrains)); r.shuffle(next_idx)
ti = 0
for t in range(ntables):
    if r.random() < 0.2:
        continue  # whole table unallocated
    gd[t] = 0x1000000000000000 | ti
    gt = [0] * 4096
    for g in range(4096):
        gi = t * 4096 + g
        if gi >= ngrains:
            break
        k = r.random()
        if k < 0.5:
            continue
        elif k < 0.6:
            gt[g] = 0x1000000000000000
        elif k < 0.7:
            gt[g] = 0x2000000000000000
        else:
            idx = next_idx.pop()
            data = bytes([r.randrange(1, 256)]) * grain if r.random() < 0.5 else r.randbytes(grain)
            gt[g] = 0x3000000000000000 | ((idx & 0xfff) << 48) | (idx >> 12)
            alloc.append((idx, data))
            expected[gi * grain:(gi + 1) * grain] = data
    tables.append(gt)
    ti += 1
max_idx = max([i for i, _ in alloc], default=-1) + 1
h = bytearray(512)
struct.pack_into('<QQQQQQ', h, 0, 0xcafebabe, 0x0000000200000001, cap, 8, 64, 0)
fields = [vol_sec, 1, 0, 0, 0, 0, gd_sec, gd_sectors, gt_sec, gt_sectors, 0, 0, 0, 0,
          grains_sec, max_idx * 8]
struct.pack_into('<16Q', h, 80, *fields)
v = bytearray(512)
struct.pack_into('<QQQQ', v, 0, 0xcafecafe, ti, 0, 0)
f = bytearray((grains_sec + max_idx * 8) * 512)
f[0:512] = h
f[512:1024] = v
f[gd_sec * 512:gd_sec * 512 + len(gd) * 8] = struct.pack('<%dQ' % len(gd), *gd)
for n, gt in enumerate(tables):
    off = (gt_sec + n * 64) * 512
    f[off:off + 4096 * 8] = struct.pack('<4096Q', *gt)
for idx, data in alloc:
    off = (grains_sec + idx * 8) * 512
    f[off:off + grain] = data
open(out + "-sesparse.vmdk", "wb").write(f)
desc = ('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="seSparse"\n\n'
        '# Extent description\nRW %d SESPARSE "%s-sesparse.vmdk"\n\n# The Disk Data Base\n#DDB\n\n'
        'ddb.virtualHWVersion = "14"\n' % (cap, out.split("/")[-1]))
open(out + ".vmdk", "w").write(desc)
open(out + ".expected", "wb").write(expected)
PY
seed=${SESPARSE_SEED:-$RANDOM}
echo "seed $seed"
for i in 0 1 2; do
    s=$((seed + i))
    /usr/bin/python3 gen.py "$s" "$PWD/s$i"
    qemu-img convert -O raw s$i.vmdk q$i.raw
    cmp q$i.raw s$i.expected || fail "QEMU does not read image $i as generated (seed $s)"
    "$VDISK" convert -O raw s$i.vmdk v$i.raw
    cmp v$i.raw s$i.expected || fail "vdisk reads image $i wrongly (seed $s)"
    [ "$(qemu-img map --output=json s$i.vmdk)" = "$("$VDISK" map --output=json s$i.vmdk)" ] ||
        fail "map differs (seed $s)"
    [ "$(qemu-img info s$i.vmdk)" = "$("$VDISK" info s$i.vmdk)" ] || fail "info differs (seed $s)"
    same_output "qemu-io read-only read (seed $s)" qemu-io -r -c "read -v 4096 512" s$i.vmdk
done
# QEMU opens seSparse read-only only
same_output "read-write open" qemu-io -c "write 0 4k" s0.vmdk
# a journal waiting for a replay (volatile header's replay_journal)
cp s0-sesparse.vmdk d-sesparse.vmdk
sed 's/s0-sesparse/d-sesparse/' s0.vmdk >d.vmdk
printf '\001' | dd of=d-sesparse.vmdk bs=1 seek=$((512 + 24)) conv=notrunc 2>/dev/null
same_open_error d.vmdk
exit 0
