#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-nbd with TLS: X.509 (certtool) and PSK (psktool), checked with
# nbdinfo and qemu-img; plaintext clients are refused; the nbd driver
# reads TLS exports of vdisk-nbd and of nbdkit.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/nbd-common.bash"
need qemu-img qemu-io nbdinfo nbdkit certtool psktool

M=$((1024 * 1024))
qemu-img create -q -f raw disk.raw 16M
qemu-io -f raw -c "write -q -P 0x42 1M 1M" disk.raw >/dev/null
make_certs "$PWD/pki"
psktool -u alice -p "$PWD/keys.psk" >/dev/null 2>&1 || fail "psktool failed"
mkdir -p pskdir && cp keys.psk pskdir/keys.psk
# vread ARGS...: vdisk-io (our nbd driver) reads the known content
vread() {
    "$VDISK_IO" -r -c "read -q -P 0x42 1M 1M" -c "read -q -P 0 0 1M" "$@" > vread.out 2>&1 ||
        return 1
    ! grep -q "verification failed" vread.out
}

# --- X.509, as a QEMU object --------------------------------------------
start_vdisk_nbd "$PWD/x.sock" -f raw -t -e 0 \
    --object "tls-creds-x509,id=tls0,endpoint=server,dir=$PWD/pki,verify-peer=off" \
    --tls-creds tls0 disk.raw
nbdinfo --json "nbds+unix:///?socket=$PWD/x.sock&tls-certificates=$PWD/pki" \
    > info.json 2>err.txt || fail "nbdinfo over x509 failed: $(cat err.txt)"
[ "$(json_get info.json "j['TLS']")" = True ] || fail "TLS not negotiated: $(cat info.json)"
[ "$(json_get info.json "j['exports'][0]['export-size']")" = $((16 * M)) ] || fail "size"
# a client without TLS gets nothing
nbdinfo "nbd+unix:///?socket=$PWD/x.sock" >/dev/null 2>&1 && fail "plaintext client accepted"
# qemu-img with its own x509 client object
qemu-img compare --object "tls-creds-x509,id=tls0,endpoint=client,dir=$PWD/pki" \
    --image-opts "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$PWD/x.sock,file.tls-creds=tls0,file.tls-hostname=localhost" \
    "driver=raw,file.filename=disk.raw" >/dev/null || fail "qemu-img compare over x509 failed"
# our own client driver, X.509 directory
vread -f raw "nbds+unix:///?socket=$PWD/x.sock&tls-certificates=$PWD/pki" ||
    fail "vdisk-io over nbds+unix failed: $(cat vread.out)"
vread --object "tls-creds-x509,id=c0,endpoint=client,dir=$PWD/pki" \
    --image-opts "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$PWD/x.sock,file.tls-creds=c0" ||
    fail "vdisk-io with a tls-creds object failed: $(cat vread.out)"
vread -f raw "nbd+unix:///?socket=$PWD/x.sock" && fail "our client read a TLS-only export in plaintext"
grep -q "TLS" vread.out || fail "plaintext refusal does not mention TLS: $(cat vread.out)"
stop_last

# --- X.509 over TCP with a client certificate required ----------------------
port=$(free_port)
"$VDISK_NBD" -b 127.0.0.1 -p "$port" -f raw -t -e 0 \
    --object "tls-creds-x509,id=tls0,endpoint=server,dir=$PWD/pki" --tls-creds tls0 disk.raw &
NBD_PIDS+=($!)
NBD_LAST_PID=$!
wait_for_port "$port"
nbdinfo "nbds://localhost:$port/?tls-certificates=$PWD/pki" >/dev/null 2>err.txt ||
    fail "nbdinfo with a client certificate failed: $(cat err.txt)"
mkdir -p nocert && cp pki/ca-cert.pem nocert/
nbdinfo "nbds://localhost:$port/?tls-certificates=$PWD/nocert" >/dev/null 2>&1 &&
    fail "client without a certificate accepted (verify-peer is on)"
