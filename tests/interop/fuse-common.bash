# SPDX-License-Identifier: BSD-3-Clause
# Helpers for the `vdisk fuse` tests (sourced after tests/lib.sh).  Every
# export a test starts is recorded; at exit the ones still running get
# SIGTERM (then are waited for) and any mount left behind is detached.
# Skips (77) when this machine cannot mount FUSE file systems.
[ -c /dev/fuse ] || skip "no /dev/fuse"
[ -r /dev/fuse ] && [ -w /dev/fuse ] || skip "/dev/fuse is not usable by $(id -un)"
need fusermount3 mountpoint qemu-img qemu-io
"$VDISK" fuse --help >/dev/null 2>&1 || skip "vdisk was built without libfuse3"

# running PID: the process exists and has not ended (a zombie has ended:
# kill -0 would still succeed on it)
running() {
    local st
    st=$(cut -d ')' -f 2 "/proc/$1/stat" 2>/dev/null | cut -d ' ' -f 2) || st=
    [ -n "$st" ] && [ "$st" != Z ]
}

# wait_exit PID: waits (bounded) for the child PID to end and sets EXIT_RC
# to its exit status, or to 255 when it is still running (a hang fails the
# test instead of waiting forever)
wait_exit() {
    local i
    for i in $(seq 1 2400); do
        if ! running "$1"; then
            EXIT_RC=0
            wait "$1" || EXIT_RC=$?
            return 0
        fi
        sleep 0.05
    done
    EXIT_RC=255
}

FUSE_PIDS=()
FUSE_MOUNTS=()
fuse_cleanup() {
    local p m
    for p in "${FUSE_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${FUSE_PIDS[@]}"; do
        wait_exit "$p"
        if [ "$EXIT_RC" = 255 ]; then
            kill -KILL "$p" 2>/dev/null
            wait "$p" 2>/dev/null || true
        fi
    done
    for m in "${FUSE_MOUNTS[@]}"; do
        if mountpoint -q "$m" 2>/dev/null || ! stat "$m" >/dev/null 2>&1; then
            fusermount3 -u -z "$m" 2>/dev/null || true
        fi
    done
}
trap fuse_cleanup EXIT

# is_mounted MNT: MNT is a mount point now
is_mounted() { mountpoint -q "$1"; }

# wait_mounted MNT PID: until MNT is mounted (fails when PID exits first;
# bounded so that a hang fails with a message)
wait_mounted() {
    local i
    for i in $(seq 1 2400); do
        is_mounted "$1" && return 0
        if ! running "$2"; then
            local rc=0
            wait "$2" || rc=$?
            # the first mount of a test tells whether this machine allows it
            if [ -f fuse.err ] && grep -qi "permission denied\|not permitted\|fusermount3: mount failed" fuse.err; then
                skip "FUSE mounts are not permitted here: $(head -n 1 fuse.err)"
            fi
            fail "vdisk fuse exited ($rc) before mounting $1: $(cat fuse.err 2>/dev/null)"
        fi
        sleep 0.05
    done
    fail "$1 was never mounted"
}

# wait_unmounted MNT
wait_unmounted() {
    local i
    for i in $(seq 1 2400); do
        is_mounted "$1" || return 0
        sleep 0.05
    done
    fail "$1 is still mounted"
}

# start_fuse MNT ARGS...: `vdisk fuse ARGS MNT` in the background (MNT is
# created as an empty file); sets FUSE_PID and returns once it is mounted.
# Its stderr goes to fuse.err.
start_fuse() {
    local mnt=$1; shift
    [ -e "$mnt" ] || : > "$mnt"
    "$VDISK" fuse "$@" "$mnt" 2>fuse.err &
    FUSE_PID=$!
    FUSE_PIDS+=("$FUSE_PID")
    FUSE_MOUNTS+=("$mnt")
    wait_mounted "$mnt" "$FUSE_PID"
}

# stop_fuse MNT: unmount with fusermount3 -u; the export must exit 0.
stop_fuse() {
    fusermount3 -u "$1" || fail "fusermount3 -u $1 failed"
    wait_exit "$FUSE_PID"
    local rc=$EXIT_RC
    [ "$rc" -eq 0 ] || fail "vdisk fuse exited $rc after unmount: $(cat fuse.err)"
    is_mounted "$1" && fail "$1 still mounted after the export ended"
    return 0
}

# qcow2_dirty FILE: prints 1 when the qcow2 dirty bit (incompatible
# feature bit 0) is set, else 0
qcow2_dirty() {
    /usr/bin/python3 -c "
import struct, sys
h = open(sys.argv[1], 'rb').read(80)
v = struct.unpack('>I', h[4:8])[0]
print(struct.unpack('>Q', h[72:80])[0] & 1 if v >= 3 else 0)" "$1"
}

# check_clean FILE: qemu-img check finds nothing, and no dirty bit
check_clean() {
    qemu-img check -q "$1" || fail "qemu-img check $1: $(qemu-img check "$1" 2>&1)"
    case "$1" in
        *.qcow2) [ "$(qcow2_dirty "$1")" = 0 ] || fail "$1 left dirty" ;;
    esac
}
