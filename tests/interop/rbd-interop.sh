#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# rbd on a one-node Ceph cluster, against QEMU 7.2's rbd driver on the same
# names: create/convert raw and qcow2 onto RBD both ways (qemu-img compare,
# qemu-img check), info and map agree, resize, object size, discard and
# write zeroes, namespaces, an rbd snapshot read as the data of its time.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/rbd-common.bash"

# a seeded source: data, written zeroes and holes over 24 MiB
/usr/bin/python3 - <<'PY'
import random
rnd = random.Random(19)
with open("src.raw", "wb") as f:
    f.truncate(24 << 20)
    for _ in range(30):
        off = rnd.randrange(0, 24 << 20) & ~511
        ln = min(rnd.choice([512, 4096, 65536, 1 << 20, 3 << 20]), (24 << 20) - off)
        f.seek(off)
        f.write(bytes(ln) if rnd.random() < 0.2 else rnd.randbytes(ln))
PY

# --- raw onto RBD by vdisk, read by qemu-img
rb "$VDISK" create -f raw "$(R v-raw)" 24M >create.out || fail "vdisk create raw on rbd"
grep -q "Formatting 'rbd:rbd/v-raw:conf=$CONF', fmt=raw size=25165824" create.out ||
    fail "create message: $(cat create.out)"
rb "$VDISK" convert -n -f raw -O raw src.raw "$(R v-raw)" || fail "vdisk convert -n onto rbd"
rb qemu-img compare -f raw -F raw src.raw "$(R v-raw)" || fail "qemu-img compare after vdisk convert -n"
rb "$VDISK" convert -f raw -O raw src.raw "$(R v-raw2)" || fail "vdisk convert onto a new rbd image"
rb qemu-img compare -f raw -F raw src.raw "$(R v-raw2)" || fail "qemu-img compare v-raw2"

# --- qcow2 on RBD by vdisk: qemu-img check and compare
rb "$VDISK" convert -f raw -O qcow2 src.raw "$(R v-q)" || fail "vdisk convert to qcow2 on rbd"
rb qemu-img check -f qcow2 "$(R v-q)" >check.out || fail "qemu-img check: $(cat check.out)"
rb qemu-img compare -f raw -F qcow2 src.raw "$(R v-q)" || fail "qemu-img compare qcow2"
# qcow2's cluster_size is the format's, not the object size (as QEMU)
rb rbd -c "$CONF" info v-q | grep -q "order 22" || fail "qcow2 on rbd: object size changed"

# --- QEMU writes, vdisk reads
rb qemu-img convert -f raw -O raw src.raw "$(R q-raw)" || fail "qemu-img convert raw"
rb qemu-img convert -f raw -O qcow2 src.raw "$(R q-q)" || fail "qemu-img convert qcow2"
rb "$VDISK" compare -f raw -F raw src.raw "$(R q-raw)" || fail "vdisk compare q-raw"
rb "$VDISK" compare -f raw -F qcow2 src.raw "$(R q-q)" || fail "vdisk compare q-q"
rb "$VDISK" check -f qcow2 "$(R q-q)" >/dev/null || fail "vdisk check q-q"
rb "$VDISK" convert -f qcow2 -O raw "$(R q-q)" back.raw || fail "vdisk convert off the cluster"
same_content src.raw back.raw
rb "$VDISK" convert -f raw -O qcow2 "$(R q-raw)" back.qcow2 || fail "vdisk convert rbd -> qcow2 file"
rb qemu-img compare -f qcow2 -F raw back.qcow2 src.raw || fail "compare back.qcow2"

# --- map and info agree with qemu-img
for img in v-raw q-raw v-q q-q; do
    fmt=raw; case $img in *-q) fmt=qcow2 ;; esac
    a=$(rb "$VDISK" map -f $fmt --output=json "$(R $img)") || fail "vdisk map $img"
    b=$(rb qemu-img map -f $fmt --output=json "$(R $img)")
    [ "$a" = "$b" ] || fail "map $img differs:
$a
--- qemu-img:
$b"
    rb "$VDISK" info -f $fmt --output=json "$(R $img)" >vi.json || fail "vdisk info $img"
    rb qemu-img info -f $fmt --output=json "$(R $img)" >qi.json
    /usr/bin/python3 - vi.json qi.json <<'PY' || fail "info of $img differs"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for d in (a, b):
    d.pop("filename", None)
if a != b:
    print(a, "\n", b)
    sys.exit(1)
PY
done
rb "$VDISK" info -f raw "$(R v-raw)" | grep -qx "cluster_size: 4194304" || fail "info: no object size"

# --- resize (grow and shrink), seen by qemu-img and rbd
rb "$VDISK" resize -f raw "$(R v-raw2)" 40M || fail "vdisk resize +"
rb qemu-img info -f raw --output=json "$(R v-raw2)" | grep -q '"virtual-size": 41943040' ||
    fail "size after grow"
rb "$VDISK" resize -f raw --shrink "$(R v-raw2)" 8M || fail "vdisk resize shrink"
rb rbd -c "$CONF" info v-raw2 | grep -q "size 8 MiB" || fail "rbd size after shrink"
head -c 8M src.raw >src8.raw
rb qemu-img compare -f raw -F raw src8.raw "$(R v-raw2)" || fail "compare after shrink"
expect_fail "Unsupported preallocation mode 'full'" \
    rb "$VDISK" resize -f raw --preallocation=full "$(R v-raw2)" 9M

