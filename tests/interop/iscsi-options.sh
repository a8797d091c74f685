#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The settings of QEMU's [iscsi] / [iscsi "IQN"] configuration sections,
# given as driver options (QEMU 7.2's qemu-img, qemu-io and qemu-nbd have
# no --readconfig: the options are how they take them), on a private tgtd,
# each checked with qemu-img / qemu-io on the same options:
# - initiator-name: a target bound to one initiator IQN refuses the
#   default name and takes the right one;
# - header-digest: every value logs in and moves data;
# - user / password-secret with timeout, the whole [iscsi] set at once;
# - per-target settings: two targets with different accounts in one
#   command (what [iscsi "IQN"] sections are for);
# - bidirectional CHAP (vdisk's target-user / target-password-secret): the
#   target proves its secret; a wrong one is refused.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/interop/iscsi-common.bash"
need qemu-img qemu-io
"$VDISK" --help | grep -qw iscsi || skip "vdisk was built without libiscsi"
start_tgtd

HP=127.0.0.1:$TGTD_PORT
INI=iqn.2026-12.test:allowed-initiator
truncate -s 8M a.img b.img
qemu-io -f raw -c "write -q -P 0x61 0 1M" a.img >/dev/null
qemu-io -f raw -c "write -q -P 0x62 0 1M" b.img >/dev/null

# --- initiator-name: target 1 admits one initiator only -------------------------------
tgtctl --op new --mode target --tid 1 -T iqn.2026-12.test:a || fail "tgtadm: target a"
tgtctl --op new --mode logicalunit --tid 1 --lun 1 -b a.img || fail "tgtadm: LUN a"
tgtctl --op bind --mode target --tid 1 --initiator-name "$INI" || fail "tgtadm: bind a"
A="driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=$HP,file.target=iqn.2026-12.test:a,file.lun=1"
rc=0; bounded "$VDISK" info --image-opts "$A" >v.txt 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "default initiator name on a bound target: exit $rc: $(cat v.txt)"
qemu-img info --image-opts "$A" >q.txt 2>&1 && fail "qemu-img opened a target bound to another initiator"
grep -q "iSCSI: Failed to connect to LUN : " v.txt || fail "message: $(cat v.txt)"
# the reason libiscsi gives is the same for both
[ "$(sed 's/.*Failed to connect to LUN : //' v.txt)" = "$(sed 's/.*Failed to connect to LUN : //' q.txt)" ] ||
    fail "vdisk '$(cat v.txt)' qemu-img '$(cat q.txt)'"
"$VDISK_IO" --image-opts -c "read -P 0x61 0 1M" "$A,file.initiator-name=$INI" >io.txt 2>&1 ||
    fail "initiator-name: $(cat io.txt)"
grep -q "verification failed" io.txt && fail "initiator-name: data"
qemu-io --image-opts -c "read -q -P 0x61 0 1M" "$A,file.initiator-name=$INI" | grep -q "verification failed" &&
    fail "qemu-io with initiator-name: data"

# --- header-digest: each value, vdisk writes and QEMU reads back ----------------------
n=0
for hd in none crc32c none-crc32c crc32c-none; do
    n=$((n + 1))
    o="$A,file.initiator-name=$INI,file.header-digest=$hd"
    "$VDISK_IO" --image-opts -c "write -P $n $((n << 16)) 64k" "$o" >io.txt 2>&1 ||
        fail "header-digest=$hd: $(cat io.txt)"
    qemu-io --image-opts -c "read -q -P $n $((n << 16)) 64k" "$o" >q.txt 2>&1 || fail "qemu-io header-digest=$hd"
    grep -q "verification failed" q.txt && fail "header-digest=$hd: data"
done
# the names are lower case, as QEMU 7.2 spells them (it refuses CRC32C)
for hd in crc64 CRC32C; do
    expect_fail "Invalid header-digest setting : $hd" "$VDISK" info --image-opts "$A,file.header-digest=$hd"
    qemu-img info --image-opts "$A,file.header-digest=$hd" 2>&1 | grep -q "Invalid header-digest setting : $hd" ||
        fail "qemu-img takes header-digest=$hd"
