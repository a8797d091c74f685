#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# `-o help` lists exactly the options each driver takes, from the driver
# table (vd_driver_get_info), with qemu-img's option names: create for every
# format both know, amend only the amendable ones (qemu-img amend's list,
# LUKS keyslot options included).  `vdisk --help`
# lists every driver of the table.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img

names() { sed -n 's/^  \([a-z_.-]*\)=.*/\1/p' | sort; }

for fmt in raw qcow2 qed qcow vdi vpc; do
    ours=$("$VDISK" create -f "$fmt" -o help | names) || fail "create -f $fmt -o help"
    theirs=$(qemu-img create -f "$fmt" -o help | names)
    [ -n "$ours" ] || fail "$fmt: no options listed"
    [ "$ours" = "$theirs" ] || fail "$fmt create options differ: ours [$ours] qemu [$theirs]"
    # convert -O takes the same list
    conv=$("$VDISK" convert -O "$fmt" -o help | names)
    [ "$conv" = "$ours" ] || fail "$fmt: convert -o help differs from create -o help"
done

# with a file name the protocol's options join (qemu-img create -o help x)
ours=$("$VDISK" create -f qcow2 -o help x.qcow2 | names)
theirs=$(qemu-img create -f qcow2 -o help x.qcow2 | names)
[ "$ours" = "$theirs" ] || fail "qcow2 + file options differ: ours [$ours] qemu [$theirs]"
[ ! -e x.qcow2 ] || fail "-o help created a file"

# amend: the amendable options only
qemu-img create -q -f qcow2 a.qcow2 1M
ours=$("$VDISK" amend -f qcow2 -o help a.qcow2 | names)
theirs=$(qemu-img amend -f qcow2 -o help a.qcow2 | names)
[ "$ours" = "$theirs" ] || fail "qcow2 amend options differ: ours [$ours] qemu [$theirs]"
case "$ours" in *cluster_size*) fail "amend lists a create-only option" ;; esac
# a format without amend lists nothing
out=$("$VDISK" amend -f raw -o help)
[ "$out" = "Amend options for 'raw':" ] || fail "raw amend -o help: $out"
expect_fail "Unknown file format 'bogus'" "$VDISK" amend -f bogus -o help a.qcow2

# vdisk --help: every driver of the table, qemu-img's line
line=$("$VDISK" --help | grep '^Supported formats:') || fail "no Supported formats line"
for d in file host_device host_cdrom null-co nbd preallocate qcow2 qed qcow vdi vpc raw; do
    case " ${line#Supported formats:} " in *" $d "*) ;; *) fail "--help lacks $d: $line" ;; esac
done
echo ok
