#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The blkdebug filter against qemu-io's on the same rules: config files and
# inject-error.N / set-state.N options, events of the core request path
# (pwritev, pwritev_zero, pwritev_done, pwritev_rmw_*, flush_to_os,
# flush_to_disk) and of qcow2 (l2_load, l2_update, write_aio...), sector
# matching, once, states, iotype, errno and align: both tools must fail the
# same requests with the same error.  Then bad configurations.
. "$VDISK_SRC/tests/lib.sh"
need qemu-io qemu-img

# the outcome of each request (QEMU also reports failing cache write-backs
# at close, in its own words)
mask() {
    sed -E 's/(qemu-io|vdisk-io): //; s/[0-9.]+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), [0-9]+ ops; [^)]*\)/STATS/' |
        grep -E '^(wrote|read|write failed|read failed|flush failed|STATS|Pattern)' || true
}
# same FMT CFG_OR_OPTS CMD...: run the commands on copies of base.FMT with
# blkdebug in both tools; outputs (and exit codes) must agree
n=0
same() {
    local fmt=$1 spec=$2; shift 2
    local args=() c
    for c in "$@"; do args+=(-c "$c"); done
    cp "base.$fmt" "q.$fmt"
    cp "base.$fmt" "v.$fmt"
    local qrc=0 vrc=0
    if [ "${spec#opts:}" != "$spec" ]; then
        qemu-io "${args[@]}" --image-opts "driver=$fmt,file.driver=blkdebug,file.image.filename=q.$fmt,${spec#opts:}" >q.out 2>&1 || qrc=$?
        "$VDISK_IO" "${args[@]}" --image-opts "driver=$fmt,file.driver=blkdebug,file.image.filename=v.$fmt,${spec#opts:}" >v.out 2>&1 || vrc=$?
    else
        qemu-io -f "$fmt" "${args[@]}" "blkdebug:$spec:q.$fmt" >q.out 2>&1 || qrc=$?
        "$VDISK_IO" -f "$fmt" "${args[@]}" "blkdebug:$spec:v.$fmt" >v.out 2>&1 || vrc=$?
    fi
    mask <q.out >q.m
    mask <v.out >v.m
    diff -u q.m v.m || fail "case $n ($fmt $spec $*): output differs"
    [ "$qrc" = "$vrc" ] || fail "case $n: exit qemu-io=$qrc vdisk-io=$vrc"
    grep -q "failed" v.out || [ "${EXPECT_NO_ERROR:-}" = 1 ] || fail "case $n: no error injected"
    n=$((n + 1))
}
rule() { # rule EVENT ERRNO ONCE [SECTOR] -> cfg file
    { echo "[inject-error]"; echo "event = \"$1\""; echo "errno = \"$2\""; echo "once = \"$3\"";
      [ -n "${4:-}" ] && echo "sector = \"$4\""; true; } >r.cfg
}

qemu-img create -q -f raw base.raw 4M
W=("write -P 0x11 0 64k" "write -P 0x22 64k 4k" "write -z 1M 64k" "flush" "write -P 0x33 2M 512" "read -P 0x11 0 64k")
# flush_to_disk is left out: QEMU announces it on blkdebug after blkdebug's own
# flush in writethrough mode and not at all in writeback mode (docs/reliability.md)
for ev in pwritev pwritev_done pwritev_zero flush_to_os; do
    for e in 5 28; do
        for once in on off; do
            rule $ev $e $once
            same raw r.cfg "${W[@]}"
        done
    done
done
# sector matching: only the request covering sector 128 (offset 64k) fails
rule pwritev 5 off 128
same raw r.cfg "${W[@]}"
# read-modify-write events need an alignment larger than the request
for ev in pwritev_rmw_head pwritev_rmw_after_head pwritev_rmw_tail pwritev_rmw_after_tail; do
    same raw "opts:file.align=4096,file.inject-error.0.event=$ev,file.inject-error.0.errno=5" \
        "write -P 0x44 100 5000" "write -P 0x45 8192 4096" "write -P 0x46 12300 10"
done
# states: the error only fires after two writes moved the state to 3
cat >s.cfg <<'CFG'
[set-state]
state = "1"
event = "pwritev_done"
new_state = "2"