done

# --- a CHAP account and per-target settings -------------------------------------------
# target 2: CHAP user u2; its LUN opened together with target 1's in one
# command (compare), each node with its own settings
PW2=Sekr1tPw2Abc
tgtctl --op new --mode target --tid 2 -T iqn.2026-12.test:b || fail "tgtadm: target b"
tgtctl --op new --mode logicalunit --tid 2 --lun 1 -b b.img || fail "tgtadm: LUN b"
tgtctl --op bind --mode target --tid 2 -I ALL || fail "tgtadm: bind b"
tgtctl --op new --mode account --user u2 --password "$PW2" || fail "tgtadm: account u2"
tgtctl --op bind --mode account --tid 2 --user u2 || fail "tgtadm: bind u2"
printf '%s' "$PW2" >pw2.txt
B="driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=$HP,file.target=iqn.2026-12.test:b,file.lun=1,file.user=u2,file.password-secret=p2,file.timeout=30,file.header-digest=none"
"$VDISK" convert --object secret,id=p2,file=pw2.txt --image-opts "$B" b.raw 2>conv.err ||
    fail "[iscsi] set as options: $(cat conv.err)"
qemu-img compare --object secret,id=p2,file=pw2.txt --image-opts "driver=raw,file.filename=b.raw" "$B" >/dev/null ||
    fail "qemu-img compare with the same options"
# both targets at once: the contents differ, each was read with its settings
rc=0
"$VDISK" compare --object secret,id=p2,file=pw2.txt --image-opts \
    "$A,file.initiator-name=$INI" "$B" >cmp.txt 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "compare across two targets: exit $rc: $(cat cmp.txt)"
grep -q "Content mismatch at offset 0" cmp.txt || fail "compare across two targets: $(cat cmp.txt)"
! grep -q "$PW2" conv.err cmp.txt || fail "a message shows the password"

# --- bidirectional CHAP: the target answers with its own secret -----------------------
TPW=TargetSekr1t9
tgtctl --op new --mode account --user tgt2 --password "$TPW" || fail "tgtadm: account tgt2"
tgtctl --op bind --mode account --tid 2 --user tgt2 --outgoing || fail "tgtadm: bind outgoing"
printf '%s' "$TPW" >tpw.txt
printf '%s' "Wr0ngTarget77" >tbad.txt
M="$B,file.target-user=tgt2,file.target-password-secret=tp"
"$VDISK_IO" --object secret,id=p2,file=pw2.txt --object secret,id=tp,file=tpw.txt --image-opts \
    -c "read -P 0x62 0 1M" "$M" >io.txt 2>&1 || fail "bidirectional CHAP: $(cat io.txt)"
grep -q "verification failed" io.txt && fail "bidirectional CHAP: data"
rc=0
bounded "$VDISK" info --object secret,id=p2,file=pw2.txt --object secret,id=tp,file=tbad.txt \
    --image-opts "$M" >bad.txt 2>&1 || rc=$?
[ "$rc" = 1 ] || fail "a target with the wrong secret was accepted: exit $rc: $(cat bad.txt)"
grep -q "iSCSI: Failed to connect to LUN" bad.txt || fail "wrong target secret: $(cat bad.txt)"
! grep -q -e "$TPW" -e Wr0ngTarget77 -e "$PW2" io.txt bad.txt || fail "a message shows a password"
expect_fail "target-user needs a CHAP user" "$VDISK" info --object secret,id=tp,file=tpw.txt \
    --image-opts "$A,file.target-user=tgt2,file.target-password-secret=tp"
expect_fail "target CHAP username specified but no password was given" \
    "$VDISK" info --object secret,id=p2,file=pw2.txt --image-opts "$B,file.target-user=tgt2"
echo ok
