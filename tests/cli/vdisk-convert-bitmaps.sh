#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk convert --bitmaps: persistent dirty bitmaps of a qcow2 source are
# copied (name, granularity, enabled state, content) as qemu-img does;
# inconsistent ones stop the copy unless --skip-broken-bitmaps.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

qemu-img create -q -f qcow2 s.qcow2 4M
qemu-img bitmap --add s.qcow2 bm0
qemu-img bitmap --add -g 128k --disable s.qcow2 bm1
qemu-io -c "write -q -P 1 0 1M" s.qcow2

bitmaps() { qemu-img info --output=json "$1" | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin).get("format-specific", {}).get("data", {})
for b in d.get("bitmaps", []):
    print(b["name"], b["granularity"], ",".join(sorted(b["flags"])))'; }

"$VDISK" convert --bitmaps -O qcow2 s.qcow2 v.qcow2 || fail "convert --bitmaps"
qemu-img convert --bitmaps -O qcow2 s.qcow2 q.qcow2
[ "$(bitmaps v.qcow2)" = "$(bitmaps q.qcow2)" ] || fail "bitmaps: $(bitmaps v.qcow2) vs $(bitmaps q.qcow2)"
qemu-img check -q v.qcow2 || fail "check"
qemu-img compare -q s.qcow2 v.qcow2 || fail "content"
expect_fail "Source lacks bitmap support" "$VDISK" convert --bitmaps -O qcow2 -f raw s.qcow2 r.qcow2
expect_fail "single source" "$VDISK" convert --bitmaps -O qcow2 s.qcow2 s.qcow2 two.qcow2

# an inconsistent (in-use) bitmap: a writer killed while it had it open
qemu-img create -q -f qcow2 b.qcow2 4M
qemu-img bitmap --add b.qcow2 bm0
qemu-img bitmap --add b.qcow2 good
# qemu-io holds the image (its stdin, a FIFO, stays open) until it is
# seen in use, then dies: no time window
mkfifo qio.ctl
qemu-io -f qcow2 b.qcow2 <qio.ctl >/dev/null 2>&1 &
qio=$!
exec 3>qio.ctl
until qemu-img info -U b.qcow2 | grep -q in-use; do
    kill -0 $qio 2>/dev/null || fail "qemu-io exited before marking the bitmaps in use"
    sleep 0.05
done
kill -9 $qio; wait $qio 2>/dev/null || true
exec 3>&-
qemu-img info b.qcow2 | grep -q in-use || fail "could not make an in-use bitmap"
expect_fail "Cannot copy inconsistent bitmap 'good'" "$VDISK" convert --bitmaps -O qcow2 b.qcow2 ib.qcow2
[ ! -e ib.qcow2 ] || fail "ib.qcow2 created"
out=$("$VDISK" convert --bitmaps --skip-broken-bitmaps -O qcow2 b.qcow2 sb.qcow2 2>&1) ||
    fail "--skip-broken-bitmaps: $out"
case "$out" in *"Skipping inconsistent bitmap"*) ;; *) fail "no warning: $out" ;; esac
qemu-img convert --bitmaps --skip-broken-bitmaps -O qcow2 b.qcow2 qb.qcow2 2>/dev/null
[ "$(bitmaps sb.qcow2)" = "$(bitmaps qb.qcow2)" ] || fail "skipped bitmaps differ"
echo ok
