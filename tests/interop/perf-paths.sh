#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The fast paths of issue 17 (docs/performance.md), each checked against
# QEMU 7.2's tools so that a wrong shortcut fails here:
#  1. the file length kept in the node: formats that allocate at the end of
#     their file (qcow v1, vmdk; qcow2 compressed clusters, read back against
#     the file length in the same process) must see every write that grew it, and a
#     raw image's length must follow truncate (reads past the new end fail
#     as in qemu-io, reads inside a grown image succeed);
#  2. qcow2's write-zeroes of a new cluster (QEMU's handle_alloc_space):
#     the blkdebug event cluster_alloc_space fires on the same requests as
#     in qemu-io (no backing data under the COW areas) and not where a
#     backing file defines them; a reused host cluster that held old data
#     reads as zeroes around the new data;
#  3. libdeflate's zlib clusters (matches up to 32 KiB back) read by qemu-img;
#  4. convert -C (copy_file_range): the same content and allocation map as
#     qemu-img -C (which copies data extents whole, zero runs included:
#     without the offload vdisk would leave those as holes), a raw source
#     with an offset, an odd-sized source, and fallbacks to a plain copy
#     (qcow2 target or source, another file system);
#  5. convert -c with runs of incompressible clusters (written as plain
#     clusters, one request per run) between compressible and zero ones,
#     an odd-sized image whose partial last cluster ends such a run: read
#     back by qemu-img, the same clusters compressed as by qemu-img, the
#     size within 2 % of qemu-img's;
#  6. convert's default worker count (with strace): a plain copy between
#     local files runs in the main thread (no thread started); with -c or
#     direct I/O as many threads as cores (2 to 8); -m as given; 8 when a
#     source is on NBD (latency to hide).
#  7. memory: converting a 1 TiB qcow2 whose 600 written clusters touch
#     600 L2 tables (37.5 MiB of them) to qcow2 and to raw stays under
#     64 MiB of RSS (issue 17); not under the sanitizers.
. "$(dirname "$0")/../lib.sh"
need qemu-img qemu-io
SEED=${VDISK_TEST_SEED:-$RANDOM}
echo "seed $SEED"
RANDOM=$SEED

# ---- 1. length cache: allocation at the end of the file
for fmt in qcow vmdk; do
    qemu-img create -q -f $fmt g.$fmt 64M
    cmds=(); chk=()
    for i in $(seq 1 24); do
        off=$(( (RANDOM % 1000) * 65536 + (RANDOM % 16) * 512 ))
        cmds+=(-c "write -P $i $off 512")
        chk+=("$off $i")
    done
    "$VDISK_IO" -f $fmt "${cmds[@]}" g.$fmt >/dev/null || fail "$fmt writes"
    # later writes win where offsets repeat: check the last pattern of each
    declare -A last=()
    for e in "${chk[@]}"; do last[${e% *}]=${e#* }; done
    rc=()
    for off in "${!last[@]}"; do rc+=(-c "read -P ${last[$off]} $off 512"); done
    out=$(qemu-io -f $fmt "${rc[@]}" g.$fmt 2>&1)
    case "$out" in *"Pattern verification failed"* | *"failed"*) fail "$fmt: qemu-io reads other data: $out" ;; esac
    qemu-img check -q -f $fmt g.$fmt 2>/dev/null || [ $? -eq 63 ] || fail "$fmt: qemu-img check"
    unset last
done

# qcow2 compressed clusters are appended at the end of the file and read
# back in the same process, checked against the file's length
qemu-img create -q -f qcow2 cw.qcow2 4M
args=()
for i in 1 2 3 4 5 6; do args+=(-c "write -c -P $((i * 16)) $((i * 65536)) 64k"); done
for i in 1 2 3 4 5 6; do args+=(-c "read -P $((i * 16)) $((i * 65536)) 64k"); done
out=$("$VDISK_IO" "${args[@]}" cw.qcow2 2>&1) || fail "compressed write + read back: $out"
case "$out" in *failed*) fail "compressed clusters not read back: $out" ;; esac
qemu-img check -q cw.qcow2 || fail "check after compressed writes"

