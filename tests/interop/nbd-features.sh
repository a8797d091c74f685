#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-nbd features beside plain serving, each against qemu-nbd's
# behaviour: -A (qemu:allocation-depth via nbdinfo --map), -B, -s, -o,
# -L, --handshake-limit.  (-l: nbd-snapshot.sh)
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/nbd-common.bash"
need qemu-img qemu-io qemu-nbd nbdinfo

M=$((1024 * 1024))
qemu-img create -q -f qcow2 base.qcow2 16M
qemu-io -f qcow2 -c "write -q -P 0x11 0 2M" -c "write -q -P 0x12 8M 1M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c "write -q -P 0x21 1M 2M" -c "write -q -z 12M 1M" top.qcow2 >/dev/null

# --- -A: allocation depth and base:allocation, as qemu-nbd reports them ------
start_vdisk_nbd "$PWD/v.sock" -f qcow2 -t -r -A -e 0 top.qcow2
start_qemu_nbd "$PWD/q.sock" -f qcow2 -t -r -A -e 0 top.qcow2
for ctx in qemu:allocation-depth base:allocation; do
    nbdinfo --map="$ctx" "nbd+unix:///?socket=$PWD/v.sock" > v.map || fail "nbdinfo --map=$ctx"
    nbdinfo --map="$ctx" "nbd+unix:///?socket=$PWD/q.sock" > q.map
    diff -u q.map v.map || fail "$ctx differs from qemu-nbd's"
done
nbdinfo --map=qemu:allocation-depth "nbd+unix:///?socket=$PWD/v.sock" | grep -q "backing depth 2" ||
    fail "no backing layer in allocation depth"
# -L: the listing matches qemu-nbd -L of the same server, byte for byte
qemu-nbd -L -k "$PWD/v.sock" > q.list
"$VDISK_NBD" -L -k "$PWD/v.sock" > v.list || fail "vdisk-nbd -L failed"
diff -u q.list v.list || fail "-L output differs from qemu-nbd -L"
"$VDISK_NBD" -L -k "$PWD/q.sock" > vq.list || fail "vdisk-nbd -L against qemu-nbd failed"
qemu-nbd -L -k "$PWD/q.sock" > qq.list
diff -u qq.list vq.list || fail "-L of qemu-nbd differs"
grep -q "qemu:allocation-depth" v.list || fail "-L lists no allocation depth"
kill "${NBD_PIDS[@]}"
wait "${NBD_PIDS[@]}" 2>/dev/null || true
NBD_PIDS=()

# --- -B: persistent bitmaps as qemu:dirty-bitmap:NAME, as qemu-nbd -----------
# two granularities; writes unaligned to them, one at the image's end, one
# crossing from one bitmap data cluster to the next (16M: bit 32768 of b0)
qemu-img create -q -f qcow2 -o cluster_size=4096 bm.qcow2 40M
qemu-img bitmap --add -g 512 bm.qcow2 b0
qemu-img bitmap --add -g 1M bm.qcow2 b1
qemu-io -f qcow2 -c "write -q 0 4k" -c "write -q 1M 65k" -c "write -q 10M 3M" -c "write -q 15M 2M" \
    -c "write -q 35M 5M" bm.qcow2 >/dev/null
cp bm.qcow2 bmq.qcow2
start_vdisk_nbd "$PWD/bv.sock" -f qcow2 -t -r -B b0 bm.qcow2
start_qemu_nbd "$PWD/bq.sock" -f qcow2 -t -r -B b0 bmq.qcow2
start_vdisk_nbd "$PWD/bv1.sock" -f qcow2 -t -r -B b1 bm.qcow2
start_qemu_nbd "$PWD/bq1.sock" -f qcow2 -t -r -B b1 bmq.qcow2
for b in b0:bv:bq b1:bv1:bq1; do
    IFS=: read -r bn vs qs <<< "$b"
    ctx="qemu:dirty-bitmap:$bn"
    nbdinfo --map="$ctx" "nbd+unix:///?socket=$PWD/$vs.sock" > v.map || fail "nbdinfo --map=$ctx"
    nbdinfo --map="$ctx" "nbd+unix:///?socket=$PWD/$qs.sock" > q.map
    diff -u q.map v.map || fail "$ctx differs from qemu-nbd's"
    grep -q dirty v.map || fail "$ctx shows nothing dirty"
    nbdinfo --map=base:allocation "nbd+unix:///?socket=$PWD/$vs.sock" > v.map ||
        fail "base:allocation beside $ctx"
    nbdinfo --map=base:allocation "nbd+unix:///?socket=$PWD/$qs.sock" > q.map
    diff -u q.map v.map || fail "base:allocation beside $ctx differs"
