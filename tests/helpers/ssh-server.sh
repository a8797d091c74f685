# SPDX-License-Identifier: BSD-3-Clause
# A private sshd + ssh-agent for the ssh protocol tests (source it from a
# tests/interop/ssh-*.sh script, after tests/lib.sh; bash).
#
# The test first re-executes itself in a private mount namespace where the
# user's home directory is a bind mount of ./home: libssh (hence vdisk and
# QEMU) reads ~/.ssh/known_hosts and ~/.ssh/config from the passwd home,
# not from $HOME, and the real files must never change.  Then:
#   ssh_start        host and user keys, sshd on 127.0.0.1 (a free port),
#                    an agent holding the user key, ~/.ssh/known_hosts
#   SSH_PORT, SSH_URL (ssh://127.0.0.1:PORT$PWD: append /FILE), SSH_HOME,
#   SSH_IPV6 (1 when sshd listens on ::1 too)
#   ssh_sftp_pids    pids of the sftp-server processes of this test still running
#   ssh_track PID    stop PID at exit (only if that pid is still that process)
#   same_error ARGS  vdisk ARGS and qemu-img ARGS fail alike (exit 1, one
#                    line, the same message after the program name)
# Every process is stopped by its pid on exit.  Skips (77) when sshd or the
# namespace cannot be set up on this machine.
need qemu-img qemu-io ssh-keygen ssh-agent ssh-add
[ -x /usr/sbin/sshd ] || fail "missing peer /usr/sbin/sshd (run scripts/deps.sh test)"
[ -x /usr/lib/openssh/sftp-server ] || fail "missing /usr/lib/openssh/sftp-server"
"$VDISK" --help | grep -qw ssh || skip "vdisk was built without libssh"

if [ -z "${VDISK_SSH_NS:-}" ]; then
    home=$(getent passwd "$(id -u)" | cut -d: -f6)
    [ -n "$home" ] && [ -d "$home" ] || skip "no home directory for uid $(id -u)"
    mkdir -p home/.ssh
    chmod 700 home home/.ssh
    unshare -m --propagation private true 2>/dev/null ||
        skip "cannot make a private mount namespace (unshare -m)"
    # shellcheck disable=SC2016
    VDISK_SSH_NS=1 exec unshare -m --propagation private bash -c \
        'mount --bind "$1/home" "$2" || { echo "cannot bind-mount a private home"; exit 77; }
         shift 2; exec bash "$@"' _ "$PWD" "$home" "$0" "$@"
fi
SSH_HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
[ "$SSH_HOME/.ssh" -ef "$PWD/home/.ssh" ] || fail "the home directory is not the private one"

# Every process is recorded as "PID STARTTIME" and killed at exit only if
# that pid still has that start time: a process that ended long ago may
# have left its pid to another test's process (pid_max is 32768 here, and
# make check forks fast), and killing it would kill, say, another test's
# sshd.
ssh_pids=()
ssh_starttime() { # PID -> its start time (field 22 of /proc/PID/stat)
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    # shellcheck disable=SC2086
    set -- $st
    echo "${20}"
}
ssh_track() { # PID: stop it at exit (if it is still that process)
    ssh_pids+=("$1:$(ssh_starttime "$1" || echo gone)")
}
ssh_is() { # PID:STARTTIME -> the process still runs
    [ "$(ssh_starttime "${1%%:*}" || echo none)" = "${1#*:}" ]
}
ssh_cleanup() {
    local p
    for p in "${ssh_pids[@]}"; do ssh_is "$p" && kill "${p%%:*}" 2>/dev/null; done
    for p in "${ssh_pids[@]}"; do wait "${p%%:*}" 2>/dev/null || true; done
    for p in $(ssh_sftp_pids); do kill "$p" 2>/dev/null || true; done
    return 0
}
trap ssh_cleanup EXIT

# ssh_sftp_pids: the sftp-server processes of this test still running
# (sftp.pids holds "PID STARTTIME" lines written by sftp-wrap.sh)
ssh_sftp_pids() {
    local p t
    [ -f sftp.pids ] || return 0
    while read -r p t; do ssh_is "$p:$t" && echo "$p"; done < sftp.pids
    return 0
}

# ssh_alive: the session's sshd still listens; otherwise fail, with the end
# of its log (a test that expects errors must not take "Connection refused"
# from a dead server for the error it wanted)
ssh_alive() {
    [ -z "${SSH_SSHD_PID:-}" ] && return 0
    kill -0 "$SSH_SSHD_PID" 2>/dev/null && return 0
    fail "the session's sshd (pid $SSH_SSHD_PID, port ${SSH_PORT:-?}) is gone; sshd.log ends: $(tail -n 5 sshd.log 2>/dev/null)"
}

