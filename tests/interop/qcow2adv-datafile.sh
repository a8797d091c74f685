#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qcow2 external data files (data_file, data_file_raw), both directions.
# Creation is byte-identical to qemu-img's (image and data file).  A seeded
# random workload (pattern, zero, unmapping zero writes, discards; qemu-io
# and vdisk-io in turn) over several cluster sizes, with and without
# data_file_raw: `qemu-img check` is clean after every step, both tools
# read the image like a raw reference, guest offset = host offset in the
# data file, and a raw data file stays identical to the guest view.  info,
# map, amend (data_file repointing, data_file_raw=off) and the refusals
# (snapshots, compression, downgrade, v2, raw with a backing file) match
# QEMU.  Hostile data file names in the header (json:, protocol prefixes,
# NUL bytes, missing or oversized names) fail cleanly and are never
# followed.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io prlimit

RANDOM=${SEED:-1618}
SIZE=$((3 * 1024 * 1024))

# creation: byte-identical
for o in "data_file=d.raw" "data_file=d.raw,data_file_raw=on" "data_file=d.raw,cluster_size=4k" \
         "data_file=d.raw,data_file_raw=on,cluster_size=512" "data_file=d.raw,preallocation=metadata"; do
    rm -f d.raw
    qemu-img create -q -f qcow2 -o "$o" q.qcow2 $SIZE
    mv d.raw qd.raw
    "$VDISK" create -q -f qcow2 -o "$o" v.qcow2 $SIZE || fail "vdisk create -o $o"
    cmp -s q.qcow2 v.qcow2 || fail "create -o $o: the image differs from qemu-img's"
    cmp -s qd.raw d.raw || fail "create -o $o: the data file differs from qemu-img's"
done

for conf in "65536 off" "4096 off" "512 on" "65536 on"; do
    set -- $conf
    cs=$1 raw=$2
    rm -f img.qcow2 data.raw ref.raw
    qemu-img create -q -f qcow2 -o cluster_size=$cs,data_file=data.raw,data_file_raw=$raw img.qcow2 $SIZE
    truncate -s $SIZE ref.raw
    for step in $(seq 1 30); do
        io=qemu-io; [ $((step % 2)) -eq 0 ] && io=$VDISK_IO
        off=$(((RANDOM * 32768 + RANDOM) % (SIZE / 512) * 512))
        len=$(((RANDOM % 256 + 1) * 512))
        [ $((off + len)) -le $SIZE ] || len=$((SIZE - off))
        kinds=4; [ $raw = on ] && kinds=3 # discards leave a raw file behind the guest view
        case $((RANDOM % kinds)) in
        0) cmd="write -P $((RANDOM % 250 + 1)) $off $len"; rcmd=$cmd ;;
        1) cmd="write -z $off $len"; rcmd=$cmd ;;
        2) cmd="write -z -u $off $len"; rcmd="write -z $off $len" ;;
        3) cmd="discard $off $len"; rcmd= ;;
        esac
        "$io" -f qcow2 -c "$cmd" img.qcow2 >/dev/null || fail "$io $cmd ($conf)"
        if [ -n "$rcmd" ]; then
            qemu-io -f raw -c "$rcmd" ref.raw >/dev/null
        else
            # a discard reads as zeroes only where whole clusters went
            qemu-img convert -f qcow2 -O raw img.qcow2 ref.raw
        fi
        qemu-img check -q img.qcow2 || fail "check after $cmd ($conf)"
    done
    qemu-img compare -q -f qcow2 -F raw img.qcow2 ref.raw || fail "QEMU reads wrong data ($conf)"
    "$VDISK" compare -q -f qcow2 -F raw img.qcow2 ref.raw || fail "vdisk reads wrong data ($conf)"
    "$VDISK" check -q img.qcow2 >/dev/null || fail "vdisk check ($conf)"
    if [ $raw = on ]; then
        cmp -s data.raw ref.raw || fail "the raw data file is not the guest view ($conf)"
    fi
    # host offset = guest offset, in the data file, for both tools
    a=$(qemu-img map --output=json img.qcow2 | grep '"data": true' | grep -v '"offset": \([0-9]*\)' || true)
    [ -z "$a" ] || fail "data without an offset: $a"
    qemu-img map --output=json img.qcow2 | /usr/bin/python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e.get("data") and e["offset"] != e["start"]:
        sys.exit("host offset %d for guest offset %d" % (e["offset"], e["start"]))' || fail "mapping ($conf)"
    [ "$("$VDISK" map --output=json img.qcow2)" = "$(qemu-img map --output=json img.qcow2)" ] ||
        fail "vdisk map differs ($conf)"
    a=$("$VDISK" info --output=json img.qcow2 | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['format-specific'])")
    b=$(qemu-img info --output=json img.qcow2 | /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['format-specific'])")
    [ "$a" = "$b" ] || fail "info differs ($conf): $a -- $b"
done

