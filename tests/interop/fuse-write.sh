#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk fuse, writing: seeded random writes, punched holes and zeroed ranges
# through the mount land exactly as the same operations on a plain raw file
# (qemu-img compare after unmount, qemu-img check clean, no dirty bit);
# punched holes are deallocated in the qcow2; writes past the end fail on a
# fixed-size export and grow a --growable one; truncate resizes only a
# growable export; writethrough and cache=none exports; a vpc image too.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/fuse-common.bash"
need fallocate truncate

M=$((1024 * 1024))

# random_ops SEED COUNT SIZE FILE...: the same seeded sequence of pwrite,
# punch-hole and zero-range on every FILE (each opened without O_TRUNC)
random_ops() {
    /usr/bin/python3 - "$@" <<'EOF'
import ctypes, ctypes.util, os, random, sys
seed, count, size = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE = 1, 2, 0x10
for path in sys.argv[4:]:
    rnd = random.Random(seed)
    fd = os.open(path, os.O_RDWR)
    for i in range(count):
        kind = rnd.random()
        off = rnd.randrange(0, size)
        ln = rnd.choice([1, 511, 512, 4096, 65536, 65537, 200000, 1 << 20])
        ln = min(ln, size - off)
        if kind < 0.8:
            data = rnd.randbytes(ln)
            if os.pwrite(fd, data, off) != ln:
                sys.exit("short write on %s" % path)
        else:
            mode = PUNCH_HOLE | KEEP_SIZE if kind < 0.9 else ZERO_RANGE | KEEP_SIZE
            if libc.fallocate(fd, mode, off, ln) != 0:
                sys.exit("fallocate %x on %s: %s" % (mode, path, os.strerror(ctypes.get_errno())))
        if i % 37 == 0:
            os.fsync(fd)
    os.close(fd)
EOF
}

# --- qcow2: random writes, holes, zeroes ----------------------------------
qemu-img create -q -f qcow2 t.qcow2 48M
qemu-io -f qcow2 -c "write -q -P 0x33 0 48M" t.qcow2 >/dev/null
qemu-img convert -f qcow2 -O raw t.qcow2 ref.raw
start_fuse mnt t.qcow2
random_ops 1234 300 $((48 * M)) mnt ref.raw || fail "random operations failed"
cmp mnt ref.raw || fail "mount differs from the reference while mounted"
# a punched hole reads as zeroes and is deallocated in the image
fallocate -p -o $((40 * M)) -l $((4 * M)) mnt
fallocate -p -o $((40 * M)) -l $((4 * M)) ref.raw
cmp -n 4M -i $((40 * M)):0 mnt /dev/zero || fail "punched hole does not read as zeroes"
stop_fuse mnt
check_clean t.qcow2
qemu-img compare -f qcow2 -F raw t.qcow2 ref.raw || fail "qcow2 differs from the reference"
qemu-img map -f qcow2 --output=json t.qcow2 | /usr/bin/python3 -c '
import json, sys
M = 1 << 20
for e in json.load(sys.stdin):
    s, t = e["start"], e["start"] + e["length"]
    if s < 44 * M and t > 40 * M and e["data"]:
        sys.exit("punched range still allocated: %r" % e)' || fail "punch hole did not deallocate"

# --discard=ignore: a punched hole still reads as zeroes
start_fuse mnt --discard ignore t.qcow2
random_ops 99 40 $((48 * M)) mnt ref.raw
stop_fuse mnt
check_clean t.qcow2
qemu-img compare -f qcow2 -F raw t.qcow2 ref.raw || fail "qcow2 (discard=ignore) differs"

# cache=writethrough and cache=none with native aio
start_fuse mnt -t writethrough t.qcow2
random_ops 7 60 $((48 * M)) mnt ref.raw
stop_fuse mnt
start_fuse mnt -t none --aio native t.qcow2
random_ops 8 60 $((48 * M)) mnt ref.raw
# O_DIRECT through the mount
dd if=ref.raw of=mnt bs=64k count=16 skip=3 seek=3 iflag=direct oflag=direct conv=notrunc status=none ||
    fail "O_DIRECT dd failed"
stop_fuse mnt
check_clean t.qcow2
qemu-img compare -f qcow2 -F raw t.qcow2 ref.raw || fail "qcow2 (writethrough / none) differs"

# --- the size of a fixed-size export does not change ----------------------
start_fuse mnt t.qcow2
out=$(dd if=/dev/zero of=mnt bs=64k count=1 seek=$((48 * 16)) conv=notrunc 2>&1) &&
    fail "write past the end of a fixed-size export succeeded"
