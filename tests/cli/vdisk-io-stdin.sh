#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# vdisk-io without -c reads commands from stdin, one per line, each after a
# prompt; quit stops; open/close work; the exit status reports failures.
# Compared with qemu-io reading the same lines (prompts normalised).
. "$VDISK_SRC/tests/lib.sh"
need qemu-io

mask() {
    sed -E 's/(qemu-io|vdisk-io)> /PROMPT /g;
            s/[0-9.]+ (bytes|KiB|MiB|GiB|TiB|PiB|EiB), [0-9]+ ops; [^)]*\)/STATS/'
}
# session NAME: feed NAME.in to both tools
session() {
    local qrc=0 vrc=0
    rm -f q.img v.img
    truncate -s 1M q.img
    truncate -s 1M v.img
    sed 's/IMG/q.img/' "$1.in" | qemu-io >q.out 2>q.err || qrc=$?
    sed 's/IMG/v.img/' "$1.in" | "$VDISK_IO" >v.out 2>v.err || vrc=$?
    mask <q.out >q.m
    mask <v.out >v.m
    diff -u q.m v.m || fail "session $1: stdout differs"
    [ "$qrc" = "$vrc" ] || fail "session $1: exit status qemu-io=$qrc vdisk-io=$vrc"
    cmp -s q.img v.img || fail "session $1: image content differs"
}

cat >a.in <<'CMDS'
open -o driver=raw IMG
write -P 0x5a 0 64k
read -P 0x5a 0 64k
   read   -q   0   512
length
close
length
CMDS
session a
grep -q "^vdisk-io> " v.out || fail "no prompt"

cat >b.in <<'CMDS'
open -o driver=raw IMG
read -P 1 0 512
quit
write 0 512
CMDS
session b
[ "$(grep -c 'wrote' v.out)" = 0 ] || fail "commands after quit ran"

cat >c.in <<'CMDS'
open -r -o driver=raw IMG
write 0 1
open -o driver=raw IMG
c
o -o driver=raw IMG
w -P 3 0 3
r -P 3 0 3

q
CMDS
session c

# no trailing newline on the last line, and end of input without quit
printf 'open -o driver=raw IMG\nwrite -P 9 0 9\nread -P 9 0 9' >d.in
session d
echo "stdin sessions match qemu-io"