# --- object size from cluster_size, as QEMU
rb "$VDISK" create -f raw -o cluster_size=64k "$(R v-obj)" 1M >/dev/null || fail "create 64k objects"
rb rbd -c "$CONF" info v-obj | grep -q "order 16" || fail "object size not 64 KiB"
rb "$VDISK" info --output=json "$(R v-obj)" | grep -q '"cluster-size": 65536' || fail "info object size"
expect_fail "obj size needs to be power of 2" rb "$VDISK" create -f raw -o cluster_size=12k "$(R v-bad)" 1M
expect_fail "obj size too small" rb "$VDISK" create -f raw -o cluster_size=2k "$(R v-bad)" 1M
expect_fail "error rbd create: File exists" rb "$VDISK" create -f raw "$(R v-obj)" 1M
expect_fail "Can't use snapshot name for image creation" \
    rb "$VDISK" create -f raw "rbd:rbd/v-bad@s:conf=$CONF" 1M

# --- discard and write zeroes, read back by qemu-io; map shows the holes
rb "$VDISK_IO" -f raw -c "write -P 0x5a 0 12M" -c "discard 0 4M" -c "write -z 4M 4M" \
    -c "write -z -u 8M 4M" "$(R v-raw)" >/dev/null || fail "vdisk-io discard/zero"
rb qemu-io -f raw -c "read -P 0 0 12M" "$(R v-raw)" | grep -q "read 12582912/12582912" ||
    fail "zeroed range does not read as zeroes"
a=$(rb "$VDISK" map -f raw --output=json "$(R v-raw)"); b=$(rb qemu-img map -f raw --output=json "$(R v-raw)")
[ "$a" = "$b" ] || fail "map after discard differs:
$a
---
$b"

# --- a namespace
rb rbd -c "$CONF" namespace create rbd/ns1 || fail "rbd namespace create"
rb "$VDISK" convert -f raw -O raw src8.raw "rbd:rbd/ns1/img:conf=$CONF" || fail "convert into a namespace"
rb qemu-img compare -f raw -F raw src8.raw "rbd:rbd/ns1/img:conf=$CONF" || fail "compare in namespace"
rb "$VDISK" convert -O raw \
    "json:{\"driver\":\"rbd\",\"pool\":\"rbd\",\"namespace\":\"ns1\",\"image\":\"img\",\"conf\":\"$CONF\"}" \
    ns.raw || fail "json: with a namespace"
same_content src8.raw ns.raw
rb rbd -c "$CONF" --namespace ns1 info img >/dev/null || fail "image not in the namespace"

# --- vdisk-nbd exports a qcow2 on RBD: qemu-io writes through it, both read
rb "$VDISK" convert -f raw -O qcow2 src8.raw "$(R nbd-q)" || fail "convert for nbd"
"$VDISK_NBD" -k "$PWD/nbd.sock" -f qcow2 "$(R nbd-q)" >nbd.log 2>&1 &
NBD_PID=$!
trap 'kill $NBD_PID 2>/dev/null; wait $NBD_PID 2>/dev/null; ceph_stop' EXIT
wait_for test -S "$PWD/nbd.sock"
U="nbd+unix:///?socket=$PWD/nbd.sock"
rb qemu-io -f raw -c "write -P 0x77 1M 64k" -c "read -P 0x77 1M 64k" "$U" >nbd-io.out ||
    fail "qemu-io through vdisk-nbd: $(cat nbd-io.out) $(cat nbd.log)"
wait "$NBD_PID" || fail "vdisk-nbd exited with an error: $(cat nbd.log)"
rb qemu-io -f qcow2 -r -c "read -P 0x77 1M 64k" "$(R nbd-q)" | grep -q "read 65536/65536" ||
    fail "the write through NBD did not reach RBD"
trap ceph_stop EXIT

# --- an rbd snapshot reads as the data of its time; writes to it are refused
rb rbd -c "$CONF" snap create q-raw@before >/dev/null 2>&1 || fail "rbd snap create"
rb "$VDISK_IO" -f raw -c "write -P 0xee 1M 2M" "$(R q-raw)" >/dev/null || fail "write after snap"
rb "$VDISK" compare -f raw -F raw src.raw "rbd:rbd/q-raw@before:conf=$CONF" || fail "snapshot content"
rb qemu-io -f raw -r -c "read -P 0xee 1M 2M" "$(R q-raw)" | grep -q "read 2097152" ||
    fail "head lost the write"
expect_fail "rbd snapshots are read-only" \
    rb "$VDISK_IO" -f raw -c "write 0 512" "rbd:rbd/q-raw@before:conf=$CONF"
expect_fail "rbd snapshots are read-only" \
    rb "$VDISK" convert -n -f raw -O raw src.raw "rbd:rbd/q-raw@before:conf=$CONF"
rb "$VDISK" convert -f raw -O raw "rbd:rbd/q-raw@before:conf=$CONF" snap.raw || fail "convert snapshot"
same_content src.raw snap.raw
# the snapshot is listed as QEMU lists it (info, snapshot -l)
a=$(rb "$VDISK" snapshot -l "$(R q-raw)"); b=$(rb qemu-img snapshot -l "$(R q-raw)")
[ "$a" = "$b" ] || fail "snapshot -l differs:
$a
---
$b"
a=$(rb "$VDISK" info -f raw "$(R q-raw)" | sed 1d); b=$(rb qemu-img info -f raw "$(R q-raw)" | sed 1d)
[ "$a" = "$b" ] || fail "info with a snapshot differs:
$a
---
$b"
echo ok
