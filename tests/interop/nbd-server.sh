#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-nbd against real clients: nbdinfo --json, nbdcopy, qemu-img compare
# and map, qemu-io writing through the export; one-shot, --fork, -e.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/nbd-common.bash"
need qemu-img qemu-io nbdinfo nbdcopy

M=$((1024 * 1024))
qemu-img create -q -f raw disk.raw 64M
qemu-io -f raw -c "write -q -P 0xab 0 1M" -c "write -q -P 0xcd 8M 512k" \
    -c "write -q -z 16M 1M" -c "write -q -P 0x11 20M 4k" disk.raw >/dev/null
cp disk.raw orig.raw

# --- nbdinfo sees every feature -------------------------------------------
start_vdisk_nbd "$PWD/s.sock" -f raw -t -e 4 -x exp -D "a test export" disk.raw
uri="nbd+unix:///exp?socket=$PWD/s.sock"
nbdinfo --json "$uri" > info.json || fail "nbdinfo failed"
e='j["exports"][0]'
[ "$(json_get info.json "$e['export-size']")" = $((64 * M)) ] || fail "size: $(cat info.json)"
[ "$(json_get info.json "$e['export-name']")" = exp ] || fail "export name"
[ "$(json_get info.json "$e['description']")" = "a test export" ] || fail "description"
for k in can_flush can_fua can_trim can_zero can_fast_zero can_cache can_multi_conn can_df; do
    [ "$(json_get info.json "$e['$k']")" = True ] || fail "$k is not true: $(cat info.json)"
done
[ "$(json_get info.json "$e['is_read_only']")" = False ] || fail "read-only"
[ "$(json_get info.json "'base:allocation' in $e['contexts']")" = True ] || fail "contexts"
[ "$(json_get info.json "j['structured']")" = True ] || fail "structured replies"
[ "$(json_get info.json "$e['block_size_maximum']")" = $((32 * M)) ] || fail "max block"

# --- content and block status agree with the image --------------------------
qemu-img compare -f raw -F raw disk.raw "$uri" >/dev/null || fail "qemu-img compare differs"
# map entries as (start, length, data, zero) with neighbours merged
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
qemu-img map --output=json -f raw "$uri" > map-nbd.json
qemu-img map --output=json -f raw disk.raw > map-file.json
[ "$(norm_map map-nbd.json)" = "$(norm_map map-file.json)" ] ||
    fail "map differs: nbd $(norm_map map-nbd.json) file $(norm_map map-file.json)"
nbdinfo --map "$uri" > nbdmap.txt
grep -q "hole,zero" nbdmap.txt || fail "no hole in nbdinfo --map: $(cat nbdmap.txt)"

# --- nbdcopy in and out -----------------------------------------------------
nbdcopy "$uri" out.raw || fail "nbdcopy out failed"
same_content disk.raw out.raw
head -c $((3 * M)) /dev/urandom > rnd.bin
truncate -s $((64 * M)) rnd.bin
nbdcopy rnd.bin "$uri" || fail "nbdcopy in failed"
nbdcopy "$uri" back.raw
same_content rnd.bin back.raw

# --- qemu-io writes through the export land in the image -------------------
qemu-io -f raw -c "write -q -P 0x5a 32M 64k" -c "write -q -z 40M 1M" -c flush "$uri" >/dev/null ||
    fail "qemu-io write through NBD failed"
qemu-io -f raw -c "read -q -P 0x5a 32M 64k" "$uri" >/dev/null || fail "read back over NBD"
stop_last
qemu-io -f raw -c "read -q -P 0x5a 32M 64k" -c "read -q -P 0 40M 1M" -c "read -q -P 0 3M 1M" \
    disk.raw | grep -q "Pattern verification failed" && fail "writes did not land in the image"
cmp -n $((3 * M)) rnd.bin disk.raw || fail "nbdcopy data did not land"

# --- qcow2 with a backing file ---------------------------------------------
cp orig.raw base.raw
qemu-img create -q -f qcow2 -b base.raw -F raw top.qcow2
qemu-io -f qcow2 -c "write -q -P 0x77 4M 128k" -c "write -q -z 0 64k" top.qcow2 >/dev/null
start_vdisk_nbd "$PWD/q.sock" -f qcow2 -t top.qcow2
quri="nbd+unix:///?socket=$PWD/q.sock"
qemu-img compare -U -f qcow2 -F raw top.qcow2 "$quri" >/dev/null || fail "qcow2 compare differs"
qemu-img map --output=json -f raw "$quri" > qmap-nbd.json
qemu-img map -U --output=json top.qcow2 > qmap-file.json
[ "$(norm_map qmap-nbd.json)" = "$(norm_map qmap-file.json)" ] ||
    fail "qcow2 map differs: nbd $(norm_map qmap-nbd.json) file $(norm_map qmap-file.json)"
nbdinfo --json "$quri" > qinfo.json
# -e 1 (default): one connection at a time, so no multi-conn
[ "$(json_get qinfo.json "$e['can_multi_conn']")" = False ] || fail "multi-conn with -e 1"
stop_last

# --- one-shot server: exits when its client leaves ---------------------------
rm -f o.sock
"$VDISK_NBD" -k "$PWD/o.sock" -f raw disk.raw &
pid=$!
NBD_PIDS+=($pid)
wait_for_socket "$PWD/o.sock"
nbdinfo "nbd+unix:///?socket=$PWD/o.sock" >/dev/null || fail "nbdinfo on one-shot server"
# it must exit by itself: wait for it (the runner's timeout catches a hang)
wait $pid || fail "one-shot server exit status $?"
[ -e o.sock ] && fail "socket not removed"

# --- --fork and --pid-file ----------------------------------------------------
"$VDISK_NBD" --fork --pid-file "$PWD/nbd.pid" -k "$PWD/f.sock" -t -r -f raw disk.raw ||
    fail "--fork failed"
[ -s nbd.pid ] || fail "no pid file"
NBD_PIDS+=($(cat nbd.pid))
[ -S f.sock ] || fail "no socket after --fork returned"
nbdinfo --json "nbd+unix:///?socket=$PWD/f.sock" > finfo.json
[ "$(json_get finfo.json "$e['is_read_only']")" = True ] || fail "-r not read-only"
fpid=$(cat nbd.pid)
kill "$fpid"
wait_for eval '! kill -0 '"$fpid"
[ -e nbd.pid ] && fail "pid file left behind"

# --- errors -------------------------------------------------------------------
expect_fail "Could not open" "$VDISK_NBD" -k "$PWD/x.sock" -f raw nonexistent.raw
expect_fail "Invalid shared device number" "$VDISK_NBD" -e -1 disk.raw
expect_fail "Expecting one image file name" "$VDISK_NBD" -k "$PWD/x.sock"
expect_fail "Offset" "$VDISK_NBD" -k "$PWD/x.sock" -f raw -o 1G disk.raw
echo ok
