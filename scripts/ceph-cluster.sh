#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A one-node Ceph cluster for the rbd tests: one ceph-mon and one ceph-osd
# (memstore: data in RAM), on 127.0.0.1, no systemd, no ceph-mgr, in DIR.
#
#   scripts/ceph-cluster.sh start DIR   prints DIR/ceph.conf once the pool
#                                       `rbd` accepts a write (the admin
#                                       keyring is named in its [global])
#   scripts/ceph-cluster.sh stop DIR    stops the daemons by their pids
#
# Exit 0 on success; on failure of start the daemons are stopped again and
# the reason is on stderr (last lines of the daemon logs), exit 1.
# CEPH_MEMSTORE_BYTES (default 2 GiB) caps the OSD's RAM store.
set -u

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

stop() {
    local f pid n
    for f in "$dir"/osd.pid "$dir"/mon.pid; do
        [ -f "$f" ] || continue
        pid=$(cat "$f")
        if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
            # wait for the daemon to go (a condition, bounded so a wedged one is killed)
            for n in $(seq 1 200); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.05
            done
            kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$f"
    done
}

die() {
    echo "ceph-cluster: $*" >&2
    for l in "$dir"/log/*.log "$dir"/*.out; do
        [ -s "$l" ] && { echo "--- $l" >&2; tail -n 5 "$l" >&2; }
    done
    stop
    exit 1
}

# try CMD... with a bounded time per attempt until it succeeds
retry() {
    local n
    for n in $(seq 1 120); do
        timeout -k 2 10 "$@" >/dev/null 2>&1 && return 0
        for pid in $(cat "$dir"/mon.pid "$dir"/osd.pid 2>/dev/null); do
            kill -0 "$pid" 2>/dev/null || die "a daemon exited while waiting for: $*"
        done
        sleep 0.2
    done
    die "gave up waiting for: $*"
}

# a free TCP port on 127.0.0.1 (the monitor's)
free_port() {
    local p used
    used=$(ss -Htln 2>/dev/null | awk '{print $4}')
    for _ in $(seq 1 200); do
        p=$((20000 + RANDOM % 30000))
        case " $(echo $used) " in *":$p "*) continue ;; esac
        echo "$p"
        return 0
    done
    return 1
}

start() {
    for c in ceph-mon ceph-osd ceph-authtool monmaptool ceph rbd rados; do
        command -v "$c" >/dev/null || { echo "ceph-cluster: $c is not installed" >&2; exit 1; }
    done
    mkdir -p "$dir" || exit 1
    dir=$(cd "$dir" && pwd)
    mkdir -p "$dir/mon" "$dir/osd" "$dir/run" "$dir/log"
    local port fsid conf osd_uuid
    port=$(free_port) || die "no free port"
    fsid=$(cat /proc/sys/kernel/random/uuid)
    osd_uuid=$(cat /proc/sys/kernel/random/uuid)
    conf=$dir/ceph.conf
    cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = 127.0.0.1:$port
ms bind msgr1 = false
ms bind ipv6 = false
public addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/ceph.client.admin.keyring
run dir = $dir/run
admin socket = $dir/run/\$name.asok
log file = $dir/log/\$name.log
log to stderr = false
err to stderr = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon allow pool delete = true
osd crush chooseleaf type = 0
mon warn on pool no redundancy = false

[mon]
mon data = $dir/mon
keyring = $dir/mon/keyring
mon initial members = a

[osd]
osd data = $dir/osd
keyring = $dir/osd/keyring
osd objectstore = memstore
memstore device bytes = ${CEPH_MEMSTORE_BYTES:-2147483648}
osd max object name len = 256
osd max object namespace len = 64
EOF
    ceph-authtool --create-keyring "$dir/mon.keyring" --gen-key -n mon. --cap mon 'allow *' \
        >"$dir/authtool.out" 2>&1 || die "ceph-authtool failed"
    ceph-authtool --create-keyring "$dir/ceph.client.admin.keyring" --gen-key -n client.admin \
        --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' \
        >>"$dir/authtool.out" 2>&1 || die "ceph-authtool failed"
    ceph-authtool "$dir/mon.keyring" --import-keyring "$dir/ceph.client.admin.keyring" \
        >>"$dir/authtool.out" 2>&1 || die "ceph-authtool failed"
    monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" "$dir/monmap" \
        >"$dir/monmaptool.out" 2>&1 || die "monmaptool failed"
    ceph-mon -c "$conf" --mkfs -i a --monmap "$dir/monmap" --keyring "$dir/mon.keyring" \
        >"$dir/mon-mkfs.out" 2>&1 || die "ceph-mon --mkfs failed"
    ceph-mon -c "$conf" -i a -f </dev/null >"$dir/mon.out" 2>&1 &
    echo $! >"$dir/mon.pid"
    retry ceph -c "$conf" --connect-timeout 5 mon stat

    ceph-osd -c "$conf" -i 0 --mkfs --mkkey --osd-uuid "$osd_uuid" --no-mon-config \
        >"$dir/osd-mkfs.out" 2>&1 || die "ceph-osd --mkfs failed"
    timeout 30 ceph -c "$conf" osd new "$osd_uuid" 0 >"$dir/osd-new.out" 2>&1 ||
        die "ceph osd new failed"
    timeout 30 ceph -c "$conf" auth add osd.0 osd 'allow *' mon 'allow profile osd' \
        -i "$dir/osd/keyring" >"$dir/auth-add.out" 2>&1 || die "ceph auth add failed"
    ceph-osd -c "$conf" -i 0 -f </dev/null >"$dir/osd.out" 2>&1 &
    echo $! >"$dir/osd.pid"

    timeout 30 ceph -c "$conf" osd pool create rbd 8 >"$dir/pool.out" 2>&1 ||
        die "ceph osd pool create failed"
    timeout 30 ceph -c "$conf" osd pool set rbd size 1 --yes-i-really-mean-it \
        >>"$dir/pool.out" 2>&1 || die "ceph osd pool set failed"
    echo ready >"$dir/probe"
    retry rados -c "$conf" -p rbd put vdisk-probe "$dir/probe"
    timeout 60 rbd -c "$conf" pool init rbd >>"$dir/pool.out" 2>&1 || die "rbd pool init failed"
    echo "$conf"
}

case $cmd in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
