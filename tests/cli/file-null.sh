#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The null-co / null-aio protocols against QEMU's: sizes, allocation, map
# with read-zeroes=on, reads (always zeroes here, see src/protocols/null.c),
# writes discarded, and the option errors.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

field() { grep "\"$1\"" | tr -d ' ,'; }
for spec in null-co:// null-aio://; do
    v=$("$VDISK" info --output=json "$spec")
    q=$(qemu-img info --output=json "$spec")
    for f in virtual-size actual-size format; do
        [ "$(echo "$v" | field $f)" = "$(echo "$q" | field $f)" ] || fail "$spec: $f differs"
    done
done
v=$("$VDISK" info --output=json --image-opts driver=null-co,size=4M)
echo "$v" | grep -q '"virtual-size": 4194304' || fail "size=4M: $v"

diff <("$VDISK" map --output=json --image-opts driver=null-co,size=8M,read-zeroes=on) \
    <(qemu-img map --output=json --image-opts driver=null-co,size=8M,read-zeroes=on) ||
    fail "map with read-zeroes=on differs"

out=$("$VDISK_IO" -f raw -c 'write -P 0x11 0 64k' -c 'read -P 0 0 64k' -c 'flush' \
    -c 'write -z 1M 1M' -c 'discard 0 1M' null-co://) || fail "vdisk-io on null-co"
case "$out" in *"Pattern verification failed"*) fail "null-co read not zero: $out" ;; esac

expect_fail "The only allowed filename for this driver is 'null-co://'" \
    "$VDISK_IO" -c 'read 0 512' null-co://x
expect_fail "The only allowed filename for this driver is 'null-aio://'" \
    "$VDISK_IO" -c 'read 0 512' null-aio://x
expect_fail "latency-ns" "$VDISK_IO" --image-opts -c 'read 0 512' driver=null-co,latency-ns=-5
expect_fail "read-zeroes" "$VDISK_IO" --image-opts -c 'read 0 512' driver=null-co,read-zeroes=maybe
# latency is applied (10 reads of 20 ms take at least 0.2 s)
start=$(date +%s%N)
"$VDISK_IO" --image-opts -c 'read 0 512' -c 'read 0 512' -c 'read 0 512' -c 'read 0 512' \
    -c 'read 0 512' -c 'read 0 512' -c 'read 0 512' -c 'read 0 512' -c 'read 0 512' \
    -c 'read 0 512' driver=null-co,latency-ns=20000000 >/dev/null || fail "latency"
[ $(( ($(date +%s%N) - start) / 1000000 )) -ge 200 ] || fail "latency-ns not applied"
echo ok
