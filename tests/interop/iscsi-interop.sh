#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The iscsi protocol driver against a real target (tgtd), side by side with
# QEMU 7.2's iscsi driver on the same URL: info, convert in and out (raw and
# qcow2 sources), compare, map on a thin-provisioned LUN, write zeroes and
# discard, a seeded random workload through vdisk-io checked with qemu-io
# reads, a 4 KiB-block LUN and a CD-ROM LUN.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/iscsi-common.bash"
need qemu-img qemu-io
"$VDISK" --help | grep -qw iscsi || skip "vdisk was built without libiscsi"
start_tgtd

M=$((1024 * 1024))
SEED=${VDISK_TEST_SEED:-$RANDOM}
echo "seed $SEED"

truncate -s 64M disk.img
qemu-io -f raw -c "write -q -P 0xab 0 1M" -c "write -q -P 0xcd 5M 64k" -c "write -q -P 0x11 63M 1M" \
    disk.img >/dev/null
truncate -s 32M thin.img
truncate -s 16M big.img
add_target 1 iqn.2026-11.test:disk disk.img
add_target 2 iqn.2026-11.test:thin thin.img
tgtctl --op update --mode logicalunit --tid 2 --lun 1 --params thin_provisioning=1 ||
    fail "thin provisioning"
tgtctl --op new --mode target --tid 3 -T iqn.2026-11.test:4k
tgtctl --op new --mode logicalunit --tid 3 --lun 1 -b big.img --blocksize=4096 ||
    fail "a 4 KiB LUN"
tgtctl --op bind --mode target --tid 3 -I ALL
tgtctl --op show --mode target | grep -q "Block size: 4096" || fail "tgtd made no 4 KiB LUN"
cp disk.img cd.iso
tgtctl --op new --mode target --tid 4 -T iqn.2026-11.test:cd
tgtctl --op new --mode logicalunit --tid 4 --lun 1 -b cd.iso --device-type cd || fail "a CD-ROM LUN"
tgtctl --op bind --mode target --tid 4 -I ALL

U=$(iscsi_url iqn.2026-11.test:disk)
T=$(iscsi_url iqn.2026-11.test:thin)
K=$(iscsi_url iqn.2026-11.test:4k)
C=$(iscsi_url iqn.2026-11.test:cd)

