#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The ssh protocol against QEMU 7.2's ssh driver on the same private sshd
# and the same URLs: info (human and JSON), create, convert in and out (raw
# and qcow2 over ssh), compare, map, resize, many requests at once (through
# vdisk-nbd), and one seeded random write workload run by vdisk-io and by
# qemu-io over ssh, checked with qemu-img compare and check on the files
# behind the URLs.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/bench/lib.sh"
. "$VDISK_SRC/tests/helpers/ssh-server.sh"
ssh_start
U=$SSH_URL
SEED=${SEED:-4242}

json_same() { # A B: the same JSON document
    /usr/bin/python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])) != json.load(open(sys.argv[2])))' "$1" "$2" ||
        { diff "$1" "$2"; fail "JSON differs: $1 $2"; }
}

bench_sparse_raw in.raw 8M "$SEED" 40 small
qemu-img convert -f raw -O qcow2 in.raw src.qcow2
cp in.raw src.raw

# info, both drivers on the same URL (known_hosts check by default)
for f in src.qcow2 src.raw; do
    fmt=${f#*.}
    "$VDISK" info --output=json -f "$fmt" "$U/$f" > v.json || fail "vdisk info $f"
    qemu-img info --output=json -f "$fmt" "$U/$f" > q.json || fail "qemu-img info $f"
    json_same v.json q.json
    "$VDISK" info -f "$fmt" "$U/$f?host_key_check=no" > v.txt || fail "vdisk info $f (text)"
    qemu-img info -f "$fmt" "$U/$f?host_key_check=no" > q.txt
    diff q.txt v.txt || fail "info text differs for $f"
done
grep -q "^image: ssh://$(id -un)@127.0.0.1:$SSH_PORT$PWD/src.raw?host_key_check=no\$" v.txt ||
    fail "image name: $(head -1 v.txt)"
# probing over ssh
"$VDISK" info --output=json "$U/src.qcow2" | grep -q '"format": "qcow2"' || fail "probe qcow2"

# map
"$VDISK" map --output=json -f qcow2 "$U/src.qcow2" > v.map || fail "vdisk map"
qemu-img map --output=json -f qcow2 "$U/src.qcow2" > q.map
diff q.map v.map || fail "map differs"

# convert out of ssh
"$VDISK" convert -f qcow2 -O raw "$U/src.qcow2" a.raw || fail "convert from ssh qcow2"
same_content in.raw a.raw
"$VDISK" convert -f raw -O raw "$U/src.raw" b.raw || fail "convert from ssh raw"
same_content in.raw b.raw

# create over ssh, as qemu-img does
"$VDISK" create -q -f qcow2 "$U/new.qcow2" 16M || fail "vdisk create qcow2 over ssh"
qemu-img create -q -f qcow2 qnew.qcow2 16M
qemu-img check new.qcow2 >/dev/null || fail "qemu-img check of a qcow2 created over ssh"
cmp new.qcow2 qnew.qcow2 >/dev/null ||
    [ "$(qemu-img info --output=json new.qcow2 | grep virtual-size)" = \
      "$(qemu-img info --output=json qnew.qcow2 | grep virtual-size)" ] || fail "created qcow2"
"$VDISK" create -q -f raw "$U/new.raw" 1000 || fail "vdisk create raw over ssh"
qemu-img create -q -f raw "$U/qnew.raw" 1000
[ "$(stat -c %s new.raw)" = "$(stat -c %s qnew.raw)" ] ||
    fail "raw create size $(stat -c %s new.raw) vs $(stat -c %s qnew.raw)"

# convert into ssh (a new image on the server), read back by QEMU
"$VDISK" convert -f raw -O qcow2 in.raw "$U/out.qcow2" || fail "convert to ssh qcow2"
qemu-img check out.qcow2 >/dev/null || fail "qemu-img check out.qcow2"
qemu-img compare -f raw -F qcow2 in.raw "$U/out.qcow2" >/dev/null || fail "QEMU reads out.qcow2"
"$VDISK" convert -f raw -O raw in.raw "$U/out.raw" || fail "convert to ssh raw"
same_content in.raw out.raw
# several writers at once on one session (-m 8 -W: out of order)
"$VDISK" convert -m 8 -W -f raw -O qcow2 in.raw "$U/par.qcow2" || fail "convert -m 8 -W"
qemu-img compare -f raw -F qcow2 in.raw par.qcow2 >/dev/null || fail "parallel convert content"
# and what QEMU writes over ssh, vdisk reads
qemu-img convert -f raw -O qcow2 in.raw "$U/q.qcow2"
"$VDISK" compare -f raw -F qcow2 in.raw "$U/q.qcow2" >/dev/null || fail "vdisk reads QEMU's"
"$VDISK" compare "$U/q.qcow2" "$U/out.qcow2" >/dev/null || fail "compare over ssh"
# a difference is found over ssh too
qemu-io -f qcow2 -c "write -q -P 0x11 4096 512" q.qcow2
expect_exit 1 "$VDISK" compare -f qcow2 -F qcow2 "$U/q.qcow2" "$U/out.qcow2"

# many requests at once on one session: vdisk-nbd serves an ssh image to
# qemu-img convert with 16 requests in flight, reading and writing
"$VDISK_NBD" -k "$PWD/r.sock" -f qcow2 -r -e 4 "$U/src.qcow2" &
ssh_track $!
qemu-img create -q -f qcow2 nbdw.qcow2 8M
"$VDISK_NBD" -k "$PWD/w.sock" -f qcow2 -e 4 "$U/nbdw.qcow2" &
wpid=$!
ssh_track $wpid
wait_for test -S r.sock
wait_for test -S w.sock
qemu-img convert -m 16 -W -f raw -O raw "nbd+unix:///?socket=$PWD/r.sock" nbdr.raw ||
    fail "parallel reads through vdisk-nbd"
same_content in.raw nbdr.raw
qemu-img convert -n -m 16 -W -f raw -O raw in.raw "nbd+unix:///?socket=$PWD/w.sock" ||
    fail "parallel writes through vdisk-nbd"
wait "$wpid" || fail "vdisk-nbd (writes) exit status" # it leaves with its client
qemu-img compare -f raw -F qcow2 in.raw "$U/nbdw.qcow2" >/dev/null ||
    fail "parallel writes: content"

# a seeded random workload: vdisk-io and qemu-io, each over ssh
qemu-img create -q -f qcow2 wv.qcow2 8M
qemu-img create -q -f qcow2 wq.qcow2 8M
RANDOM=$SEED
cmds=()
for _ in $(seq 1 60); do
    off=$(((RANDOM * 32768 + RANDOM) % (8 * 1048576 - 300000)))
    len=$((RANDOM % 300000 + 1))
    case $((RANDOM % 6)) in
        0) cmds+=(-c "write -z $off $len") ;;
        1) cmds+=(-c "flush") ;;
        *) cmds+=(-c "write -P $((RANDOM % 255 + 1)) $off $len") ;;
    esac
