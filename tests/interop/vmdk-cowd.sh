#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vmfsSparse ("COWD", ESX sparse) extents, read-only in vdisk.  No tool in
# Debian writes them, so a generator below writes images by the layout
# QEMU 7.2 reads (vmdk_open_vmfs_sparse): the header (magic COWD, version 1,
# flags, disk sectors, granularity, grain directory offset and entries, ...)
# in the first 4 sectors, a 32-bit grain directory of table sectors, grain
# tables of 4096 32-bit grain sectors; grain sizes of 1 to 128 sectors,
# several directory entries, whole tables missing, grains allocated (a
# repeated byte, random bytes, zeroes) or not, placed in shuffled order, a
# last grain cut by the capacity; a descriptor with createType "vmfsSparse"
# and a VMFSSPARSE extent line.  QEMU is the independent reader: qemu-img and
# vdisk convert each image to the generator's expected bytes, qemu-io and
# vdisk-io read -P the same patterns, info and map are equal.  Then the
# bare extent (QEMU reads its CID at offset 512), and hostile headers.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
cat >gen.py <<'PY'
# SPDX-License-Identifier: BSD-3-Clause
import random, struct, sys
seed = int(sys.argv[1]); out = sys.argv[2]
variant = sys.argv[3] if len(sys.argv) > 3 else "good"
r = random.Random(seed)
gran = r.choice([1, 8, 16, 128])       # sectors per grain
GTE = 4096                             # entries per grain table (fixed)
per_gt = GTE * gran                    # sectors one table covers
ngd = r.choice([3, 4, 5]) if gran < 128 else 2
cap = per_gt * (ngd - 1) + r.randrange(1, GTE + 1) * gran
if r.random() < 0.5:
    cap -= r.randrange(0, gran)        # the last grain cut by the capacity
grain = gran * 512
cap_bytes = cap * 512
ngrains = (cap + gran - 1) // gran
gd_sec = 4                             # after the 2048-byte header
gd_sectors = (ngd * 4 + 511) // 512
gt_sec = gd_sec + gd_sectors
expected = bytearray(cap_bytes)
present = [t for t in range(ngd) if t == 0 or r.random() >= 0.25]
alloc = [(t, g) for t in present for g in range(GTE)
         if t * GTE + g < ngrains and r.random() < 0.4]
grains_sec = gt_sec + len(present) * 32
tables = {t: [0] * GTE for t in present}
slots = list(range(len(alloc))); r.shuffle(slots)
f = bytearray((grains_sec + len(alloc) * gran) * 512)
pats = []
for (t, g), slot in zip(alloc, slots):
    sec = grains_sec + slot * gran
    tables[t][g] = sec
    k = r.random()
    if k < 0.4:
        b = r.randrange(1, 256)
        data = bytes([b]) * grain
    elif k < 0.5:
        b = 0
        data = bytes(grain)            # allocated, reads zeroes
    else:
        b = None
        data = r.randbytes(grain)
    f[sec * 512:sec * 512 + grain] = data
    lo = (t * GTE + g) * grain
    hi = min(lo + grain, cap_bytes)
    expected[lo:hi] = data[:hi - lo]
    if b is not None:
        pats.append((lo, hi - lo, b))
gd = [0] * ngd
for n, t in enumerate(present):
    gd[t] = gt_sec + n * 32
    off = gd[t] * 512
    f[off:off + GTE * 4] = struct.pack('<%dI' % GTE, *tables[t])