done
qemu-nbd -L -k "$PWD/bv.sock" > v.list
qemu-nbd -L -k "$PWD/bq.sock" > q.list
diff -u q.list v.list || fail "-L with -B differs from qemu-nbd's"
grep -q "qemu:dirty-bitmap:b0" v.list || fail "-L lists no dirty bitmap context"
kill "${NBD_PIDS[@]}"
wait "${NBD_PIDS[@]}" 2>/dev/null || true
NBD_PIDS=()
# a bitmap that does not exist: a clear error, as qemu-nbd
expect_fail "Bitmap 'nosuch' is not found" "$VDISK_NBD" -k "$PWD/b.sock" -f qcow2 -r \
    -B nosuch bm.qcow2

# --- -o: the export is a window into the image --------------------------------
qemu-img create -q -f raw win.raw 8M
qemu-io -f raw -c "write -q -P 0x33 4M 1M" win.raw >/dev/null
start_vdisk_nbd "$PWD/o.sock" -f raw -t -o 4M win.raw
nbdinfo --size "nbd+unix:///?socket=$PWD/o.sock" | grep -qx $((4 * M)) || fail "-o size"
qemu-io -f raw -c "read -q -P 0x33 0 1M" -c "write -q -P 0x44 1M 4k" \
    "nbd+unix:///?socket=$PWD/o.sock" | grep -q "verification failed" && fail "-o offset read"
stop_last
qemu-io -f raw -c "read -q -P 0x44 5M 4k" win.raw | grep -q "verification failed" &&
    fail "-o offset write landed elsewhere"

# --- -s: writes go to a temporary overlay, the image stays untouched -----------
sum_before=$(md5sum < top.qcow2)
start_vdisk_nbd "$PWD/s.sock" -f qcow2 -t -s top.qcow2
qemu-io -f raw -c "write -q -P 0x55 0 4M" -c "write -q -z 8M 1M" -c flush \
    "nbd+unix:///?socket=$PWD/s.sock" >/dev/null || fail "write to -s export"
qemu-io -f raw -c "read -q -P 0x55 0 4M" -c "read -q -P 0 8M 1M" \
    "nbd+unix:///?socket=$PWD/s.sock" | grep -q "verification failed" && fail "-s reads"
stop_last
[ "$(md5sum < top.qcow2)" = "$sum_before" ] || fail "-s modified the image"
qemu-io -r -f qcow2 -c "read -q -P 0x21 1M 2M" top.qcow2 | grep -q "verification failed" &&
    fail "-s image content changed"
ls /var/tmp/vdisk-nbd.* 2>/dev/null | grep -q . && fail "temporary overlay left behind"

# --- -e 1: a second client waits until the first one leaves ----------------------
start_vdisk_nbd "$PWD/e.sock" -f qcow2 -t -r top.qcow2
/usr/bin/python3 - "$PWD/e.sock" <<'PY' || fail "-e 1 connection limit"
import subprocess, sys, time
import nbd
uri = "nbd+unix:///?socket=" + sys.argv[1]
first = nbd.NBD()
first.connect_uri(uri)
second = subprocess.Popen(["nbdinfo", "--size", uri], stdout=subprocess.PIPE)
time.sleep(1)
if second.poll() is not None:
    sys.exit("second client served while the first was connected")
first.shutdown()
del first
out, _ = second.communicate(timeout=10)
if second.returncode != 0 or not out.strip():
    sys.exit("second client not served after the first left")
PY
stop_last

# --- --handshake-limit ----------------------------------------------------------
start_vdisk_nbd "$PWD/h.sock" -f qcow2 -t -r --handshake-limit 1 top.qcow2
start=$(date +%s%N)
/usr/bin/python3 -c "
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(10)
while s.recv(100): pass" "$PWD/h.sock" || fail "idle client not dropped"
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ $ms -ge 900 ] && [ $ms -lt 5000 ] || fail "handshake limit of 1 s took $ms ms"
stop_last
echo ok
