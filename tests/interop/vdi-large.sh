#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# A vdi image at QEMU's size limit (0x1fffff80 blocks, 512 TiB less 128 MiB;
# iotest 084): it opens and reads, and its 2 GiB block map costs memory
# only for the entries that say something; a truncated map is written out
# whole before the first allocation.  One block more is refused with QEMU's text.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

poke() { printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none; }
# A header for 0x1fffff80 blocks (disk size 0x1fffff8000000) with only the
# first sector of its 2 GiB map in the file (a real one holds 2 GiB of
# 0xff): the rest of the map reads as unallocated (QEMU reads it as zeroes,
# that is as block 0: docs/formats-part1.md), data after the whole map.
qemu-img create -q -f vdi big.vdi 64M
truncate -s 768 big.vdi   # the 64-entry map without its zero padding
poke big.vdi 344 '\x00\x00\x00\x80'                   # offset_data
poke big.vdi 368 '\x00\x00\x00\xf8\xff\xff\x01\x00'   # disk size
poke big.vdi 384 '\x80\xff\xff\x1f'                   # blocks in image
"$VDISK" info big.vdi | grep -q "virtual size: 512 TiB (562949819203584 bytes)" \
    || fail "vdisk info: $("$VDISK" info big.vdi 2>&1)"
qemu-img info big.vdi | grep -q "virtual size: 512 TiB" || fail "qemu-img info disagrees"
/usr/bin/python3 - "$VDISK_IO" <<'PY' || fail "memory or data"
import resource, subprocess, sys
io = sys.argv[1]
end = 0x1fffff8000000 - 65536
r = subprocess.run([io, "-r", "-c", "read -P 0 1M 64k", "-c", "read -P 0 200G 64k",
                    "-c", "read -P 0 %d 64k" % end, "big.vdi"], capture_output=True, text=True)
if r.returncode != 0 or "Pattern verification failed" in r.stdout:
    sys.exit("vdisk-io: %s %s" % (r.stdout, r.stderr))
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB
if rss > 200 * 1024:
    sys.exit("vdisk-io used %d KiB for a 2 GiB block map read from 256 bytes" % rss)
PY
"$VDISK" check big.vdi >/dev/null || fail "vdisk check: $("$VDISK" check big.vdi 2>&1)"

# A truncated map (1 TiB: 1 Mi entries, 4 MiB of map, 256 bytes in the
# file) taking writes: the map is written out whole first, so the file has
# no hole that would read as entries pointing at block 0, and QEMU agrees.
qemu-img create -q -f vdi t.vdi 64M
truncate -s 768 t.vdi
poke t.vdi 344 '\x00\x02\x40\x00'                   # offset_data 512 + 4 MiB
poke t.vdi 368 '\x00\x00\x00\x00\x00\x01\x00\x00'   # disk size 1 TiB
poke t.vdi 384 '\x00\x00\x10\x00'                   # 1 Mi blocks
"$VDISK_IO" -c "write -P 7 1M 64k" -c "write -P 9 100G 64k" t.vdi >/dev/null || fail "vdisk-io write"
out=$(qemu-io -r -c "read -P 7 1M 64k" -c "read -P 9 100G 64k" -c "read -P 0 200G 64k" t.vdi)
case $out in *"Pattern verification failed"*) fail "qemu-io reads otherwise: $out" ;; esac
qemu-img check t.vdi >/dev/null || fail "qemu-img check: $(qemu-img check t.vdi 2>&1 | tail -3)"
"$VDISK" check t.vdi >/dev/null || fail "vdisk check on the written image"

# one block more than QEMU allows
poke big.vdi 384 '\x81\xff\xff\x1f'
poke big.vdi 368 '\x00\x00\x00\x04\x00\x00\x00\x00'
expect_fail "unsupported VDI image (too many blocks 536870785, max is 536870784)" "$VDISK" info big.vdi
expect_fail "Unsupported VDI image size (size is 0x2000000000000, max supported is 0x1fffff8000000)" \
    "$VDISK" create -f vdi x.vdi 512T
echo ok
