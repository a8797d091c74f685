#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# QEMU's error hints (error_append_hint: advice on the lines after the
# message) and the messages they go with: under qemu-img's name vdisk prints
# what qemu-img 7.2 prints, byte for byte, exit code included (iotests 049,
# 061, 082).  Under its own name the hint lines come too, after vdisk's own
# one-line wording where it has one.
. "$(dirname "$0")/../lib.sh"
need qemu-img
mkdir bin
ln -s "$VDISK" bin/qemu-img

qemu-img create -q -f qcow2 h.qcow2 1M
qemu-img create -q -f qcow2 -b h.qcow2 -F qcow2 o.qcow2 1M
qemu-img create -q -f raw r.raw 1M
same() {   # qemu-img arguments: the same output and exit code
    local want got
    want=$(qemu-img "$@" 2>&1; echo "exit $?")
    got=$(bin/qemu-img "$@" 2>&1; echo "exit $?")
    [ "$got" = "$want" ] || fail "qemu-img $*:
vdisk: $got
QEMU:  $want"
}
# sizes: cvtnum's two lines, option sizes with the suffix hint
same create -f qcow2 x.qcow2 -- -1k
same create -f qcow2 x.qcow2 1kilobyte
same create -f qcow2 x.qcow2 99999999999999999999999
same create -f qcow2 -o size=-1k x.qcow2
same create -f qcow2 -o cluster_size=x x.qcow2 1M
same measure --size 1x -O qcow2
same resize r.raw abc
same resize r.raw 99999999999999999999999
same amend -o size=abc h.qcow2
same amend -o lazy_refcounts=x h.qcow2
same amend -o refcount_bits=x h.qcow2
same amend -o refcount_bits=99999999999999999999999 h.qcow2
# amend: create-only options, the backing file (refused, rebase advised)
same amend -o cluster_size=4k h.qcow2
same amend -o encryption=on h.qcow2
same amend -o backing_file=foo h.qcow2
same amend -o backing_file=h.qcow2 o.qcow2
same amend -o backing_file=h.qcow2,backing_fmt=qcow2 o.qcow2
same amend -o backing_fmt=raw o.qcow2
# -o help of formats that cannot create or amend; qcow2's amend list
same create -f bochs -o help
same amend -f bochs -o help
same amend -f raw -o help
same amend -f qcow2 -o help
[ ! -e x.qcow2 ] || fail "a failing create left x.qcow2"

# amend -p: qemu-img prints 100 % once more after the driver's last report
for t in q v; do
    qemu-img create -q -f qcow2 -o compat=1.1 p$t.qcow2 64M
    qemu-io -c "write -z 0 64k" -c "write -z 32M 64k" p$t.qcow2 >/dev/null
done
want=$(qemu-img amend -p -o compat=0.10 pq.qcow2 | od -c)
got=$(bin/qemu-img amend -p -o compat=0.10 pv.qcow2 | od -c)
[ "$got" = "$want" ] || fail "amend -p: vdisk $got QEMU $want"

# check's lines for a reference past the end of the file (iotest 138) and
# a refcount at its maximum (iotest 112), the same as qemu-img's
poke() { printf "$2" | dd of="$1" bs=1 seek=$(($3)) conv=notrunc status=none; }
for t in q v; do
    qemu-img create -q -f qcow2 -o cluster_size=512 e$t.qcow2 512
    qemu-io -c "write 0 512" e$t.qcow2 >/dev/null
    poke e$t.qcow2 '\x00\x80\x00\x00\x00\x00\x00\x00' 2056
    qemu-img create -q -f qcow2 -o refcount_bits=1 f$t.qcow2 64M
    qemu-io -c "write 0 64k" f$t.qcow2 >/dev/null
    poke f$t.qcow2 '\x80\x00\x00\x00\x00\x05\x00\x00' 0x40008
done
want=$(qemu-img check eq.qcow2 2>&1; echo "exit $?")
got=$(bin/qemu-img check ev.qcow2 2>&1; echo "exit $?")
[ "${got//ev.qcow2/X}" = "${want//eq.qcow2/X}" ] || fail "check past EOF: $got // $want"
want=$(qemu-img check fq.qcow2 2>&1; echo "exit $?")
got=$(bin/qemu-img check fv.qcow2 2>&1; echo "exit $?")
[ "${got//fv.qcow2/X}" = "${want//fq.qcow2/X}" ] || fail "check overflow: $got // $want"

