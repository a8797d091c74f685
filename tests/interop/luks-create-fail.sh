#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Secrets used as passphrases must be UTF-8 (QEMU's "Data from secret ID is
# not valid UTF-8"), and what a create that fails once its file exists
# leaves behind, as qemu-img: luks and qcow2 delete the file (and qcow2's
# data file), even one that existed before; qcow leaves it empty; option
# errors found before the file is touched leave an existing file alone.
# (QEMU's iotest 282, and more.)
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

printf '\x3a\x3c\x3b\xff' > non_utf8
printf 'a\000b' > with_nul
printf 'p\xc3\xa4ss' > utf8
BAD="--object secret,id=sec0,file=non_utf8"

# --- the message, for every passphrase use --------------------------------
expect_fail "vol.img: Data from secret sec0 is not valid UTF-8" \
    "$VDISK" create -q -f luks $BAD -o key-secret=sec0 vol.img 4M
expect_fail "Data from secret sec0 is not valid UTF-8" "$VDISK" create -q -f luks \
    --object secret,id=sec0,file=with_nul -o key-secret=sec0 vol.img 4M
expect_fail "Data from secret sec0 is not valid UTF-8" "$VDISK" create -q -f qcow2 $BAD \
    -o encrypt.format=luks,encrypt.key-secret=sec0 vol.img 4M
expect_fail "Data from secret sec0 is not valid UTF-8" "$VDISK" create -q -f qcow $BAD \
    -o encrypt.format=aes,encrypt.key-secret=sec0 vol.img 4M
# a multi-byte UTF-8 passphrase is fine, and the same key as QEMU's
OK="--object secret,id=sec0,file=utf8"
"$VDISK" create -q -f luks $OK -o key-secret=sec0,iter-time=10 good.luks 1M ||
    fail "create with a UTF-8 passphrase"
qemu-io $OK --image-opts "driver=luks,key-secret=sec0,file.filename=good.luks" \
    -c "read 0 512" >/dev/null || fail "QEMU cannot open good.luks with the same passphrase"
# opening and amending check the secrets too
expect_fail "Data from secret sec0 is not valid UTF-8" "$VDISK_IO" $BAD \
    --image-opts "driver=luks,key-secret=sec0,file.filename=good.luks" -c "read 0 512"
expect_fail "Data from secret sec1 is not valid UTF-8" "$VDISK" amend $OK \
    --object secret,id=sec1,file=non_utf8 -o state=active,new-secret=sec1 \
    --image-opts "driver=luks,key-secret=sec0,file.filename=good.luks"

# --- the file a failed create leaves, next to qemu-img's ------------------
# state FILE: "none", "empty", or its size and checksum
state() {
    if [ ! -e "$1" ]; then
        echo none
    elif [ ! -s "$1" ]; then
        echo empty
    else
        echo "$(stat -c %s "$1") $(md5sum < "$1")"
    fi
}
n=0
while IFS='|' read -r fmt opts; do
    for pre in new existing; do
        for tool in qemu-img "$VDISK"; do
            rm -f img data
            if [ $pre = existing ]; then
                echo before > img
            fi
            if "$tool" create -q -f "$fmt" $BAD ${opts:+-o "$opts"} img 4M >out 2>&1; then
                fail "$tool create -f $fmt -o '$opts' succeeded: $(cat out)"
            fi
            echo "$(state img) / $(state data)" > "result.$n"
            n=$((n + 1))
        done
        q=$(cat "result.$((n - 2))") v=$(cat "result.$((n - 1))")
        [ "$q" = "$v" ] || fail "$fmt -o '$opts' ($pre file): qemu-img leaves '$q', vdisk '$v'"
        echo "$fmt -o '$opts' ($pre file): $v"
    done
done <<'EOF'
luks|key-secret=sec0
luks|key-secret=nosuch
luks|
luks|key-secret=sec0,cipher-alg=cast5-128,cipher-mode=xts
luks|key-secret=sec0,cipher-alg=nosuch
qcow2|encrypt.format=luks,encrypt.key-secret=sec0
qcow2|encrypt.format=luks
qcow2|encrypt.format=luks,encrypt.key-secret=sec0,data_file=data
qcow|encrypt.format=aes,encrypt.key-secret=sec0
qcow|encrypt.format=aes
EOF