# ---- 1b. length cache: truncate then read, as qemu-io
mask() { sed -E 's/(qemu-io|vdisk-io): //; s/[0-9.]+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), [0-9]+ ops; [^)]*\)/STATS/'; }
for who in qemu vdisk; do
    qemu-img create -q -f raw t.$who 2M
    tool=qemu-io; [ $who = vdisk ] && tool=$VDISK_IO
    $tool -f raw -c "read 1M 4k" -c "truncate 512k" -c "read 600k 4k" -c "read 500k 4k" \
        -c "truncate 3M" -c "read 2M 64k" -c "write -P 7 3000k 8k" -c "read -P 7 3000k 8k" \
        -c "length" t.$who 2>&1 | mask >$who.out || true
done
diff -u qemu.out vdisk.out || fail "truncate/read sequence differs from qemu-io"
grep -q "failed" vdisk.out || fail "read past the truncated end did not fail"
[ "$(stat -c %s t.vdisk)" = "$(stat -c %s t.qemu)" ] || fail "raw sizes differ"

# ---- 2. qcow2 allocation with write-zeroes
rule() { printf '[inject-error]\nevent = "%s"\nerrno = "5"\nonce = "on"\n' "$1" >r.cfg; }
rule cluster_alloc_space
# a qcow2 backing file: unallocated there counts as unallocated (a raw one
# is allocated everywhere for QEMU's is_allocated_above, so never zeroed)
qemu-img create -q -f qcow2 back.qcow2 4M
qemu-io -f qcow2 -c "write -P 0x5a 192k 64k" back.qcow2 >/dev/null
qemu-img create -q -f qcow2 nob.qcow2 4M
qemu-img create -q -f qcow2 -b back.qcow2 -F qcow2 wb.qcow2 4M
W=("write -P 0x11 68k 4k" "write -P 0x22 196k 4k" "write -P 0x33 256k 64k" "write -P 0x44 400k 1k"
   "read -P 0x11 68k 4k" "read -P 0 64k 4k" "read -P 0 72k 56k")
for img in nob wb; do
    args=(); for c in "${W[@]}"; do args+=(-c "$c"); done
    for who in qemu vdisk; do
        cp $img.qcow2 $who.qcow2
        tool=qemu-io; [ $who = vdisk ] && tool=$VDISK_IO
        rcode=0
        $tool "${args[@]}" --image-opts \
            "driver=qcow2,file.driver=blkdebug,file.config=r.cfg,file.image.filename=$who.qcow2" \
            >$who.raw.out 2>&1 || rcode=$?
        mask <$who.raw.out | grep -E '^(wrote|read|write failed|read failed|Pattern)' >$who.out || true
        echo "exit $rcode" >>$who.out
    done
    diff -u qemu.out vdisk.out || fail "cluster_alloc_space ($img): outputs differ from qemu-io"
    grep -q "write failed" vdisk.out || fail "cluster_alloc_space never fired ($img)"
    qemu-img compare -q vdisk.qcow2 qemu.qcow2 || fail "content differs from qemu-io's ($img)"
done
# the backing file defines 192k..256k: the write at 196k must not be the failing one
qemu-img create -q -f qcow2 -b back.qcow2 -F qcow2 wb2.qcow2 4M
out=$("$VDISK_IO" -c "write -P 0x22 196k 4k" --image-opts \
    "driver=qcow2,file.driver=blkdebug,file.config=r.cfg,file.image.filename=wb2.qcow2" 2>&1) ||
    fail "COW from backing data took the write-zeroes path: $out"
