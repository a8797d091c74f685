#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Driver modules (docs/design.md, "Driver modules"): the tools and
# libvdisk do not link libssh, libiscsi, libgfapi or librbd; each such
# protocol is a vdisk-NAME.so loaded on first use.  --help lists the
# modules that are there; with the module directory empty, a filename or a
# driver option naming the protocol fails with one line naming the driver
# and the module file (exit 1), while local formats still work.
. "$VDISK_SRC/tests/lib.sh"

moddir=$VDISK_BUILD/src/protocols
heavy='libssh\|libiscsi\|libgfapi\|librbd\|librados\|libceph'
for t in "$VDISK" "$VDISK_IO" "$VDISK_NBD" "$VDISK_BUILD/libvdisk.so"; do
    [ -e "$t" ] || fail "no $t"
    if ldd "$t" | grep -q "$heavy"; then
        fail "$t links a protocol library: $(ldd "$t" | grep "$heavy" | tr -d '\t' | tr '\n' ' ')"
    fi
done

# one URL per protocol, on a port where nothing listens
declare -A url=([ssh]=ssh://127.0.0.1:1/x.img [iscsi]=iscsi://127.0.0.1:1/iqn.2000-01.x:y/0
    [gluster]=gluster://127.0.0.1:1/vol/x.img [rbd]=rbd:pool/x.img)
built=()
for m in ssh iscsi gluster rbd; do
    [ -e "$moddir/vdisk-$m.so" ] && built+=("$m")
done
[ ${#built[@]} -gt 0 ] || skip "no protocol module built (no libssh, libiscsi, libgfapi, librbd)"

line=$("$VDISK" --help | grep '^Supported formats:') || fail "no Supported formats line"
for m in "${built[@]}"; do
    case "$line " in *" $m "*) ;; *) fail "--help lacks the built module $m: $line" ;; esac
    # a module exports its entry point only
    syms=$(nm -D --defined-only "$moddir/vdisk-$m.so" | awk '{print $3}')
    [ "$syms" = vd_module_entry ] || fail "vdisk-$m.so exports: $syms"
done

# the module loads from the build tree: the error is the driver's own
# (it could not connect), not a missing protocol
if [ -e "$moddir/vdisk-ssh.so" ]; then
    out=$("$VDISK" info "${url[ssh]}" 2>&1) && fail "info over ssh to a closed port worked"
    case "$out" in *"Unknown protocol"* | *module*) fail "ssh module not loaded: $out" ;; esac
fi

# no module: --help leaves them out, each use names the module file
mkdir empty
export VDISK_MODULE_DIR=$PWD/empty
line=$("$VDISK" --help | grep '^Supported formats:')
for m in "${built[@]}"; do
    case "$line " in *" $m "*) fail "--help lists $m without its module: $line" ;; esac
    want="Unknown protocol '$m': module vdisk-$m.so not found"
    expect_fail "$want" "$VDISK" info "${url[$m]}"
    expect_exit 1 "$VDISK" info "${url[$m]}"
    [ "$("$VDISK" info "${url[$m]}" 2>&1 | wc -l)" = 1 ] || fail "$m: the error is not one line"
    expect_fail "$want" "$VDISK" info "json:{\"driver\": \"raw\", \"file\": {\"driver\": \"$m\"}}"
    expect_fail "$want" "$VDISK" info --image-opts "driver=raw,file.driver=$m"
    expect_fail "$want" "$VDISK" create -f raw "${url[$m]}" 1M
    expect_fail "$want" "$VDISK" create -f qcow2 "${url[$m]}" 1M
    expect_fail "$want" "$VDISK_IO" -c 'read 0 512' "${url[$m]}"
done
# raw and qcow2 do not need any module
"$VDISK" create -q -f qcow2 a.qcow2 1M || fail "qcow2 create without modules"
"$VDISK" info a.qcow2 | grep -q 'file format: qcow2' || fail "qcow2 info without modules"
"$VDISK" convert -O raw a.qcow2 a.raw || fail "convert without modules"
"$VDISK" info -f raw a.raw | grep -q 'virtual size: 1 MiB' || fail "raw info without modules"
"$VDISK_IO" -c 'write -P 7 0 4k' -c 'read -P 7 0 4k' a.qcow2 >/dev/null || fail "vdisk-io without modules"

# a file that is not that driver's module is refused by name
if [ ${#built[@]} -ge 2 ]; then
    a=${built[0]} b=${built[1]}
    cp "$moddir/vdisk-$b.so" "empty/vdisk-$a.so"
    expect_fail "is not a $a driver" "$VDISK" info "${url[$a]}"
    rm "empty/vdisk-$a.so"
fi
# an embedder: a program outside the build tree linked with the static
# library (no -rdynamic) and one with the shared library load a module
# through VDISK_MODULE_DIR; the module needs nothing from the program
if command -v cc >/dev/null && [ -e "$moddir/vdisk-ssh.so" ]; then
    cat > embed.c <<'C'
#include <stdio.h>
#include <string.h>
#include <vdisk.h>
int main(int argc, char **argv)
{
    vd_image *img = vd_open(argv[1], "raw", NULL, 0);
    if (img) {
        return 2;
    }
    printf("%s\n", vd_get_error());
    return strstr(vd_get_error(), "Unknown protocol") ? 1 : 0;
}
C
    libs=$(pkg-config --libs zlib libzstd libdeflate json-c liburing gnutls nettle libargon2)
    # a sanitized build tree (make check-asan) links its runtime too
    [ -z "${VDISK_SANITIZED:-}" ] || libs="-fsanitize=address,undefined $libs"
    # shellcheck disable=SC2086
    cc -o embed-static embed.c -I"$VDISK_SRC/include" "$VDISK_BUILD/libvdisk.a" $libs -lbz2 -lm -lpthread ||
        fail "cannot link a program with libvdisk.a"
    # shellcheck disable=SC2086
    cc -o embed-shared embed.c ${VDISK_SANITIZED:+-fsanitize=address,undefined} \
        -I"$VDISK_SRC/include" -L"$VDISK_BUILD" -lvdisk \
        -Wl,-rpath,"$VDISK_BUILD" || fail "cannot link a program with libvdisk.so"
    for p in ./embed-static ./embed-shared; do
        out=$(VDISK_MODULE_DIR=$moddir $p "${url[ssh]}") || fail "$p: module not loaded: $out"
        case "$out" in *"Connection refused"*) ;; *) fail "$p: not the ssh driver's error: $out" ;; esac
        out=$($p "${url[ssh]}") && fail "$p found a module in $VDISK_MODULE_DIR: $out"
        case "$out" in *"module vdisk-ssh.so not found"*) ;; *) fail "$p: $out" ;; esac
    done
fi

# an unreadable directory list: the message says where it looked
VDISK_MODULE_DIR=/nonexistent:$PWD/empty expect_fail "looked in /nonexistent, $PWD/empty" \
    "$VDISK" info "${url[${built[0]}]}"
echo ok
