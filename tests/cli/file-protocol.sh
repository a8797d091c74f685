#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The file protocol through the tools, against qemu-img/qemu-io on the same
# files: preallocation (sizes and allocated blocks), -o help, sparse files
# (map and disk size), resize with preallocation, cache=none with unaligned
# requests, aio=io_uring and aio=native, and the error messages.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

blocks() { stat -c %b "$1"; }
size() { stat -c %s "$1"; }

# --- create: same size and allocation as qemu-img, odd sizes rounded up
for p in off falloc full; do
    "$VDISK" create -q -f raw -o preallocation=$p v-$p.img 3000001 || fail "create $p"
    qemu-img create -q -f raw -o preallocation=$p q-$p.img 3000001
    [ "$(size v-$p.img)" = "$(size q-$p.img)" ] || fail "$p: size $(size v-$p.img) vs $(size q-$p.img)"
    [ "$(blocks v-$p.img)" = "$(blocks q-$p.img)" ] ||
        fail "$p: blocks $(blocks v-$p.img) vs $(blocks q-$p.img)"
    v=$("$VDISK" info v-$p.img | grep '^disk size')
    q=$(qemu-img info q-$p.img | grep '^disk size')
    [ "$v" = "$q" ] || fail "$p: '$v' vs '$q'"
done
expect_fail "Unsupported preallocation mode" "$VDISK" create -f raw -o preallocation=metadata m.img 1M
"$VDISK" create -q -f raw -o nocow=on,extent_size_hint=256k n.img 1M || fail "nocow"
diff <("$VDISK" create -f file -o help 2>&1) <(qemu-img create -f file -o help 2>&1) ||
    fail "file -o help differs from qemu-img's"

# --- sparse file: map and disk size as qemu-img sees them
qemu-img create -q -f raw s.img 16M
qemu-io -f raw -c 'write -P 1 64k 64k' -c 'write -P 2 1M 4k' -c 'write -P 3 5M 2M' \
    -c 'discard 5632k 256k' -c 'write -P 4 16380k 4k' s.img >/dev/null
diff <("$VDISK" map --output=json -f raw s.img) <(qemu-img map --output=json -f raw s.img) ||
    fail "map of a sparse file differs"
diff <("$VDISK" map --output=json --image-opts driver=file,filename=s.img) \
    <(qemu-img map --output=json --image-opts driver=file,filename=s.img) ||
    fail "map of the file protocol differs"
[ "$("$VDISK" info s.img | grep '^disk size')" = "$(qemu-img info s.img | grep '^disk size')" ] ||
    fail "disk size of a sparse file"

# --- resize with preallocation: same allocation as qemu-img
for p in off falloc full; do
    cp --sparse=always s.img rv-$p.img
    cp --sparse=always s.img rq-$p.img
    "$VDISK" resize -q -f raw --preallocation=$p rv-$p.img 24M || fail "resize $p"
    qemu-img resize -q -f raw --preallocation=$p rq-$p.img 24M
    [ "$(size rv-$p.img)" = 25165824 ] || fail "resize $p: size $(size rv-$p.img)"
    [ "$(blocks rv-$p.img)" = "$(blocks rq-$p.img)" ] ||
        fail "resize $p: blocks $(blocks rv-$p.img) vs $(blocks rq-$p.img)"
    cmp rv-$p.img rq-$p.img || fail "resize $p: content"
done
expect_fail "Preallocation can only be used for growing images" \
    "$VDISK" resize -f raw --shrink --preallocation=falloc rv-off.img 1M

# --- cache=none (O_DIRECT) with unaligned requests and misaligned memory,
# and both AIO engines; the file must end up as qemu-io makes it
qemu-img create -q -f raw d.img 4M
cp d.img e.img
cmds=(-c 'write -P 0x41 1000 70000' -c 'write -P 0x42 65536 4096' -c 'write -z 200000 5000'
      -c 'write -P 0x43 3000000 1' -c 'read -P 0x41 1000 64536' -c 'read -P 0 200000 5000')
"$VDISK_IO" -f raw -t none -m "${cmds[@]}" d.img >v.out || fail "vdisk-io -t none"
grep -q 'Pattern verification failed' v.out && fail "vdisk-io -t none read back"
qemu-io -f raw "${cmds[@]}" e.img >/dev/null
cmp d.img e.img || fail "cache=none result differs from qemu-io's"
for aio in io_uring native threads; do
    cp d.img a-$aio.img
    "$VDISK_IO" -f raw -t none -i $aio -c 'write -P 0x51 12345 100000' \
        -c 'read -P 0x51 12345 100000' a-$aio.img >v.out || fail "aio=$aio"
    grep -q 'Pattern verification failed' v.out && fail "aio=$aio read back"
done
cmp a-io_uring.img a-threads.img && cmp a-native.img a-threads.img || fail "aio modes differ"
expect_fail "requires cache.direct=on" "$VDISK_IO" -f raw -i native -c 'read 0 512' d.img

# --- errors name the file, as QEMU's do
expect_fail "Could not open 'nothere.img': No such file or directory" \
    "$VDISK_IO" -f raw -c 'read 0 512' nothere.img
expect_fail "'file' driver requires '/dev/null' to be a regular file" \
    "$VDISK_IO" --image-opts -c 'read 0 512' driver=file,filename=/dev/null
mkdir adir
expect_fail "'file' driver requires 'adir' to be a regular file" \
    "$VDISK_IO" -r --image-opts -c 'read 0 512' driver=file,filename=adir
expect_fail "locking" "$VDISK_IO" --image-opts -c 'read 0 512' driver=file,filename=d.img,locking=maybe
echo ok