qemu-io -f qcow2 -c "read -P 0x5a 192k 4k" -c "read -P 0x22 196k 4k" -c "read -P 0x5a 200k 56k" \
    wb2.qcow2 | grep -q "failed" && fail "COW over backing data wrong"
# a host cluster freed and reused: the zeroed area must not show its old bytes
qemu-img create -q -f qcow2 reuse.qcow2 4M
"$VDISK_IO" -c "write -P 0xee 0 64k" -c "write -P 0xee 64k 64k" -c "discard 0 64k" \
    -c "write -P 0x11 1M 4k" -c "write -P 0x12 2M 512" reuse.qcow2 >/dev/null || fail "reuse writes"
qemu-io -c "read -P 0 1028k 60k" -c "read -P 0x11 1M 4k" -c "read -P 0 $((2048 * 1024 - 4096)) 4k" \
    -c "read -P 0 $((2048 * 1024 + 512)) 65024" -c "read -P 0x12 2M 512" -c "read -P 0xee 64k 64k" \
    reuse.qcow2 >reuse.out 2>&1
grep -q "failed" reuse.out && fail "reused cluster shows old data: $(grep -m1 failed reuse.out)"
qemu-img check -q reuse.qcow2 || fail "check after reuse"

# ---- 3. libdeflate clusters: repeats at distances beyond 4 KiB
/usr/bin/python3 - "$SEED" <<'EOF'
import random, sys
r = random.Random(int(sys.argv[1]))
blocks = [r.randbytes(r.choice([3000, 6000, 9000, 20000])) for _ in range(24)]
out = bytearray()
while len(out) < (4 << 20):
    out += r.choice(blocks)
open('long.raw', 'wb').write(out[:4 << 20])
EOF
for ct in zlib zstd; do
    "$VDISK" convert -c -f raw -O qcow2 -o compression_type=$ct long.raw v.$ct.qcow2 || fail "convert -c $ct"
    qemu-img convert -c -f raw -O qcow2 -o compression_type=$ct long.raw q.$ct.qcow2
    qemu-img check -q v.$ct.qcow2 || fail "check $ct"
    qemu-img compare -q -f raw -F qcow2 long.raw v.$ct.qcow2 || fail "qemu-img reads vdisk's $ct clusters wrongly"
    qemu-img check v.$ct.qcow2 | grep -q '[1-9][0-9.]*% compressed' || fail "nothing compressed ($ct)"
    vs=$(stat -c %s v.$ct.qcow2); qs=$(stat -c %s q.$ct.qcow2)
    [ "$vs" -le $((qs + qs / 50)) ] || fail "$ct: output more than 2 % larger than qemu-img's ($vs > $qs)"
done
# ---- 4. convert -C
. "$VDISK_SRC/bench/lib.sh"
bench_sparse_raw c.raw 16M "$SEED" 30 small
amap() { # allocation map without host offsets
    qemu-img map -f "$1" --output=json "$2" | /usr/bin/python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    k = (e["zero"], e["data"])
    if out and out[-1][2] == k:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"], k])
for s, l, k in out:
    print(s, l, *k)'
}
"$VDISK" convert -C -f raw -O raw c.raw cv.raw || fail "convert -C"
qemu-img convert -C -f raw -O raw c.raw cq.raw
same_content c.raw cv.raw
diff <(amap raw cq.raw) <(amap raw cv.raw) >map.diff ||
    fail "convert -C: allocation differs from qemu-img -C's (no offload?): $(head -3 map.diff)"
"$VDISK" convert -f raw -O raw c.raw cn.raw
diff -q <(amap raw cn.raw) <(amap raw cv.raw) >/dev/null &&
    fail "convert -C left the same holes as a plain convert: the test cannot tell the offload"
