#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# luks create options beyond the cipher matrix (luks-create.sh): QEMU's
# layout and measured iterations, errors as qemu-img, preallocation,
# resize, measure (luks and qcow2's LUKS header), and the passphrase
# leaving the process listing.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

OBJ="--object secret,id=s0,data=s3cr3t"
"$VDISK" create -q -f luks $OBJ -o key-secret=s0,iter-time=10 v1.luks 3M
# the header as QEMU lays it out
grep -q "payload-offset\": 2068480" <("$VDISK" info --output=json v1.luks) ||
    fail "payload offset is not QEMU's"
# iterations are measured (not the minimum) with the default iter-time share
it=$("$VDISK" info --output=json v1.luks | sed -n 's/.*"iters": \([0-9]*\).*/\1/p' | head -1)
[ "$it" -ge 1000 ] || fail "iterations $it"
# errors as qemu-img
expect_fail "key-secret" "$VDISK" create -f luks x.luks 1M
expect_fail "No secret with id 'nope'" "$VDISK" create -f luks -o key-secret=nope x.luks 1M
expect_fail "cipher-alg" "$VDISK" create -f luks $OBJ -o key-secret=s0,cipher-alg=des x.luks 1M
expect_fail "XTS" "$VDISK" create -f luks $OBJ -o key-secret=s0,cipher-alg=cast5-128 x.luks 1M
expect_fail "essiv" "$VDISK" create -f luks $OBJ \
    -o key-secret=s0,cipher-alg=cast5-128,cipher-mode=cbc,ivgen-alg=essiv x.luks 1M
# preallocation=full allocates the whole file, as QEMU does
"$VDISK" create -q -f luks $OBJ -o key-secret=s0,iter-time=10,preallocation=full p.luks 1M
[ "$(stat -c %s p.luks)" = $((2068480 + 1048576)) ] || fail "size of p.luks"
[ "$(du -k p.luks | cut -f1)" -ge 3040 ] || fail "p.luks not preallocated"
# resize grows the payload
"$VDISK" resize $OBJ --image-opts driver=luks,key-secret=s0,file.filename=v1.luks 4M
qemu-img info v1.luks | grep -q "virtual size: 4 MiB" || fail "resize"
# measure as qemu-img (luks, and qcow2 with its LUKS header clusters)
head -c 1M /dev/urandom > m.raw
qemu_measure() { qemu_pbkdf qemu-img measure "$@"; }
for a in "luks -o key-secret=s0" "luks -o key-secret=s0,cipher-alg=aes-128,cipher-mode=cbc" \
    "qcow2 -o encrypt.format=luks,encrypt.key-secret=s0" \
    "qcow2 -o encrypt.format=luks,encrypt.key-secret=s0,encrypt.cipher-alg=serpent-128,cluster_size=4096" \
    "qcow2 -o encrypt.format=aes,encrypt.key-secret=s0"; do
    # shellcheck disable=SC2086
    [ "$(qemu_measure $OBJ -O $a m.raw)" = "$("$VDISK" measure $OBJ -O $a m.raw)" ] ||
        fail "measure differs: $a"
    # shellcheck disable=SC2086
    [ "$(qemu_measure $OBJ -O $a --size 5G)" = "$("$VDISK" measure $OBJ -O $a --size 5G)" ] ||
        fail "measure --size differs: $a"
done
# the passphrase leaves the process listing: vdisk-io waits for commands on
# a pipe; once it answered one, its /proc cmdline no longer holds the value
mkfifo cmds.fifo
exec 7<>cmds.fifo
"$VDISK_IO" --object secret,id=s9,data=s3cr3t \
    --image-opts driver=luks,key-secret=s9,file.filename=v1.luks <&7 >io.out 2>&1 &
iopid=$!
echo "read 0 512" >&7
for _ in $(seq 1 600); do grep -q "read 512/512" io.out && break; kill -0 "$iopid" || break; sleep 0.1; done
grep -q "read 512/512" io.out || fail "vdisk-io did not answer: $(cat io.out)"
tr '\0' ' ' < /proc/$iopid/cmdline > cmdline
echo quit >&7
wait "$iopid" || true
exec 7>&-
grep -q "data=xxxxxx " cmdline || fail "cmdline: $(cat cmdline)"
if grep -q s3cr3t cmdline io.out; then fail "passphrase visible"; fi
echo ok
