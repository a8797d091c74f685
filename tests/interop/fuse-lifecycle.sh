#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# How a vdisk fuse export ends: fusermount3 -u, SIGTERM and SIGINT each
# unmount, flush and close (exit 0, qcow2 check clean, dirty bit clear even
# with lazy refcounts, the written data in the image); --daemonize returns
# only once mounted and --pid-file names the server; kill -9 leaves an image
# that qemu-img opens and reads.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/fuse-common.bash"

M=$((1024 * 1024))
# write_pattern MNT SEED: 64 random 64k writes (no fsync), as the reference
write_pattern() {
    /usr/bin/python3 - "$@" <<'EOF2'
import os, random, sys
rnd = random.Random(int(sys.argv[2]))
for path in (sys.argv[1], "ref.raw"):
    fd = os.open(path, os.O_WRONLY)
    r = random.Random(int(sys.argv[2]))
    for i in range(64):
        off = r.randrange(0, 32 * 1048576 - 65536)
        os.pwrite(fd, r.randbytes(65536), off)
    os.close(fd)
EOF2
}

for how in unmount TERM INT; do
    rm -f l.qcow2
    qemu-img create -q -f qcow2 -o lazy_refcounts=on l.qcow2 32M
    qemu-img convert -f qcow2 -O raw l.qcow2 ref.raw
    start_fuse mnt l.qcow2
    write_pattern mnt 11
    # lazy refcounts: the image is dirty while the export has written
    [ "$(qcow2_dirty l.qcow2)" = 1 ] || fail "no dirty bit while mounted ($how): the test would not show it cleared"
    case $how in
        unmount) stop_fuse mnt ;;
        *)
            kill -"$how" "$FUSE_PID"
            wait_exit "$FUSE_PID"; rc=$EXIT_RC
            [ "$rc" -eq 0 ] || fail "SIG$how: exit $rc: $(cat fuse.err)"
            is_mounted mnt && fail "SIG$how left mnt mounted"
            ;;
    esac
    [ -s fuse.err ] && fail "$how: unexpected messages: $(cat fuse.err)"
    check_clean l.qcow2
    qemu-img compare -f qcow2 -F raw l.qcow2 ref.raw || fail "$how: data not in the image"
done

# --daemonize: mounted when the command returns; the pid file names it
rm -f d.qcow2 pid
qemu-img create -q -f qcow2 d.qcow2 32M
qemu-img convert -f qcow2 -O raw d.qcow2 ref.raw
: > mnt
FUSE_MOUNTS+=(mnt)
"$VDISK" fuse --daemonize --pid-file "$PWD/pid" d.qcow2 mnt 2>fuse.err || fail "--daemonize failed: $(cat fuse.err)"
is_mounted mnt || fail "--daemonize returned before the mount was ready"
pid=$(cat pid)
kill -0 "$pid" || fail "no process $pid from the pid file"
write_pattern mnt 12
kill -TERM "$pid"
for i in $(seq 1 2400); do
    running "$pid" || break
    sleep 0.05
done
running "$pid" && fail "daemon $pid did not end on SIGTERM"
is_mounted mnt && fail "daemon left mnt mounted"
[ -e pid ] && fail "pid file left behind"
check_clean d.qcow2
qemu-img compare -f qcow2 -F raw d.qcow2 ref.raw || fail "daemon: data not in the image"

# the export may sit on the image file itself (opened before the mount):
# the qcow2 then shows as its raw disk until unmounted; the pid file goes
# only once the image is closed
rm -f self.qcow2 pid
qemu-img create -q -f qcow2 self.qcow2 32M
qemu-img convert -f qcow2 -O raw self.qcow2 ref.raw
FUSE_MOUNTS+=(self.qcow2)
"$VDISK" fuse --daemonize --pid-file "$PWD/pid" self.qcow2 self.qcow2 2>fuse.err ||
    fail "export over the image failed: $(cat fuse.err)"
pid=$(cat pid)
[ "$(stat -c %s self.qcow2)" = $((32 * M)) ] || fail "the image file does not show the raw disk"
write_pattern self.qcow2 14
fusermount3 -u self.qcow2
for i in $(seq 1 2400); do
    [ -e pid ] || break
    sleep 0.05
done
[ -e pid ] && fail "pid file still there after unmount"
check_clean self.qcow2
qemu-img compare -f qcow2 -F raw self.qcow2 ref.raw || fail "export over the image: data differs"

# kill -9: the mount is left dead (detached here), the image still opens
rm -f k.qcow2
qemu-img create -q -f qcow2 k.qcow2 32M
start_fuse mnt k.qcow2
write_pattern mnt 13
kill -KILL "$FUSE_PID"
wait "$FUSE_PID" 2>/dev/null || true
fusermount3 -u -z mnt || fail "could not detach the dead mount"
wait_unmounted mnt
qemu-img info k.qcow2 >/dev/null || fail "image does not open after kill -9"
rc=0; qemu-img check k.qcow2 >check.out 2>&1 || rc=$?
# leaked clusters (3) are acceptable after a crash; corruption (2) is not
[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ] || fail "check after kill -9: exit $rc: $(cat check.out)"
qemu-io -f qcow2 -c "read 0 32M" k.qcow2 >/dev/null || fail "image unreadable after kill -9"
"$VDISK" check k.qcow2 >/dev/null 2>&1 || [ $? -eq 3 ] || fail "vdisk check after kill -9"
echo "fuse-lifecycle: ok"
