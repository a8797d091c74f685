#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Malformed ssh URLs and options: one clear line, exit 1, no crash or hang,
# nothing created on the server; QEMU's message where QEMU has a sane one
# (checked against qemu-img on the same input).
. "$VDISK_SRC/tests/lib.sh"
. "$VDISK_SRC/tests/helpers/ssh-server.sh"
ssh_start
U=$SSH_URL
P=$SSH_PORT
qemu-img create -q -f raw disk.raw 1M
mkdir dir

# one_line_error WANT ARGS...: vdisk ARGS fails with exit 1 and one line
one_line_error() {
    local want=$1 out rc=0
    shift
    out=$(bounded "$VDISK" "$@" 2>&1) || rc=$?
    ssh_alive
    out=$(echo "$out" | cut -c 1-2000)
    [ "$rc" = 1 ] || fail "exit $rc for: ${*:0:300} -- $out"
    [ "$(echo "$out" | wc -l)" = 1 ] || fail "not one line for: ${*:0:300} -- $out"
    case $out in *"$want"*) ;; *) fail "expected '$want' for: ${*:0:300} -- got: $out" ;; esac
}
js() { # JSON of the ssh file node's members -> a json: filename for raw
    echo "json:{\"driver\":\"raw\",\"file\":{\"driver\":\"ssh\",$1}}"
}
srv="\"server\":{\"host\":\"127.0.0.1\",\"port\":\"$P\"}"

# QEMU's own words
same_error info "ssh://"
same_error info "ssh:relative"
same_error info "ssh:/abs/path"
same_error info "ssh:///no/host"
same_error info "ssh://127.0.0.1:$P"
same_error info "$U/disk.raw?host_key_check=bad"
same_error info "$U/disk.raw?host_key_check=md6:00"
same_error info "$U/missing.raw"
same_error info "$(js "\"path\":\"$PWD/disk.raw\"")"
same_error info "$(js "\"server\":{\"host\":\"127.0.0.1\"},\"path\":\"$PWD/disk.raw\"")"
same_error info "$(js "$srv")"
same_error info "$(js "$srv,\"path\":\"$PWD/disk.raw\",\"host-key-check\":{\"mode\":\"sometimes\"}")"
same_error info "$(js "$srv,\"path\":\"$PWD/disk.raw\",\"host-key-check\":{\"mode\":\"hash\",\"type\":\"sha512\",\"hash\":\"00\"}")"
same_error info "$(js "$srv,\"path\":\"$PWD/disk.raw\",\"host-key-check\":{\"mode\":\"hash\",\"type\":\"md5\"}")"
same_error info "ssh://127.0.0.1:1/x"
same_error create -q -f raw "ssh://127.0.0.1:$P" 1M

# where QEMU crashes or says something misleading, a clear message of ours
one_line_error "Invalid parameter 'bogus'" info "$(js "$srv,\"path\":\"$PWD/disk.raw\",\"bogus\":\"1\"")"
one_line_error "invalid port '99999'" info "ssh://127.0.0.1:99999/x"
one_line_error "invalid port 'abc'" info "ssh://127.0.0.1:abc/x"
one_line_error "invalid port '-1'" info "ssh://127.0.0.1:-1/x"
one_line_error "host_key_check in the URI needs a value" info "$U/disk.raw?host_key_check"
one_line_error "invalid IPv6 address" info "ssh://[::1/x"
one_line_error "invalid IPv6 address" info "ssh://[::1]x/x"
one_line_error "invalid escape" info "ssh://us%00er@127.0.0.1:$P/x"
one_line_error "invalid escape" info "ssh://127.0.0.1:$P/x%zz"
one_line_error "invalid escape" info "ssh://127.0.0.1:$P/x%4"
one_line_error "could not parse query parameters" info "$U/disk.raw?host_key_check=%00"
one_line_error "missing hostname in URI" info "ssh://user@:$P/x"
one_line_error "cannot be used at the same time" info \
    "json:{\"driver\":\"raw\",\"file\":{\"filename\":\"$U/disk.raw\",\"user\":\"root\"}}"
one_line_error "host and server.host cannot be used at the same time" info \
    "$(js "\"host\":\"127.0.0.1\",$srv,\"path\":\"$PWD/disk.raw\"")"
one_line_error "host_key_check and host-key-check cannot be used at the same time" info \
    "$(js "$srv,\"path\":\"$PWD/disk.raw\",\"host_key_check\":\"no\",\"host-key-check\":{\"mode\":\"none\"}")"
one_line_error "Parameter 'server.host' must not be empty" info \
    "$(js "\"server\":{\"host\":\"\",\"port\":\"$P\"},\"path\":\"x\"")"
one_line_error "address resolution failed" info "ssh://$(head -c 300 /dev/zero | tr '\0' a)/x"
# a huge URL: a clean error (the message is cut, the program is not)
one_line_error "Could not open" info "ssh://$(head -c 70000 /dev/zero | tr '\0' a)/x"
one_line_error "address resolution failed" info "ssh://no.such.host.invalid/x"
same_error create -q -f raw -o preallocation=full "$U/p.raw" 1M
[ ! -e p.raw ] || [ "$(stat -c %s p.raw)" = 0 ] || fail "preallocation refused but file written"

# server-side oddities: a directory, a special file, a path with escapes
# a directory: opened as QEMU opens it; reading it fails cleanly
"$VDISK" info -f raw "$U/dir" >/dev/null 2>&1 || ! qemu-img info -f raw "$U/dir" >/dev/null 2>&1 ||
    fail "QEMU opens a directory with -f raw, vdisk does not"
one_line_error "Could not open" info "$U/dir"
one_line_error "failed" convert -f raw -O raw "$U/dir" fromdir.raw
"$VDISK" info -f raw "ssh://127.0.0.1:$P$PWD/d%69sk.raw" >/dev/null || fail "escaped path"
"$VDISK" info -f raw "ssh://%72oot@127.0.0.1:$P$PWD/disk.raw#frag" >/dev/null ||
    fail "escaped user, fragment"
"$VDISK" info -f raw "$U/disk.raw?other=1&host_key_check=yes;x=y" >/dev/null ||
    fail "unknown query parameters are ignored, as QEMU does"
"$VDISK" info -f raw "ssh://[127.0.0.1]:$P$PWD/disk.raw" >/dev/null || fail "bracketed host"
if [ -n "$SSH_IPV6" ]; then
    "$VDISK" info -f raw "ssh://[::1]:$P$PWD/disk.raw?host_key_check=no" | grep -q "^image: ssh://$(id -un)@\[::1\]:$P$PWD/disk.raw?host_key_check=no\$" ||
        fail "IPv6 host"
fi

# nothing was created by the refused commands
for f in x p.raw never.raw; do [ ! -s "$f" ] || fail "$f created"; done
ssh_alive
echo ok
