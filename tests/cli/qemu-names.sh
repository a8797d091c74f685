#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Started through a link named qemu-img / qemu-io / qemu-nbd, vdisk's tools
# speak as QEMU's (messages, prompt): the same text as QEMU 7.2 for the same
# mistakes.  Under their own names they keep theirs.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
mkdir bin
ln -s "$VDISK" bin/qemu-img
ln -s "$VDISK_IO" bin/qemu-io
ln -s "$VDISK_NBD" bin/qemu-nbd

# Same error text as QEMU's for a missing image.
for t in "qemu-img info missing.qcow2" "qemu-io -c quit missing.qcow2" \
         "qemu-io -f raw -c quit missing.raw"; do
    set -- $t
    want=$("$@" 2>&1) && fail "qemu accepted $t"
    prog=$1; shift
    got=$("bin/$prog" "$@" 2>&1) && fail "vdisk accepted $t"
    [ "$got" = "$want" ] || fail "$t: vdisk says '$got', QEMU '$want'"
done

# No legacy AES warning under QEMU's names (qemu-io prints none; iotest
# 134); vdisk-io warns.
qemu-img create -q -f qcow2 --object secret,id=s0,data=pw \
    -o encrypt.format=aes,encrypt.key-secret=s0 aes.qcow2 1M
want=$(qemu-io --object secret,id=s0,data=pw -c "read 0 512" \
    --image-opts driver=qcow2,encrypt.key-secret=s0,file.filename=aes.qcow2 2>&1 | sed 1q)
got=$(bin/qemu-io --object secret,id=s0,data=pw -c "read 0 512" \
    --image-opts driver=qcow2,encrypt.key-secret=s0,file.filename=aes.qcow2 2>&1 | sed 1q)
[ "$got" = "$want" ] || fail "AES image under qemu-io: '$got', QEMU '$want'"
"$VDISK_IO" --object secret,id=s0,data=pw -c "read 0 512" \
    --image-opts driver=qcow2,encrypt.key-secret=s0,file.filename=aes.qcow2 2>&1 |
    grep -q "which is flawed" || fail "no AES warning from vdisk-io"

# The interactive prompt and the version line's program name.
truncate -s 1M d.raw
got=$(printf 'quit\n' | bin/qemu-io -f raw d.raw 2>&1)
[ "$got" = "qemu-io> " ] || fail "prompt under qemu-io: '$got'"
got=$(printf 'quit\n' | "$VDISK_IO" -f raw d.raw 2>&1)
[ "$got" = "vdisk-io> " ] || fail "prompt under vdisk-io: '$got'"

# Own names are unchanged.
got=$("$VDISK" info missing.qcow2 2>&1) && fail "vdisk accepted a missing file"
case $got in "vdisk: Could not open 'missing.qcow2'"*) ;; *) fail "vdisk: '$got'" ;; esac
got=$("$VDISK_IO" -c quit missing.qcow2 2>&1) && fail "vdisk-io accepted a missing file"
case $got in "vdisk-io: can't open device missing.qcow2"*) ;; *) fail "vdisk-io: '$got'" ;; esac
got=$(bin/qemu-nbd --bogus-option 2>&1) && fail "qemu-nbd accepted --bogus-option"
case $got in *"Try 'qemu-nbd --help'"*) ;; *) fail "qemu-nbd: '$got'" ;; esac
got=$("$VDISK_NBD" --bogus-option 2>&1) && fail "vdisk-nbd accepted --bogus-option"
case $got in *"Try 'vdisk-nbd --help'"*) ;; *) fail "vdisk-nbd: '$got'" ;; esac

# qemu-nbd -v logs no client events (the iotests compare its stderr);
# vdisk-nbd -v does.
serve_once() {   # PROGRAM: serve d.raw to one client, its stderr in err
    rm -f sock err
    "$1" -v -k "$PWD/sock" -f raw d.raw 2>err &
    local pid=$! i
    for i in $(seq 1 200); do
        [ -S sock ] && break
        kill -0 $pid 2>/dev/null || fail "$1 exited: $(cat err)"
        timeout 0.1 tail -f /dev/null 2>/dev/null || true
    done
    [ -S sock ] || { kill $pid; fail "$1 did not listen"; }
    qemu-io -f raw -c 'read 0 512' "nbd+unix:///?socket=$PWD/sock" >/dev/null ||
        { kill $pid; fail "qemu-io could not read from $1"; }
    wait $pid || fail "$1 failed: $(cat err)"
}
serve_once bin/qemu-nbd
[ ! -s err ] || fail "qemu-nbd -v logged: $(cat err)"
serve_once "$VDISK_NBD"
grep -q "vdisk-nbd: client 1.*connected" err || fail "vdisk-nbd -v logged: $(cat err)"
exit 0