# --- info: the same document as qemu-img's, but for the filename ---------------
strip_name() { /usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("filename"); print(json.dumps(d, sort_keys=True))' "$1"; }
for url in "$U" "$T" "$K" "$C"; do
    "$VDISK" info --output=json -f raw "$url" > v.json || fail "vdisk info $url"
    qemu-img info --output=json -f raw "$url" > q.json
    [ "$(strip_name v.json)" = "$(strip_name q.json)" ] ||
        fail "info $url: vdisk $(strip_name v.json) qemu $(strip_name q.json)"
done
"$VDISK" info "$U" > info.txt
grep -q "virtual size: 64 MiB (67108864 bytes)" info.txt || fail "info: $(cat info.txt)"
grep -q "^image: $U\$" info.txt || fail "info names the URL: $(head -1 info.txt)"
# the --image-opts form names the node as QEMU does
"$VDISK" info --image-opts \
    "driver=raw,file.driver=iscsi,file.portal=127.0.0.1:$TGTD_PORT,file.target=iqn.2026-11.test:disk,file.lun=1" \
    > io.txt || fail "--image-opts"
# (qemu-img 7.2 prints exactly this: the raw node above is named after its
# file's options too)
grep -q "^image: json:{\"driver\": \"raw\", \"file\": {\"lun\": \"1\", \"portal\": \"127.0.0.1:$TGTD_PORT\", \"driver\": \"iscsi\"" io.txt ||
    fail "image-opts name: $(head -1 io.txt)"

# --- convert out: the same bytes as qemu-img's ----------------------------------------
"$VDISK" convert -f raw -O raw "$U" v.raw || fail "convert from iscsi"
qemu-img convert -f raw -O raw "$U" q.raw
same_content v.raw disk.img
same_content q.raw disk.img
"$VDISK" convert -f raw -O qcow2 "$U" v.qcow2 || fail "convert from iscsi to qcow2"
qemu-img compare -f qcow2 -F raw v.qcow2 disk.img >/dev/null || fail "qcow2 from iscsi differs"
"$VDISK" compare -f raw -F raw "$U" disk.img >/dev/null || fail "vdisk compare iscsi = file"
qemu-img compare -f raw -F raw "$U" disk.img >/dev/null || fail "qemu compare iscsi = file"

# --- convert in: vdisk writes, qemu reads; qemu writes, vdisk reads --------------------
qemu-img create -q -f qcow2 src.qcow2 32M
qemu-io -f qcow2 -c "write -q -P 0x42 0 3M" -c "write -q -P 0x43 20M 512k" -c "write -q -z 30M 1M" \
    src.qcow2 >/dev/null
"$VDISK" convert -n -f qcow2 -O raw src.qcow2 "$T" || fail "convert qcow2 into iscsi"
qemu-img compare -f qcow2 -F raw src.qcow2 "$T" >/dev/null || fail "qemu: iscsi differs from source"
"$VDISK" compare -f qcow2 -F raw src.qcow2 "$T" >/dev/null || fail "vdisk: iscsi differs from source"
qemu-img create -q -f raw src2.raw 32M
qemu-io -f raw -c "write -q -P 0x77 1M 2M" src2.raw >/dev/null
qemu-img convert -n -f raw -O raw src2.raw "$T"
"$VDISK" compare -f raw -F raw src2.raw "$T" >/dev/null || fail "vdisk: qemu's conversion differs"
"$VDISK" convert -f raw -O raw "$T" back.raw && same_content back.raw src2.raw

# --- map on the thin LUN agrees with qemu-img's -------------------------------------
norm_map() {
    /usr/bin/python3 -c '
import json, sys
out = []
for e in json.load(open(sys.argv[1])):
    k = (e["data"], e["zero"])
    if out and out[-1][2:] == k and out[-1][0] + out[-1][1] == e["start"]:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"], *k])
print(out)' "$1"
}
"$VDISK_IO" -f raw -c "discard -q 0 32M" -c "write -q -P 0x5a 4M 1M" -c "write -q -P 0x5b 12M 64k" "$T" \
    >/dev/null || fail "discard and write on the thin LUN"
"$VDISK" map --output=json -f raw "$T" > vmap.json || fail "vdisk map"
qemu-img map --output=json -f raw "$T" > qmap.json
[ "$(norm_map vmap.json)" = "$(norm_map qmap.json)" ] ||
    fail "map differs: vdisk $(norm_map vmap.json) qemu $(norm_map qmap.json)"
grep -q '"data": false' vmap.json || fail "no hole seen on the thin LUN: $(cat vmap.json)"
# zeroes through WRITE SAME, and reads of them
"$VDISK_IO" -f raw -c "write -q -z 4M 512k" -c "write -q -z -u 12M 64k" "$T" >/dev/null ||
    fail "write zeroes"
qemu-io -f raw -c "read -q -P 0 4M 512k" -c "read -q -P 0x5a 4608k 512k" -c "read -q -P 0 12M 64k" "$T" \
    > z.out
grep -q "verification failed" z.out && fail "zeroes: $(cat z.out)"

# --- a seeded random workload through vdisk-io, checked by qemu-io ------------------
/usr/bin/python3 - "$SEED" > work.txt <<'EOF'
import random, sys
r = random.Random(int(sys.argv[1]))
size, blk = 64 << 20, 512
model = {}  # block -> pattern
ops, checks = [], []
for i in range(120):
    n = r.choice([1, 3, 8, 64, 255, 2048])
    off = r.randrange(0, size // blk - n)
    kind = r.random()
    if kind < 0.75:
        pat = r.randrange(1, 256)
        ops.append("write -q -P %d %d %d" % (pat, off * blk, n * blk))
    else:
        pat = 0
        ops.append("write -q -z %d %d" % (off * blk, n * blk))
    for b in range(off, off + n):
        model[b] = pat
    if i % 40 == 39:
        ops.append("flush")
# runs of one pattern
runs, cur = [], None
for b in sorted(model):
    if cur and cur[0] + cur[1] == b and cur[2] == model[b]:
        cur[1] += 1
    else:
        cur = [b, 1, model[b]]
        runs.append(cur)
print("\n".join("-c\n" + o for o in ops))
print("===")
print("\n".join("-c\nread -q -P %d %d %d" % (p, b * blk, n * blk) for b, n, p in runs))
EOF
mapfile -t wops < <(sed '/^===$/,$d' work.txt)
mapfile -t rops < <(sed '1,/^===$/d' work.txt)
"$VDISK_IO" -f raw "${wops[@]}" "$U" > w.out 2>&1 || fail "workload (seed $SEED): $(tail -3 w.out)"
qemu-io -f raw -r "${rops[@]}" "$U" > r.out 2>&1 || fail "qemu-io reads (seed $SEED)"
grep -q "verification failed" r.out && fail "workload data differs (seed $SEED): $(grep -m3 -B1 failed r.out)"
# and the whole LUN equals what qemu-io reads of it into a file
qemu-img convert -f raw -O raw "$U" after-q.raw
"$VDISK" compare -f raw -F raw "$U" after-q.raw >/dev/null || fail "vdisk and qemu see different LUNs"

# --- a 4 KiB-block LUN: unaligned requests go through read-modify-write ---------------
"$VDISK_IO" -f raw -c "write -q -P 0x31 512 1536" -c "write -q -P 0x32 8191 2" -c "read -q -P 0x31 512 1536" \
    "$K" > k.out 2>&1 || fail "4k LUN I/O: $(cat k.out)"
grep -q "verification failed" k.out && fail "4k LUN data: $(cat k.out)"
qemu-io -f raw -c "read -q -P 0 0 512" -c "read -q -P 0x31 512 1536" -c "read -q -P 0 2048 6143" \
    -c "read -q -P 0x32 8191 2" -c "read -q -P 0 8193 4095" "$K" > kq.out 2>&1
grep -q "verification failed" kq.out && fail "4k LUN seen by qemu: $(cat kq.out)"

# --- a CD-ROM LUN: read-only ------------------------------------------------------
"$VDISK_IO" -r -f raw -c "read -q -P 0xab 0 1M" "$C" > c.out 2>&1 || fail "CD-ROM read: $(cat c.out)"
grep -q "verification failed" c.out && fail "CD-ROM data"
expect_fail "read-only" "$VDISK_IO" -f raw -c "write 0 2k" "$C"
echo ok
