#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk convert against qemu-img convert: same content, same allocation
# (holes kept, -S), multiple sources, -n, --target-is-zero, -m/-W, -O qcow2,
# and qemu-img reading what vdisk wrote and the other way round.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/bench/lib.sh"
need qemu-img

# qemu-img map without host offsets, merged: the allocation layout
map() { # FILE [FMT]
    qemu-img map -f "${2:-raw}" --output=json "$1" | /usr/bin/python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    k = (e["depth"], e["zero"], e["data"])
    if out and out[-1][2] == k:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"], k])
for s, l, k in out:
    print(s, l, *k)'
}
same_map() { # A B [FMT]
    diff <(map "$1" "${3:-raw}") <(map "$2" "${3:-raw}") >/dev/null ||
        fail "allocation differs: $1 $2 ($(diff <(map "$1" "${3:-raw}") <(map "$2" "${3:-raw}") | head -4 | tr '\n' ' '))"
}

bench_sparse_raw in.raw 16M 7 30 small
bench_sparse_raw in2.raw 3M 8 40 small
printf 'tail of an odd-sized image' > odd.raw
truncate -s 1000 odd.raw

# raw -> raw with each -S: same bytes, same holes as qemu-img's output
for S in "" "-S 0" "-S 512" "-S 4k" "-S 64k"; do
    # shellcheck disable=SC2086
    "$VDISK" convert -f raw -O raw $S in.raw v.raw || fail "convert $S"
    # shellcheck disable=SC2086
    qemu-img convert -f raw -O raw $S in.raw q.raw
    same_content in.raw v.raw
    same_map q.raw v.raw
    same_du q.raw v.raw
    rm -f v.raw q.raw
done

# -S 0 allocates everything
"$VDISK" convert -S 0 -f raw -O raw in.raw full.raw
[ "$(qemu-img map -f raw --output=json full.raw | grep -c '"data": false')" = 0 ] ||
    fail "-S 0 left holes"

# probing the source format, default output raw
"$VDISK" convert in.raw probed.raw 2>/dev/null
same_content in.raw probed.raw

# several sources are concatenated; odd sizes are rounded up to sectors
"$VDISK" convert -f raw -O raw in2.raw odd.raw in2.raw cat.v
qemu-img convert -f raw -O raw in2.raw odd.raw in2.raw cat.q
same_content cat.q cat.v
same_map cat.q cat.v
"$VDISK" convert -f raw -O raw odd.raw odd.v
qemu-img convert -f raw -O raw odd.raw odd.q
same_content odd.q odd.v

# -m and -W do not change the result
for m in "-m 1" "-m 16" "-m 3 -W" "-W"; do
    # shellcheck disable=SC2086
    "$VDISK" convert $m -f raw -O raw in.raw m.raw
    same_content in.raw m.raw
    rm -f m.raw
done

# raw -> qcow2 (and options) read by qemu-img; qcow2 -> raw of qemu-img's
"$VDISK" convert -f raw -O qcow2 in.raw v.qcow2
qemu-img convert -f raw -O qcow2 in.raw q.qcow2
qemu-img check -q v.qcow2 || fail "qemu-img check v.qcow2"
qemu-img compare -q -f raw -F qcow2 in.raw v.qcow2 || fail "v.qcow2 content"
same_map q.qcow2 v.qcow2 qcow2
"$VDISK" convert -f qcow2 -O raw q.qcow2 back.raw
qemu-img convert -f qcow2 -O raw q.qcow2 back.q
same_content in.raw back.raw
same_map back.q back.raw
"$VDISK" convert -O qcow2 -o cluster_size=4k,lazy_refcounts=on in.raw small.qcow2
qemu-img info small.qcow2 | grep -q 'cluster_size: 4096' || fail "-o cluster_size ignored"
qemu-img compare -q in.raw small.qcow2 || fail "small.qcow2 content"

# -n writes into an existing image: zeroes overwrite, the rest stays
for t in v q; do
    /usr/bin/python3 -c "open('$t.n', 'wb').write(b'\xaa' * (20 << 20))"
done
"$VDISK" convert -n -f raw -O raw in.raw v.n
qemu-img convert -n -f raw -O raw in.raw q.n
same_content q.n v.n
cmp -s -n $((16 << 20)) in.raw v.n || fail "-n content"

# --target-is-zero skips the zero areas of a target known to be zero
truncate -s 16M v.z q.z
"$VDISK" convert -n --target-is-zero -f raw -O raw in.raw v.z
qemu-img convert -n --target-is-zero -f raw -O raw in.raw q.z
same_content in.raw v.z
same_map q.z v.z

# -p prints progress and ends at 100%; -q prints nothing
out=$("$VDISK" convert -p -f raw -O raw in.raw p.raw)
case "$out" in *"(100.00/100%)"*) ;; *) fail "no progress: $out" ;; esac
out=$("$VDISK" convert -q -p -f raw -O raw in.raw q2.raw 2>&1)
[ -z "$out" ] || fail "-q printed: $out"

# -U reads an image another process holds open for writing; -T cache
"$VDISK" convert -U -T none -t writeback -f raw -O raw in.raw u.raw
same_content in.raw u.raw

# -r limits the write rate: 6 MiB of data at 4 MiB/s takes about a second
# (the first 2 MiB chunk goes at once, as with qemu-img)
head -c $((6 << 20)) /dev/urandom > rnd.raw
t0=$(date +%s%N)
"$VDISK" convert -r 4M -f raw -O raw rnd.raw r.raw
t1=$(date +%s%N)
same_content rnd.raw r.raw
[ $(((t1 - t0) / 1000000)) -ge 700 ] || fail "-r 4M was not limited ($(((t1 - t0) / 1000000)) ms)"

# -C is accepted (no offload: a normal copy, as qemu-img falls back)
"$VDISK" convert -C -f raw -O raw in.raw c.raw
same_content in.raw c.raw
echo ok
