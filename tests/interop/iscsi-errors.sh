#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# iscsi errors: a missing target or LUN, a server that is not there, a
# server that stops answering (timeout) and one that dies in the middle of
# a write session: a clear one-line error, exit 1, bounded time, no hang;
# hostile URLs and options are refused before any connection.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/iscsi-common.bash"
need qemu-img qemu-io
"$VDISK" --help | grep -qw iscsi || skip "vdisk was built without libiscsi"

# --- hostile URLs: refused by the parser (no server needed) ---------------------
long=$(head -c 100000 /dev/zero | tr '\0' a)
for url in "iscsi://" "iscsi:///iqn.x/1" "iscsi://127.0.0.1" "iscsi://127.0.0.1/" \
    "iscsi://127.0.0.1/iqn.x" "iscsi://127.0.0.1/iqn.x/" "iscsi://127.0.0.1/iqn.x/abc" \
    "iscsi://127.0.0.1/iqn.x/99999" "iscsi://127.0.0.1/iqn.x/-1" "iscsi://127.0.0.1/iqn.x/1x" \
    "iscsi://127.0.0.1:0/iqn.x/1" "iscsi://127.0.0.1:99999/iqn.x/1" "iscsi://127.0.0.1:/iqn.x/1" \
    "iscsi://127.0.0.1:abc/iqn.x/1" "iscsi://[::1/iqn.x/1" "iscsi://[zz]/iqn.x/1" \
    "iscsi://@127.0.0.1/iqn.x/1" "iscsi://%pw@127.0.0.1/iqn.x/1" "iscsi://127.0.0.1//1" \
    "iscsi://127.0.0.1/a/b/1" "iscsi://127.0.0.1/iqn.x/1?foo=bar" "iscsi://127.0.0.1/iqn.x/1#f" \
    "iscsi://127.0.0.1/$long/1" "iscsi://$long/iqn.x/1" "iscsi://127.0.0.1/iqn$(printf '\001')x/1" \
    "iscsi://ho st/iqn.x/1"; do
    rc=0
    bounded "$VDISK" info "$url" > h.txt 2>&1 || rc=$?
    [ "$rc" = 1 ] || fail "hostile URL ${url:0:80}: exit $rc"
    # (a message that quotes a 100 kB URL is cut short: only the start is there)
    [ ${#url} -gt 1000 ] || grep -q "Failed to parse URL" h.txt || fail "hostile URL ${url:0:80}: $(head -c 300 h.txt)"
    [ "$(wc -l < h.txt)" = 1 ] || fail "hostile URL ${url:0:80}: more than one line"
done
# a password in a hostile URL is not shown either
expect_fail "Failed to parse URL : iscsi://u@127.0.0.1/iqn.x/zz" "$VDISK" info "iscsi://u%Hush55pw@127.0.0.1/iqn.x/zz"
"$VDISK" info "iscsi://u%Hush55pw@127.0.0.1/iqn.x/zz" 2>&1 | grep -q Hush55pw && fail "parse error shows the password"
# hostile options
opts="driver=raw,file.driver=iscsi,file.target=iqn.x,file.lun=1"
expect_fail "Parameter 'portal' is missing" "$VDISK" info --image-opts "$opts"
expect_fail "invalid portal" "$VDISK" info --image-opts "$opts,file.portal=a/b"
expect_fail "Invalid header-digest setting : md5" "$VDISK" info --image-opts "$opts,file.portal=127.0.0.1,file.header-digest=md5"
expect_fail "Invalid transport type 'udp'" "$VDISK" info --image-opts "$opts,file.portal=127.0.0.1,file.transport=udp"
expect_fail "at most 16383" "$VDISK" info --image-opts "driver=raw,file.driver=iscsi,file.portal=127.0.0.1,file.target=iqn.x,file.lun=70000"
expect_fail "Parameter 'target' is missing" "$VDISK" info --image-opts "driver=raw,file.driver=iscsi,file.portal=127.0.0.1"

# --- a server that is not there -----------------------------------------------------
port=$(iscsi_free_port)
rc=0
bounded "$VDISK" info "iscsi://127.0.0.1:$port/iqn.x/1" > down.txt 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "no server: exit $rc"
grep -q "iSCSI: Failed to connect to LUN" down.txt || fail "no server: $(cat down.txt)"

start_tgtd
truncate -s 16M d.img
add_target 1 iqn.2026-11.test:e d.img
U=$(iscsi_url iqn.2026-11.test:e)

# --- missing target and LUN: QEMU's messages ----------------------------------------
for url in "$(iscsi_url iqn.2026-11.test:nope)" "$(iscsi_url iqn.2026-11.test:e 7)"; do
    rc=0
    bounded "$VDISK" info "$url" > v.txt 2>&1 || rc=$?
    [ "$rc" = 1 ] || fail "$url: exit $rc"
    qemu-img info "$url" > q.txt 2>&1 && fail "qemu-img opened $url"
    [ "$(sed 's/^vdisk: //' v.txt)" = "$(sed 's/^qemu-img: //' q.txt)" ] ||
        fail "$url: vdisk '$(cat v.txt)' qemu '$(cat q.txt)'"
done
grep -q "LOGICAL_UNIT_NOT_SUPPORTED" v.txt || fail "missing LUN: $(cat v.txt)"
# LUN 0 is tgtd's controller LUN: neither a disk nor a CD-ROM
expect_fail "neither a disk nor a CD-ROM" "$VDISK" info "$(iscsi_url iqn.2026-11.test:e 0)"

# --- a server that stops answering: the timeout option bounds every request -----------
mkfifo ctl
"$VDISK_IO" --image-opts \
    "driver=raw,file.driver=iscsi,file.portal=127.0.0.1:$TGTD_PORT,file.target=iqn.2026-11.test:e,file.lun=1,file.timeout=2" \
    < ctl > st.out 2>&1 &
io=$!
exec 3>ctl
echo "write -P 0x21 0 64k" >&3
# io_wrote OUT: vdisk-io ($io) reported its first write, or exited
io_wrote() { grep -q "wrote 65536/65536" "$1" || ! kill -0 $io 2>/dev/null; }
gone() { ! kill -0 "$1" 2>/dev/null; }
wait_for io_wrote st.out
grep -q "wrote 65536/65536" st.out || fail "vdisk-io exited: $(cat st.out)"
kill -STOP "$TGTD_PID"
echo "write -P 0x22 64k 64k" >&3
echo "quit" >&3
exec 3>&-
rc=0
poll_for 60 gone $io || true
if kill -0 $io 2>/dev/null; then
    kill -CONT "$TGTD_PID"
    kill -9 $io
    fail "a stopped server hung vdisk-io past its timeout"
fi
wait $io || rc=$?
kill -CONT "$TGTD_PID"
grep -q "write failed" st.out || fail "no error for the timed-out write: $(cat st.out)"

# --- a server that dies in the middle of a session ------------------------------------
"$VDISK_IO" -f raw "$U" < <(
    echo "write -P 0x41 0 64k"
    # the next command is read only once tgtd is gone
    poll_for 120 gone "$TGTD_PID" || true
    echo "write -P 0x42 1M 64k"
    echo "read -P 0x41 0 4k"
    echo quit
) > kill.out 2>&1 &
io=$!
wait_for io_wrote kill.out
grep -q "wrote 65536/65536" kill.out || fail "vdisk-io exited early: $(cat kill.out)"
iscsi_cleanup
poll_for 60 gone $io || true
kill -0 $io 2>/dev/null && { kill -9 $io; fail "vdisk-io hung after the server died"; }
wait $io || true
grep -q "write failed: Input/output error" kill.out || fail "no write error after the server died: $(cat kill.out)"
grep -q "read failed: Input/output error" kill.out || fail "no read error after the server died: $(cat kill.out)"
# nothing reached the disk after the error
qemu-io -f raw -r -c "read -q -P 0x41 0 64k" -c "read -q -P 0 1M 64k" d.img | grep -q "verification failed" &&
    fail "the disk holds what the failed write carried"
echo ok