qemu-img info --object "tls-creds-x509,id=tls0,endpoint=client,dir=$PWD/pki" \
    --image-opts "driver=nbd,server.type=inet,server.host=localhost,server.port=$port,tls-creds=tls0" \
    >/dev/null || fail "qemu-img info over TCP x509 failed"
stop_last

# --- PSK ----------------------------------------------------------------------
start_vdisk_nbd "$PWD/p.sock" -f raw -t -e 0 \
    --object "tls-creds-psk,id=tls0,endpoint=server,dir=$PWD/pskdir" --tls-creds tls0 disk.raw
nbdinfo --json "nbds+unix://alice@/?socket=$PWD/p.sock&tls-psk-file=$PWD/keys.psk" \
    > pinfo.json 2>err.txt || fail "nbdinfo over PSK failed: $(cat err.txt)"
[ "$(json_get pinfo.json "j['TLS']")" = True ] || fail "PSK TLS not negotiated"
psktool -u alice -p "$PWD/wrong.psk" >/dev/null 2>&1
nbdinfo "nbds+unix://alice@/?socket=$PWD/p.sock&tls-psk-file=$PWD/wrong.psk" \
    >/dev/null 2>&1 && fail "wrong PSK accepted"
qemu-img compare --object "tls-creds-psk,id=tls0,endpoint=client,dir=$PWD/pskdir,username=alice" \
    --image-opts "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$PWD/p.sock,file.tls-creds=tls0" \
    "driver=raw,file.filename=disk.raw" >/dev/null || fail "qemu-img compare over PSK failed"
qemu-io --object "tls-creds-psk,id=tls0,endpoint=client,dir=$PWD/pskdir,username=alice" \
    --image-opts "driver=raw,file.driver=nbd,file.server.type=unix,file.server.path=$PWD/p.sock,file.tls-creds=tls0" \
    -c "write -q -P 0x99 4M 64k" >/dev/null || fail "qemu-io write over PSK failed"
vread -f raw "nbds+unix:///?socket=$PWD/p.sock&tls-psk-file=$PWD/keys.psk&tls-username=alice" ||
    fail "vdisk-io over PSK failed: $(cat vread.out)"
stop_last
qemu-io -f raw -c "read -q -P 0x99 4M 64k" disk.raw | grep -q "verification failed" &&
    fail "PSK write did not land"

# --- the nbd driver reads nbdkit's TLS exports --------------------------------
port=$(free_port)
nbdkit -f -p "$port" -i 127.0.0.1 --tls=require --tls-certificates="$PWD/pki" \
    file "$PWD/disk.raw" &
NBD_PIDS+=($!)
NBD_LAST_PID=$!
wait_for_port "$port"
vread -f raw "nbds://localhost:$port/?tls-certificates=$PWD/pki" ||
    fail "vdisk-io against nbdkit x509 failed: $(cat vread.out)"
stop_last
port=$(free_port)
nbdkit -f -p "$port" -i 127.0.0.1 --tls=require --tls-psk="$PWD/keys.psk" file "$PWD/disk.raw" &
NBD_PIDS+=($!)
NBD_LAST_PID=$!
wait_for_port "$port"
vread -f raw "nbds://alice@127.0.0.1:$port/?tls-psk-file=$PWD/keys.psk" ||
    fail "vdisk-io against nbdkit PSK failed: $(cat vread.out)"
expect_fail "TLS" "$VDISK" info "nbd://127.0.0.1:$port/"
stop_last

# --- vdisk-nbd -L over TLS ------------------------------------------------------
start_vdisk_nbd "$PWD/l.sock" -f raw -t -e 0 -x tlsexp --tls-creds "$PWD/pki" disk.raw
"$VDISK_NBD" -L -k "$PWD/l.sock" \
    --object "tls-creds-x509,id=c0,endpoint=client,dir=$PWD/pki" --tls-creds c0 > list.txt ||
    fail "-L over TLS failed"
grep -q "export: 'tlsexp'" list.txt || fail "-L output: $(cat list.txt)"
stop_last
echo ok