# snapshot -c failures name the errno, as qemu-img does (iotests 080, 112);
# vdisk names the problem
qemu-img create -q -f qcow2 s.qcow2 1M
poke s.qcow2 '\x00\x00\x00\x00\x01\x00\x00\x00' 64   # snapshots_offset
poke s.qcow2 '\x00\x01\x00\x00' 60                      # nb_snapshots 65536
same snapshot -c test s.qcow2
got=$("$VDISK" snapshot -c test s.qcow2 2>&1) && fail "vdisk made a 65537th snapshot"
case $got in "vdisk: Could not create snapshot 'test': Too many snapshots"*) ;;
    *) fail "vdisk snapshot -c: $got" ;; esac

# commit's make-empty failure: "Failed to empty NAME: strerror" (iotest 098)
qemu-img create -q -f qcow2 cb.qcow2 64M
qemu-img create -q -f qcow2 -b cb.qcow2 -F qcow2 ct.qcow2 64M
qemu-io -c "write 0 64k" ct.qcow2 >/dev/null
printf '[inject-error]\nevent = "refblock_alloc"\n' >bd.conf
got=$(bin/qemu-img commit "blkdebug:bd.conf:ct.qcow2" 2>&1) && fail "commit over blkdebug passed"
[ "$got" = "qemu-img: Failed to empty blkdebug:bd.conf:ct.qcow2: Input/output error" ] ||
    fail "commit make-empty error: $got"

# qemu-img's errors go out before its buffered stdout (iotest 074: the
# size-mismatch warning comes after the read error)
printf '[inject-error]\nevent = "read_aio"\nerrno = "5"\nonce = "off"\n' >rd.conf
qemu-img create -q -f qcow2 m1.qcow2 2M
qemu-img create -q -f qcow2 m2.qcow2 0
qemu-io -c "write 0 512" m1.qcow2 >/dev/null
want=$(qemu-img compare "blkdebug:rd.conf:m1.qcow2" m2.qcow2 2>&1; echo "exit $?")
got=$(bin/qemu-img compare "blkdebug:rd.conf:m1.qcow2" m2.qcow2 2>&1; echo "exit $?")
[ "$got" = "$want" ] || fail "compare error order: $got // $want"

# an NBD error reply: QEMU's words, what the server said on a hint line
# (iotests 140, 143)
if command -v qemu-nbd >/dev/null; then
    truncate -s 1M nbd.raw
    qemu-nbd -k "$PWD/n.sock" -f raw -x a -t nbd.raw &
    nbd_pid=$!
    wait_for test -S n.sock
    want=$(qemu-io -f raw -c quit "nbd+unix:///zz?socket=$PWD/n.sock" 2>&1) || true
    got=$("$VDISK_IO" -f raw -c quit "nbd+unix:///zz?socket=$PWD/n.sock" 2>&1) || true
    kill "$nbd_pid"
    wait "$nbd_pid" 2>/dev/null || true
    [ "$(printf '%s\n' "$got" | sed -n '$p')" = "$(printf '%s\n' "$want" | sed -n '$p')" ] &&
        [ "$(printf '%s\n' "$got" | wc -l)" = 2 ] ||
        fail "NBD error reply: vdisk '$got' QEMU '$want'"
    case $got in *": Requested export not available"$'\n'*) ;;
        *) fail "NBD error reply message: $got" ;; esac
fi

# Own name: the hint follows vdisk's message; amend of the backing file works.
got=$("$VDISK" amend -o cluster_size=4k h.qcow2 2>&1) && fail "vdisk amended cluster_size"
[ "$got" = "vdisk: Invalid parameter 'cluster_size'
This option is only supported for image creation" ] || fail "vdisk amend cluster_size: $got"
"$VDISK" amend -o backing_file=r.raw,backing_fmt=raw o.qcow2 || fail "vdisk amend backing"
"$VDISK" info o.qcow2 | grep -q "^backing file: r.raw" || fail "backing file not changed"
got=$("$VDISK" amend -f raw -o help) || fail "vdisk amend -f raw -o help"
[ "$got" = "Amend options for 'raw':" ] || fail "vdisk amend -f raw -o help: $got"
exit 0
