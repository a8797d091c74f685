#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk --help / --version / COMMAND --help, and unknown commands.
. "$VDISK_SRC/tests/lib.sh"

out=$("$VDISK" --help) || fail "--help"
for c in amend bench bitmap check commit compare convert create dd info map measure snapshot rebase resize; do
    case "$out" in *"  $c "*) ;; *) fail "--help lacks $c" ;; esac
done
for c in amend bitmap check commit create info map measure snapshot rebase resize; do
    o=$("$VDISK" $c --help) || fail "$c --help exits non-zero"
    case "$o" in "usage: vdisk $c "*) ;; *) fail "$c --help: $o" ;; esac
done
for c in info check map create resize snapshot commit rebase amend measure; do
    "$VDISK" $c -h >/dev/null || fail "$c -h"
done
"$VDISK" -h >/dev/null || fail "-h"
out=$("$VDISK" --version) || fail "--version"
case "$out" in "vdisk version "*) ;; *) fail "--version: $out" ;; esac
"$VDISK" -V >/dev/null || fail "-V"
expect_fail "Command not found: frobnicate" "$VDISK" frobnicate
expect_fail "Not enough arguments" "$VDISK"
expect_fail "unrecognized option '--bogus'" "$VDISK" --bogus
# the man page documents every command
for c in amend bench bitmap check commit compare convert create dd info map measure snapshot rebase resize; do
    grep -q "^\.SS $c\$" "$VDISK_SRC/docs/vdisk.1" || fail "vdisk.1 lacks $c"
done
echo ok
