#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# VHDX writes and create.  For each create option combination (subformat,
# block_state_zero, block_size, log_size): vdisk create makes the layout
# qemu-img create makes (same file size, regions, BAT states; info equal);
# the same seeded random workload (patterns, zeroes, writes across blocks,
# rewrites) goes through vdisk-io on one copy and qemu-io on another, on
# images made by both creators: qemu-img compare finds them identical,
# qemu-img check finds nothing wrong in vdisk's, vdisk reads QEMU's as
# qemu-img does; vhdiinfo (libvhdi) reads vdisk's and agrees on the size.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io vhdiinfo

layout() { # file size, region table, BAT states of the first 64 entries
    /usr/bin/python3 - "$1" <<'PY'
import struct, sys
d = open(sys.argv[1], "rb").read()
rt = 192 << 10
out = [len(d)]
for i in range(struct.unpack_from("<I", d, rt + 8)[0]):
    e = rt + 16 + 32 * i
    out.append((d[e:e + 16].hex(), struct.unpack_from("<QII", d, e + 16)))
bat = [x for x in out[1:] if x[0].startswith("6677c22d")][0][1][0]
out.append([struct.unpack_from("<Q", d, bat + 8 * i)[0] for i in range(64)])
print(out)
PY
}

n=0
for spec in "dynamic on 0 1M 64M" "dynamic off 1M 1M 40M" "fixed on 2M 1M 24M" \
    "fixed off 1M 2M 20M" "dynamic on 32M 4M 100M" "dynamic off 0 3M 1000001k"; do
    set -- $spec
    n=$((n + 1))
    o=subformat=$1,block_state_zero=$2,block_size=$3,log_size=$4
    qemu-img create -q -f vhdx -o "$o" q$n.vhdx "$5" || fail "qemu-img create $o"
    "$VDISK" create -q -f vhdx -o "$o" v$n.vhdx "$5" || fail "vdisk create $o"
    [ "$(layout v$n.vhdx)" = "$(layout q$n.vhdx)" ] || fail "layout of $o differs:
$(layout v$n.vhdx)
--- qemu-img:
$(layout q$n.vhdx)"
    [ "$("$VDISK" info --output=json v$n.vhdx | sed 's/v[0-9]*\.vhdx/X/')" = \
        "$(qemu-img info --output=json q$n.vhdx | sed 's/q[0-9]*\.vhdx/X/')" ] ||
        fail "info of $o differs"
    qemu-img check v$n.vhdx >/dev/null || fail "qemu-img check of vdisk's new $o"
    qemu-img compare v$n.vhdx q$n.vhdx >/dev/null || fail "new $o images differ"
    size=$(qemu-img info --output=json q$n.vhdx | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
    cmds=$(/usr/bin/python3 - "$size" "$n" <<'PY'
import random, sys
size, seed = int(sys.argv[1]), int(sys.argv[2])
r = random.Random(seed)
for _ in range(30):
    ln = min(r.choice([512, 4096, 65536, 1 << 20, 3 << 20, 1536]), size)
    off = r.randrange(0, size - ln + 1) & ~511
    if r.random() < 0.15:
        print("-c 'write -z %d %d'" % (off, ln))
    else:
        print("-c 'write -P %d %d %d'" % (r.randrange(1, 256), off, ln))
PY
)
    # each writer on a copy of each creator's image
    for c in q v; do
        cp $c$n.vhdx ${c}q$n.vhdx
        cp $c$n.vhdx ${c}v$n.vhdx
        eval qemu-io -f vhdx $cmds ${c}q$n.vhdx >/dev/null || fail "qemu-io on $c$n ($o)"
        eval "\"\$VDISK_IO\"" -f vhdx $cmds ${c}v$n.vhdx >/dev/null || fail "vdisk-io on $c$n ($o)"
        qemu-img compare ${c}v$n.vhdx ${c}q$n.vhdx >/dev/null ||
            fail "vdisk's writes differ from qemu-io's ($o, image by $c)"
        qemu-img check ${c}v$n.vhdx >/dev/null || fail "qemu-img check of vdisk's writes ($o)"
        "$VDISK" check ${c}v$n.vhdx >/dev/null || fail "vdisk check ($o)"
        # vdisk reads QEMU's writes as qemu-img does
        "$VDISK" convert -O raw ${c}q$n.vhdx v.raw || fail "vdisk convert ($o)"
        qemu-img convert -O raw ${c}q$n.vhdx q.raw
        same_content v.raw q.raw
        # the file grows as QEMU grows it: blocks at the same places
        [ "$(stat -c %s ${c}v$n.vhdx)" = "$(stat -c %s ${c}q$n.vhdx)" ] ||
            fail "vdisk's written file size differs from QEMU's ($o)"
    done
    m=$(vhdiinfo vv$n.vhdx | sed -n 's/.*Media size.*(\([0-9]*\) bytes).*/\1/p')
    [ "$m" = "$size" ] || fail "vhdiinfo says $m bytes for vdisk's $o, vdisk $size"
done

# bad create options: QEMU's messages, no image left behind
for o in "log_size=0:Log size must be a multiple of 1 MB" \
    "log_size=5G:Log size must be smaller than 4 GB" \
    "block_size=3M:Block size must be a power of two" \
    "subformat=foo:Parameter 'subformat' does not accept value 'foo'"; do
    expect_fail "${o#*:}" "$VDISK" create -f vhdx -o "${o%%:*}" bad.vhdx 10M
    qemu-img create -f vhdx -o "${o%%:*}" badq.vhdx 10M 2>&1 | grep -qF "${o#*:}" ||
        fail "qemu-img's message for ${o%%:*} is not '${o#*:}'"
done
expect_fail "Image size too large; max of 64TB" "$VDISK" create -f vhdx bad.vhdx 65T
# QEMU's silent rounding: 512 KiB blocks become 1 MiB, 300 MiB ones 256 MiB
for o in block_size=512k block_size=300M log_size=1536k; do
    "$VDISK" create -q -f vhdx -o $o r.vhdx 64M && qemu-img create -q -f vhdx -o $o rq.vhdx 64M
    [ "$(layout r.vhdx)" = "$(layout rq.vhdx)" ] || fail "$o rounds differently"
done

# a vdisk-written image after a vdisk convert: raw -> vhdx -> raw round trip
head -c 5000000 /dev/urandom > in.raw
"$VDISK" convert -O vhdx in.raw c.vhdx || fail "convert raw -> vhdx"
qemu-img check c.vhdx >/dev/null || fail "qemu-img check of a converted vhdx"
qemu-img compare -f raw -F vhdx in.raw c.vhdx >/dev/null || fail "converted vhdx differs"
# and QEMU's convert read by vdisk
qemu-img convert -O vhdx -o subformat=fixed in.raw cq.vhdx
"$VDISK" compare -f raw -F vhdx in.raw cq.vhdx >/dev/null || fail "vdisk reads QEMU's convert wrong"
echo ok