case "$out" in *"No space left"*) ;; *) fail "write past the end: $out" ;; esac
# a write crossing the end is cut at the end
/usr/bin/python3 -c "
import os, sys
fd = os.open('mnt', os.O_WRONLY)
n = os.pwrite(fd, b'\x77' * 8192, 48 * 1048576 - 4096)
sys.exit(0 if n == 4096 else 'crossing write wrote %d' % n)" || fail "write across the end"
/usr/bin/python3 -c "
import os
fd = os.open('ref.raw', os.O_WRONLY)
os.pwrite(fd, b'\x77' * 4096, 48 * 1048576 - 4096)"
expect_fail "Operation not permitted" truncate -s 64M mnt
# O_TRUNC is ignored as on a block device
dd if=/dev/zero of=mnt bs=4k count=1 status=none || fail "dd without notrunc failed"
dd if=/dev/zero of=ref.raw bs=4k count=1 conv=notrunc status=none
[ "$(stat -c %s mnt)" = $((48 * M)) ] || fail "fixed-size export changed size: $(stat -c %s mnt)"
stop_fuse mnt
check_clean t.qcow2
qemu-img compare -f qcow2 -F raw t.qcow2 ref.raw || fail "qcow2 differs after the size tests"

# --- growable ------------------------------------------------------------------
qemu-img create -q -f qcow2 g.qcow2 1M
start_fuse mnt --growable g.qcow2
printf 'grown' | dd of=mnt bs=1 seek=$((5 * M)) conv=notrunc status=none || fail "growing write failed"
# qcow2 sizes are multiples of 512: the image grows to the next one
[ "$(stat -c %s mnt)" = $((5 * M + 512)) ] || fail "growable size after write: $(stat -c %s mnt)"
expect_fail "Invalid argument" truncate -s $((7 * M + 1)) mnt
truncate -s 8M mnt || fail "truncate up failed"
[ "$(stat -c %s mnt)" = $((8 * M)) ] || fail "size after truncate"
fallocate -z -o $((8 * M)) -l $((2 * M)) mnt || fail "zero range past the end"
[ "$(stat -c %s mnt)" = $((10 * M)) ] || fail "size after zero range: $(stat -c %s mnt)"
# allocation past the end preallocates; inside the image it is refused
fallocate -o $((10 * M)) -l $((1 * M)) mnt || fail "fallocate past the end"
[ "$(stat -c %s mnt)" = $((11 * M)) ] || fail "size after fallocate: $(stat -c %s mnt)"
expect_fail "Operation not supported" fallocate -o 0 -l 4096 mnt
truncate -s 6M mnt || fail "truncate down failed"
stop_fuse mnt
check_clean g.qcow2
[ "$(qemu-img info --output=json g.qcow2 | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')" = $((6 * M)) ] ||
    fail "virtual size after the growable session"
qemu-img convert -f qcow2 -O raw g.qcow2 g.raw
[ "$(dd if=g.raw bs=1 skip=$((5 * M)) count=5 status=none)" = grown ] || fail "grown data not in the image"

# 8 threads growing the image at once, each through its own file handle
qemu-img create -q -f qcow2 p.qcow2 0
start_fuse mnt --growable p.qcow2
/usr/bin/python3 - <<'EOF2' || fail "parallel growing writes failed"
import os, threading
def worker(t):
    fd = os.open("mnt", os.O_WRONLY)
    for i in range(64):
        blk = i * 8 + t  # interleaved: every thread keeps moving the end
        os.pwrite(fd, bytes([t + 1]) * 65536, blk * 65536)
    os.close(fd)
ts = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
for t in ts: t.start()
for t in ts: t.join()
with open("pref.raw", "wb") as f:
    for blk in range(512):
        f.write(bytes([blk % 8 + 1]) * 65536)
EOF2
[ "$(stat -c %s mnt)" = $((32 * M)) ] || fail "size after parallel growth: $(stat -c %s mnt)"
cmp mnt pref.raw || fail "parallel growing writes: content differs"
stop_fuse mnt
check_clean p.qcow2
qemu-img compare -f qcow2 -F raw p.qcow2 pref.raw || fail "parallel growth: image differs"

# a raw file grows to the exact byte; the export shows its length rounded
# up to 512, as QEMU's block layer counts sectors
: > g.raw
start_fuse mnt -f raw --growable g.raw
printf 'abc' | dd of=mnt bs=1 seek=1000 conv=notrunc status=none || fail "growing raw write failed"
[ "$(stat -c %s mnt)" = 1024 ] || fail "growable raw size: $(stat -c %s mnt)"
stop_fuse mnt
[ "$(stat -c %s g.raw)" = 1003 ] || fail "raw image size after the session: $(stat -c %s g.raw)"
[ "$(tail -c 3 g.raw)" = abc ] || fail "raw image content"

# --- vpc ------------------------------------------------------------------------
qemu-img create -q -f vpc t.vpc 16M
qemu-img convert -f vpc -O raw t.vpc vref.raw
start_fuse mnt -f vpc t.vpc
random_ops 555 80 $(stat -c %s mnt) mnt vref.raw
stop_fuse mnt
qemu-img compare -f vpc -F raw t.vpc vref.raw || fail "vpc differs from the reference"
echo "fuse-write: ok"