# ssh_stop_sshd: stop the session's sshd now (it is no longer ours to kill
# at exit: its pid may belong to another process by then)
ssh_stop_sshd() {
    local p keep=()
    kill "$SSH_SSHD_PID" 2>/dev/null || true
    wait "$SSH_SSHD_PID" 2>/dev/null || true
    for p in "${ssh_pids[@]}"; do [ "${p%%:*}" = "$SSH_SSHD_PID" ] || keep+=("$p"); done
    ssh_pids=("${keep[@]}")
    SSH_SSHD_PID=
}

# same_error CMD_ARGS...: vdisk and qemu-img fail alike, with the same message
same_error() {
    local v q rv=0 rq=0
    v=$("$VDISK" "$@" 2>&1) || rv=$?
    q=$(qemu-img "$@" 2>&1) || rq=$?
    [ "$rv" = 1 ] || fail "vdisk exit $rv for: $* -- $v"
    [ "$rq" -ne 0 ] || fail "qemu-img accepted: $*"
    ssh_alive
    [ "$(echo "$v" | wc -l)" = 1 ] || fail "not one line: $v"
    [ "${v#vdisk: }" = "${q#qemu-img: }" ] || fail "messages differ for $*:
  vdisk:    $v
  qemu-img: $q"
    last_error=$v
}

# sshd is up when its pid file names a live process, down when it exited
ssh_sshd_state() { # PID -> 0 up, 1 starting, 2 died
    kill -0 "$1" 2>/dev/null || return 2
    [ -s sshd.pid ] && [ "$(cat sshd.pid)" = "$1" ] && return 0
    return 1
}

# sshd is up or died (no longer starting)
ssh_sshd_settled() {
    local st=0
    ssh_sshd_state "$1" || st=$?
    [ "$st" -ne 1 ]
}

# ssh_wrap_record: the sh line an sftp wrapper runs first to record itself
ssh_wrap_record() {
    # shellcheck disable=SC2016
    printf '%s\n' 's=$(cat /proc/$$/stat); s=${s##*) }; set -- $s; echo "$$ ${20}" >> '"'$PWD/sftp.pids'"
}

ssh_start() {
    rm -f hostkey hostkey.pub userkey userkey.pub sshd.pid
    ssh-keygen -q -t ed25519 -N '' -C vdisk-test-host -f hostkey
    ssh-keygen -q -t ed25519 -N '' -C vdisk-test-user -f userkey
    cp userkey.pub authorized_keys
    mkdir -p /run/sshd 2>/dev/null || true
    # the sftp subsystem through a wrapper that records its pid
    cat > sftp-wrap.sh <<EOF
#!/bin/sh
$(ssh_wrap_record)
exec ${SSH_SFTP_SERVER:-/usr/lib/openssh/sftp-server}
EOF
    chmod +x sftp-wrap.sh
    local try port pid st
    # IPv6 loopback too, where the machine has it (SSH_IPV6=1 then)
    SSH_IPV6=
    /usr/bin/python3 -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' \
        2>/dev/null && SSH_IPV6=1
    for try in 1 2 3 4 5 6 7 8; do
        port=$((20000 + (RANDOM * 32768 + RANDOM + $$) % 40000))
        cat > sshd_config <<EOF
ListenAddress 127.0.0.1
${SSH_IPV6:+ListenAddress ::1}
Port $port
HostKey $PWD/hostkey
PidFile $PWD/sshd.pid
AuthorizedKeysFile $PWD/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
Subsystem sftp $PWD/sftp-wrap.sh
EOF
        rm -f sshd.pid
        /usr/sbin/sshd -D -e -f "$PWD/sshd_config" 2>>sshd.log &
        pid=$!
        wait_for ssh_sshd_settled "$pid"
        st=0
        ssh_sshd_state "$pid" || st=$?
        if [ "$st" -eq 0 ]; then
            ssh_track "$pid"
            SSH_SSHD_PID=$pid
            break
        fi
        wait "$pid" 2>/dev/null || true
        grep -q "Address already in use" sshd.log || {
            tail -n 5 sshd.log
            skip "sshd cannot start on this machine"
        }
    done
    [ -n "${SSH_SSHD_PID:-}" ] || skip "no free port for sshd"
    SSH_PORT=$port
    rm -f agent.sock
    ssh-agent -D -a "$PWD/agent.sock" >/dev/null 2>agent.log &
    ssh_track $!
    wait_for test -S agent.sock
    export SSH_AUTH_SOCK=$PWD/agent.sock
    ssh-add -q userkey 2>/dev/null || ssh-add userkey || fail "ssh-add"
    echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 hostkey.pub)" > "$SSH_HOME/.ssh/known_hosts"
    SSH_URL="ssh://127.0.0.1:$SSH_PORT$PWD"
    export SSH_PORT SSH_URL
}
