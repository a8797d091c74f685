#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-io against qemu-io, command by command: the same command lines on
# two fresh raw images must print the same stdout (timing figures masked),
# end with the same exit status and leave the same bytes.
. "$VDISK_SRC/tests/lib.sh"
need qemu-io

mask() {
    sed -E 's/^[0-9.]+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), [0-9]+ ops; .*$/STATS/;
            s/^([0-9]+),([0-9]+),[0-9:.]+,[^,]+,[^,]+$/\1,\2,CSV/'
}
# both SIZE ARGS...
both() {
    local size=$1 qrc=0 vrc=0
    shift
    rm -f q.img v.img
    truncate -s "$size" q.img
    truncate -s "$size" v.img
    qemu-io -f raw "$@" q.img >q.out 2>q.err || qrc=$?
    "$VDISK_IO" -f raw "$@" v.img >v.out 2>v.err || vrc=$?
    [ "$vrc" -lt 128 ] || fail "vdisk-io crashed ($vrc) on: $* -- $(cat v.err)"
    mask <q.out >q.m
    mask <v.out >v.m
    diff -u q.m v.m || fail "stdout differs for: $*"
    [ "$qrc" = "$vrc" ] || fail "exit status qemu-io=$qrc vdisk-io=$vrc for: $*"
    if [ "$(stat -c %s q.img)" -le $((64 << 20)) ]; then
        cmp -s q.img v.img || fail "image content differs after: $*"
    else
        # too big to read twice per test; sizes must agree
        [ "$(stat -c %s q.img)" = "$(stat -c %s v.img)" ] || fail "image sizes differ after: $*"
    fi
}

printf abc >three.bin
: >empty.bin

# read / write and their options
both 1M -c 'write -P 0xab 0 4k' -c 'read -P 0xab 0 4k' -c 'read -P 0xab -s 512 -l 1k 0 4k' \
    -c 'read -v 0 40' -c 'read -vq 0 16' -c 'read -vC 0 16' -c 'write -C 4k 512' -c 'read -C 0 512'
both 1M -c 'read -P 0xac 0 4k' -c 'read -P 1 -s 100 -l 200 0 1k' -c 'read 0 512'
both 1M -c 'write -z 0 64k' -c 'write -zu 64k 64k' -c 'write -f 0 512' -c 'write -zn 0 512' \
    -c 'write -p 1k 1k' -c 'write -c 0 64k' -c 'write -b 0 512' -c 'read -b 0 512'
both 1M -c 'write -s three.bin 0 10' -c 'read -v 0 16' -c 'write -s three.bin -q 0 3' \
    -c 'write -q 0 3' -c 'read -q 0 3' -c 'write -zq 0 512' -c 'read -qP 1 0 512'
both 1M -c 'write -s empty.bin 0 1' -c 'write -s nonexistent.bin 0 1'
# vectored and aio (one request at a time, so the order is fixed)
both 1M -c 'readv 0 100' -c 'writev 0 100' -c 'writev -P 5 0 512 1k' -c 'readv -P 5 0 1536' \
    -c 'readv -P 6 0 512 512' -c 'readv -v 1000 24' -c 'readv 1M 512' -c 'writev -C 0 512 512'
both 1M -c 'aio_write -P 1 0 4k' -c 'aio_flush' -c 'aio_write -P 2 4k 4k 4k' -c 'aio_flush' \
    -c 'aio_read -P 1 0 4k' -c 'aio_flush' -c 'aio_read -P 3 4k 8k' -c 'aio_flush' \
    -c 'aio_write -zu 0 4k' -c 'aio_flush' -c 'aio_read -v 0 16' -c 'aio_flush' \
    -c 'aio_read 1M 4k' -c 'aio_flush' -c 'aio_write 1M 4k' -c 'aio_flush' \
    -c 'aio_read -i 0 1' -c 'aio_write -i 0 1' -c 'aio_write -z -P 1 0 512' -c 'aio_flush'
# sizes, numbers and ranges
both 1M -c 'read 0 0' -c 'write 0 0' -c 'discard 0 0' -c 'write -z 0 0' -c 'read 1M 0' \
    -c 'read 2M 0' -c 'read 0 2M' -c 'read 1M 1' -c 'read 1023k 2k' -c 'read 0 3G' -c 'write 0 3G' \
    -c 'read 0 2147483648' -c 'read 0 2147483647' -c 'readv 0 3G' -c 'discard 0 3G'
both 1M -c 'read 9E 1' -c 'read 0x10 1' -c 'read 1.5k 1' -c 'read 1b 1' -c 'read 1B 1' \
    -c 'read 1K 1' -c 'read 1.3k 1' -c 'read abc 1' -c 'read 1x 1' -c 'read 0x1k 1' -c 'read 1.k 1' \
    -c 'read 1.5 1' -c 'read 99999999999999999999 1'
both 1M -c 'read -P 256 0 1' -c 'read -P 0x1 0 1' -c 'read -P 01 0 1' -c 'read -P 1x 0 1' \
    -c 'read -P 0 -l 4 -s 6 0 8' -c 'read -l 4 0 8' -c 'read -s 4 0 8' -c 'read -Z 0 1' -c 'read -1 1'
# write option conflicts, in qemu-io's order of checks
both 1M -c 'write -n -u 0 1' -c 'write -u -b -z 0 1' -c 'write -f -b -z 0 1' -c 'write -nf -b 0 1' \
    -c 'write -u 0 1k' -c 'write -zP 1 0 1k' -c 'write -z -s empty.bin 0 1' -c 'write -c 1 512' \
    -c 'write -c 0 100' -c 'write -b 1 512' -c 'write -b 0 x' -c 'aio_write -u 0 512' \
    -c 'aio_write -z 0 1 1' -c 'aio_write -z 0 x' -c 'aio_read 0 x' -c 'aio_write -P x 0 1'
both 4G -c 'write -zn 0 3G' -c 'write -z 0 3G' -c 'write -n -z 0 1k'
# discard, flush, truncate, length, info, map, alloc
both 1M -c 'write 0 1M' -c 'discard 0 64k' -c 'discard -C 0 64k' -c 'discard -q 64k 64k' \
    -c 'discard 1 1' -c 'discard 1M 512' -c 'flush' -c 'length' -c 'info' -c 'map' -c 'alloc 0' \
    -c 'alloc 0 1M' -c 'alloc 1 1' -c 'alloc 0 2M' -c 'alloc 0 1T' -c 'alloc 2M' -c 'alloc x'
both 1M -c 'truncate 2M' -c 'length' -c 'truncate -m falloc 3M' -c 'truncate -m foo 3M' \
    -c 'truncate 1M' -c 'length' -c 'truncate x' -c 'truncate' -c 'truncate 1536k 7' -c 'length'
# aliases, help lines that name commands, process commands
both 1M -c 'r 0 1' -c 'w 0 1' -c 'l' -c 'a 0' -c 'd 0 512' -c 'f' -c 'i' -c 't 1M' \
    -c 'help nosuch' -c 'sleep 10' -c 'sleep x' -c 'sigraise x' -c 'sigraise 100'
both 1M -c 'nosuch' -c 'read' -c 'read 1 2 3' -c 'length 1' -c 'alloc' -c 'alloc 1 2 3' \
    -c 'close x' -c 'open'
# open / close / quit
both 1M -c 'close' -c 'length' -c 'close' -c 'quit' -c 'length'
echo "vdisk-io commands match qemu-io"
