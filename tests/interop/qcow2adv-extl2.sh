#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qcow2 extended L2 entries (extended_l2=on, 32 subclusters per cluster),
# both directions.  Creation is byte-identical to qemu-img's (also with
# metadata preallocation over a backing file).  A seeded random workload of
# small unaligned writes, zero writes (with and without unmap), discards
# and snapshots (qemu-io / qemu-img and vdisk-io / vdisk in turn) over
# cluster sizes, a backing file and an external data file: after every step
# `qemu-img check` is clean, and both tools read the image like a raw
# reference; vdisk's map equals qemu-img's.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

RANDOM=${SEED:-4711}
SIZE=$((3 * 1024 * 1024))

for o in "extended_l2=on" "extended_l2=on,cluster_size=16k" "extended_l2=on,cluster_size=2M" \
         "extended_l2=on,preallocation=metadata" "extended_l2=on,data_file=d.raw"; do
    qemu-img create -q -f qcow2 -o "$o" q.qcow2 $SIZE
    "$VDISK" create -q -f qcow2 -o "$o" v.qcow2 $SIZE || fail "vdisk create -o $o"
    cmp -s q.qcow2 v.qcow2 || fail "create -o $o differs from qemu-img's"
done
qemu-img create -q -f raw base.raw $SIZE
qemu-io -f raw -c "write -P 0x55 0 $SIZE" base.raw >/dev/null
o="extended_l2=on,preallocation=metadata"
qemu-img create -q -f qcow2 -o $o -b base.raw -F raw q.qcow2 $SIZE
"$VDISK" create -q -f qcow2 -o $o -b base.raw -F raw v.qcow2 $SIZE || fail "create over a backing file"
cmp -s q.qcow2 v.qcow2 || fail "preallocated create over a backing file differs"
# measure counts 16-byte L2 entries as qemu-img does
for o in "extended_l2=on" "extended_l2=on,cluster_size=16k" "extended_l2=on,cluster_size=2M"; do
    for src in "--size 10G" "--size 100M" "-f raw base.raw"; do
        a=$(qemu-img measure --output=json -O qcow2 -o $o $src)
        b=$("$VDISK" measure --output=json -O qcow2 -o $o $src) || fail "vdisk measure -o $o $src"
        [ "$a" = "$b" ] || fail "measure -o $o $src: qemu-img $a vdisk $b"
    done
done
expect_fail "at least 16384 bytes" "$VDISK" create -f qcow2 -o extended_l2=on,cluster_size=8k x.qcow2 1M
expect_fail "compatibility level 1.1" "$VDISK" create -f qcow2 -o extended_l2=on,compat=0.10 x.qcow2 1M