[set-state]
state = "2"
event = "pwritev_done"
new_state = "3"

[inject-error]
state = "3"
event = "pwritev"
errno = "28"
once = "on"
CFG
same raw s.cfg "write -P 1 0 4k" "write -P 2 4k 4k" "flush" "write -P 3 8k 4k" "write -P 4 12k 4k"
# iotype: only reads fail
# event "none": active from the start (iotest 251), for reads of one sector
same raw "opts:file.inject-error.0.event=none,file.inject-error.0.iotype=read,file.inject-error.0.errno=5,file.inject-error.0.sector=1" \
    "read 0 512" "read 512 512" "read 512 512" "write 512 512" "read 1024 512"
same raw "opts:file.inject-error.0.event=pwritev,file.inject-error.0.iotype=read,file.inject-error.0.errno=5" \
    "write -P 1 0 4k" "read -P 1 0 4k" "write -P 2 4k 4k"
# several rules from options, in both orders of definition
same raw "opts:file.inject-error.0.event=pwritev,file.inject-error.0.errno=5,file.inject-error.0.once=on,file.inject-error.1.event=pwritev,file.inject-error.1.errno=28" \
    "write -P 1 0 4k" "write -P 2 4k 4k" "write -P 3 8k 4k"

# qcow2 events: a workload whose metadata writes happen at the same points
# in both drivers
qemu-img create -q -f qcow2 base.qcow2 64M
Q=("write -P 0x11 0 64k" "write -P 0x22 1M 64k" "flush" "write -P 0x33 0 4k" "write -P 0x33 100k 4k" "read -P 0x22 1M 64k")
for ev in l1_update l2_load l2_update l2_alloc_write l2_alloc_cow_read write_aio read_aio cluster_alloc \
    refblock_load refblock_update_part refblock_alloc flush_to_os pwritev pwritev_done; do
    for once in on off; do
        rule $ev 5 $once
        # l2_load and l2_alloc_cow_read do not fire here, in either tool
        EXPECT_NO_ERROR=1 same qcow2 r.cfg "${Q[@]}"
    done
done

# bad configurations: one clear error, nothing crashes
printf '[inject-error]\nevent = "no_such_event"\n' >bad1.cfg
expect_fail "no_such_event" "$VDISK_IO" -f raw -c "read 0 512" blkdebug:bad1.cfg:base.raw
printf '[inject-error]\nerrno = "5"\n' >bad2.cfg
expect_fail "Missing event name" "$VDISK_IO" -f raw -c "read 0 512" blkdebug:bad2.cfg:base.raw
printf '[nonsense]\nevent = "pwritev"\n' >bad3.cfg
expect_fail "no option group 'nonsense'" "$VDISK_IO" -f raw -c "read 0 512" blkdebug:bad3.cfg:base.raw
printf 'event = "pwritev"\n' >bad4.cfg
expect_fail "no group defined" "$VDISK_IO" -f raw -c "read 0 512" blkdebug:bad4.cfg:base.raw
printf '[inject-error]\nevent = pwritev\n' >bad5.cfg
expect_fail "parse error" "$VDISK_IO" -f raw -c "read 0 512" blkdebug:bad5.cfg:base.raw
printf '[inject-error]\nevent = "pwritev"\nbogus = "1"\n' >bad6.cfg
expect_fail "Invalid parameter 'bogus'" "$VDISK_IO" -f raw -c "read 0 512" blkdebug:bad6.cfg:base.raw
expect_fail "Could not read blkdebug config file" "$VDISK_IO" -f raw -c "read 0 512" blkdebug:missing.cfg:base.raw
expect_fail "requires both config file and image path" "$VDISK_IO" -f raw -c "read 0 512" blkdebug:base.raw
expect_fail "align" "$VDISK_IO" --image-opts -c "read 0 512" driver=raw,file.driver=blkdebug,file.image.filename=base.raw,file.align=3
head -c 3000 /dev/urandom >rnd.cfg
out=$("$VDISK_IO" -f raw -c "read 0 512" blkdebug:rnd.cfg:base.raw 2>&1) && true
[ $? -lt 128 ] || fail "crash on a random config: $out"
echo "blkdebug: $n cases agree with qemu-io"
