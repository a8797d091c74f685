#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Many aio requests in flight at once: 200 aio_writes of distinct patterns
# (to separate slots, every tenth a zero write), then verifying aio_reads.
# Reports may complete in any order, so they are compared sorted with
# qemu-io's; the bytes written must be identical.
. "$VDISK_SRC/tests/lib.sh"
need qemu-io

mask() {
    sed -E 's/^[0-9.]+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), [0-9]+ ops; .*$/STATS/' | sort
}

# Seeded so that a failure can be replayed.
/usr/bin/python3 - >cmds.txt <<'PY'
import random
r = random.Random(1234)
cmds = []
slots = list(range(256))          # 256 slots of 16 KiB in a 4 MiB image
r.shuffle(slots)
for n, s in enumerate(slots[:200]):
    off = s * 16384 + r.randrange(0, 8) * 512
    ln = r.choice([512, 1024, 4096, 8192])
    if n % 10 == 9:
        cmds.append("aio_write -z %d %d" % (off, ln))
    else:
        cmds.append("aio_write -P %d %d %d" % (1 + n % 250, off, ln))
cmds.append("aio_flush")
print("\n".join(cmds))
PY
# reads that check each slot's first 512 bytes after the writes
/usr/bin/python3 - >reads.txt <<'PY'
import random
r = random.Random(1234)
slots = list(range(256))
r.shuffle(slots)
out = []
for n, s in enumerate(slots[:200]):
    off = s * 16384 + r.randrange(0, 8) * 512
    ln = r.choice([512, 1024, 4096, 8192])
    pat = 0 if n % 10 == 9 else 1 + n % 250
    out.append("aio_read -P %d %d %d" % (pat, off, ln))
out.append("aio_flush")
# and never-written slots still read as zeroes
for s in slots[200:]:
    out.append("aio_read -P 0 %d 16384" % (s * 16384))
out.append("aio_flush")
print("\n".join(out))
PY

args=()
while read -r c; do args+=(-c "$c"); done <cmds.txt
while read -r c; do args+=(-c "$c"); done <reads.txt

truncate -s 4M q.img
truncate -s 4M v.img
qemu-io -f raw -t writeback "${args[@]}" q.img >q.out 2>q.err
"$VDISK_IO" -f raw -t writeback "${args[@]}" v.img >v.out 2>v.err
mask <q.out >q.m
mask <v.out >v.m
diff -u q.m v.m || fail "aio reports differ"
grep -q "Pattern verification failed" v.out && fail "pattern mismatch: $(grep -m3 Pattern v.out)"
[ "$(grep -c '^wrote' v.out)" = 200 ] || fail "expected 200 write reports"
[ "$(grep -c '^read' v.out)" = 256 ] || fail "expected 256 read reports"
same_content q.img v.img

# reports of requests still in flight at exit are printed before exit
"$VDISK_IO" -f raw -t writeback -c 'aio_write -P 7 0 64k' -c 'aio_write -P 8 64k 64k' v.img >x.out
[ "$(grep -c '^wrote' x.out)" = 2 ] || fail "pending aio not completed at exit: $(cat x.out)"
"$VDISK_IO" -f raw -c 'read -P 7 0 64k' -c 'read -P 8 64k 64k' v.img >/dev/null ||
    fail "data of pending aio lost"
# ... and before close
"$VDISK_IO" -f raw -c 'aio_write -P 9 0 4k' -c 'close' -c 'open -o driver=raw v.img' \
    -c 'read -P 9 0 4k' v.img >x.out || fail "aio before close: $(cat x.out)"
echo "aio requests in flight match qemu-io"