for conf in "65536 backing" "16384 none" "2097152 backing" "32768 datafile" "65536 prealloc"; do
    set -- $conf
    cs=$1 kind=$2
    rm -f img.qcow2 ref.raw d.raw snap_*.raw
    opts=extended_l2=on,cluster_size=$cs
    case $kind in
    backing) qemu-img create -q -f qcow2 -o $opts -b base.raw -F raw img.qcow2 $SIZE
             cp base.raw ref.raw ;;
    prealloc) qemu-img create -q -f qcow2 -o $opts,preallocation=metadata -b base.raw -F raw \
                  img.qcow2 $SIZE
              cp base.raw ref.raw ;;
    datafile) qemu-img create -q -f qcow2 -o $opts,data_file=d.raw img.qcow2 $SIZE
              truncate -s $SIZE ref.raw ;;
    *) qemu-img create -q -f qcow2 -o $opts img.qcow2 $SIZE
       truncate -s $SIZE ref.raw ;;
    esac
    snaps=()
    for step in $(seq 1 30); do
        tool=q; [ $((step % 2)) -eq 0 ] && tool=v
        io=qemu-io; [ $tool = v ] && io=$VDISK_IO
        off=$(((RANDOM * 32768 + RANDOM) % (SIZE / 512) * 512 + RANDOM % 3 * 100))
        len=$(((RANDOM % 96 + 1) * 512 + RANDOM % 2 * 77))
        [ $((off + len)) -le $SIZE ] || len=$((SIZE - off))
        op=$((RANDOM % 10))
        if [ $op -eq 9 ] && [ $kind != datafile ]; then
            name=s$step
            if [ $tool = q ]; then qemu-img snapshot -c $name img.qcow2
            else "$VDISK" snapshot -c $name img.qcow2 || fail "vdisk snapshot -c ($conf)"; fi
            cp ref.raw snap_$name.raw
            snaps+=($name)
        elif [ $op -eq 8 ] && [ ${#snaps[@]} -gt 0 ]; then
            name=${snaps[$((RANDOM % ${#snaps[@]}))]}
            if [ $tool = q ]; then qemu-img snapshot -a $name img.qcow2
            else "$VDISK" snapshot -a $name img.qcow2 || fail "vdisk snapshot -a ($conf)"; fi
            cp snap_$name.raw ref.raw
        else
            case $((op % 4)) in
            0) if [ $kind != datafile ] && [ $((RANDOM % 3)) -eq 0 ]; then
                   # compressed: one whole cluster, refused (by both) when allocated
                   off=$((off / cs * cs)); len=$cs
                   [ $((off + len)) -le $SIZE ] || len=$((SIZE - off))
                   cmd="write -c -P $((RANDOM % 250 + 1)) $off $len"
                   if "$io" -f qcow2 -c "$cmd" img.qcow2 2>&1 | grep -q failed; then
                       cmd= rcmd=
                   else
                       rcmd=${cmd/-c /}
                   fi
               else
                   cmd="write -P $((RANDOM % 250 + 1)) $off $len"; rcmd=$cmd
               fi ;;
            1) cmd="write -P $((RANDOM % 250 + 1)) $off $len"; rcmd=$cmd ;;
            2) off=$((off / 512 * 512)); len=$(( (len + 511) / 512 * 512 ))
               [ $((off + len)) -le $SIZE ] || len=$((SIZE - off))
               if [ $((RANDOM % 2)) -eq 0 ]; then cmd="write -z $off $len"
               else cmd="write -z -u $off $len"; fi
               rcmd="write -z $off $len" ;;
            3) off=$((off / 512 * 512)); len=$(( (len + 511) / 512 * 512 * 8 ))
               [ $((off + len)) -le $SIZE ] || len=$((SIZE - off))
               cmd="discard $off $len"; rcmd= ;;
            esac
            case "$cmd" in
            "write -c "*) ;; # done above
            "") ;;
            *) "$io" -f qcow2 -c "$cmd" img.qcow2 >/dev/null || fail "$io $cmd ($conf)" ;;
            esac
            if [ -n "$rcmd" ]; then
                qemu-io -f raw -c "$rcmd" ref.raw >/dev/null
            elif [ -n "$cmd" ]; then
                # a discard reads as zeroes only where whole clusters went
                qemu-img convert -f qcow2 -O raw img.qcow2 ref.raw
            fi
        fi
        qemu-img check -q img.qcow2 || fail "check after step $step ($conf)"
    done
    qemu-img compare -q -f qcow2 -F raw img.qcow2 ref.raw || fail "QEMU reads wrong data ($conf)"
    "$VDISK" compare -q -f qcow2 -F raw img.qcow2 ref.raw || fail "vdisk reads wrong data ($conf)"
    "$VDISK" check -q img.qcow2 >/dev/null || fail "vdisk check ($conf)"
    [ "$("$VDISK" map --output=json img.qcow2)" = "$(qemu-img map --output=json img.qcow2)" ] ||
        fail "vdisk map differs ($conf)"
    for name in "${snaps[@]}"; do
        "$VDISK" convert -l $name -O raw img.qcow2 v.raw || fail "convert -l $name"
        cmp -s v.raw snap_$name.raw || fail "snapshot $name reads wrong ($conf)"
    done
done

# hostile subcluster bitmaps: allocated subclusters without a host cluster,
# allocated and zero at once -- a clean error and the check's verdict
for bm in 0x1 0x100000001; do
    qemu-img create -q -f qcow2 -o extended_l2=on h.qcow2 1M
    qemu-io -c 'write 64k 4k' h.qcow2 >/dev/null
    /usr/bin/python3 - h.qcow2 $bm <<'PYEOF'
import sys
f, bm = sys.argv[1], int(sys.argv[2], 0)
d = bytearray(open(f, "rb").read())
l1 = int.from_bytes(d[40:48], "big")
l2 = int.from_bytes(d[l1:l1 + 8], "big") & 0x00fffffffffffe00
d[l2 + 8:l2 + 16] = bm.to_bytes(8, "big")   # entry 0: no host cluster
d[l2 + 24:l2 + 32] = (bm | 0x100000001).to_bytes(8, "big")  # entry 1: alloc + zero
open(f, "wb").write(d)
PYEOF
    expect_fail "" "$VDISK_IO" -r -c 'read 0 4k' h.qcow2
    expect_fail "" "$VDISK_IO" -r -c 'read 64k 4k' h.qcow2
    rc=0; "$VDISK" check h.qcow2 >/dev/null 2>&1 || rc=$?
    qrc=0; qemu-img check h.qcow2 >/dev/null 2>&1 || qrc=$?
    [ $rc -eq 2 ] && [ $qrc -eq 2 ] || fail "bitmap $bm: vdisk check exit $rc, qemu-img $qrc"
done
echo ok
