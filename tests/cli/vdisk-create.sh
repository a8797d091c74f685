#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk create: success paths agree with qemu-img create (message, size,
# sparse file); failures print one clear line, exit 1 and create nothing.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

# Same "Formatting" line and the same file as qemu-img's.
for size in 0 512 1M 1.5G 64k 1073741824 512b 0x10 1000; do
    out=$("$VDISK" create -f raw v.img "$size") || fail "create $size"
    ref=$(qemu-img create -f raw q.img "$size")
    [ "${out/v.img/q.img}" = "$ref" ] || fail "create $size: '$out' vs qemu-img '$ref'"
    [ "$(stat -c %s v.img)" = "$(stat -c %s q.img)" ] || fail "size differs for $size"
    [ "$(stat -c %b v.img)" -le 8 ] || fail "raw create $size is not sparse"
    rm -f v.img q.img
done

# Format defaults to raw; -q prints nothing; size from -o
out=$("$VDISK" create -q d.img 4k) || fail "create -q"
[ -z "$out" ] || fail "create -q printed: $out"
[ "$(stat -c %s d.img)" = 4096 ] || fail "default format is not raw"
"$VDISK" create -f raw -o size=8k o.img >/dev/null || fail "create -o size"
[ "$(stat -c %s o.img)" = 8192 ] || fail "-o size ignored"
# options may come after the file name (getopt permutes, as qemu-img)
"$VDISK" create o2.img 8k -f raw -q || fail "options after the file name"
[ "$(stat -c %s o2.img)" = 8192 ] || fail "permuted options"

# -o help lists the create options and exits 0, creating nothing
out=$("$VDISK" create -f raw -o help) || fail "-o help"
case "$out" in *"size=<size>"*) ;; *) fail "-o help lacks size: $out" ;; esac
[ ! -e help ] || fail "-o help created a file"
out=$("$VDISK" create -f raw -o '?' h.img) || fail "-o ?"
case "$out" in *"Supported options:"*) ;; *) fail "-o ? with file name: $out" ;; esac
[ ! -e h.img ] || fail "-o ? created a file"

# failures: message, exit 1, nothing created
expect_fail "Unknown file format 'foo'" "$VDISK" create -f foo f1.img 1M
expect_fail "Invalid parameter 'bogus'" "$VDISK" create -f raw -o bogus=1 f2.img 1M
expect_fail "needs a size" "$VDISK" create -f raw f3.img
expect_fail "only once" "$VDISK" create -f raw -o size=4k f4.img 8k
expect_fail "Backing file not supported" "$VDISK" create -f raw -b d.img -F raw f5.img 1M
expect_fail "Expecting image file name" "$VDISK" create -f raw
expect_fail "Unexpected argument: 2M" "$VDISK" create -f raw f6.img 1M 2M
expect_fail "Invalid option list" "$VDISK" create -f raw -o , f7.img 1M
expect_fail "Invalid option list" "$VDISK" create -f raw -o 'size=1M,' f8.img
expect_fail "unrecognized option '-x'" "$VDISK" create -x f9.img 1M
expect_fail "missing argument for option '-f'" "$VDISK" create f10.img 1M -f
expect_fail "Parameter 'size'" "$VDISK" create -f raw -o size=abc f11.img
for f in f1 f2 f3 f4 f5 f6 f7 f8 f9 f10 f11; do
    [ ! -e $f.img ] || fail "$f.img was created by a failing create"
done
for rc in 1; do
    expect_exit $rc "$VDISK" create -f foo f1.img 1M
done
echo ok
