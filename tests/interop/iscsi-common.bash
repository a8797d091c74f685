# SPDX-License-Identifier: BSD-3-Clause
# Helpers for the iSCSI tests (sourced after tests/lib.sh): a private tgtd
# on 127.0.0.1 and an unusual port, with its own control port (so that
# tgtadm never talks to another tgtd on the machine), stopped by its pid
# when the test exits.  tgtd ignores SIGTERM: it is stopped with SIGKILL.
TGTD_PID=
TGTD_PORT=
TGTD_CTL=
iscsi_cleanup() {
    if [ -n "$TGTD_PID" ]; then
        kill -9 "$TGTD_PID" 2>/dev/null || true
        wait "$TGTD_PID" 2>/dev/null || true
        rm -f "/var/run/tgtd/socket.$TGTD_CTL" "/var/run/tgtd/socket.$TGTD_CTL.lock"
    fi
    TGTD_PID=
}
trap iscsi_cleanup EXIT

# a TCP port nobody listens on
iscsi_free_port() {
    /usr/bin/python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()"
}

iscsi_port_open() {
    /usr/bin/python3 -c "import socket; s=socket.create_connection(('127.0.0.1', $1), 1); s.close()" 2>/dev/null
}

tgtctl() { tgtadm -C "$TGTD_CTL" --lld iscsi "$@"; }

# start_tgtd: tgtd in the foreground (in the background of the test);
# skips when tgtd cannot run here
start_tgtd() {
    command -v tgtd >/dev/null && command -v tgtadm >/dev/null || skip "tgtd/tgtadm not installed"
    mkdir -p /var/run/tgtd 2>/dev/null || true
    [ -w /var/run/tgtd ] || skip "tgtd needs a writable /var/run/tgtd (root)"
    TGTD_PORT=$(iscsi_free_port)
    # the control port names /var/run/tgtd/socket.N; tgtd takes N < 32768
    TGTD_CTL=$((1024 + TGTD_PORT % 31000))
    while [ -e "/var/run/tgtd/socket.$TGTD_CTL" ]; do TGTD_CTL=$((1024 + (TGTD_CTL + 7) % 31000)); done
    tgtd -f --iscsi "portal=127.0.0.1:$TGTD_PORT" --control-port "$TGTD_CTL" >tgtd.log 2>&1 &
    TGTD_PID=$!
    poll_for 120 tgtd_up || fail "tgtd did not come up on port $TGTD_PORT: $(tail -3 tgtd.log)"
}

# tgtd answers on its control port and listens on its portal
tgtd_up() {
    kill -0 "$TGTD_PID" 2>/dev/null || skip "tgtd cannot run here: $(tail -3 tgtd.log)"
    tgtctl --op show --mode sys >/dev/null 2>&1 && iscsi_port_open "$TGTD_PORT"
}

# add_target TID IQN IMAGE [LUN-PARAMS]: a target with IMAGE as LUN 1,
# open to every initiator
add_target() {
    tgtctl --op new --mode target --tid "$1" -T "$2" || fail "tgtadm: new target $2"
    tgtctl --op new --mode logicalunit --tid "$1" --lun 1 -b "$3" ${4:+--bsopts "$4"} ||
        fail "tgtadm: new LUN on $2"
    tgtctl --op bind --mode target --tid "$1" -I ALL || fail "tgtadm: bind $2"
}

# iscsi_url IQN [LUN]
iscsi_url() { echo "iscsi://127.0.0.1:$TGTD_PORT/$1/${2:-1}"; }
