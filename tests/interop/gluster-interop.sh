#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The gluster protocol against a real GlusterFS volume (one glusterd, one
# brick, brought up once for all of this), checked with QEMU 7.2's own
# gluster driver (qemu-img / qemu-io from qemu-block-extra) on the same
# URLs: create, info --output=json, convert both ways (raw and qcow2),
# compare, map, a seeded random workload through vdisk-io and qemu-io,
# preallocation, the json: / --image-opts / gluster+unix forms, logging to
# a logfile (never to stdout), the errors for a missing volume or file, and
# a brick that dies in the middle of a write.
# Each qemu-img run on gluster costs ~10 s (its glfs_fini sleeps while its
# client xlator waits for the disconnect): the independent qemu-img and
# qemu-io runs go in parallel (qbg / qwait), so their waits overlap.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/helpers/gluster-volume.sh"
need qemu-img qemu-io
"$VDISK" --help | grep -qw gluster || skip "vdisk built without libgfapi"
[ -n "$(find /usr/lib/*/qemu /usr/lib/qemu -name 'block-gluster.so' 2>/dev/null | head -n 1)" ] ||
    fail "qemu-block-extra's gluster driver is missing"
# LeakSanitizer: leaks inside libgfapi are not ours
[ -n "${VDISK_SANITIZED:-}" ] &&
    export LSAN_OPTIONS="${LSAN_OPTIONS:-}:suppressions=$VDISK_SRC/tests/lsan-gluster.supp:print_suppressions=0"

gluster_up
U=$GURL
echo "volume $GVOL up at $U"
SEED=${GLUSTER_SEED:-20261205}
echo "seed $SEED"

