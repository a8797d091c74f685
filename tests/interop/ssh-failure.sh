#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# ssh servers that go away or lack something: the sftp server or the
# session's sshd killed in the middle of a write and of a read gives a
# clear error and exit 1 in bounded time (no hang), and nothing is written
# after it; a server without fsync@openssh.com gets QEMU's warning on
# flush (once), from vdisk-io as from qemu-io; a server that never answers
# the handshake gets libssh's connection timeout.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/helpers/ssh-server.sh"
need timeout pgrep
ssh_start
U=$SSH_URL

qemu-img create -q -f raw src.raw 64M
qemu-io -f raw -c "write -q -P 0x3c 0 64M" src.raw >/dev/null

alive_sftp() { for p in $(ssh_sftp_pids); do kill -0 "$p" 2>/dev/null && echo "$p"; done; }
allocated_over_1m() { [ "$(stat -c %b "$1" 2>/dev/null || echo 0)" -gt 2048 ]; }
# run_killed WHAT FILE VICTIM CMD...: start CMD (rate limited), wait until
# FILE holds more than 1 MiB, kill the victim (sftp: the sftp-server
# processes, sshd: the session's sshd), then CMD must fail with exit 1.
run_killed() {
    local what=$1 file=$2 victim=$3 pid rc=0 p
    shift 3
    timeout -k 5 120 "$@" > out.log 2>&1 &
    pid=$!
    wait_for allocated_over_1m "$file"
    if [ "$victim" = sftp ]; then
        for p in $(alive_sftp); do kill -9 "$p"; done
    else
        for p in $(pgrep -P "$SSH_SSHD_PID"); do kill -9 "$p"; done
    fi
    wait "$pid" || rc=$?
    [ "$rc" = 1 ] || fail "$what: exit $rc (124 = hang) -- $(cat out.log)"
    grep -q "Connection reset by peer" out.log || fail "$what: no message: $(cat out.log)"
    # one line per convert worker at most, each an error message
    [ "$(grep -c . out.log)" -le 8 ] || fail "$what: too many lines: $(cat out.log)"
    grep -v "^vdisk: .*failed" out.log && fail "$what: unexpected output"
    echo "$what: $(cat out.log)"
}

# writes: convert into ssh, the sftp server killed, then the session's sshd
for victim in sftp sshd; do
    rm -f dst.raw
    run_killed "write, $victim killed" dst.raw $victim \
        "$VDISK" convert -r 4M -f raw -O raw src.raw "$U/dst.raw"
    size=$(stat -c %s dst.raw)
    blocks=$(stat -c %b dst.raw)
    # nothing arrives after the error was reported
    [ "$(stat -c %s dst.raw)/$(stat -c %b dst.raw)" = "$size/$blocks" ] || fail "written after"
    cmp -n "$((blocks * 512 > 1048576 ? 1048576 : blocks * 512))" src.raw dst.raw >/dev/null ||
        fail "what was written is wrong"
done

# reads: convert out of ssh
for victim in sftp sshd; do
    rm -f got.raw
    run_killed "read, $victim killed" got.raw $victim \
        "$VDISK" convert -r 4M -f raw -O raw "$U/src.raw" got.raw
done

# the listener gone: a clear connection error
ssh_stop_sshd
expect_fail "Failed to connect to '127.0.0.1:$SSH_PORT'" "$VDISK" info "$U/src.raw"
expect_exit 1 "$VDISK" info "$U/src.raw"

# a server that accepts the connection and never speaks: libssh's
# handshake timeout (10 s), a clear error, no hang
/usr/bin/python3 -c '
import socket, sys, time
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(4)
open("silent.port.tmp", "w").write(str(s.getsockname()[1]))
import os; os.rename("silent.port.tmp", "silent.port")
conns = []
while True:
    conns.append(s.accept()[0])' &
silent=$!
ssh_track "$silent"
wait_for test -s silent.port
rc=0
out=$(timeout -k 5 60 "$VDISK" info "ssh://127.0.0.1:$(cat silent.port)/x?host_key_check=no" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "silent server: exit $rc (124 = hang): $out"
case $out in *"failed to establish SSH session: Timeout connecting"*) ;;
    *) fail "silent server: $out" ;; esac
kill "$silent"

# a server without fsync@openssh.com
ssh_start
U=$SSH_URL
cat > sftp-wrap.sh <<EOF
#!/bin/sh
$(ssh_wrap_record)
exec /usr/bin/python3 "$VDISK_SRC/tests/helpers/sftp-noext.py"
EOF
qemu-img create -q -f raw f.raw 1M
v=$("$VDISK_IO" -f raw -c "write -P 9 0 4096" -c flush -c flush "$U/f.raw" 2>&1) || fail "vdisk-io: $v"
q=$(qemu-io -f raw -c "write -P 9 0 4096" -c flush -c flush "$U/f.raw" 2>&1) || fail "qemu-io: $q"
want="warning: ssh server 127.0.0.1 does not support fsync"
echo "$q" | grep -q "^qemu-io: $want\$" || fail "QEMU's warning changed: $q"
echo "$v" | grep -q "^vdisk-io: $want\$" || fail "no warning: $v"
[ "$(echo "$v" | grep -c "does not support fsync")" = 1 ] || fail "warned more than once: $v"
echo "$v" | grep -q "to support fsync, you need OpenSSH >= 6.3" || fail "no hint: $v"
"$VDISK" convert -f raw -O qcow2 src.raw "$U/nofsync.qcow2" 2> conv.err || fail "convert: $(cat conv.err)"
grep -q "$want" conv.err || fail "convert did not warn: $(cat conv.err)"
qemu-img compare -f raw -F qcow2 src.raw nofsync.qcow2 >/dev/null || fail "nofsync content"
echo ok
