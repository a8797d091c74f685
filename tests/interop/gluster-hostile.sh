#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Hostile GlusterFS filenames and options, and servers that are not there:
# vdisk fails with QEMU 7.2's message (the first line of qemu-img's), exit
# 1, quickly, and never crashes.  Needs no volume: nothing here may reach
# a brick.  Every URL is also given to qemu-img, which must fail as well.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img
"$VDISK" --help | grep -qw gluster || skip "vdisk built without libgfapi"
[ -n "${VDISK_SANITIZED:-}" ] &&
    export LSAN_OPTIONS="${LSAN_OPTIONS:-}:suppressions=$VDISK_SRC/tests/lsan-gluster.supp:print_suppressions=0"

long=$(printf 'a%.0s' $(seq 1 5000))
bad_urls=(
    "gluster://"
    "gluster:///"
    "gluster://127.0.0.1"
    "gluster://127.0.0.1/vol"
    "gluster://127.0.0.1/vol/"
    "gluster://127.0.0.1//vol"
    "gluster://127.0.0.1:99999/vol/img"
    "gluster://127.0.0.1:-1/vol/img"
    "gluster://127.0.0.1:12ab/vol/img"
    "gluster://[::1/vol/img"
    "gluster://[]/vol/img"
    "gluster://[zz::1]/vol/img"
    "gluster://127.0.0.1/vol/img?socket=/tmp/x"
    "gluster://127.0.0.1/vol/img?foo=bar"
    "gluster+unix:///vol/img"
    "gluster+unix://host/vol/img?socket=/tmp/x"
    "gluster+unix://:24007/vol/img?socket=/tmp/x"
    "gluster+unix:///vol/img?socket=/tmp/x&socket=/tmp/y"
    "gluster+unix:///vol/img?sock=/tmp/x"
    "gluster+unix:///vol/img?socket="
    "gluster+unix:///vol/img?socket"
    "gluster://127.0.0.1/vol/img%00x"
    "gluster://127.0.0.1/vol/img%zz"
)
for u in "${bad_urls[@]}"; do
    expect_fail "invalid URI" bounded "$VDISK" info "$u"
    expect_exit 1 bounded "$VDISK" info "$u"
    qrc=0; timeout 20 qemu-img info "$u" >/dev/null 2>&1 || qrc=$?
    [ "$qrc" -ne 0 ] || fail "qemu-img accepted $u"
done
# unknown transports are not gluster's (no such protocol, as in QEMU); an
# overlong name fails somewhere, cleanly
for u in "gluster+udp://127.0.0.1/vol/img" "gluster+://127.0.0.1/vol/img" "gluster://127.0.0.1/$long"; do
    expect_exit 1 bounded "$VDISK" info "$u"
done
# qemu-img's exact first line for one of them
u="gluster://127.0.0.1/vol"
qline=$(timeout 20 qemu-img info "$u" 2>&1 | head -n 1 | sed 's/^qemu-img: //') || true
vline=$("$VDISK" info "$u" 2>&1 | head -n 1 | sed 's/^vdisk: //') || true
[ "$qline" = "$vline" ] || fail "message differs: vdisk '$vline', qemu-img '$qline'"

# options: missing or wrong keys
gl() { echo "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"gluster\"$1}}"; }
srv=',"server":[{"type":"inet","host":"127.0.0.1","port":"1"}]'
expect_fail "Parameter 'server' is missing" "$VDISK" info "$(gl ',"volume":"v","path":"p"')"
expect_fail "Parameter 'volume' is missing" "$VDISK" info "$(gl ",\"path\":\"p\"$srv")"
expect_fail "Parameter 'path' is missing" "$VDISK" info "$(gl ",\"volume\":\"v\"$srv")"
expect_fail "Parameter 'type' is missing" "$VDISK" info \
    "$(gl ',"volume":"v","path":"p","server":[{"host":"h","port":"1"}]')"
expect_fail "Parameter 'type' may be 'inet' or 'unix'" "$VDISK" info \
    "$(gl ',"volume":"v","path":"p","server":[{"type":"vsock","host":"h","port":"1"}]')"
expect_fail "Parameter 'port' is missing" "$VDISK" info \
    "$(gl ',"volume":"v","path":"p","server":[{"type":"inet","host":"h"}]')"
expect_fail "Parameter 'host' is missing" "$VDISK" info \
    "$(gl ',"volume":"v","path":"p","server":[{"type":"inet","port":"1"}]')"
expect_fail "Parameter 'path' is missing" "$VDISK" info \
    "$(gl ',"volume":"v","path":"p","server":[{"type":"unix"}]')"
expect_fail "'70000' is not a valid port number" "$VDISK" info \
    "$(gl ',"volume":"v","path":"p","server":[{"type":"inet","host":"h","port":"70000"}]')"
expect_fail "Parameter 'debug' expects" "$VDISK" info \
    "$(gl ",\"volume\":\"v\",\"path\":\"p\",\"debug\":\"x\"$srv")"
expect_fail "Invalid parameter" "$VDISK" info \
    "$(gl ",\"volume\":\"v\",\"path\":\"p\",\"bogus\":\"1\"$srv")"

# no server there (a closed port, a missing socket): a quick, clear failure,
# for open and for create
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for u in "gluster://127.0.0.1:$port/vol/img" "gluster+unix:///vol/img?socket=$PWD/none.sock"; do
    start=$(date +%s)
    expect_fail "Gluster connection for volume vol, path img failed to connect" \
        timeout 60 "$VDISK" info "$u"
    expect_fail "Gluster connection for volume vol, path img failed to connect" \
        timeout 60 "$VDISK" create -f qcow2 "$u" 1M
    expect_exit 1 timeout 60 "$VDISK" convert -O raw "$u" out.raw
    [ $(( $(date +%s) - start )) -lt 60 ] || fail "slow failure for $u"
    [ ! -e out.raw ] || fail "convert from a missing server left out.raw"
done
# a debug level out of range is clamped, as QEMU does (the failure is the
# connection's, not the option's)
expect_fail "failed to connect" timeout 60 "$VDISK" info \
    "$(gl ",\"volume\":\"vol\",\"path\":\"img\",\"debug\":99,\"server\":[{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"$port\"}]")"
# the logfile takes the library's messages: stderr keeps only ours
"$VDISK" info "$(gl ",\"volume\":\"vol\",\"path\":\"img\",\"debug\":7,\"logfile\":\"$PWD/g.log\",\"server\":[{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"$port\"}]")" \
    >out 2>err && fail "info succeeded without a server"
[ -s g.log ] || fail "nothing in the logfile"
[ "$(wc -l <err)" = 1 ] || fail "stderr has more than our message: $(cat err)"
# a volfile server that accepts and never answers (libgfapi's glfs_init
# waits forever there; QEMU hangs): vdisk gives up after 60 s, exit 1
/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(8)
held = []
while True:
    held.append(s.accept()[0])
' "$PWD/silent.sock" &
silent=$!
trap 'kill $silent 2>/dev/null || true' EXIT
wait_for test -S silent.sock
start=$(date +%s)
expect_fail "Gluster connection for volume vol, path img failed to connect" \
    timeout 150 "$VDISK" info "gluster+unix:///vol/img?socket=$PWD/silent.sock"
took=$(( $(date +%s) - start ))
[ "$took" -lt 120 ] || fail "a silent volfile server held vdisk for $took s"
kill $silent
echo ok
