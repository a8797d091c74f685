# SPDX-License-Identifier: BSD-3-Clause
# Helpers for the NBD tests (sourced after tests/lib.sh).  Every server a
# test starts is recorded and stopped by its pid when the test exits.
NBD_PIDS=()
nbd_cleanup() {
    local p
    for p in "${NBD_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${NBD_PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
}
trap nbd_cleanup EXIT

# wait_for_socket PATH [PID]: until a server listens there (or PID died;
# 120 s at most so that a hang fails)
wait_for_socket() {
    local i
    for i in $(seq 1 2400); do
        [ -S "$1" ] && return 0
        if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then
            fail "server for $1 exited"
        fi
        sleep 0.05
    done
    fail "no server socket at $1"
}

# wait_for_port PORT
wait_for_port() {
    local i
    for i in $(seq 1 2400); do
        if /usr/bin/python3 -c "import socket,sys; s=socket.create_connection(('127.0.0.1', $1), 1); s.close()" 2>/dev/null; then
            return 0
        fi
        sleep 0.05
    done
    fail "no server on port $1"
}

# free_port: a TCP port nobody listens on
free_port() {
    /usr/bin/python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()"
}

# start_vdisk_nbd SOCK ARGS...: vdisk-nbd on a unix socket, in the background
start_vdisk_nbd() {
    local sock=$1; shift
    rm -f "$sock"
    "$VDISK_NBD" -k "$sock" "$@" &
    NBD_PIDS+=($!)
    NBD_LAST_PID=$!
    wait_for_socket "$sock" $!
}

# start_qemu_nbd SOCK ARGS...
start_qemu_nbd() {
    local sock=$1; shift
    rm -f "$sock"
    qemu-nbd -k "$sock" "$@" &
    NBD_PIDS+=($!)
    NBD_LAST_PID=$!
    wait_for_socket "$sock" $!
}

# stop_last: stop the server started last and wait for it
stop_last() {
    kill "$NBD_LAST_PID" 2>/dev/null || true
    wait "$NBD_LAST_PID" 2>/dev/null || true
}

# json_get FILE EXPR: evaluate a python expression on the JSON document j
json_get() {
    /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"
}

# make_certs DIR: a CA plus server and client certificates for 127.0.0.1
# and localhost, laid out as QEMU's tls-creds-x509 and nbdkit expect.
make_certs() {
    local d=$1
    mkdir -p "$d"
    certtool --generate-privkey --outfile "$d/ca-key.pem" >/dev/null 2>&1
    printf 'cn = vdisk test CA\nca\ncert_signing_key\nexpiration_days = 2\n' > "$d/ca.info"
    certtool --generate-self-signed --load-privkey "$d/ca-key.pem" \
        --template "$d/ca.info" --outfile "$d/ca-cert.pem" >/dev/null 2>&1
    certtool --generate-privkey --outfile "$d/server-key.pem" >/dev/null 2>&1
    printf 'organization = vdisk\ncn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 2\n' > "$d/server.info"
    certtool --generate-certificate --load-ca-certificate "$d/ca-cert.pem" \
        --load-ca-privkey "$d/ca-key.pem" --load-privkey "$d/server-key.pem" \
        --template "$d/server.info" --outfile "$d/server-cert.pem" >/dev/null 2>&1
    certtool --generate-privkey --outfile "$d/client-key.pem" >/dev/null 2>&1
    printf 'country = GB\nstate = London\nlocality = London\norganization = vdisk\ncn = client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 2\n' > "$d/client.info"
    certtool --generate-certificate --load-ca-certificate "$d/ca-cert.pem" \
        --load-ca-privkey "$d/ca-key.pem" --load-privkey "$d/client-key.pem" \
        --template "$d/client.info" --outfile "$d/client-cert.pem" >/dev/null 2>&1
    [ -s "$d/server-cert.pem" ] && [ -s "$d/client-cert.pem" ] || fail "certtool failed"
}
