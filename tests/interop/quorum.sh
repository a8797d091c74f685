#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The quorum driver against QEMU 7.2's (qemu-io / qemu-img on the same
# children, outputs compared; qemu-iotests 059, 110, 312 use it):
#  - writes reach every child; reads vote: one corrupted child of three is
#    outvoted (threshold 2), two are not (EIO); rewrite-corrupted=on repairs
#    the outvoted child exactly as QEMU does; read-pattern=fifo reads the
#    first child; blkverify fails a read whose versions differ;
#  - option errors (threshold, counts, blkverify, blkverify with rewrite) and a
#    child size mismatch in QEMU's words;
#  - map (zero only where all children read zeroes: iotest 312's setup);
#  - names: json: filenames for nodes described by options only (quorum,
#    blkdebug with rules, the format above them), "blkdebug::IMG" for a
#    rule-less blkdebug, "cannot determine actual path" for a backing file
#    relative to a quorum, and vmdk's refusal of relative extents (iotests
#    110 and 059).
#  - a seeded random workload through quorum with vdisk-io reads back the
#    same from each child and from qemu-io's quorum.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io

mk3() { # fresh children c0 c1 c2 (raw, 4 MiB) with the same data
    local i
    for i in 0 1 2; do
        qemu-img create -q -f raw c$i.raw 4M
        qemu-io -f raw -c "write -P 7 0 1M" c$i.raw >/dev/null
    done
}
q3() { # quorum image-opts over c0..c2 with extra quorum options (a=b,c=d)
    local extra=
    [ -n "${1:-}" ] && extra=,file.${1//,/,file.}
    echo "driver=raw,file.driver=quorum,file.vote-threshold=${T:-2}$extra,file.children.0.driver=raw,file.children.0.file.filename=c0.raw,file.children.1.driver=raw,file.children.1.file.filename=c1.raw,file.children.2.driver=raw,file.children.2.file.filename=c2.raw"
}

# --- writes and votes
mk3
same_output "write" qemu-io --image-opts -c "write -P 9 64k 64k" -c "read -P 9 64k 64k" "$(q3)"
for i in 0 1 2; do qemu-io -f raw -c "read -P 9 64k 64k" c$i.raw >/dev/null || fail "child $i lacks the write"; done
qemu-io -f raw -c "write -P 5 0 4k" c1.raw >/dev/null
same_output "one corrupted child" qemu-io --image-opts -c "read -P 7 0 4k" "$(q3)"
qemu-io -f raw -c "write -P 6 0 4k" c2.raw >/dev/null
same_output "two corrupted children" qemu-io --image-opts -c "read 0 4k" "$(q3)"
T=1 same_output "threshold 1, three versions" qemu-io --image-opts -c "read -P 7 0 4k" "$(q3)"

# rewrite-corrupted: the same repair in both
for who in qemu vdisk; do
    mk3
    qemu-io -f raw -c "write -P 5 4k 4k" c1.raw >/dev/null
    IO=qemu-io; [ $who = vdisk ] && IO=$VDISK_IO
    "$IO" --image-opts -c "read -P 7 0 64k" "$(q3 rewrite-corrupted=on)" >/dev/null ||
        fail "$who: rewrite-corrupted read failed"
    cp c1.raw rw-$who.raw
done
cmp rw-qemu.raw rw-vdisk.raw || fail "rewrite-corrupted repaired differently"
qemu-io -f raw -c "read -P 7 0 1M" rw-vdisk.raw >/dev/null || fail "not repaired"

# fifo reads the first child only; blkverify refuses differing versions
mk3
qemu-io -f raw -c "write -P 5 0 4k" c0.raw >/dev/null
same_output "fifo" qemu-io --image-opts -c "read -P 5 0 4k" "$(q3 read-pattern=fifo)"
v=$("$VDISK_IO" --image-opts -c "read 0 4k" \
    "driver=raw,file.driver=quorum,file.vote-threshold=2,file.blkverify=on,file.children.0.driver=file,file.children.0.filename=c0.raw,file.children.1.driver=file,file.children.1.filename=c1.raw" 2>&1) || true
case $v in *"Input/output error"*) ;; *) fail "blkverify read of differing versions: $v" ;; esac

# --- option errors and sizes, in QEMU's words
same_output "threshold 0" qemu-io --image-opts -c quit "$(T=0 q3)"
same_output "threshold 4" qemu-io --image-opts -c quit "$(T=4 q3)"
same_output "no children" qemu-io --image-opts -c quit "driver=raw,file.driver=quorum,file.vote-threshold=1"
same_output "blkverify with 3" qemu-io --image-opts -c quit "$(q3 blkverify=on)"
same_output "fifo and rewrite" qemu-io --image-opts -c "read -P 7 0 4k" "$(q3 read-pattern=fifo,rewrite-corrupted=on)"
same_output "blkverify and rewrite" qemu-io --image-opts -c quit \
    "driver=raw,file.driver=quorum,file.vote-threshold=2,file.blkverify=on,file.rewrite-corrupted=on,file.children.0.driver=file,file.children.0.filename=c0.raw,file.children.1.driver=file,file.children.1.filename=c1.raw"
