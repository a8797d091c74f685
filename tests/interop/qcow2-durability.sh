#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# qcow2 write ordering for power loss: an L2 entry may only be written once
# the data it points to is on disk.  strace records the pwrite/fdatasync
# sequence; after the data write at host offset X, the next write of any
# metadata must come after a sync of the file holding X.  Cases: reuse of an
# allocated zero cluster (no refcount change, so no refcount dependency),
# lazy refcounts (no dependency at all), an external data file (data and L2
# in two files).
. "$VDISK_SRC/tests/lib.sh"
need qemu-img strace

# ordered TRACE DATAPATH X: the check described above
ordered() {
    awk -v path="$2" -v x="$3" '
        function fdpath(s) { sub(/^[^<]*</, "", s); sub(/>.*/, "", s); return s }
        / pwrite/ {
            n = split($0, f, ", ")
            off = f[n]; sub(/\).*/, "", off)
            p = fdpath($0)
            if (!seen && p ~ path "$" && off == x) { seen = 1; synced = 0; next }
            if (seen && !synced) { print "unsynced write after the data: " $0; bad = 1; exit }
            next
        }
        /fdatasync|fsync/ { if (seen && fdpath($0) ~ path "$") { synced = 1 } }
        END { if (!seen) { print "no data write at " x " to " path; bad = 1 } exit bad }
    ' "$1"
}

traced() { # traced TRACE CMD...
    local t=$1; shift
    # LeakSanitizer cannot run under ptrace (make check-asan)
    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" \
        strace -f -y -qq -e trace=pwrite64,pwritev,pwritev2,fsync,fdatasync -o "$t" "$@" >/dev/null \
        || fail "$* failed"
}

host_of() { # host offset of guest cluster 0 from qemu-img map
    qemu-img map --output=json "$1" | sed -n 's/.*"start": 0,.*"offset": \([0-9]*\)}.*/\1/p'
}

# 1. a zero cluster that keeps its allocation is written again
"$VDISK" create -q -f qcow2 z.qcow2 16M
"$VDISK_IO" -c 'write -P 1 0 64k' -c 'write -z 0 64k' z.qcow2 >/dev/null
x=$(host_of z.qcow2)
[ -n "$x" ] || fail "no host offset for the zero cluster"
traced z.tr "$VDISK_IO" -c 'write -P 0x5a 0 64k' -c flush z.qcow2
ordered z.tr z.qcow2 "$x" || fail "zero-cluster reuse: L2 written before its data was synced"
qemu-img check z.qcow2 >/dev/null || fail "check z.qcow2"

# 2. lazy refcounts: a new cluster, no refcount dependency to order the L2 write
"$VDISK" create -q -f qcow2 -o lazy_refcounts=on l.qcow2 16M
traced l.tr "$VDISK_IO" -c 'write -P 0x5b 0 64k' -c flush l.qcow2
x=$(host_of l.qcow2)
ordered l.tr l.qcow2 "$x" || fail "lazy refcounts: L2 written before its data was synced"

# 3. external data file: the data file is synced before the L2 entry is written
"$VDISK" create -q -f qcow2 -o data_file=d.raw e.qcow2 16M
traced e.tr "$VDISK_IO" -c 'write -P 0x5c 0 64k' -c flush e.qcow2
ordered e.tr d.raw 0 || fail "data file: L2 written before the data file was synced"
qemu-img check e.qcow2 >/dev/null || fail "check e.qcow2"
qemu-io -r -c 'read -P 0x5c 0 64k' e.qcow2 >/dev/null || fail "data file content"
echo ok
