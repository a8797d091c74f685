#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The nbd protocol driver against qemu-nbd and nbdkit (memory, file) in
# every filename form, block status (map) agreeing with qemu-img's, writes,
# refused exports; and against vdisk-nbd with extended headers.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/nbd-common.bash"
need qemu-img qemu-io qemu-nbd nbdkit

M=$((1024 * 1024))
qemu-img create -q -f raw disk.raw 32M
qemu-io -f raw -c "write -q -P 0xab 0 1M" -c "write -q -P 0xcd 5M 64k" disk.raw >/dev/null

check_read() { # URI WHAT
    "$VDISK_IO" -r -f raw -c "read -q -P 0xab 0 1M" -c "read -q -P 0xcd 5M 64k" \
        -c "read -q -P 0 1M 4M" "$1" > r.out 2>&1 || fail "$2: vdisk-io failed: $(cat r.out)"
    grep -q "verification failed" r.out && fail "$2: wrong data: $(cat r.out)"
    true
}
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

# --- qemu-nbd on a unix socket --------------------------------------------
start_qemu_nbd "$PWD/q.sock" -f raw -x exp -t -e 0 disk.raw
for uri in "nbd+unix:///exp?socket=$PWD/q.sock" "nbd:unix:$PWD/q.sock:exportname=exp" \
    "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"nbd\",\"server\":{\"type\":\"unix\",\"path\":\"$PWD/q.sock\"},\"export\":\"exp\"}}"; do
    check_read "$uri" "$uri"
done
"$VDISK_IO" -c "read -q -P 0xab 0 64k" --image-opts \
    "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$PWD/q.sock,file.export=exp" \
    >/dev/null || fail "--image-opts form"
"$VDISK" info "nbd+unix:///exp?socket=$PWD/q.sock" > info.txt || fail "vdisk info over nbd"
grep -q "virtual size: 32 MiB" info.txt || fail "info: $(cat info.txt)"
# block status through the driver agrees with qemu-img's through qemu's
"$VDISK" map --output=json -f raw "nbd+unix:///exp?socket=$PWD/q.sock" > vmap.json ||
    fail "vdisk map over nbd"
qemu-img map --output=json -f raw "nbd+unix:///exp?socket=$PWD/q.sock" > qmap.json
[ "$(norm_map vmap.json)" = "$(norm_map qmap.json)" ] ||
    fail "map differs: vdisk $(norm_map vmap.json) qemu $(norm_map qmap.json)"
# writes and zeroes through the driver
"$VDISK_IO" -f raw -c "write -q -P 0x3c 8M 128k" -c "write -q -z 0 4k" -c flush \
    "nbd+unix:///exp?socket=$PWD/q.sock" >/dev/null || fail "write through nbd"
qemu-io -f raw -c "read -q -P 0x3c 8M 128k" -c "read -q -P 0 0 4k" \
    "nbd+unix:///exp?socket=$PWD/q.sock" | grep -q "verification failed" &&
    fail "writes through the driver did not land"
qemu-io -f raw -c "write -q -P 0xab 0 4k" "nbd+unix:///exp?socket=$PWD/q.sock" >/dev/null
# a refused export is a clear error
expect_fail "Requested export not available" "$VDISK" info "nbd+unix:///nope?socket=$PWD/q.sock"
expect_fail "socket" "$VDISK" info "nbd+unix:///exp"
expect_fail "Failed to connect" "$VDISK" info "nbd+unix:///?socket=$PWD/none.sock"
stop_last

# --- qemu-nbd over TCP ------------------------------------------------------------
port=$(free_port)
qemu-nbd -b 127.0.0.1 -p "$port" -f raw -x exp -t -e 0 -r disk.raw &
NBD_PIDS+=($!)
NBD_LAST_PID=$!
wait_for_port "$port"
for uri in "nbd://127.0.0.1:$port/exp" "nbd+tcp://127.0.0.1:$port/exp" \
    "nbd:127.0.0.1:$port:exportname=exp" "nbd:localhost:$port:exportname=exp"; do
    check_read "$uri" "$uri"
done
"$VDISK_IO" -r -c "read -q 0 4k" --image-opts \
    "driver=raw,file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,file.server.port=$port,file.export=exp" \
    >/dev/null || fail "--image-opts inet form"
expect_fail "read-only" "$VDISK_IO" -f raw -c "write 0 4k" "nbd://127.0.0.1:$port/exp"
stop_last