# a raw source with an offset, into an existing raw target (-n)
qemu-img create -q -f raw co.raw 12M
"$VDISK" convert -C -n --image-opts "driver=raw,offset=1M,size=12M,file.filename=c.raw"     -O raw co.raw || fail "convert -C with offset"
cmp -n $((12 << 20)) co.raw <(tail -c +$((1048576 + 1)) c.raw) || fail "convert -C with offset: content"
# an odd-sized source: the last partial sector is copied plainly
head -c $(((5 << 20) + 700)) c.raw > odd.raw
"$VDISK" convert -C -f raw -O raw odd.raw odd.out || fail "convert -C odd size"
qemu-img compare -q -f raw -F raw odd.raw odd.out || fail "convert -C odd size: content"
# fallbacks
"$VDISK" convert -C -f raw -O qcow2 c.raw cf.qcow2 || fail "convert -C to qcow2"
qemu-img compare -q -f raw -F qcow2 c.raw cf.qcow2 || fail "convert -C to qcow2: content"
"$VDISK" convert -C -f qcow2 -O raw cf.qcow2 cg.raw || fail "convert -C from qcow2"
same_content c.raw cg.raw
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
    shm=$(mktemp -d /dev/shm/vdisk-perf.XXXXXX)
    "$VDISK" convert -C -f raw -O raw c.raw "$shm/x.raw" || { rm -rf "$shm"; fail "convert -C to another fs"; }
    cmp -s c.raw "$shm/x.raw" || { rm -rf "$shm"; fail "convert -C to another fs: content"; }
    rm -rf "$shm"
fi

# ---- 5. convert -c: incompressible runs, compressible and zero clusters
/usr/bin/python3 - "$SEED" <<'EOF2'
import random, sys
r = random.Random(int(sys.argv[1]))
out = bytearray()
size = (3 << 20) + 5 * 4096 + 1536        # the last cluster is partial
while len(out) < size:
    kind = r.random()
    n = r.randrange(1, 9) * 65536
    if kind < 0.5:
        out += r.randbytes(n)                 # incompressible run
    elif kind < 0.8:
        out += bytes([r.randrange(1, 255)]) * n   # compresses well
    else:
        out += bytes(n)                       # zero clusters: not written
out = out[:size]
out[size - 20000:] = r.randbytes(20000)      # random up to the partial end
open('mix.raw', 'wb').write(out)
EOF2
cmap() { # per cluster: compressed or not (qemu-img map has no such flag: use check's count)
    qemu-img check "$1" | sed -n 's/.*allocated, \([0-9.]*\)% fragmented, \([0-9.]*\)% compressed.*/\2/p'
}
for ct in zlib zstd; do
    "$VDISK" convert -c -f raw -O qcow2 -o compression_type=$ct mix.raw mv.$ct.qcow2 || fail "convert -c $ct (mixed)"
    qemu-img convert -c -f raw -O qcow2 -o compression_type=$ct mix.raw mq.$ct.qcow2
    qemu-img check -q mv.$ct.qcow2 || fail "check $ct (mixed)"
    qemu-img compare -q -f raw -F qcow2 mix.raw mv.$ct.qcow2 || fail "mixed $ct clusters read wrongly"
    [ "$(cmap mv.$ct.qcow2)" = "$(cmap mq.$ct.qcow2)" ] ||
        fail "$ct: compressed share $(cmap mv.$ct.qcow2) % differs from qemu-img's $(cmap mq.$ct.qcow2) %"
    diff <(amap qcow2 mq.$ct.qcow2) <(amap qcow2 mv.$ct.qcow2) >/dev/null ||
        fail "$ct: allocation differs from qemu-img's"
    vs=$(stat -c %s mv.$ct.qcow2); qs=$(stat -c %s mq.$ct.qcow2)
    [ "$vs" -le $((qs + qs / 50)) ] || fail "$ct mixed: more than 2 % larger than qemu-img's ($vs > $qs)"
done

