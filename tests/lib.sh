# SPDX-License-Identifier: BSD-3-Clause
# Shared helpers for shell tests (source it).  The runner sets VDISK,
# VDISK_IO, VDISK_NBD, VDISK_SRC, VDISK_BUILD and runs us in a temp dir.
set -eu
: "${VDISK_SRC:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
: "${VDISK_BUILD:=$VDISK_SRC/build}"
: "${VDISK:=$VDISK_BUILD/tools/vdisk/vdisk}"
: "${VDISK_IO:=$VDISK_BUILD/tools/vdisk-io/vdisk-io}"
: "${VDISK_NBD:=$VDISK_BUILD/tools/vdisk-nbd/vdisk-nbd}"
export VDISK VDISK_IO VDISK_NBD

fail() { echo "FAIL: $*" >&2; exit 1; }
skip() { echo "$*"; exit 77; }
# need CMD...: a peer that scripts/deps.sh test installs; missing is a failure
need() { for c in "$@"; do command -v "$c" >/dev/null || fail "missing peer command $c (run scripts/deps.sh test)"; done; }

# expect_fail "message substring" cmd...: cmd must exit non-zero, print one
# error line containing the substring, and not crash (exit < 128).
expect_fail() {
    local want=$1; shift
    local out rc=0
    out=$("$@" 2>&1) || rc=$?
    [ "$rc" -ne 0 ] || fail "expected failure: $*"
    [ "$rc" -lt 128 ] || fail "crashed (exit $rc): $* -- $out"
    case "$out" in *"$want"*) ;; *) fail "expected '$want' from: $* -- got: $out" ;; esac
}
# expect_exit N cmd...: exact exit code
expect_exit() {
    local want=$1; shift
    local rc=0
    "$@" >/dev/null 2>&1 || rc=$?
    [ "$rc" -eq "$want" ] || fail "expected exit $want, got $rc: $*"
}
# wait_for CMD...: poll until CMD succeeds (a condition, not a time window:
# 120 s is only there so a test that would hang fails with a message)
wait_for() {
    poll_for 120 "$@" || fail "gave up waiting for: $*"
}
# poll_for SECONDS CMD...: the same with another bound, returning 1 at the
# bound instead of failing (for a caller that cleans up or falls back)
poll_for() {
    local i n=$(($1 * 20)); shift
    for i in $(seq 1 "$n"); do
        "$@" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}
# same_content A B: byte-identical files
# qemu_pbkdf CMD...: run a QEMU tool that sizes a LUKS key slot. QEMU 7.2
# times PBKDF2 with getrusage(RUSAGE_THREAD), which on these machines often
# reads no CPU time and gives up with "Unable to get accurate CPU usage":
# the peer's failure, not vdisk's. Retried (the measurement sometimes
# works); prints the last output; returns 75 if QEMU never managed.
qemu_pbkdf() {
    local out rc i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        rc=0; out=$("$@" 2>&1) || rc=$?
        case $rc:$out in
        0:*) [ -z "$out" ] || echo "$out"; return 0 ;;
        *"accurate CPU usage"*) continue ;;
        esac
        echo "$out"; return "$rc"
    done
    echo "$out"; return 75
}
# same_open_error FILE...: vdisk and qemu-img both refuse to open each FILE
# with the same message (after the program name): QEMU's words where its
# iotests match them
same_open_error() {
    local f v q
    for f in "$@"; do
        v=$("$VDISK" info "$f" 2>&1) && fail "$f opens"
        q=$(qemu-img info "$f" 2>&1) && fail "$f opens in QEMU"
        [ "${v#*: }" = "${q#*: }" ] || fail "$f: vdisk says '$v', qemu-img '$q'"
    done
    return 0
}
# same_output STEM CMD...: run CMD (qemu-img or qemu-io ...) with QEMU's tool
# and with vdisk's; the outputs (program names and qemu-io's timing lines
# taken out) must be equal.  SAME_MASK: one more sed expression for both
same_output() {
    local stem=$1 q v; shift
    local mask='s/^qemu-img: //; s/^qemu-io: //; s/^vdisk: //; s/^vdisk-io: //
        s/^\([^,]*\), [0-9]* ops; .*/\1, X ops/'
    mask="$mask
${SAME_MASK:-}"
    q=$("$@" 2>&1 | sed "$mask") || true
    local cmd=("$@")
    case ${cmd[0]} in
    qemu-img) cmd[0]=$VDISK ;;
    qemu-io) cmd[0]=$VDISK_IO ;;
    esac
    v=$("${cmd[@]}" 2>&1 | sed "$mask") || true
    [ "$q" = "$v" ] || fail "$stem: qemu says
