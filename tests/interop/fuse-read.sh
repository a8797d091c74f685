#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk fuse, reading: the FUSE file of qcow2 (plain, compressed, with a
# backing file), vpc, qed and raw images is byte-identical to qemu-img
# convert -O raw; st_size is the virtual size; SEEK_DATA/SEEK_HOLE agree
# with qemu-img map; --image-opts, -f, -r and -U; the image stays unchanged.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/fuse-common.bash"

# data at seeded random places, with zeroes and patterns qemu-io writes
seed_image() { # FMT FILE
    local f=$1 file=$2 i off len args=()
    RANDOM=4242
    for i in $(seq 1 24); do
        off=$(( (RANDOM * 7919 + RANDOM) % (30 * 1024) * 1024 ))
        len=$(( (RANDOM % 96 + 1) * 1024 ))
        case $((i % 4)) in
            0) args+=(-c "write -q -z $off $len") ;;
            *) args+=(-c "write -q -P $((RANDOM % 255 + 1)) $off $len") ;;
        esac
    done
    qemu-io -f "$f" "${args[@]}" "$file" >/dev/null
}

# data_ranges_fuse MNT: "start end" of each data range by SEEK_DATA/SEEK_HOLE
data_ranges_fuse() {
    /usr/bin/python3 - "$1" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
pos = 0
while pos < size:
    try:
        d = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as e:
        if e.errno == 6:  # ENXIO: no data after pos
            break
        raise
    h = os.lseek(fd, d, os.SEEK_HOLE)
    print(d, h)
    pos = h
EOF
}

# data_ranges_map IMG FMT: the same from qemu-img map (zero=false), merged
data_ranges_map() {
    qemu-img map -f "$2" --output=json "$1" | /usr/bin/python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    if e["zero"]:
        continue
    s, t = e["start"], e["start"] + e["length"]
    if out and out[-1][1] == s:
        out[-1][1] = t
    else:
        out.append([s, t])
for s, t in out:
    print(s, t)'
}