# --- nbdkit memory and file ----------------------------------------------------
rm -f k.sock
nbdkit -f -U "$PWD/k.sock" memory 16M &
NBD_PIDS+=($!)
NBD_LAST_PID=$!
wait_for_socket "$PWD/k.sock"
"$VDISK_IO" -f raw -c "write -q -P 0x61 1M 1M" -c "write -q -P 0x62 15M 1M" \
    "nbd+unix:///?socket=$PWD/k.sock" >/dev/null || fail "write to nbdkit memory"
"$VDISK_IO" -f raw -c "read -q -P 0x61 1M 1M" -c "read -q -P 0x62 15M 1M" -c "read -q -P 0 0 1M" \
    "nbd+unix:///?socket=$PWD/k.sock" | grep -q "verification failed" && fail "nbdkit memory data"
"$VDISK" map --output=json -f raw "nbd+unix:///?socket=$PWD/k.sock" > kmap.json
qemu-img map --output=json -f raw "nbd+unix:///?socket=$PWD/k.sock" > kqmap.json
[ "$(norm_map kmap.json)" = "$(norm_map kqmap.json)" ] ||
    fail "nbdkit memory map differs: $(norm_map kmap.json) vs $(norm_map kqmap.json)"
stop_last
port=$(free_port)
nbdkit -f -p "$port" -i 127.0.0.1 file "$PWD/disk.raw" &
NBD_PIDS+=($!)
NBD_LAST_PID=$!
wait_for_port "$port"
check_read "nbd://127.0.0.1:$port" "nbdkit file"
check_read "nbd:127.0.0.1:$port" "nbdkit file legacy"
stop_last

# --- vdisk-nbd: extended headers end to end -------------------------------------
cp disk.raw ext.raw
start_vdisk_nbd "$PWD/v.sock" -f raw -t -e 0 -v -v ext.raw 2> vlog.txt
check_read "nbd+unix:///?socket=$PWD/v.sock" "vdisk-nbd"
"$VDISK_IO" -f raw -c "write -q -P 0x17 2M 3M" -c "write -q -z 6M 1M" -c "discard -q 10M 1M" \
    -c flush "nbd+unix:///?socket=$PWD/v.sock" >/dev/null || fail "writes over extended headers"
"$VDISK" map --output=json -f raw "nbd+unix:///?socket=$PWD/v.sock" > emap.json
qemu-img map --output=json -f raw "nbd+unix:///?socket=$PWD/v.sock" > eqmap.json
[ "$(norm_map emap.json)" = "$(norm_map eqmap.json)" ] ||
    fail "map over extended headers differs: $(norm_map emap.json) vs $(norm_map eqmap.json)"
stop_last
grep -q "with extended headers" vlog.txt || fail "extended headers not negotiated: $(head -5 vlog.txt)"
qemu-io -f raw -c "read -q -P 0x17 2M 3M" -c "read -q -P 0 6M 1M" ext.raw |
    grep -q "verification failed" && fail "extended-header writes did not land"

# --- reconnect-delay: the server restarts under an open image ----------------------
cp disk.raw rc.raw
start_vdisk_nbd "$PWD/r.sock" -f raw -t -e 0 rc.raw
# commands come through a FIFO: the second read is sent only once the
# first one is done and the server was restarted (no time window)
# (stdbuf: each reply line reaches rc.out at once, not at exit; it works by
# LD_PRELOAD, which ASan accepts once told not to insist on coming first)
mkfifo rc.ctl
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" stdbuf -oL "$VDISK_IO" --image-opts \
    "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$PWD/r.sock,file.reconnect-delay=10" \
    <rc.ctl > rc.out 2>&1 &
io=$!
exec 3>rc.ctl
echo "read -P 0xab 0 4k" >&3
until grep -q "read 4096/4096" rc.out; do
    kill -0 $io 2>/dev/null || fail "vdisk-io exited: $(cat rc.out)"
    sleep 0.05
done
stop_last
start_vdisk_nbd "$PWD/r.sock" -f raw -t -e 0 rc.raw
echo "read -P 0xab 0 4k" >&3
echo quit >&3
exec 3>&-
wait $io || fail "read after reconnect failed: $(cat rc.out)"
[ "$(grep -o "read 4096/4096" rc.out | wc -l)" = 2 ] || fail "reads around the reconnect: $(cat rc.out)"
grep -q "verification failed" rc.out && fail "reconnect data: $(cat rc.out)"
stop_last
echo ok