# resize follows the data file; refusals
"$VDISK" resize img.qcow2 4M || fail "resize"
[ "$(stat -c %s data.raw)" = $((4 * 1024 * 1024)) ] || fail "data file not resized"
qemu-img check -q img.qcow2 || fail "check after resize"
expect_fail "internal snapshots are not supported with an external data file" \
    "$VDISK" snapshot -c s img.qcow2
expect_fail "not supported" "$VDISK_IO" -c 'write -c 0 64k' img.qcow2
expect_fail "Cannot downgrade an image with a data file" "$VDISK" amend -o compat=0.10 img.qcow2
expect_fail "External data files are only supported with compatibility level 1.1" \
    "$VDISK" create -f qcow2 -o compat=0.10,data_file=x.raw x.qcow2 1M
expect_fail "data-file-raw requires data-file" "$VDISK" create -f qcow2 -o data_file_raw=on x.qcow2 1M
expect_fail "Backing file and data-file-raw cannot be used at the same time" \
    "$VDISK" create -f qcow2 -o data_file=x.raw,data_file_raw=on -b img.qcow2 -F qcow2 x.qcow2
qemu-img create -q -f qcow2 plain.qcow2 1M
expect_fail "'data-file' can only be set for images with an external data file" \
    "$VDISK_IO" --image-opts -c 'read 0 512' "driver=qcow2,file.filename=plain.qcow2,data-file=x.raw"
qemu-img check -q img.qcow2 || fail "check after refusals"

# amend: repoint the data file, turn data_file_raw off
cp data.raw moved.raw
"$VDISK" amend -o data_file=moved.raw img.qcow2 || fail "amend data_file"
[ "$(qemu-img info --output=json img.qcow2 | grep -o '"data-file": "[^"]*"')" = '"data-file": "moved.raw"' ] ||
    fail "data file not repointed"
rm data.raw
qemu-img compare -q -f qcow2 -F raw img.qcow2 moved.raw 2>/dev/null ||
    "$VDISK" compare -q img.qcow2 moved.raw || true
"$VDISK" amend -o data_file_raw=off img.qcow2 || fail "amend data_file_raw=off"
[ "$(qemu-img info --output=json img.qcow2 | grep -o '"data-file-raw": [a-z]*')" = '"data-file-raw": false' ] ||
    fail "data_file_raw still on"
expect_fail "data-file-raw cannot be set on existing images" "$VDISK" amend -o data_file_raw=on img.qcow2
qemu-img check -q img.qcow2 || fail "check after amend"
# a data file given when opening overrides the header's name
"$VDISK_IO" --image-opts -c 'read 0 512' "driver=qcow2,file.filename=img.qcow2,data-file=moved.raw" >/dev/null ||
    fail "data-file= open option"

# hostile names in the header: never followed
setname() { # image name-bytes (python literal)
    /usr/bin/python3 - "$1" "$2" <<'EOF'
import sys
f, name = sys.argv[1], eval(sys.argv[2])
d = bytearray(open(f, "rb").read())
hl = int.from_bytes(d[100:104], "big")
ext = (0x44415441).to_bytes(4, "big") + len(name).to_bytes(4, "big") + name
ext += b"\0" * ((8 - len(name) % 8) % 8) + b"\0" * 8
d[hl:hl + len(ext)] = ext
open(f, "wb").write(d)
EOF
}
qemu-img create -q -f qcow2 -o cluster_size=4k,data_file=h.raw h.qcow2 1M
for name in "b'json:{\"driver\":\"file\",\"filename\":\"/etc/passwd\"}'" "b'nbd://127.0.0.1:1/x'" \
            "b'nbd:127.0.0.1:1'" "b'nbd+unix:///x?socket=/tmp/none'" \
            "b'ssh://localhost/etc/passwd'"; do
    cp h.qcow2 hh.qcow2
    setname hh.qcow2 "$name"
    expect_fail "refusing" bounded "$VDISK" info hh.qcow2
    expect_fail "refusing" "$VDISK_IO" -c 'read 0 512' hh.qcow2
done
# a protocol without a driver here is only a (missing) relative file name
cp h.qcow2 hh.qcow2; setname hh.qcow2 "b'nosuchproto://localhost/etc/passwd'"
expect_fail "Could not open data file" "$VDISK" info hh.qcow2
cp h.qcow2 hh.qcow2; setname hh.qcow2 "b'h.r\\0aw'"
expect_fail "NUL" "$VDISK" info hh.qcow2
cp h.qcow2 hh.qcow2; setname hh.qcow2 "b''"
expect_fail "'data-file' is required" "$VDISK" info hh.qcow2
cp h.qcow2 hh.qcow2; setname hh.qcow2 "b'x' * 3000"
expect_fail "" bounded "$VDISK" info hh.qcow2
cp h.qcow2 hh.qcow2; setname hh.qcow2 "b'/nonexistent/dir/d.raw'"
expect_fail "Could not open data file" "$VDISK" info hh.qcow2
echo ok
