#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qcow2 internal snapshots, both directions.  A seeded random sequence of
# writes (pattern, compressed, zero, discard; qemu-io and vdisk-io in turn)
# and snapshot create / apply / delete (qemu-img and vdisk in turn) over
# several cluster sizes and refcount widths.  A raw file carries the
# expected content of the image and of every snapshot.  After every step
# `qemu-img check` finds nothing (no leak either) and vdisk check agrees;
# at the end both tools read every snapshot (convert -l) as its reference
# and list the same table.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

RANDOM=${SEED:-2718}
SIZE=$((4 * 1024 * 1024))

check_both() {
    qemu-img check -q "$1" || fail "qemu-img check after: $2"
    "$VDISK" check -q "$1" >/dev/null || fail "vdisk check after: $2"
}

rand_write() { # image ref tool
    local img=$1 ref=$2 tool=$3 cs=$4
    local kind=$((RANDOM % 6)) pat=$((RANDOM % 250 + 1))
    local off=$(((RANDOM * 32768 + RANDOM) % (SIZE / 512) * 512))
    local len=$(((RANDOM % 64 + 1) * 512 * (RANDOM % 4 + 1)))
    [ $((off + len)) -le $SIZE ] || len=$((SIZE - off))
    local io=qemu-io; [ "$tool" = v ] && io=$VDISK_IO
    case $kind in
    0 | 1 | 2) "$io" -f qcow2 -c "write -P $pat $off $len" "$img" >/dev/null
       qemu-io -f raw -c "write -P $pat $off $len" "$ref" >/dev/null ;;
    3) # compressed: one whole cluster, refused (by both) when allocated
       off=$((off / cs * cs)); len=$cs
       if ! "$io" -f qcow2 -c "write -c -P $pat $off $len" "$img" 2>&1 | grep -q failed; then
           qemu-io -f raw -c "write -P $pat $off $len" "$ref" >/dev/null
       fi ;;
    4) "$io" -f qcow2 -c "write -z $off $len" "$img" >/dev/null
       qemu-io -f raw -c "write -z $off $len" "$ref" >/dev/null ;;
    5) off=$((off / cs * cs)); len=$(( (len + cs - 1) / cs * cs ))
       [ $((off + len)) -le $SIZE ] || len=$((SIZE - off))
       "$io" -f qcow2 -c "write -z -u $off $len" "$img" >/dev/null
       qemu-io -f raw -c "write -z $off $len" "$ref" >/dev/null ;;
    esac
}