# qbg NAME CMD...: CMD in the background, stdin from $QIN (a background
# command's stdin is /dev/null otherwise), stdout to NAME.out, stderr to
# NAME.err; qwait NAME: its exit code (0 or the code, never fails itself)
declare -A qpids
# a failing test stops the QEMU runs still going, then the volume
qkill() { local p; for p in "${qpids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap 'qkill; gluster_down' EXIT
qbg() {
    local n=$1; shift
    "$@" <"${QIN:-/dev/null}" >"$n.out" 2>"$n.err" &
    qpids[$n]=$!
}
qwait() {
    local rc=0
    wait "${qpids[$1]}" || rc=$?
    unset "qpids[$1]"
    return $rc
}
# the error text of a background run, without gfapi's log lines
qerr() { grep -v '^\[' "$1.err" | tail -n 3; }

# ---- seeded local data: 24 MiB with holes, runs of zeroes and data
/usr/bin/python3 - "$SEED" <<'EOF'
import random, sys
r = random.Random(int(sys.argv[1]))
size = 24 << 20
buf = bytearray(size)
off = 0
while off < size:
    n = r.choice([4096, 65536, 300000, 1 << 20]) + r.randrange(0, 4096)
    kind = r.random()
    if kind < 0.5:
        buf[off:off + n] = r.randbytes(min(n, size - off))
    elif kind < 0.6:
        buf[off:off + n] = bytes([r.randrange(1, 256)]) * min(n, size - off)
    off += n
open("src.raw", "wb").write(bytes(buf[:size]))
EOF

# ---- vdisk writes: create (qcow2, raw) and convert local -> gluster
"$VDISK" create -f qcow2 "$U/v.qcow2" 64M >/dev/null
"$VDISK" create -f raw "$U/v.raw" 8M >/dev/null
[ -f "$GBRICK/v.qcow2" ] || fail "vdisk create left no file on the brick"
[ "$(stat -c %s "$GBRICK/v.raw")" = $((8 << 20)) ] || fail "raw create size"
"$VDISK" convert -f raw -O qcow2 src.raw "$U/c.qcow2"
"$VDISK" convert -f raw -O raw src.raw "$U/c.raw"
same_content src.raw "$GBRICK/c.raw"

# ---- QEMU on the same URLs, all at once: it reads what vdisk wrote
# (info, compare, check, map) and writes what vdisk reads next (create,
# convert), and gets the missing-volume error
qbg qinfo qemu-img info --output=json "$U/v.qcow2"
qbg qcreate qemu-img create -f qcow2 "$U/q.qcow2" 32M
qbg qcmp qemu-img compare -f raw -F qcow2 src.raw "$U/c.qcow2"
qbg qcheck qemu-img check "$U/c.qcow2"
qbg qconv qemu-img convert -f raw -O qcow2 src.raw "$U/qc.qcow2"
qbg qmapr qemu-img map -f raw --output=json "$U/c.raw"
qbg qmapq qemu-img map --output=json "$U/c.qcow2"
qbg qnovol timeout 60 qemu-img info "gluster://127.0.0.1/novol$$/x"
for fmt in qcow2 raw; do
    qbg qw2$fmt qemu-img create -f $fmt "$U/w2.$fmt" 16M
done

# meanwhile vdisk's own answers
"$VDISK" info --output=json "$U/v.qcow2" >v-info.json 2>v.err
"$VDISK" map -f raw --output=json "$U/c.raw" >v-map.json
"$VDISK" map --output=json "$U/c.qcow2" >v-mapq.json
# v.raw is a fresh 8 MiB file: one hole, no data (SEEK_DATA answers ENXIO)
"$VDISK" map -f raw --output=json "$U/v.raw" >v-hole.json
grep -q '"length": 8388608, "depth": 0, "present": true, "zero": true, "data": false' v-hole.json ||
    fail "the hole of v.raw is not seen: $(cat v-hole.json)"

qwait qinfo || fail "qemu-img info on vdisk's qcow2: $(qerr qinfo)"
cp qinfo.out q-info.json
/usr/bin/python3 - <<'PY' || fail "info --output=json differs from qemu-img's"
import json
q = json.load(open("q-info.json")); v = json.load(open("v-info.json"))
for k in ("virtual-size", "format", "filename", "cluster-size", "dirty-flag"):
    assert q.get(k) == v.get(k), (k, q.get(k), v.get(k))
assert q["format-specific"] == v["format-specific"], (q["format-specific"], v["format-specific"])
assert v["virtual-size"] == 64 << 20
PY
# gfapi logs go to stderr: stdout was pure JSON (parsed above)
qwait qcmp || fail "qemu-img compare c.qcow2: $(qerr qcmp)"
qwait qcheck || fail "qemu-img check c.qcow2: $(qerr qcheck)"
# map: SEEK_DATA/SEEK_HOLE on the brick, as QEMU sees it
qwait qmapr || fail "qemu-img map c.raw: $(qerr qmapr)"
cmp -s v-map.json qmapr.out || {
    diff v-map.json qmapr.out | head -20
    fail "map of c.raw differs from qemu-img's"
}
qwait qmapq || fail "qemu-img map c.qcow2: $(qerr qmapq)"
cmp -s v-mapq.json qmapq.out || fail "map of c.qcow2 differs from qemu-img's"
qrc=0; qwait qnovol || qrc=$?
[ "$qrc" = 1 ] || fail "qemu-img exit $qrc for a missing volume"
grep -q "Gluster connection for volume novol$$, path x failed to connect" qnovol.err ||
    fail "qemu-img's message for a missing volume: $(qerr qnovol)"

# ---- QEMU created / converted, vdisk reads
qwait qcreate || fail "qemu-img create: $(qerr qcreate)"
"$VDISK" info --output=json "$U/q.qcow2" >v2.json
grep -q '"virtual-size": 33554432' v2.json || fail "vdisk info on qemu-img's qcow2: $(cat v2.json)"
"$VDISK" check "$U/q.qcow2" >/dev/null || fail "vdisk check on qemu-img's qcow2"
qwait qconv || fail "qemu-img convert: $(qerr qconv)"
"$VDISK" compare -f raw -F qcow2 src.raw "$U/qc.qcow2" >/dev/null || fail "vdisk compare qc.qcow2"
"$VDISK" convert -O raw "$U/qc.qcow2" back.raw
same_content src.raw back.raw
# gluster -> gluster on one volume (one shared connection)
"$VDISK" convert -O qcow2 "$U/qc.qcow2" "$U/qc2.qcow2"
"$VDISK" compare "$U/qc.qcow2" "$U/qc2.qcow2" >/dev/null || fail "gluster to gluster convert"

# ---- seeded random workload: vdisk-io on gluster, qemu-io on a local
# twin, then the other way round; discard and zero writes reach gfapi
/usr/bin/python3 - "$SEED" <<'EOF'
import random, sys
r = random.Random(int(sys.argv[1]) + 1)
size = 16 << 20
for name in ("ops1", "ops2"):
    with open(name, "w") as f:
        for _ in range(120):
            k = r.random()
            off = r.randrange(0, size - 1)
            n = r.randrange(1, min(size - off, 1 << 20) + 1)
            if r.random() < 0.7:  # mostly aligned, as guests do
                off &= ~511; n = max(512, n & ~511)
                n = min(n, size - off)
            if k < 0.6:
                f.write(f"write -P {r.randrange(1, 256)} {off} {n}\n")
            elif k < 0.8:
                f.write(f"write -z {'-u ' if r.random() < 0.5 else ''}{off} {n}\n")
            else:
                # whole sectors: what a partial sector keeps after a discard
                # depends on the protocol's alignment (512 here, 1 for a
                # local file), in QEMU as in vdisk
                off &= ~511; n = max(512, n & ~511); n = min(n, size - off)
                f.write(f"discard {off} {n}\n")
        f.write("flush\n")
EOF
for fmt in qcow2 raw; do
    "$VDISK" create -f $fmt "$U/w1.$fmt" 16M >/dev/null
    qemu-img create -f $fmt w1.$fmt 16M >/dev/null
    "$VDISK_IO" -d unmap -f $fmt "$U/w1.$fmt" <ops1 >vio1.out 2>&1 || fail "vdisk-io $fmt: $(tail -3 vio1.out)"
    qemu-io -d unmap -f $fmt w1.$fmt <ops1 >qio1.out 2>&1 || fail "qemu-io $fmt (local)"
    qbg qcw1$fmt qemu-img compare -f $fmt -F $fmt w1.$fmt "$U/w1.$fmt"
    qwait qw2$fmt || fail "qemu-img create w2.$fmt: $(qerr qw2$fmt)"
    QIN=ops2 qbg qio2$fmt qemu-io -d unmap -f $fmt "$U/w2.$fmt"
    "$VDISK" create -f $fmt w2.$fmt 16M >/dev/null
    "$VDISK_IO" -d unmap -f $fmt w2.$fmt <ops2 >vio2.out 2>&1 || fail "vdisk-io $fmt (local)"
done
for fmt in qcow2 raw; do
    qwait qcw1$fmt || fail "workload 1 ($fmt): qemu-img compare differs: $(qerr qcw1$fmt)"
    qwait qio2$fmt || fail "qemu-io $fmt on gluster: $(qerr qio2$fmt)"
    "$VDISK" compare -f $fmt -F $fmt w2.$fmt "$U/w2.$fmt" >/dev/null || fail "workload 2 ($fmt): vdisk compare differs"
done
"$VDISK" check "$U/w1.qcow2" >/dev/null || fail "check after the workload"

# ---- preallocation (off, falloc, full), as QEMU's gluster create
for p in off falloc full; do
    "$VDISK" create -f raw -o preallocation=$p "$U/p-$p.raw" 4M >/dev/null ||
        fail "create preallocation=$p"
    [ "$(stat -c %s "$GBRICK/p-$p.raw")" = 4194304 ] || fail "preallocation=$p: size"
done
[ "$(stat -c %b "$GBRICK/p-off.raw")" -lt 2048 ] || fail "preallocation=off allocated blocks"
for p in falloc full; do
    [ "$(stat -c %b "$GBRICK/p-$p.raw")" -ge 8192 ] || fail "preallocation=$p allocated $(stat -c %b "$GBRICK/p-$p.raw") blocks"
done
expect_fail "Unsupported preallocation mode: metadata" \
    "$VDISK" create -f raw -o preallocation=metadata "$U/p-m.raw" 1M
"$VDISK" create -f qcow2 -o preallocation=falloc "$U/pq.qcow2" 8M >/dev/null
"$VDISK" check "$U/pq.qcow2" >/dev/null || fail "qcow2 preallocation=falloc on gluster"
# resize through truncate (grow)
"$VDISK" resize -f raw "$U/p-off.raw" 6M >/dev/null
[ "$(stat -c %s "$GBRICK/p-off.raw")" = 6291456 ] || fail "resize on gluster"

# ---- the option forms: json:, --image-opts, legacy tcp, gluster+unix
J="json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"gluster\",\"volume\":\"$GVOL\",\"path\":\"c.qcow2\",\"server\":[{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"24007\"}]}}"
"$VDISK" compare -f raw src.raw "$J" >/dev/null || fail "json: form"
"$VDISK" info "$J" | grep -q "gluster://127.0.0.1:24007/$GVOL/c.qcow2" || fail "json: canonical name"
"$VDISK" compare --image-opts "driver=raw,file.filename=src.raw" \
    "driver=qcow2,file.driver=gluster,file.volume=$GVOL,file.path=c.qcow2,file.server.0.type=tcp,file.server.0.host=127.0.0.1,file.server.0.port=24007" \
    >/dev/null || fail "--image-opts form"
"$VDISK" compare -f raw -F qcow2 src.raw "gluster+unix:///$GVOL/c.qcow2?socket=$GSOCK" >/dev/null ||
    fail "gluster+unix"
"$VDISK" compare -f raw -F qcow2 src.raw "gluster+rdma://127.0.0.1/$GVOL/c.qcow2" >/dev/null ||
    fail "gluster+rdma (tcp)"
# two servers, the first one dead (a closed port): gfapi tries the next.
# (libgfapi cannot go from a unix server to a tcp one: it keeps the first
# server's address family, "option transport.unix.connect-path not
# specified", under QEMU as under vdisk)
dead=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$VDISK" compare -f raw src.raw "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"gluster\",\"volume\":\"$GVOL\",\"path\":\"c.qcow2\",\"server\":[{\"type\":\"tcp\",\"host\":\"127.0.0.1\",\"port\":\"$dead\"},{\"type\":\"tcp\",\"host\":\"127.0.0.1\",\"port\":\"24007\"}]}}" \
    >/dev/null || fail "second server"

# ---- logging: debug=9 into a logfile, stdout stays JSON
"$VDISK" info --output=json "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"gluster\",\"volume\":\"$GVOL\",\"path\":\"c.qcow2\",\"debug\":9,\"logfile\":\"$PWD/gfapi.log\",\"server\":[{\"type\":\"inet\",\"host\":\"127.0.0.1\",\"port\":\"24007\"}]}}" \
    >log-info.json 2>log-info.err
/usr/bin/python3 -c 'import json,sys; json.load(open("log-info.json"))' || fail "stdout is not JSON with a logfile"
grep -q ' D \[' gfapi.log || fail "debug=9 wrote no debug lines to the logfile"
[ ! -s log-info.err ] || fail "gfapi wrote to stderr despite logfile: $(head -3 log-info.err)"

# ---- errors: the same first line as qemu-img, exit 1, no hang
expect_fail "Gluster connection for volume novol$$, path x failed to connect" \
    timeout 60 "$VDISK" info "gluster://127.0.0.1/novol$$/x"
expect_exit 1 timeout 60 "$VDISK" info "gluster://127.0.0.1/novol$$/x"
expect_fail "Could not open 'gluster://127.0.0.1/$GVOL/missing': No such file or directory" \
    timeout 60 "$VDISK" info "$U/missing"
expect_fail "Gluster connection for volume $GVOL, path x failed to connect" \
    timeout 60 "$VDISK" create -f qcow2 "gluster+unix:///$GVOL/x?socket=$PWD/none.sock" 1M

# ---- the brick dies in the middle of a long write: an error, exit 1,
# bounded time (the brick is gone: nothing more can land)
head -c $((128 << 20)) /dev/urandom >big.raw
timeout 120 "$VDISK" convert -p -f raw -O raw big.raw "$U/big.raw" >conv.out 2>conv.err &
cpid=$!
bp=$(gluster_brick_pid) || fail "no brick pid"
wait_for test -s "$GBRICK/big.raw"
kill -9 "$bp"
rc=0
wait "$cpid" || rc=$?
[ "$rc" = 1 ] || fail "convert after the brick died: exit $rc (want 1): $(tail -3 conv.err)"
grep -v '^\[' conv.err | grep -qi "error\|could not\|transport\|not connected" ||
    fail "no clear message after the brick died: $(tail -3 conv.err)"
echo "brick killed mid-write: $(grep -v '^\[' conv.err | tail -n 1)"
echo "ok"