same_output "bad read-pattern" qemu-io --image-opts -c quit "$(q3 read-pattern=lifo)"
qemu-img resize -q -f raw c2.raw 8M
v=$("$VDISK_IO" --image-opts -c "read 0 4k" "$(q3)" 2>&1) && fail "children of different sizes opened: $v"

# --- map: zero where all children read zeroes (iotest 312's layout)
for i in 0 1 2; do qemu-img create -q -f qcow2 -o cluster_size=64k m$i.qcow2 10M; done
qemu-io -c "write -P 0 64k 64k" m0.qcow2 >/dev/null
qemu-io -c "write -P 0 64k 192k" m1.qcow2 >/dev/null
qemu-io -c "write -z 1M 64k" m0.qcow2 >/dev/null
qemu-io -c "write -P 1 2M 64k" m2.qcow2 >/dev/null
mq="driver=raw,file.driver=quorum,file.vote-threshold=2,file.children.0.driver=qcow2,file.children.0.file.filename=m0.qcow2,file.children.1.driver=qcow2,file.children.1.file.filename=m1.qcow2,file.children.2.driver=qcow2,file.children.2.file.filename=m2.qcow2"
same_output "map" qemu-img map --output=json --image-opts "$mq"

# --- names
qemu-img create -q -f qcow2 t.qcow2.base 64M
qemu-img create -q -f qcow2 -b t.qcow2.base -F qcow2 t.qcow2
cp t.qcow2 t.qcow2.copy
# QEMU's json: names list keys in hash order: compared with the name masked
# (as the iotests' _filter_json_filename), its content checked below
SAME_MASK="s/json:{.*}/json:{}/" same_output "info over quorum" qemu-img info "json:{'driver':'qcow2','file':{'driver':'quorum','vote-threshold':1,'children':[{'driver':'file','filename':'t.qcow2'},{'driver':'file','filename':'t.qcow2.copy'}]}}"
same_output "info over blkdebug" qemu-img info "json:{'driver':'qcow2','file':{'driver':'blkdebug','image':{'driver':'file','filename':'t.qcow2'}}}"
v=$("$VDISK" info "json:{'driver':'qcow2','file':{'driver':'blkdebug','image':{'driver':'file','filename':'t.qcow2'},'set-state':[{'event':'read_aio','new_state':42}]}}" | head -n 1)
case $v in 'image: json:{"driver": "qcow2", "file": {"driver": "blkdebug"'*'"set-state": [{"event": "read_aio", "new_state": "42"}]}}') ;;
*) fail "json: name of a blkdebug with rules: $v" ;; esac
touch 42
same_output "blkdebug over null-co" qemu-img info 'json:{"driver": "blkdebug", "config": 42, "image.driver": "null-co"}'
qemu-img create -q -f vmdk -o subformat=monolithicFlat d.vmdk 1M
cp d.vmdk d.vmdk.orig
SAME_MASK="s/'json:[^']*'/JSON/g" same_output "vmdk relative extents over quorum" qemu-img info "json:{\"driver\": \"vmdk\", \"file\": {\"driver\": \"quorum\", \"children\": [{\"driver\": \"file\", \"filename\": \"$PWD/d.vmdk\"}, {\"driver\": \"file\", \"filename\": \"$PWD/d.vmdk.orig\"}], \"vote-threshold\": 1}}"

# --- a seeded random workload: every child and qemu-io's quorum read it back
seed=${QUORUM_SEED:-$RANDOM}
echo "seed $seed"
mk3
/usr/bin/python3 - "$seed" >cmds <<'PY'
import random, sys
r = random.Random(int(sys.argv[1]))
for _ in range(60):
    off = r.randrange(0, 4 * 1024 * 1024 // 512) * 512
    ln = r.randrange(1, 64) * 512
    ln = min(ln, 4 * 1024 * 1024 - off)
    if r.random() < 0.2:
        print(f"write -z {off} {ln}")
    else:
        print(f"write -P {r.randrange(1, 255)} {off} {ln}")
PY
args=()
while read -r c; do args+=(-c "$c"); done <cmds
"$VDISK_IO" --image-opts "${args[@]}" -c flush "$(q3)" >/dev/null || fail "random workload (seed $seed)"
cmp c0.raw c1.raw && cmp c0.raw c2.raw || fail "children differ after the workload (seed $seed)"
qemu-img convert -O raw --image-opts "$(q3)" viaq.raw
cmp c0.raw viaq.raw || fail "qemu-img reads the quorum differently (seed $seed)"
"$VDISK" convert -O raw --image-opts "$(q3)" viav.raw
cmp c0.raw viav.raw || fail "vdisk reads the quorum differently (seed $seed)"
exit 0