for conf in "512 16 1.1" "4096 8 1.1" "65536 64 1.1" "65536 16 0.10"; do
    set -- $conf
    cs=$1 rb=$2 compat=$3
    rm -f img.qcow2 ref.raw snap_*.raw
    qemu-img create -q -f qcow2 -o cluster_size=$cs,refcount_bits=$rb,compat=$compat \
        img.qcow2 $SIZE
    truncate -s $SIZE ref.raw
    names=()
    n=0
    for step in $(seq 1 24); do
        tool=q; [ $((step % 2)) -eq 0 ] && tool=v
        op=$((RANDOM % 10))
        if [ $op -lt 5 ]; then
            rand_write img.qcow2 ref.raw $tool $cs
            check_both img.qcow2 "write ($conf step $step)"
        elif [ $op -lt 7 ] || [ ${#names[@]} -eq 0 ]; then
            n=$((n + 1)); name=s$n
            if [ $tool = q ]; then qemu-img snapshot -c $name img.qcow2
            else "$VDISK" snapshot -c $name img.qcow2 || fail "vdisk snapshot -c $name"; fi
            cp ref.raw snap_$name.raw
            names+=($name)
            check_both img.qcow2 "create $name ($conf)"
        elif [ $op -lt 9 ]; then
            name=${names[$((RANDOM % ${#names[@]}))]}
            if [ $tool = q ]; then qemu-img snapshot -a $name img.qcow2
            else "$VDISK" snapshot -a $name img.qcow2 || fail "vdisk snapshot -a $name"; fi
            cp snap_$name.raw ref.raw
            check_both img.qcow2 "apply $name ($conf)"
            qemu-img compare -q -f qcow2 -F raw img.qcow2 ref.raw ||
                fail "content after applying $name ($conf)"
        else
            i=$((RANDOM % ${#names[@]})); name=${names[$i]}
            if [ $tool = q ]; then qemu-img snapshot -d $name img.qcow2
            else "$VDISK" snapshot -d $name img.qcow2 || fail "vdisk snapshot -d $name"; fi
            rm -f snap_$name.raw
            names=("${names[@]:0:$i}" "${names[@]:$((i + 1))}")
            check_both img.qcow2 "delete $name ($conf)"
        fi
    done
    qemu-img compare -q -f qcow2 -F raw img.qcow2 ref.raw || fail "final content ($conf)"
    "$VDISK" compare -q -f qcow2 -F raw img.qcow2 ref.raw || fail "vdisk: final content ($conf)"
    for name in "${names[@]}"; do
        qemu-img convert -l $name -O raw img.qcow2 q.raw
        cmp -s q.raw snap_$name.raw || fail "qemu-img reads snapshot $name wrong ($conf)"
        "$VDISK" convert -l $name -O raw img.qcow2 v.raw || fail "vdisk convert -l $name"
        cmp -s v.raw snap_$name.raw || fail "vdisk reads snapshot $name wrong ($conf)"
    done
    a=$("$VDISK" snapshot -l img.qcow2); b=$(qemu-img snapshot -l img.qcow2)
    [ "$a" = "$b" ] || fail "snapshot listings differ ($conf): $a -- $b"
    a=$("$VDISK" info --output=json img.qcow2 | grep -c '"id"' || true)
    [ "$a" = "${#names[@]}" ] || fail "vdisk info lists $a snapshots, expected ${#names[@]}"
done

# snapshots keep their own disk size (v3): apply shrinks or grows back
qemu-img create -q -f qcow2 r.qcow2 8M
qemu-io -c 'write -P 7 0 8M' r.qcow2 >/dev/null
"$VDISK" snapshot -c small r.qcow2
qemu-img resize -q r.qcow2 16M
qemu-io -c 'write -P 8 0 16M' r.qcow2 >/dev/null
"$VDISK" snapshot -c big r.qcow2
"$VDISK" snapshot -a small r.qcow2 || fail "apply of a smaller snapshot"
[ "$(qemu-img info --output=json r.qcow2 | grep -o '"virtual-size": [0-9]*')" = '"virtual-size": 8388608' ] ||
    fail "apply did not restore the 8M size"
qemu-io -c 'read -P 7 0 8M' r.qcow2 | grep -q 'Pattern verification failed' && fail "small content"
"$VDISK" snapshot -a big r.qcow2 || fail "apply of a bigger snapshot"
qemu-io -c 'read -P 8 0 16M' r.qcow2 | grep -q 'Pattern verification failed' && fail "big content"
qemu-img check -q r.qcow2 || fail "check after resizing applies"

# ids: "id=N" for delete, bare ids for apply, as qemu-img resolves them
"$VDISK" snapshot -a 1 r.qcow2 || fail "apply by id"
"$VDISK" snapshot -d id=2 r.qcow2 || fail "delete by id=2"
qemu-img snapshot -l r.qcow2 | grep -q ' big ' && fail "id=2 not deleted"
expect_fail "snapshot not found" "$VDISK" snapshot -d 1 r.qcow2

# a snapshot that would overflow a refcount is refused, the image unchanged
qemu-img create -q -f qcow2 -o refcount_bits=1 w.qcow2 1M
qemu-io -c 'write 0 64k' w.qcow2 >/dev/null
expect_fail "maximum refcount" "$VDISK" snapshot -c x w.qcow2
qemu-img check -q w.qcow2 || fail "refused snapshot left leaks"

# refusals: bitmaps on apply
expect_fail "Device has active dirty bitmaps" sh -c \
    "qemu-img bitmap --add r.qcow2 b0 && '$VDISK' snapshot -a small r.qcow2"
qemu-img check -q r.qcow2 || fail "check at the end"
echo ok
