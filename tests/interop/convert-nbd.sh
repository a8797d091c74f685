#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk convert from and into NBD exports served by qemu-nbd (a protocol
# target with -n, a protocol source), compared with the files behind them.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/bench/lib.sh"
need qemu-img qemu-nbd

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
serve() { # SOCK FMT FILE
    qemu-nbd -k "$PWD/$1" -f "$2" -t "$3" &
    pids+=($!)
    wait_for test -S "$1"
}

bench_sparse_raw in.raw 4M 51 40 small
qemu-img convert -f raw -O qcow2 in.raw src.qcow2
serve src.sock qcow2 src.qcow2
"$VDISK" convert -f raw -O raw "nbd+unix:///?socket=$PWD/src.sock" fromnbd.raw ||
    fail "convert from nbd"
same_content in.raw fromnbd.raw

truncate -s 4M dst.raw
serve dst.sock raw dst.raw
"$VDISK" convert -n -f raw -O raw in.raw "nbd+unix:///?socket=$PWD/dst.sock" || fail "convert to nbd"
"$VDISK" compare -f raw -F raw in.raw "nbd+unix:///?socket=$PWD/dst.sock" >/dev/null ||
    fail "vdisk compare over nbd"
cleanup; pids=()
same_content in.raw dst.raw
echo ok
