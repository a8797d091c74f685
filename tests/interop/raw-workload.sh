#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A seeded random workload (pattern writes at any byte offset, vectored
# writes, zero writes with and without unmap, aligned discards) run on raw
# images by vdisk-io and by qemu-io.  Both results must equal a reference
# built in Python, and each tool must verify (read -P) what the other wrote.
. "$VDISK_SRC/tests/lib.sh"
need qemu-io qemu-img

SEED=${SEED:-20261122}
SIZE=$((8 << 20))

/usr/bin/python3 - "$SEED" "$SIZE" <<'PY'
import random, sys
seed, size = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
ref = bytearray(size)
cmds = []
edges = set()
for n in range(300):
    kind = r.random()
    if kind < 0.55:
        ln = r.choice([1, 7, 512, 513, 4096, 65536, r.randrange(1, 300000)])
        off = r.randrange(0, size - ln)
        pat = r.randrange(0, 256)
        cmds.append("write -q -P %d %d %d" % (pat, off, ln))
        ref[off:off + ln] = bytes([pat]) * ln
    elif kind < 0.7:
        lens = [r.randrange(1, 20000) for _ in range(r.randrange(1, 5))]
        ln = sum(lens)
        off = r.randrange(0, size - ln)
        pat = r.randrange(0, 256)
        cmds.append("writev -q -P %d %d %s" % (pat, off, " ".join(map(str, lens))))
        ref[off:off + ln] = bytes([pat]) * ln
    elif kind < 0.85:
        ln = r.randrange(1, 200000)
        off = r.randrange(0, size - ln)
        cmds.append("write -q -z%s %d %d" % ("u" if r.random() < 0.5 else "", off, ln))
        ref[off:off + ln] = bytes(ln)
    else:
        # discard is advisory below a block; whole 64 KiB units are freed
        # (and read back as zeroes) by both tools on a raw file
        ln = r.randrange(1, 8) * 65536
        off = r.randrange(0, (size - ln) // 65536) * 65536
        cmds.append("discard -q %d %d" % (off, ln))
        ref[off:off + ln] = bytes(ln)
    edges.update((off, off + ln))
open("workload.txt", "w").write("\n".join(cmds) + "\n")
open("ref.img", "wb").write(ref)
# verification: one read -P per piece between two request edges (the
# last request covering a piece wrote all of it with one byte value)
edges = sorted(edges | {0, size})
ver = ["read -q -P %d %d %d" % (ref[a], a, b - a) for a, b in zip(edges, edges[1:])]
open("verify.txt", "w").write("\n".join(ver) + "\n")
PY

truncate -s $SIZE v.img
truncate -s $SIZE q.img
"$VDISK_IO" -f raw -t writeback v.img <workload.txt >v.out 2>&1 || fail "vdisk-io workload: $(tail -5 v.out)"
qemu-io -f raw -t writeback q.img <workload.txt >q.out 2>&1 || fail "qemu-io workload: $(tail -5 q.out)"

# both equal the reference
same_content v.img ref.img
same_content q.img ref.img
qemu-img compare -f raw -F raw v.img ref.img >/dev/null || fail "qemu-img compare: vdisk-io image"

# each tool verifies the other's image
qemu-io -f raw -r v.img <verify.txt >qv.out 2>&1 || fail "qemu-io verify of vdisk-io's image"
! grep -q "Pattern verification failed" qv.out || fail "qemu-io: $(grep -m3 Pattern qv.out)"
"$VDISK_IO" -f raw -r q.img <verify.txt >vq.out 2>&1 || fail "vdisk-io verify of qemu-io's image"
! grep -q "Pattern verification failed" vq.out || fail "vdisk-io: $(grep -m3 Pattern vq.out)"

# the verification can fail: one flipped byte is found
printf '\x5a' | dd of=q.img bs=1 seek=$((SIZE / 2 + 3)) conv=notrunc status=none
if "$VDISK_IO" -f raw -r q.img <verify.txt >bad.out 2>&1; then
    fail "vdisk-io did not notice a changed byte"
fi
grep -q "Pattern verification failed" bad.out || fail "no mismatch line"

# the default cache mode (writethrough) gives the same bytes
head -60 workload.txt >short.txt
truncate -s $SIZE w1.img
truncate -s $SIZE w2.img
"$VDISK_IO" -f raw w1.img <short.txt >/dev/null 2>&1 || fail "writethrough workload"
qemu-io -f raw w2.img <short.txt >/dev/null 2>&1 || fail "qemu-io writethrough workload"
same_content w1.img w2.img
echo "raw workload (seed $SEED) identical both ways"
