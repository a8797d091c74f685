#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-io failure paths: each fails like qemu-io does (same exit status,
# a message with the same meaning) and leaves the image untouched.
. "$VDISK_SRC/tests/lib.sh"
need qemu-io

# same_exit ARGS...: both tools exit with the same status
same_exit() {
    local qrc=0 vrc=0
    qemu-io "$@" >/dev/null 2>&1 || qrc=$?
    "$VDISK_IO" "$@" >/dev/null 2>&1 || vrc=$?
    [ "$vrc" -lt 128 ] || fail "vdisk-io crashed ($vrc): $*"
    [ "$qrc" = "$vrc" ] || fail "exit status qemu-io=$qrc vdisk-io=$vrc: $*"
}

truncate -s 1M img.raw
python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 4096)' >img.raw
cp img.raw orig.raw

# a missing image: exit 1 before any command runs
expect_fail "No such file" "$VDISK_IO" -f raw missing.raw -c 'read 0 1'
out=$("$VDISK_IO" -f raw missing.raw -c 'read 0 1' 2>/dev/null || true)
[ -z "$out" ] || fail "commands ran after a failed open: $out"
same_exit -f raw missing.raw -c 'read 0 1'

# read-only: every writing command refuses, the image stays as it was
for cmd in 'write 0 1k' 'write -z 0 1k' 'writev 0 512' 'aio_write 0 512' 'discard 0 1k' \
    'truncate 0' 'truncate 2M'; do
    expect_fail "read-only" "$VDISK_IO" -f raw -r img.raw -c "$cmd"
    same_exit -f raw -r img.raw -c "$cmd"
done
same_content img.raw orig.raw
"$VDISK_IO" -f raw -r img.raw -c 'read -P 0 0 1' -c 'read -P 1 1 1' >/dev/null ||
    fail "reads must work read-only"
# a later command still runs after a refused one
out=$("$VDISK_IO" -f raw -r img.raw -c 'write 0 1' -c 'length' 2>/dev/null || true)
[ "$out" = "1 MiB" ] || fail "expected the length after a refused write, got: $out"

# requests out of range fail with EIO, as qemu-io's block backend does
for cmd in 'read 1M 1' 'read 1023k 2k' 'write 1M 512' 'write -z 1020k 8k' 'discard 2M 512' \
    'readv 1M 512' 'writev 1023k 512 1k'; do
    out=$("$VDISK_IO" -f raw img.raw -c "$cmd" 2>&1 || true)
    case "$out" in *"failed: Input/output error"*) ;; *) fail "$cmd: $out" ;; esac
    same_exit -f raw img.raw -c "$cmd"
done
same_content img.raw orig.raw

# force-share needs read-only
expect_fail "force-share" "$VDISK_IO" -f raw -U img.raw -c 'length'
same_exit -f raw -U img.raw -c 'length'
"$VDISK_IO" -f raw -U -r img.raw -c 'length' >/dev/null

# bad command lines
expect_fail "Invalid cache option" "$VDISK_IO" -f raw -t bogus img.raw -c 'length'
expect_fail "Invalid discard option" "$VDISK_IO" -f raw -d bogus img.raw -c 'length'
expect_fail "Invalid aio option" "$VDISK_IO" -f raw -i bogus img.raw -c 'length'
expect_fail "mutually exclusive" "$VDISK_IO" --image-opts -f raw driver=raw,file.filename=img.raw
expect_fail "Usage" "$VDISK_IO" -f raw img.raw img.raw
expect_fail "Usage" "$VDISK_IO" --bogus img.raw
expect_fail "invalid option" "$VDISK_IO" -Z img.raw
for args in "-f raw -t bogus img.raw" "-f raw -d bogus img.raw" "-f raw -i bogus img.raw" \
    "-f raw img.raw img.raw" "--bogus img.raw" "-f bogus img.raw"; do
    # shellcheck disable=SC2086
    same_exit $args -c length
done
expect_fail "Unknown" "$VDISK_IO" -f bogus img.raw -c 'length'

# command errors: messages on stderr, exit status 1, later commands still run
expect_fail 'command "bogus" not found' "$VDISK_IO" -f raw img.raw -c 'bogus'
expect_fail "no file open, try 'help open'" "$VDISK_IO" -c 'read 0 1'
expect_fail "bad argument count 0 to read, expected at least 2 arguments" "$VDISK_IO" -f raw img.raw -c read
expect_fail "bad argument count 1 to length, expected 0 arguments" \
    "$VDISK_IO" -f raw img.raw -c 'length 1'
expect_fail "expected between 1 and 2 arguments" "$VDISK_IO" -f raw img.raw -c 'alloc 1 2 3'
expect_fail "file open already, try 'help close'" \
    "$VDISK_IO" -f raw img.raw -c 'open -o driver=raw img.raw'
expect_fail "Could not open" "$VDISK_IO" -c 'open -o driver=raw missing.raw'
expect_fail "Invalid preallocation mode 'bogus'" "$VDISK_IO" -f raw img.raw -c 'truncate -m bogus 2M'
for c in 'bogus' 'read' 'length 1' 'read 0 2M' 'read -P 1 0 1' 'help bogus' 'sleep x' \
    'open -o driver=raw missing.raw' 'truncate -m bogus 2M'; do
    same_exit -f raw img.raw -c "$c"
    same_exit -f raw img.raw -c "$c" -c 'read 0 1'
done
same_exit -c 'read 0 1'
same_exit -c 'length' -c 'open -o driver=raw img.raw' -c 'length'
same_content img.raw orig.raw

# a pattern mismatch fails the command, and later commands still run
out=$("$VDISK_IO" -f raw img.raw -c 'read -P 7 0 512' -c 'read -q 0 1' -c 'length' 2>&1) &&
    fail "a pattern mismatch must fail"
case "$out" in
*"Pattern verification failed at offset 0, 512 bytes"*"1 MiB"*) ;;
*) fail "unexpected output: $out" ;;
esac

# aio failures do not change the exit status (qemu-io counts submission)
"$VDISK_IO" -f raw img.raw -c 'aio_read 2M 512' -c 'aio_flush' >out.txt
grep -q "readv failed: Input/output error" out.txt || fail "aio_read error not reported"
same_exit -f raw img.raw -c 'aio_read 2M 512' -c 'aio_flush'
echo "vdisk-io failure paths behave like qemu-io"
