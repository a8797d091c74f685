#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The raw format's offset and size options (a window into the file),
# side by side with qemu-io --image-opts driver=raw,offset=..,size=..:
# same output for the same commands, same bytes in the file, and the
# same refusals (size not a multiple of 512, window past the file,
# resizing a fixed window, requests past the window).  Not compared: block
# status of the last partial sector of a window whose end lies past the
# file (QEMU answers 0 bytes there, a quirk no script relies on).
. "$VDISK_SRC/tests/lib.sh"
need qemu-io

mask() { sed -E 's/^[0-9.]+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), [0-9]+ ops; .*$/STATS/'; }

/usr/bin/python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 4096)' >base.img

cmds=(-c 'length' -c 'read -v 0 32' -c 'write -P 7 0 4k' -c 'read -P 7 0 4k'
    -c 'write -P 8 60k 4k' -c 'write 62k 4k' -c 'read 64k 1' -c 'read -P 8 60k 2k'
    -c 'discard 0 4k' -c 'write -z 4k 4k' -c 'read -P 0 4k 4k' -c 'alloc 0 4k'
    -c 'read -v 1047560 16' -c 'write 1047560 16' -c 'aio_write -P 9 8k 4k' -c 'aio_flush'
    -c 'truncate 128k' -c 'length' -c 'read -v 0 16')

for o in "offset=4096,size=64k" "offset=4096" "offset=1000" "offset=1000,size=4k" "size=512k" \
    "offset=0x1000,size=0x2000" "offset=1M" "offset=1M,size=0" \
    "offset=2M" "size=1000" "offset=1k,size=1M" "offset=abc" "size=1M" "offset=1M,size=512"; do
    cp base.img q.img
    cp base.img v.img
    qrc=0 vrc=0
    qemu-io --image-opts "driver=raw,$o,file.filename=q.img" "${cmds[@]}" >q.out 2>q.err || qrc=$?
    "$VDISK_IO" --image-opts "driver=raw,$o,file.filename=v.img" "${cmds[@]}" >v.out 2>v.err ||
        vrc=$?
    [ "$vrc" -lt 128 ] || fail "$o: vdisk-io crashed: $(cat v.err)"
    mask <q.out >q.m
    mask <v.out >v.m
    diff -u q.m v.m || fail "$o: output differs"
    [ "$qrc" = "$vrc" ] || fail "$o: exit status qemu-io=$qrc vdisk-io=$vrc"
    cmp -s q.img v.img || fail "$o: file content differs"
    # refusals name the same problem
    for w in "cannot be greater than size" "not multiple of 512" "smaller or equal" \
        "Cannot resize fixed-size raw disks"; do
        if grep -q "$w" q.err && ! grep -q "$w" v.err; then
            fail "$o: qemu-io says '$w', vdisk-io: $(cat v.err)"
        fi
    done
done

# a window's bytes are the file's bytes at offset
cp base.img v.img
"$VDISK_IO" --image-opts "driver=raw,offset=8192,size=8192,file.filename=v.img" \
    -c 'write -P 0xee 0 8192' >/dev/null
cmp -s <(head -c 8192 base.img) <(head -c 8192 v.img) || fail "bytes before the window changed"
[ "$(dd if=v.img bs=8192 skip=1 count=1 status=none | tr -d '\356' | wc -c)" = 0 ] ||
    fail "the window was not written at its offset"
cmp -s <(tail -c +16385 base.img) <(tail -c +16385 v.img) || fail "bytes after the window changed"
echo "raw offset/size match qemu-io"
