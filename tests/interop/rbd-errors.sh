#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# rbd errors, each against qemu-img's message on the same name: missing
# pool, image, snapshot, namespace, conf file; bad conf options; a wrong
# key given through --object secret (never printed); hostile filenames
# (a seeded sweep); an unreachable monitor and a stopped cluster answer
# within the connect timeout, with exit 1 and one clear line.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/rbd-common.bash"

rb qemu-img create -f raw "$(R img)" 4M >/dev/null || fail "create img"
# the same exit code and message (but for the program's name) as qemu-img
same_as_qemu() {
    local rc=0 qrc=0 out qout
    out=$(rb "$VDISK" "$@" 2>&1) || rc=$?
    qout=$(rb qemu-img "$@" 2>&1) || qrc=$?
    [ "$rc" -lt 124 ] || fail "vdisk $*: exit $rc (crash or hang): $out"
    [ "$rc" = "$qrc" ] || fail "vdisk $*: exit $rc, qemu-img $qrc: $out -- $qout"
    out=$(echo "$out" | sed 's/^vdisk: //'); qout=$(echo "$qout" | sed 's/^qemu-img: //')
    [ "$out" = "$qout" ] || fail "vdisk $*: '$out', qemu-img: '$qout'"
}
T=client_mount_timeout=10
same_as_qemu info "rbd:nopool/img:conf=$CONF"
same_as_qemu info "rbd:rbd/nope:conf=$CONF"
same_as_qemu info "rbd:rbd/img@nosnap:conf=$CONF"
same_as_qemu info "rbd:rbd/nons/img:conf=$CONF"
same_as_qemu info "rbd:rbd/img:conf=$PWD/missing.conf"
same_as_qemu info "rbd:rbd/img:conf=$CONF:no_such_option=1"
same_as_qemu info "rbd:rbd/img:conf=$CONF:mon_host="
same_as_qemu info "rbd:rbd/img:conf"
same_as_qemu info "rbd:"
same_as_qemu info "rbd:justapool"
same_as_qemu info "rbd:/img:conf=$CONF"
same_as_qemu info "rbd:rbd/:conf=$CONF"
same_as_qemu info "rbd:rbd/img:conf=$CONF:key=notbase64"
expect_fail "error opening pool nopool: No such file or directory" rb "$VDISK" info "rbd:nopool/img:conf=$CONF"
expect_fail "error reading header from nope: No such file or directory" rb "$VDISK" info "rbd:rbd/nope:conf=$CONF"
same_as_qemu info --image-opts "driver=rbd,pool=rbd,conf=$CONF"
expect_fail "Parameter 'server.0.port' is missing" rb "$VDISK" info --image-opts \
    "driver=rbd,pool=rbd,image=img,conf=$CONF,server.0.host=127.0.0.1"
expect_fail "does not accept value 'kerberos'" rb "$VDISK" info --image-opts \
    "driver=rbd,pool=rbd,image=img,conf=$CONF,auth-client-required.0=kerberos"
expect_fail "Invalid parameter 'encrypt.format'" rb "$VDISK" info --image-opts \
    "driver=rbd,pool=rbd,image=img,conf=$CONF,encrypt.format=luks"
expect_fail "secret" rb "$VDISK" info --image-opts "driver=rbd,pool=rbd,image=img,conf=$CONF,key-secret=nosuch"

# a wrong key through --object secret: an error in bounded time, never the key
sed "s|^\[global\]|[global]\nclient mount timeout = 10|" "$CONF" >short.conf
KEY=$(ceph-authtool --gen-print-key)
out=$(rb "$VDISK" info --object "secret,id=k,data=$KEY,format=base64" --image-opts \
    "driver=rbd,pool=rbd,image=img,conf=$PWD/short.conf,key-secret=k" 2>&1) && fail "a wrong key was accepted"
case $out in *"error connecting"*) ;; *) fail "wrong key: $out" ;; esac
case $out in *"$KEY"*) fail "the key was printed: $out" ;; esac
# the right key through the same path works
GOOD=$(ceph-authtool -p -n client.admin "$(dirname "$CONF")/ceph.client.admin.keyring")
rb "$VDISK" info --object "secret,id=k,data=$GOOD,format=base64" --image-opts \
    "driver=rbd,pool=rbd,image=img,conf=/dev/null,key-secret=k,server.0.host=127.0.0.1,server.0.port=$(sed -n 's/^mon host = .*://p' "$CONF")" \
    >good.out 2>&1 || fail "key-secret with server.0: $(cat good.out)"
grep -q "virtual size: 4 MiB" good.out || fail "key-secret info: $(cat good.out)"
if grep -q "$GOOD" good.out; then fail "the key was printed"; fi

# hostile filenames: vdisk and qemu-img agree, nothing crashes or hangs
/usr/bin/python3 - >names <<'PY'
import random
rnd = random.Random(1919)
alpha = "ab/@:=\\ .%\x01\xff" + "x" * 5
keys = ["conf", "id", "keyring", "zz", "", "a\\:b", "log_file"]
for i in range(40):
    s = "".join(rnd.choice(alpha) for _ in range(rnd.randrange(0, 24)))
    if rnd.random() < 0.5:
        s += ":" + rnd.choice(keys) + ("=" + "".join(rnd.choice(alpha) for _ in range(rnd.randrange(0, 6))) if rnd.random() < 0.8 else "")
    s = s.replace("\n", "")
    # no file names the input could choose: conf and keyring point nowhere real
    print("rbd:" + s.replace("conf=", "conf=/nonexistent/").replace("keyring=", "keyring=/nonexistent/").replace("log_file=", "log_file=/nonexistent/"))
PY
n=0
while IFS= read -r name; do
    n=$((n + 1))
    same_as_qemu info "$name"
done <names
[ "$n" -ge 40 ] || fail "only $n hostile names"

# an unreachable monitor: the connect timeout bounds the wait
start=$(date +%s)
expect_fail "error connecting: Connection timed out" \
    rb "$VDISK" info "rbd:rbd/img:mon_host=127.0.0.1\:1:$T:conf=/dev/null"
# the cluster stops: the same clear error, exit 1
"$VDISK_SRC/scripts/ceph-cluster.sh" stop "$PWD/ceph"
rc=0
out=$(rb "$VDISK" info "rbd:rbd/img:conf=$CONF:$T" 2>&1) || rc=$?
[ "$rc" = 1 ] || fail "cluster down: exit $rc: $out"
case $out in *"error connecting: Connection timed out"*) ;; *) fail "cluster down: $out" ;; esac
[ $(( $(date +%s) - start )) -lt 100 ] || fail "the connect timeout was not honoured"
echo ok
