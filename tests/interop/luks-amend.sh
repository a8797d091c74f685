#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# LUKS1 key slot management with vdisk amend (state, keyslot, old-secret,
# new-secret, iter-time, --force) as qemu-img amend does it: QEMU and
# cryptsetup see the slots vdisk adds and erases; refusals leave the image
# unchanged and match QEMU's verdicts.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io cryptsetup

O="--object secret,id=s0,data=one --object secret,id=s1,data=two --object secret,id=s2,data=three"
img() { echo "driver=luks,key-secret=$1,file.filename=$2"; }
slots() { "$VDISK" info --output=json "$1" | tr -d ' \n' | grep -o '"active":[a-z]*' | cut -d: -f2 | paste -sd ' '; }
"$VDISK" create -q -f luks $O -o key-secret=s0,iter-time=10 a.luks 1M
"$VDISK_IO" $O --image-opts "$(img s0 a.luks)" -c "write -P 7 0 64k" >/dev/null
# add a slot (first free: 1), QEMU opens with it, cryptsetup sees it
"$VDISK" amend $O -o state=active,new-secret=s1,iter-time=10 --image-opts "$(img s0 a.luks)"
[ "$(slots a.luks)" = "true true false false false false false false" ] || fail "slots: $(slots a.luks)"
qemu-io $O --image-opts "$(img s1 a.luks)" -c "read -P 7 0 64k" | grep -q "^read 65536" ||
    fail "QEMU cannot open with the new secret"
printf two > two
cryptsetup luksOpen --test-passphrase --key-file two a.luks || fail "cryptsetup rejects slot 1"
cryptsetup luksDump a.luks | grep -q "Key Slot 1: ENABLED" || fail "luksDump slot 1"
# an explicit slot, with old-secret naming the key
"$VDISK" amend $O -o state=active,new-secret=s2,old-secret=s1,keyslot=5,iter-time=10 \
    --image-opts "$(img s0 a.luks)"
[ "$(slots a.luks)" = "true true false false false true false false" ] || fail "slots: $(slots a.luks)"
qemu-io $O --image-opts "$(img s2 a.luks)" -c "read -P 7 0 64k" | grep -q "^read 65536" ||
    fail "QEMU cannot open slot 5"
# refusals (image unchanged, same verdict as qemu-img amend)
sum=$(md5sum < a.luks)
refuse() {
    local msg=$1; shift
    expect_fail "$msg" "$VDISK" amend $O "$@"
    [ "$(md5sum < a.luks)" = "$sum" ] || fail "refused amend changed the image: $*"
    cp a.luks q.luks
    local qrc=0
    qemu-img amend $O "${@//a.luks/q.luks}" >/dev/null 2>&1 || qrc=$?
    [ "$qrc" -ne 0 ] || fail "qemu-img accepts: $*"
}
refuse "Refusing to overwrite active keyslot 1" -o state=active,new-secret=s2,keyslot=1 \
    --image-opts "$(img s0 a.luks)"
refuse "'new-secret' is required" -o state=active --image-opts "$(img s0 a.luks)"
refuse "Invalid keyslot 8" -o state=active,new-secret=s2,keyslot=8 --image-opts "$(img s0 a.luks)"
refuse "already erased" -o state=inactive,keyslot=3 --image-opts "$(img s0 a.luks)"
refuse "doesn't contain the given old password" -o state=inactive,keyslot=1,old-secret=s0 \
    --image-opts "$(img s0 a.luks)"
refuse "'new-secret' can't be used" -o state=inactive,keyslot=1,new-secret=s1 \
    --image-opts "$(img s0 a.luks)"
refuse "Invalid password" -o state=inactive,keyslot=1 --image-opts "$(img s9 a.luks)" \
    --object secret,id=s9,data=wrong
# erase by password, then by index; the last slot only with --force
"$VDISK" amend $O -o state=inactive,old-secret=s2 --image-opts "$(img s0 a.luks)"
[ "$(slots a.luks)" = "true true false false false false false false" ] || fail "slots: $(slots a.luks)"
"$VDISK" amend $O -o state=inactive,keyslot=0 --image-opts "$(img s1 a.luks)"
[ "$(slots a.luks)" = "false true false false false false false false" ] || fail "slots: $(slots a.luks)"
expect_fail "Invalid password" qemu-io $O --image-opts "$(img s0 a.luks)" -c "read 0 512"
sum=$(md5sum < a.luks)
refuse "only active keyslot 1" -o state=inactive,keyslot=1 --image-opts "$(img s1 a.luks)"
refuse "All the active keyslots match" -o state=inactive,old-secret=s1 --image-opts "$(img s1 a.luks)"
# --force overwrites an active slot in place
"$VDISK" amend $O --force -o state=active,new-secret=s2,keyslot=1,iter-time=10 \
    --image-opts "$(img s1 a.luks)"
qemu-io $O --image-opts "$(img s2 a.luks)" -c "read -P 7 0 64k" | grep -q "^read 65536" ||
    fail "QEMU cannot open the overwritten slot"
"$VDISK" amend $O --force -o state=inactive,keyslot=1 --image-opts "$(img s2 a.luks)"
[ "$(slots a.luks)" = "false false false false false false false false" ] || fail "slots: $(slots a.luks)"
expect_fail "Invalid password" "$VDISK_IO" $O --image-opts "$(img s2 a.luks)" -c "read 0 512"
# no slot left for cryptsetup either
if cryptsetup luksOpen --test-passphrase --key-file two a.luks 2>/dev/null; then
    fail "cryptsetup still opens a.luks"
fi
echo ok