$q
vdisk says
$v"
}
# same_du A B: the files occupy the same disk space, within 8 KiB: the
# file system's own extent-tree blocks count in du and depend on how it
# placed the data, which varies with the load
same_du() {
    sync "$1" "$2"
    local a b
    a=$(du -B1 "$1" | cut -f1)
    b=$(du -B1 "$2" | cut -f1)
    [ $((a > b ? a - b : b - a)) -le 8192 ] || fail "disk usage differs: $1 $a, $2 $b"
}
same_content() { cmp -s "$1" "$2" || fail "content differs: $1 $2"; }

# bounded CMD...: run CMD with at most 256 MiB of memory and 20 s: the
# address-space limit is 512 MiB, as the shared libraries alone (librbd,
# libgfapi, libiscsi, libssh, GnuTLS...) map about 180 MiB before main().  Under
# the sanitizers (make check-asan sets VDISK_SANITIZED=1) an address-space
# limit cannot work (ASan reserves terabytes of shadow), so the sanitizer's
# own RSS limit is used instead, with room for the shadow memory.  glibc
# reserves 64 MiB of address space per thread arena: MALLOC_ARENA_MAX keeps
# a multi-threaded convert inside the limit by what it uses, not reserves.
bounded() {
    if [ -n "${VDISK_SANITIZED:-}" ]; then
        ASAN_OPTIONS="${ASAN_OPTIONS:-}:hard_rss_limit_mb=1024:allocator_may_return_null=1" \
            timeout -k 5 60 "$@"
    else
        MALLOC_ARENA_MAX=2 prlimit --as=536870912 -- timeout -k 5 20 "$@"
    fi
}

# hostile_sweep FMT MIN: every *.FMT here but good.FMT goes through info,
# convert, map and check (bounded): a result or a clean error with a
# message, never a crash, hang or change to the file; at least MIN images.
hostile_sweep() {
    local fmt=$1 min=$2 n=0 f cmd out rc sum
    for f in *."$fmt"; do
        [ "$f" = good."$fmt" ] && continue
        n=$((n + 1))
        sum=$(md5sum < "$f")
        for cmd in "info --output=json" "info -f $fmt" "convert -f $fmt -O raw" \
            "map -f $fmt --output=json" "check -f $fmt --output=json"; do
            out="$cmd $f"; case $cmd in convert*) out="$cmd $f out.raw" ;; esac
            rc=0
            bounded "$VDISK" $out >stdout 2>stderr || rc=$?
            [ "$rc" -lt 124 ] || fail "$cmd $f: exit $rc (crash, hang or out of memory): $(cat stderr)"
            if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ] && [ "$rc" -ne 3 ]; then
                [ -s stderr ] || fail "$cmd $f: exit $rc without a message"
            fi
        done
        [ "$(md5sum < "$f")" = "$sum" ] || fail "reading $f changed it"
    done
    [ "$n" -gt "$min" ] || fail "only $n hostile images"
}

# same_verdict_as_qemu FMT FILE...: vdisk info and qemu-img info agree on
# success or failure (exit code) for each file.
same_verdict_as_qemu() {
    local fmt=$1 f rc qrc; shift
    for f in "$@"; do
        rc=0; "$VDISK" info -f "$fmt" "$f" >/dev/null 2>&1 || rc=$?
        qrc=0; qemu-img info -f "$fmt" "$f" >/dev/null 2>&1 || qrc=$?
        [ "$rc" = "$qrc" ] || fail "info $f: exit $rc, qemu-img $qrc"
    done
}
