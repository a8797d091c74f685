#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-nbd's unix socket appears under its name only once it listens: a
# client that waits for the name and connects at once never gets
# ECONNREFUSED.  strace shows the order of bind/listen/rename; a stale
# socket is replaced, a regular file at the name is not.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/nbd-common.bash"
need strace nbdinfo

"$VDISK" create -q -f qcow2 a.qcow2 1M
sock=$PWD/s.sock
# (LeakSanitizer cannot run under ptrace: make check-asan)
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
    strace -f -qq -e trace=bind,listen,rename,renameat,renameat2 -o tr "$VDISK_NBD" -k "$sock" a.qcow2 &
NBD_PIDS+=($!)
NBD_LAST_PID=$!
wait_for_socket "$sock" $NBD_LAST_PID
# connect right away: the name only exists once the socket listens
nbdinfo --size "nbd+unix:///?socket=$sock" >/dev/null || fail "connect as soon as the socket appeared"
stop_last
# the line that makes the name visible (a bind to it, or a rename to it)
# must come after listen()
awk -v p="$sock" '
    /listen\(/ { listened = 1 }
    /bind\(/ && index($0, "\"" p "\"") { shown = NR; if (!listened) { bad = 1 } }
    /rename/ && index($0, "\"" p "\"") { shown = NR; if (!listened) { bad = 1 } }
    END { if (!shown) { print "socket name never bound or renamed"; exit 1 }
          if (bad) { print "socket name visible before listen()"; exit 1 } }
' tr || { cat tr >&2; fail "socket published before it listens"; }

# a stale socket (server killed) is replaced; a regular file is kept
/usr/bin/python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" stale.sock
[ -S stale.sock ] || fail "no stale socket made"
ino=$(stat -c %i stale.sock)
"$VDISK_NBD" -k "$PWD/stale.sock" a.qcow2 & NBD_PIDS+=($!); NBD_LAST_PID=$!
# the name already exists: wait until the server's socket replaced it
wait_for eval '[ "$(stat -c %i stale.sock)" != '"$ino"' ] || ! kill -0 '"$NBD_LAST_PID"
nbdinfo --size "nbd+unix:///?socket=$PWD/stale.sock" >/dev/null || fail "stale socket not replaced"
stop_last
echo keep > plain
expect_fail "Failed to bind" "$VDISK_NBD" -k "$PWD/plain" a.qcow2
[ "$(cat plain)" = keep ] || fail "a regular file at the socket name was replaced"
ls -a | grep -q 'vdisk-nbd-.*\.sock' && fail "temporary socket left behind"
echo ok
