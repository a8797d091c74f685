#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The file layout after bitmap commands, writes, discards, shrinking and
# snapshots follows qemu-img/qemu-io 7.2's step by step: the same clusters
# in use, bitmap tables, data and directory at the same offsets, the same disk
# usage (QEMU stores every bitmap again on each read-write close, its file
# child punches freed clusters: discard=unmap by default).  iotests 190
# (measure of the raw file) and 250 (disk usage after a shrink) see it.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
cat >dump.py <<'PY'
import struct, sys
f = open(sys.argv[1], 'rb').read()
cs = 1 << struct.unpack('>I', f[20:24])[0]
o = struct.unpack('>I', f[100:104])[0]
while o + 8 <= len(f):
    m, l = struct.unpack('>II', f[o:o + 8])
    if m == 0:
        break
    if m == 0x23852875:
        nb, _, dsz, doff = struct.unpack('>IIQQ', f[o + 8:o + 32])
        print('dir', doff // cs, dsz)
        p = doff
        for i in range(nb):
            toff, tsz, fl, ty, gb, nl, ed = struct.unpack('>QIIBBHI', f[p:p + 24])
            t = [struct.unpack('>Q', f[toff + 8 * k:toff + 8 * k + 8])[0] for k in range(tsz)]
            print('bitmap', f[p + 24:p + 24 + nl].decode(), toff // cs, fl,
                  [x // cs for x in t if x > 1])
            p += (24 + ed + nl + 7) // 8 * 8
    o += 8 + (l + 7) // 8 * 8
rt = struct.unpack('>Q', f[48:56])[0]
rb = struct.unpack('>Q', f[rt:rt + 8])[0]
print('used', [i for i in range(len(f) // cs + 1)
               if struct.unpack('>H', f[rb + 2 * i:rb + 2 * i + 2])[0]])
PY
steps=('bitmap --add -f qcow2 F b1' 'IO write 0 1M;write 10M 64k' 'bitmap --add -g 512 -f qcow2 F b2'
       'bitmap --add -f qcow2 F b3' 'bitmap --disable -f qcow2 F b3' 'IO write 20M 64k'
       'bitmap --clear -f qcow2 F b1' 'bitmap --remove -f qcow2 F b2' 'IO write 30M 64k'
       'bitmap --remove -f qcow2 F b1' 'IO discard 0 64k' 'resize -q --shrink F 20M'
       'bitmap --enable -f qcow2 F b3' 'IO write 1M 64k' 'bitmap --add -f qcow2 F b4'
       'bitmap --merge b3 -f qcow2 F b4' 'IO read 0 64k' 'snapshot -c s1 F' 'IO write 0 2M'
       'snapshot -d s1 F')
qemu-img create -q -f qcow2 qemu.qcow2 64M
"$VDISK" create -q -f qcow2 vdisk.qcow2 64M
for st in "${steps[@]}"; do
    for who in qemu vdisk; do
        IMG=qemu-img; IO=qemu-io
        [ $who = vdisk ] && { IMG=$VDISK; IO=$VDISK_IO; }
        case "$st" in
            IO*) IFS=';' read -r -a cmds <<<"${st#IO }"
                 args=(); for c in "${cmds[@]}"; do args+=(-c "$c"); done
                 "$IO" "${args[@]}" $who.qcow2 >/dev/null || fail "$who: $st failed" ;;
            *) read -r -a a <<<"${st//F/$who.qcow2}"
               "$IMG" "${a[@]}" || fail "$who: $st failed" ;;
        esac
    done
    [ "$(/usr/bin/python3 dump.py qemu.qcow2)" = "$(/usr/bin/python3 dump.py vdisk.qcow2)" ] ||
        fail "layout differs after '$st': $(/usr/bin/python3 dump.py qemu.qcow2) / $(/usr/bin/python3 dump.py vdisk.qcow2)"
    same_du qemu.qcow2 vdisk.qcow2
done
qemu-img compare -q qemu.qcow2 vdisk.qcow2 || fail "content differs"
qemu-img check -q vdisk.qcow2 || fail "check failed"
# measure of the image file read as raw (iotest 190)
for who in qemu vdisk; do
    IMG=qemu-img; [ $who = vdisk ] && IMG=$VDISK
    "$IMG" create -q -f qcow2 -o cluster_size=2M big-$who.qcow2 2T
    "$IMG" bitmap --add --granularity 512 -f qcow2 big-$who.qcow2 b1
    "$IMG" bitmap --add -g 2M -f qcow2 big-$who.qcow2 b2
    qemu-img measure -O qcow2 -f raw big-$who.qcow2 >measure-$who
done
diff measure-qemu measure-vdisk || fail "measure of the raw file differs"
# disk usage after a shrink of a preallocated image (iotest 250)
for who in qemu vdisk; do
    IMG=qemu-img; [ $who = vdisk ] && IMG=$VDISK
    qemu-img create -q -f qcow2 -o cluster_size=1M,preallocation=metadata p-$who.qcow2 100M
    qemu-io -c "discard 0 10M" -c "discard 90M 10M" -c "write 90M 10M" -c "write 0 10M" \
        p-$who.qcow2 >/dev/null
    # du counts blocks the file system may still be allocating (delayed
    # allocation under load): sync the file first
    sync p-$who.qcow2
    before=$(du -B1 p-$who.qcow2 | cut -f1)
    "$IMG" resize -q --shrink p-$who.qcow2 5M
    sync p-$who.qcow2
    echo $((before - $(du -B1 p-$who.qcow2 | cut -f1))) >delta-$who
done
# (within 8 KiB: see same_du)
dq=$(cat delta-qemu) dv=$(cat delta-vdisk)
[ $((dq > dv ? dq - dv : dv - dq)) -le 8192 ] ||
    fail "disk usage freed by the shrink: qemu $dq, vdisk $dv"
exit 0
