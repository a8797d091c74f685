#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk rebase and commit on qcow2 chains, side by side with qemu-img 7.2
# on copies of the same chain: what the guest sees afterwards is identical
# for both tools (and unchanged by a safe rebase), `qemu-img check` is
# clean, the backing references read the same, and commit empties the
# overlay as qemu-img does (or keeps it with -d).
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

mkchain() { # dir
    mkdir -p "$1"
    qemu-img create -q -f qcow2 "$1/base.qcow2" 4M
    qemu-io -c 'write -P 1 0 4M' "$1/base.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$1/mid.qcow2"
    qemu-io -c 'write -P 2 1M 1M' -c 'write -z 3M 64k' "$1/mid.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$1/top.qcow2"
    qemu-io -c 'write -P 3 1536k 1M' -c 'write -P 4 100k 7k' "$1/top.qcow2" >/dev/null
}
view() { qemu-img convert -O raw "$1" "$2"; }
backing() { qemu-img info --output=json "$1" | grep -o '"backing-filename": "[^"]*"' || true; }
checkall() { for f in "$1"/*.qcow2; do qemu-img check -q "$f" || fail "check $f after $2"; done; }

# safe rebase onto the base, plain and compressed
for flags in "" "-c"; do
    rm -rf q v; mkchain q; mkchain v
    view q/top.qcow2 before.raw
    # qemu-img 7.2 has no rebase -c: its plain rebase is the reference
    (cd q && qemu-img rebase -b base.qcow2 -F qcow2 top.qcow2)
    (cd v && "$VDISK" rebase $flags -b base.qcow2 -F qcow2 top.qcow2) || fail "vdisk rebase $flags"
    view q/top.qcow2 q.raw; view v/top.qcow2 v.raw
    cmp -s before.raw v.raw || fail "vdisk rebase $flags changed what the guest sees"
    cmp -s q.raw v.raw || fail "rebase $flags: qemu-img and vdisk differ"
    [ "$(backing v/top.qcow2)" = "$(backing q/top.qcow2)" ] || fail "rebase $flags: backing reference"
    checkall v "rebase $flags"
    "$VDISK" check -q v/top.qcow2 >/dev/null || fail "vdisk check after rebase $flags"
done

# unsafe rebase only rewrites the reference
rm -rf v; mkchain v
(cd v && "$VDISK" rebase -u -b base.qcow2 -F qcow2 top.qcow2) || fail "rebase -u"
[ "$(backing v/top.qcow2)" = '"backing-filename": "base.qcow2"' ] || fail "rebase -u reference"
checkall v "rebase -u"

# commit into the backing file: the overlay is emptied (qemu-img) or kept (-d)
for flags in "" "-d"; do
    rm -rf q v; mkchain q; mkchain v
    view q/top.qcow2 before.raw
    qemu-img commit -q $flags q/top.qcow2
    "$VDISK" commit -q $flags v/top.qcow2 || fail "vdisk commit $flags"
    view v/mid.qcow2 v.raw
    cmp -s before.raw v.raw || fail "commit $flags: the backing file does not hold the data"
    view q/top.qcow2 q.raw; view v/top.qcow2 v.raw
    cmp -s q.raw v.raw || fail "commit $flags: the overlays read differently"
    # where each layer holds data (host offsets depend on allocation order)
    nooff() {
        qemu-img map --output=json "$1" | /usr/bin/python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    e.pop("offset", None)
    if out and all(out[-1][k] == e[k] for k in e if k not in ("start", "length")):
        out[-1]["length"] += e["length"]
    else:
        out.append(e)
print(out)'
    }
    a=$(nooff q/top.qcow2); b=$(nooff v/top.qcow2)
    [ "$a" = "$b" ] || fail "commit $flags: overlay mapping differs: $a -- $b"
    checkall v "commit $flags"
done

# commit -b: into the base through the middle layer
rm -rf q v; mkchain q; mkchain v
view q/top.qcow2 before.raw
(cd q && qemu-img commit -q -b base.qcow2 top.qcow2)
(cd v && "$VDISK" commit -q -b base.qcow2 top.qcow2) || fail "vdisk commit -b"
view v/base.qcow2 v.raw
cmp -s before.raw v.raw || fail "commit -b: the base does not hold the data"
for f in base mid top; do
    view q/$f.qcow2 q.raw; view v/$f.qcow2 v.raw
    cmp -s q.raw v.raw || fail "commit -b: $f reads differently from qemu-img's"
done
checkall v "commit -b"
echo ok
