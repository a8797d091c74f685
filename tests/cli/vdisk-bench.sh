#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk bench against qemu-img bench: the same two report lines, the same
# bytes written for a write run (offsets, step, wrap-around, pattern), the
# same refusals.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

truncate -s 1M img.raw
head1() { "$@" | grep -v '^Run completed'; }
for a in "-c 100" "-c 1000 -d 8 -s 8k -S 16k -o 4096" "-c 0" "-c 10 -s 0" "-q -c 10" "-c 0x20 -d 1"; do
    # shellcheck disable=SC2086
    q=$(head1 qemu-img bench -f raw $a img.raw)
    # shellcheck disable=SC2086
    v=$(head1 "$VDISK" bench -f raw $a img.raw)
    [ "$q" = "$v" ] || fail "bench $a: '$v' vs qemu-img '$q'"
    # shellcheck disable=SC2086
    "$VDISK" bench -f raw $a img.raw | grep -Eq '^Run completed in [0-9]+\.[0-9]{3} seconds\.$' ||
        fail "bench $a: no completion line"
done

# writes: the same bytes land at the same offsets (wrapping before the end)
for a in "-c 300 -s 4k -S 12k -o 4096 --pattern=0x5a" "-c 64 -d 4 -s 64k --pattern=7" \
         "-c 200 -w --flush-interval=50 -d 8 -s 1k -S 3k --pattern=0xaa" \
         "-c 100 --no-drain --flush-interval=64 --pattern=1 -S 5k"; do
    truncate -s 0 q.raw v.raw; truncate -s 1M q.raw v.raw
    # shellcheck disable=SC2086
    q=$(qemu-img bench -f raw -w $a q.raw | head -n 2)
    # shellcheck disable=SC2086
    v=$("$VDISK" bench -f raw -w $a v.raw | head -n 2)
    [ "${q%%Run*}" = "${v%%Run*}" ] || fail "bench -w $a: '$v' vs '$q'"
    same_content q.raw v.raw
done

expect_fail "request count" "$VDISK" bench -c x img.raw
expect_fail "request count" "$VDISK" bench -c -1 img.raw
expect_fail "queue depth" "$VDISK" bench -d x img.raw
expect_fail "pattern" "$VDISK" bench --pattern=256 img.raw
expect_fail "aio" "$VDISK" bench -i bogus img.raw
expect_fail "cache" "$VDISK" bench -t bogus img.raw
expect_fail "buffer size" "$VDISK" bench -s 3G img.raw
expect_fail "offset" "$VDISK" bench -o x img.raw
expect_fail "only available in write tests" "$VDISK" bench --flush-interval=100 img.raw
expect_fail "smaller than depth" "$VDISK" bench -w --flush-interval=4 img.raw
expect_fail "Expecting one image file name" "$VDISK" bench
expect_fail "Expecting one image file name" "$VDISK" bench a b
expect_fail "No such file" "$VDISK" bench missing.raw
expect_fail "cache.direct" "$VDISK" bench -n -c 1 img.raw
expect_fail "Failed request" "$VDISK" bench -c 10 -o 2M img.raw
# wrapping modulo the image size, a request can run past the end (as in qemu-img)
expect_fail "Failed request" "$VDISK" bench -f raw -w -c 300 -s 4k -S 12k -o 1000 img.raw
"$VDISK" bench -c 10 -i io_uring img.raw >/dev/null || fail "-i io_uring"
"$VDISK" bench -c 10 -n -t none img.raw >/dev/null || fail "-n -t none"
"$VDISK" bench -c 10 -U img.raw >/dev/null || fail "-U"
echo ok