# ---- 6. default worker count
if command -v strace >/dev/null; then
    threads() { # CMD...: threads the command started
        # LeakSanitizer cannot run under ptrace: no leak check here
        ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0 \
            strace -f -qq -e trace=clone,clone3 -o st.out "$@" >/dev/null 2>&1 || fail "under strace: $*"
        grep -cE '^[0-9]+ +clone3?\(' st.out || true # grep -c exits 1 on 0
    }
    ncpu=$(nproc) # the cores this process may use, as convert counts them
    want=$((ncpu < 2 ? 2 : (ncpu > 8 ? 8 : ncpu)))
    rm -f w.raw
    t=$(threads "$VDISK" convert -f raw -O raw c.raw w.raw)
    [ "$t" -eq 0 ] || fail "local convert started $t threads, expected none"
    same_content c.raw w.raw
    rm -f w.raw
    t=$(threads "$VDISK" convert -t none -f raw -O raw c.raw w.raw)
    [ "$t" -eq "$want" ] || fail "local convert -t none started $t threads, expected $want"
    same_content c.raw w.raw
    rm -f w.qcow2
    t=$(threads "$VDISK" convert -c -f raw -O qcow2 c.raw w.qcow2)
    # -c: the workers, plus the library's compression threads, if any
    [ "$t" -ge "$want" ] || fail "local convert -c started $t threads, expected at least $want"
    qemu-img compare -q -f raw -F qcow2 c.raw w.qcow2 || fail "convert -c: content differs"
    rm -f w.raw
    t=$(threads "$VDISK" convert -m 5 -f raw -O raw c.raw w.raw)
    [ "$t" -eq 5 ] || fail "convert -m 5 started $t threads"
    if command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then
        rm -f w.raw
        t=$(threads taskset -c 0 "$VDISK" convert -T none -f raw -O raw c.raw w.raw)
        [ "$t" -eq 2 ] || fail "convert -T none on one allowed core started $t threads, expected 2"
    fi
    if command -v qemu-nbd >/dev/null; then
        qemu-nbd -k "$PWD/w.sock" -f raw -r -t c.raw &
        nbd_pid=$!
        trap 'kill $nbd_pid 2>/dev/null; wait $nbd_pid 2>/dev/null' EXIT
        wait_for test -S w.sock
        rm -f w.raw
        t=$(threads "$VDISK" convert -f raw -O raw "nbd+unix:///?socket=$PWD/w.sock" w.raw)
        [ "$t" -ge 8 ] || fail "convert from nbd started $t threads, expected 8 workers"
        same_content c.raw w.raw
        kill $nbd_pid; wait $nbd_pid 2>/dev/null || true
        trap - EXIT
    fi
fi

# ---- 7. memory bound of a convert of a big sparse qcow2
if [ -z "${VDISK_SANITIZED:-}" ] && [ -x /usr/bin/time ]; then
    "$VDISK" create -q -f qcow2 tb.qcow2 1T
    /usr/bin/python3 -c "
import random
r = random.Random($SEED)
for i in range(600):
    print('write -q -P %d %d 4k' % (i % 250 + 1, r.randrange(0, (1 << 40) // 65536) * 65536))
" >tb.cmds
    "$VDISK_IO" -f qcow2 tb.qcow2 <tb.cmds >/dev/null || fail "writing tb.qcow2"
    for f in qcow2 raw; do
        rm -f tb.out
        /usr/bin/time -o tb.rss -f %M "$VDISK" convert -f qcow2 -O $f tb.qcow2 tb.out ||
            fail "convert of the 1 TiB image to $f"
        rss=$(tail -1 tb.rss)
        echo "convert 1 TiB qcow2 -> $f: $rss KiB RSS"
        [ "$rss" -le 65536 ] || fail "convert 1 TiB qcow2 -> $f took $rss KiB of RSS (> 64 MiB)"
        qemu-img compare -q -f qcow2 -F $f tb.qcow2 tb.out || fail "convert 1 TiB -> $f: content"
    done
    rm -f tb.out tb.qcow2
fi
echo ok
