#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The blklogwrites filter against qemu-io's: the same requests give
# byte-identical dm-log-writes logs (sector sizes 512 and 4096, super block
# interval, log-append), both parse with tests/replay/dmlog.py, and the
# image under the filter is the same.  Then bad options and hostile logs.
. "$VDISK_SRC/tests/lib.sh"
need qemu-io qemu-img
PY=/usr/bin/python3
DMLOG="$VDISK_SRC/tests/replay/dmlog.py"

W=(-c "write -P 0x11 0 64k" -c "write -z 1M 8k" -c flush -c "write -P 0x22 8192 4k"
   -c "discard 2M 64k" -c "write -P 0x44 3M 4k" -c "write -P 0x45 3M 4k" -c flush
   -c "write -P 0x46 100k 12k")
both() { # both EXTRA_OPTS [qemu-io/vdisk-io args...]
    local o=$1; shift
    qemu-io "$@" --image-opts "driver=raw,file.driver=blklogwrites,file.file.filename=q.raw,file.log.filename=q.log$o" >q.out 2>&1 ||
        fail "qemu-io failed: $(cat q.out)"
    "$VDISK_IO" "$@" --image-opts "driver=raw,file.driver=blklogwrites,file.file.filename=v.raw,file.log.filename=v.log$o" >v.out 2>&1 ||
        fail "vdisk-io failed: $(cat v.out)"
}
for cfg in "" ",file.log-sector-size=4096" ",file.log-super-update-interval=2" \
           ",file.log-sector-size=4096,file.log-super-update-interval=3"; do
    for cache in writeback writethrough; do
        rm -f q.raw v.raw q.log v.log
        truncate -s 4M q.raw v.raw
        : >q.log; : >v.log
        both "$cfg" -t $cache "${W[@]}"
        cmp -s q.log v.log || {
            $PY "$DMLOG" q.log >q.dump; $PY "$DMLOG" v.log >v.dump
            diff q.dump v.dump | head -20
            fail "logs differ ($cfg, $cache)"
        }
        same_content q.raw v.raw
        $PY "$DMLOG" v.log >/dev/null || fail "dmlog.py cannot read the log ($cfg)"
        # continue the log
        both ",file.log-append=on" -t $cache -c "write -P 0x55 0 4k" -c flush
        cmp -s q.log v.log || fail "appended logs differ ($cfg, $cache)"
    done
done
# an empty log with log-append is a log without entries
rm -f q.log v.log; : >q.log; : >v.log
both ",file.log-append=on" -t writeback -c "write -P 1 0 4k" -c flush
cmp -s q.log v.log || fail "logs appended to empty logs differ"

# a qcow2 image through the filter: the log reads back, the image checks
"$VDISK" create -q -f qcow2 t.qcow2 16M
: >t.log
"$VDISK_IO" -t writeback --image-opts -c "write -P 7 0 1M" -c flush -c "write -z 64k 64k" \
    "driver=qcow2,file.driver=blklogwrites,file.file.filename=t.qcow2,file.log.filename=t.log" >/dev/null
$PY "$DMLOG" t.log >t.dump || fail "dmlog.py cannot read the qcow2 log"
grep -q flush t.dump || fail "no flush entry in the qcow2 log"
qemu-img check -q t.qcow2 || fail "qemu-img check of the image under the filter"

# bad options, bad logs: one clear error, nothing crashes
O="driver=raw,file.driver=blklogwrites,file.file.filename=v.raw"
expect_fail "Invalid log sector size 1000" "$VDISK_IO" --image-opts -c "write 0 4k" "$O,file.log.filename=v.log,file.log-sector-size=1000"
expect_fail "mutually exclusive" "$VDISK_IO" --image-opts -c "write 0 4k" "$O,file.log.filename=v.log,file.log-append=on,file.log-sector-size=512"
expect_fail "update interval" "$VDISK_IO" --image-opts -c "write 0 4k" "$O,file.log.filename=v.log,file.log-super-update-interval=0"
expect_fail "needs a log" "$VDISK_IO" --image-opts -c "write 0 4k" "$O"
expect_fail "Invalid log superblock magic" "$VDISK_IO" --image-opts -c "write 0 4k" "$O,file.log.filename=v.raw,file.log-append=on"
# a super block claiming more entries than the log holds
$PY - <<'PYEOF'
import struct
with open("long.log", "wb") as f:
    f.write(struct.pack("<QQQI", 0x6a736677736872, 1, 1000, 512).ljust(512, b"\0"))
with open("flags.log", "wb") as f:
    f.write(struct.pack("<QQQI", 0x6a736677736872, 1, 1, 512).ljust(512, b"\0"))
    f.write(struct.pack("<QQQQ", 0, 1, 1 << 40, 0).ljust(1024, b"\0"))
with open("huge.log", "wb") as f:
    f.write(struct.pack("<QQQI", 0x6a736677736872, 1, 2, 512).ljust(512, b"\0"))
    f.write(struct.pack("<QQQQ", 0, 1 << 62, 0, 0).ljust(512, b"\0"))
PYEOF
expect_fail "ends before its entry" "$VDISK_IO" --image-opts -c "write 0 4k" "$O,file.log.filename=long.log,file.log-append=on"
expect_fail "Invalid flags" "$VDISK_IO" --image-opts -c "write 0 4k" "$O,file.log.filename=flags.log,file.log-append=on"
expect_fail "reaches past its end" "$VDISK_IO" --image-opts -c "write 0 4k" "$O,file.log.filename=huge.log,file.log-append=on"
for i in 1 2 3 4 5 6 7 8; do
    head -c $((i * 700)) /dev/urandom >rnd.log
    rc=0
    "$VDISK_IO" --image-opts -c "write 0 4k" "$O,file.log.filename=rnd.log,file.log-append=on" >/dev/null 2>&1 || rc=$?
    [ "$rc" -lt 128 ] || fail "crash on a random log"
done
echo "blklogwrites: logs identical to qemu-io's"
