#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# ssh host key checking, side by side with QEMU 7.2's ssh driver: known_hosts
# (good, changed key, unknown host, other key type, no file), fingerprints
# (md5, sha1, sha256; with ':' and in upper case; through the URL, the
# legacy option and host-key-check.*), wrong fingerprints refused with
# QEMU's message (naming the key type) before authentication: no sftp
# session starts and nothing is created.
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/helpers/ssh-server.sh"
ssh_start
U=$SSH_URL
KH=$SSH_HOME/.ssh/known_hosts
qemu-img create -q -f raw disk.raw 1M

fp() { # md5|sha1|sha256 -> hex of the host key blob's hash
    /usr/bin/python3 -c '
import base64, hashlib, sys
blob = base64.b64decode(open(sys.argv[2]).read().split()[1])
print(hashlib.new(sys.argv[1], blob).hexdigest())' "$1" hostkey.pub
}
sftp_count() { cat sftp.pids 2>/dev/null | wc -l; }  # sessions started so far

# known_hosts (the default, and "yes")
"$VDISK" info -f raw "$U/disk.raw" >/dev/null || fail "known_hosts: good key refused"
"$VDISK" info -f raw "$U/disk.raw?host_key_check=yes" >/dev/null || fail "host_key_check=yes"
"$VDISK" info -f raw "json:{\"file\":{\"driver\":\"ssh\",\"server\":{\"host\":\"127.0.0.1\",\"port\":\"$SSH_PORT\"},\"path\":\"$PWD/disk.raw\",\"host-key-check\":{\"mode\":\"known_hosts\"}}}" >/dev/null ||
    fail "host-key-check.mode=known_hosts"

# every fingerprint form that names the key
for t in md5 sha1 sha256; do
    h=$(fp $t)
    colons=$(echo "$h" | sed 's/../&:/g; s/:$//' | tr a-f A-F)
    for form in "$h" "$colons"; do
        "$VDISK" info -f raw "$U/disk.raw?host_key_check=$t:$form" >/dev/null ||
            fail "good $t fingerprint $form refused"
    done
    "$VDISK" info -f raw "json:{\"file\":{\"driver\":\"ssh\",\"server\":{\"host\":\"127.0.0.1\",\"port\":\"$SSH_PORT\"},\"path\":\"$PWD/disk.raw\",\"host-key-check\":{\"mode\":\"hash\",\"type\":\"$t\",\"hash\":\"$h\"}}}" >/dev/null ||
        fail "host-key-check.mode=hash type=$t"
    "$VDISK" info -f raw "json:{\"file\":{\"driver\":\"ssh\",\"host\":\"127.0.0.1\",\"port\":\"$SSH_PORT\",\"path\":\"$PWD/disk.raw\",\"host_key_check\":\"$t:$colons\"}}" >/dev/null ||
        fail "legacy host_key_check=$t:..."
    # wrong ones: QEMU's message, the key type named, and no session opened
    before=$(sftp_count)
    for bad in 00 "${h%??}" "$h:" "${h}00" "$(echo "$h" | tr 0-9a-f 1-9a-f0)"; do
        same_error info -f raw "$U/disk.raw?host_key_check=$t:$bad"
        case $last_error in *"ssh-ed25519 key fingerprint '$t:$h' does not match"*) ;;
            *) fail "message should name the key type and fingerprint: $last_error" ;; esac
    done
    [ "$(sftp_count)" = "$before" ] || fail "an sftp session started after a wrong $t key"
done
# create with a wrong key creates nothing
expect_fail "does not match host_key_check" "$VDISK" create -f qcow2 "$U/never.qcow2?host_key_check=sha256:00" 1M
[ ! -e never.qcow2 ] || fail "created a file after a host key mismatch"

# known_hosts: a changed key, an unknown host, another key type, no file
ssh-keygen -q -t ed25519 -N '' -f otherkey
ssh-keygen -q -t ecdsa -N '' -f ecdsakey
good=$(cat "$KH")
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 otherkey.pub)" > "$KH"
before=$(sftp_count)
same_error info -f raw "$U/disk.raw"
case $last_error in *"ssh-ed25519"*"does not match the one in known_hosts"*) ;;
    *) fail "changed key message: $last_error" ;; esac
[ "$(sftp_count)" = "$before" ] || fail "an sftp session started after a changed key"
"$VDISK" info -f raw "$U/disk.raw?host_key_check=no" >/dev/null || fail "host_key_check=no"
before=$(sftp_count)
echo "[127.0.0.1]:$((SSH_PORT + 1)) $(cut -d' ' -f1,2 hostkey.pub)" > "$KH"
same_error info -f raw "$U/disk.raw"
echo "[127.0.0.1]:$SSH_PORT $(cut -d' ' -f1,2 ecdsakey.pub)" > "$KH"
same_error info -f raw "$U/disk.raw"
rm -f "$KH"
same_error info -f raw "$U/disk.raw"
[ "$(sftp_count)" = "$before" ] || fail "an sftp session started after a known_hosts failure"
echo "$good" > "$KH"
"$VDISK" info -f raw "$U/disk.raw" >/dev/null || fail "known_hosts restored"

# authentication: a user the server does not know, and no agent at all
same_error info -f raw "ssh://nobody-here@127.0.0.1:$SSH_PORT$PWD/disk.raw"
SSH_AUTH_SOCK=$PWD/none.sock same_error info -f raw "$U/disk.raw"
echo ok