done
"$VDISK_IO" -f qcow2 "${cmds[@]}" "$U/wv.qcow2" >/dev/null || fail "vdisk-io workload"
qemu-io -f qcow2 "${cmds[@]}" "$U/wq.qcow2" >/dev/null || fail "qemu-io workload"
qemu-img compare -f qcow2 -F qcow2 wv.qcow2 wq.qcow2 || fail "workload results differ"
qemu-img check wv.qcow2 >/dev/null || fail "qemu-img check after the workload"
# the same workload read back through both drivers
"$VDISK" compare -f qcow2 -F qcow2 "$U/wv.qcow2" "$U/wq.qcow2" >/dev/null || fail "vdisk compare"
out=$("$VDISK_IO" -f qcow2 -c "read -v 1048576 64" "$U/wv.qcow2" | grep '^0')
[ -n "$out" ] && [ "$out" = "$(qemu-io -f qcow2 -c "read -v 1048576 64" "$U/wv.qcow2" | grep '^0')" ] ||
    fail "read -v differs"

# resize: growing works, shrinking is refused as QEMU refuses it
truncate -s 1M r.raw
"$VDISK" resize -f raw "$U/r.raw" 3M || fail "resize over ssh"
[ "$(stat -c %s r.raw)" = 3145728 ] || fail "resize size $(stat -c %s r.raw)"
expect_fail "ssh driver does not support shrinking files" \
    "$VDISK" resize --shrink -f raw "$U/r.raw" 1M
[ "$(stat -c %s r.raw)" = 3145728 ] || fail "a refused shrink changed the file"
# flush goes through fsync@openssh.com: no warning from OpenSSH's server
out=$("$VDISK_IO" -f raw -c "write -P 7 0 4096" -c flush "$U/r.raw" 2>&1) || fail "flush: $out"
case $out in *warning*) fail "unexpected warning: $out" ;; esac
echo ok