f[gd_sec * 512:gd_sec * 512 + ngd * 4] = struct.pack('<%dI' % ngd, *gd)
# magic, version, flags, disk sectors, granularity, GD offset, GD entries,
# file sectors, cylinders, heads, sectors per track
h = b'COWD' + struct.pack('<10I', 1, 3, cap, gran, gd_sec, ngd, len(f) // 512,
                          max(cap // (16 * 63), 1), 16, 63)
f[0:len(h)] = h
hostile = {
    "gran0": (16, 0),                       # grain size 0
    "granbig": (16, 0x200001),              # grains of more than 1 GiB
    "gdend": (20, len(f) // 512 + 1000),    # directory past the end
    "gdhuge": (24, 0xffffffff),             # absurd directory sizes
    "gdbig": (24, 32 * 1024 * 1024 + 1),
    "gdless": (24, ngd - 1),                # fewer entries than the capacity
    "gdmore": (24, ngd + 100),              # more: never looked at
    "cap0": (12, 0),
}
if variant in hostile:
    struct.pack_into('<I', f, *hostile[variant])
elif variant == "bare":
    d = b"# Disk DescriptorFile\nCID=1234abcd\nparentCID=ffffffff\n"
    f[512:512 + len(d)] = d
name = out.split("/")[-1]
open(out + "-cowd.vmdk", "wb").write(f)
desc = ('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
        'createType="vmfsSparse"\n\n# Extent description\nRW %d VMFSSPARSE "%s-cowd.vmdk"\n\n'
        '# The Disk Data Base\n#DDB\n\nddb.virtualHWVersion = "4"\n'
        'ddb.adapterType = "lsilogic"\n' % (cap, name))
open(out + ".vmdk", "w").write(desc)
open(out + ".expected", "wb").write(expected)
# a few pattern reads: whole grains of one byte, and a stretch of zeroes
r.shuffle(pats)
with open(out + ".pat", "w") as p:
    for lo, n, b in pats[:5]:
        p.write("%d %d %d\n" % (lo, n, b))
    z = next((i for i in range(0, cap_bytes - 65536, 65536)
              if not any(expected[i:i + 65536])), None)
    if z is not None:
        p.write("%d %d 0\n" % (z, 65536))
print(gran, ngd, cap, len(alloc))
PY
seed=${COWD_SEED:-$RANDOM}
echo "seed $seed"
for i in 0 1 2 3; do
    s=$((seed + i))
    /usr/bin/python3 gen.py "$s" "$PWD/s$i" >/dev/null
    qemu-img convert -O raw s$i.vmdk q$i.raw
    cmp q$i.raw s$i.expected || fail "QEMU does not read image $i as generated (seed $s)"
    "$VDISK" convert -O raw s$i.vmdk v$i.raw
    cmp v$i.raw s$i.expected || fail "vdisk reads image $i wrongly (seed $s)"
    [ "$(qemu-img map --output=json s$i.vmdk)" = "$("$VDISK" map --output=json s$i.vmdk)" ] ||
        fail "map differs (seed $s)"
    [ "$(qemu-img map s$i.vmdk)" = "$("$VDISK" map s$i.vmdk)" ] || fail "human map differs (seed $s)"
    [ "$(qemu-img info s$i.vmdk)" = "$("$VDISK" info s$i.vmdk)" ] || fail "info differs (seed $s)"
    [ "$(qemu-img info --output=json s$i.vmdk)" = "$("$VDISK" info --output=json s$i.vmdk)" ] ||
        fail "json info differs (seed $s)"
    while read -r off len pat; do
        out=$(qemu-io -r -c "read -P $pat $off $len" s$i.vmdk)
        case $out in *"verification failed"* | *failed*) fail "qemu-io: $out (seed $s)" ;; esac
        same_output "read -P $pat $off $len (seed $s)" qemu-io -r -c "read -P $pat $off $len" s$i.vmdk
    done <s$i.pat
    same_output "read -v across grains (seed $s)" qemu-io -r -c "read -v 4000 1200" s$i.vmdk
done

# the bare extent: QEMU takes its CID from offset 512 and names no create type
/usr/bin/python3 gen.py "$seed" "$PWD/b" bare >/dev/null
[ "$(qemu-img info b-cowd.vmdk)" = "$("$VDISK" info b-cowd.vmdk)" ] || fail "bare extent: info differs"
"$VDISK" convert -O raw b-cowd.vmdk vb.raw
cmp vb.raw b.expected || fail "bare extent read wrongly (seed $seed)"
[ "$(qemu-img map --output=json b-cowd.vmdk)" = "$("$VDISK" map --output=json b-cowd.vmdk)" ] ||
    fail "bare extent: map differs"
# without a CID there, both refuse it (QEMU: EINVAL without words)
expect_exit 1 "$VDISK" info s0-cowd.vmdk
qemu-img info s0-cowd.vmdk >/dev/null 2>&1 && fail "QEMU opens a bare extent without a CID"

# vdisk does not write COWD extents (QEMU 7.2 does): a clean refusal, the
# files untouched
sum=$(md5sum s0.vmdk s0-cowd.vmdk)
out=$("$VDISK_IO" -c "write -P 7 0 512" s0.vmdk 2>&1) || true
[ "$out" = "write failed: Permission denied" ] || fail "write to COWD: $out"
[ "$(md5sum s0.vmdk s0-cowd.vmdk)" = "$sum" ] || fail "a refused write changed the image"

# hostile headers, each with a line of its own from vdisk, in bounded time and memory
hostile() { # NAME: vdisk refuses to open it, one line, exit 1
    local v rc=0
    v=$(bounded "$VDISK" info "h-$1.vmdk" 2>&1) || rc=$?
    [ "$rc" = 1 ] || fail "$1: exit $rc: $v"
    [ "$(printf '%s\n' "$v" | wc -l)" = 1 ] || fail "$1: more than one line: $v"
    echo "$v"
}
for v in gran0 granbig gdend gdhuge gdbig gdless gdmore cap0; do
    /usr/bin/python3 gen.py "$seed" "$PWD/h-$v" "$v" >/dev/null
done
# QEMU's words and bounds
same_open_error h-granbig.vmdk h-gdhuge.vmdk h-gdbig.vmdk
hostile gdhuge | grep -q "L1 size too big" || fail "gdhuge"
# grain size 0: QEMU opens it and then divides by it (SIGFPE in convert);
# vdisk refuses
hostile gran0 | grep -q "invalid grain size of 0 sectors" || fail "gran0"
# a directory past the end: QEMU reads zeroes there (all unallocated);
# vdisk keeps its tables inside their file
hostile gdend | grep -q "lies past the end of the file" || fail "gdend"
# fewer directory entries than the capacity needs: reads past them fail
# in both, in the same place
[ "$(qemu-img info h-gdless.vmdk)" = "$("$VDISK" info h-gdless.vmdk)" ] || fail "gdless: info"
q=$(qemu-img convert -O raw h-gdless.vmdk q.raw 2>&1) && fail "gdless: QEMU converts it"
rc=0; v=$(bounded "$VDISK" convert -O raw h-gdless.vmdk v.raw 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "gdless: exit $rc: $v"
q=${q#qemu-img: }; v=${v#vdisk: }
[ "${q%%:*}" = "${v%%:*}" ] || fail "gdless: qemu-img says '$q', vdisk '$v'"
# more entries than needed, capacity 0: both read them as generated
for v in gdmore cap0; do
    qemu-img convert -O raw h-$v.vmdk q.raw
    bounded "$VDISK" convert -O raw h-$v.vmdk v.raw
    cmp q.raw v.raw || fail "$v: read differently"
    [ "$(qemu-img map --output=json h-$v.vmdk)" = "$("$VDISK" map --output=json h-$v.vmdk)" ] ||
        fail "$v: map differs"
done
exit 0