check_export() { # FMT IMG ARGS... (the vdisk fuse arguments but the mount point)
    local f=$1 img=$2; shift 2
    local sum
    sum=$(md5sum < "$img")
    qemu-img convert -f "$f" -O raw "$img" want.raw
    start_fuse mnt "$@"
    local size
    size=$(qemu-img info -U -f "$f" --output=json "$img" |
        /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    [ "$(stat -c %s mnt)" = "$size" ] || fail "$img: st_size $(stat -c %s mnt), want $size"
    cmp mnt want.raw || fail "$img ($*): FUSE file differs from qemu-img convert"
    # a second, concurrent reader sees the same
    dd if=mnt bs=64k status=none | cmp - want.raw || fail "$img: dd read differs"
    # SEEK_DATA / SEEK_HOLE against qemu-img map
    data_ranges_fuse mnt > fuse.ranges
    data_ranges_map "$img" "$f" > map.ranges
    cmp -s fuse.ranges map.ranges ||
        fail "$img: SEEK_DATA/SEEK_HOLE differ from qemu-img map: $(diff fuse.ranges map.ranges | head)"
    stop_fuse mnt
    [ "$(md5sum < "$img")" = "$sum" ] || fail "$img changed by a read-only use"
}

# qcow2
qemu-img create -q -f qcow2 a.qcow2 32M
seed_image qcow2 a.qcow2
check_export qcow2 a.qcow2 -r a.qcow2
check_export qcow2 a.qcow2 -r -f qcow2 a.qcow2
check_export qcow2 a.qcow2 -r --image-opts "driver=qcow2,file.driver=file,file.filename=a.qcow2"
check_export qcow2 a.qcow2 -r -U -t none --aio threads a.qcow2
check_export qcow2 a.qcow2 -r --threads 1 a.qcow2

# QEMU's own FUSE export of the same image shows the same bytes and holes
need qemu-storage-daemon
: > qmnt
qemu-storage-daemon --blockdev "node-name=n0,driver=qcow2,read-only=on,file.driver=file,file.filename=a.qcow2,file.locking=off" \
    --export "type=fuse,id=e0,node-name=n0,mountpoint=$PWD/qmnt,writable=off" 2>qsd.err &
qsd_pid=$!
FUSE_PIDS+=("$qsd_pid")
FUSE_MOUNTS+=(qmnt)
for i in $(seq 1 2400); do
    is_mounted qmnt && break
    running "$qsd_pid" || fail "qemu-storage-daemon exited: $(cat qsd.err)"
    sleep 0.05
done
is_mounted qmnt || fail "qemu-storage-daemon never mounted"
start_fuse mnt -r a.qcow2
cmp mnt qmnt || fail "vdisk fuse and qemu-storage-daemon's FUSE export differ"
data_ranges_fuse mnt > ours.ranges
data_ranges_fuse qmnt > qemu.ranges
cmp -s ours.ranges qemu.ranges ||
    fail "SEEK_DATA/SEEK_HOLE differ from QEMU's export: $(diff ours.ranges qemu.ranges | head)"
stop_fuse mnt
kill "$qsd_pid"
wait_exit "$qsd_pid"
wait_unmounted qmnt

# compressed qcow2
qemu-img convert -c -f qcow2 -O qcow2 a.qcow2 c.qcow2
check_export qcow2 c.qcow2 -r c.qcow2

# a backing chain: overlay data over the base, holes through both
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c "write -q -P 0x5a 4M 1M" -c "write -q -z 8M 64k" top.qcow2 >/dev/null
check_export qcow2 top.qcow2 -r top.qcow2

# vpc, qed, raw (raw SEEK_HOLE needs a sparse file: qemu-img convert makes one)
qemu-img convert -f qcow2 -O vpc a.qcow2 a.vpc
check_export vpc a.vpc -r -f vpc a.vpc
qemu-img convert -f qcow2 -O qed a.qcow2 a.qed
check_export qed a.qed -r a.qed
qemu-img convert -f qcow2 -O raw a.qcow2 a.raw
check_export raw a.raw -r -f raw a.raw

# an encrypted qcow2 (LUKS) with its secret from --object
O="--object secret,id=s0,data=fusepw"
"$VDISK" create -q -f qcow2 $O -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 \
    enc.qcow2 8M
qemu-io $O --image-opts "driver=qcow2,encrypt.key-secret=s0,file.filename=enc.qcow2" \
    -c "write -q -P 0x42 1M 3M" >/dev/null
qemu-img convert $O --image-opts "driver=qcow2,encrypt.key-secret=s0,file.filename=enc.qcow2" \
    -O raw enc.raw
start_fuse mnt -r $O --image-opts "driver=qcow2,encrypt.key-secret=s0,file.filename=enc.qcow2"
cmp mnt enc.raw || fail "encrypted qcow2 export differs"
stop_fuse mnt

# over a protocol: the qcow2 served by qemu-nbd, exported by vdisk fuse
need qemu-nbd
rm -f nbd.sock
qemu-nbd -r -t -f qcow2 -k "$PWD/nbd.sock" a.qcow2 2>nbd.err &
FUSE_PIDS+=($!)
nbd_pid=$!
for i in $(seq 1 2400); do
    [ -S nbd.sock ] && break
    running "$nbd_pid" || fail "qemu-nbd exited: $(cat nbd.err)"
    sleep 0.05
done
[ -S nbd.sock ] || fail "qemu-nbd never listened"
qemu-img convert -f qcow2 -O raw a.qcow2 want.raw
start_fuse mnt -r -f raw "nbd+unix:///?socket=$PWD/nbd.sock"
cmp mnt want.raw || fail "export of an NBD source differs"
stop_fuse mnt
kill "$nbd_pid"

# st_blocks follows the allocation (a sparse image shows fewer blocks)
qemu-img create -q -f qcow2 empty.qcow2 1G
start_fuse mnt -r empty.qcow2
[ "$(stat -c %s mnt)" = $((1024 * 1024 * 1024)) ] || fail "1G size"
blocks=$(stat -c %b mnt)
[ "$blocks" -gt 0 ] && [ "$blocks" -lt 4096 ] || fail "st_blocks of an empty 1G qcow2: $blocks"
cmp -n 1M mnt /dev/zero || fail "empty image does not read zeroes"
stop_fuse mnt
echo "fuse-read: ok"
