#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# make check-nvme: vdisk's userspace NVMe driver through real VFIO, inside a
# guest.  qemu-system-x86_64 (TCG: no KVM needed) boots Debian's kernel with
# an emulated intel-iommu and an emulated NVMe controller (QEMU's nvme
# device model, backed by a raw file on the host).  A busybox initramfs
# binds the controller to vfio-pci and runs vdisk and vdisk-io on
# nvme://ADDR/1; the host then checks the raw file with QEMU's tools.
#
#   scripts/check-nvme.sh BUILD     (build-asan: the same under ASan+UBSan)
#
# Opt-in (not in make check): it downloads Debian's kernel and busybox-static
# packages (apt-get download, nothing is installed) and a TCG boot is slow.
# Exit 0 when every step passed, 1 otherwise, 77 when the guest cannot run.
set -euo pipefail
BUILD=${1:-build}
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=$(cd "$BUILD" && pwd)
WORK=$BUILD/nvme-guest
CACHE=$WORK/cache
TIMEOUT=${VDISK_NVME_TIMEOUT:-1800}

die() { echo "check-nvme: $*" >&2; exit 1; }
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (scripts/deps.sh nvme)"
for t in vdisk vdisk-io; do # make links build/vdisk...; a bare meson tree has tools/T/T
    [ -x "$BUILD/$t" ] || [ ! -x "$BUILD/tools/$t/$t" ] || ln -sf "tools/$t/$t" "$BUILD/$t"
    [ -x "$BUILD/$t" ] || die "$BUILD/$t missing (make first)"
done

# 1. the guest's kernel and busybox, from Debian's archive (cached)
mkdir -p "$CACHE"
kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || die "cannot find Debian's kernel package (apt-get update?)"
if [ ! -f "$CACHE/$kpkg.done" ]; then
    (cd "$CACHE" && rm -rf root && mkdir root &&
        apt-get download "$kpkg" busybox-static 2>&1 | grep -v '^W: Download is performed unsandboxed' &&
        for d in ./*.deb; do dpkg-deb -x "$d" root; done && rm -f ./*.deb) ||
        die "cannot download $kpkg and busybox-static"
    touch "$CACHE/$kpkg.done"
fi
kroot=$CACHE/root
kver=${kpkg#linux-image-}
vmlinuz=$kroot/boot/vmlinuz-$kver
kmod=$kroot/lib/modules/$kver/kernel
[ -f "$vmlinuz" ] && [ -x "$kroot/bin/busybox" ] || die "incomplete guest files in $kroot"

# 2. the initramfs: busybox, the vfio modules, vdisk's tools with their
# libraries at their own paths, test data, and /init
rm -rf "$WORK/initrd" "$WORK/initrd.cpio" "$WORK/nvme.raw" "$WORK/console.log"
ir=$WORK/initrd
mkdir -p "$ir"/{bin,proc,sys,dev,tmp,data,mod}
cp "$kroot/bin/busybox" "$ir/bin/busybox"
for m in virt/lib/irqbypass drivers/vfio/vfio drivers/vfio/vfio_iommu_type1 \
    drivers/vfio/vfio_virqfd drivers/vfio/pci/vfio-pci-core drivers/vfio/pci/vfio-pci; do
    cp "$kmod/$m.ko" "$ir/mod/"
done
for t in vdisk vdisk-io; do cp -L "$BUILD/$t" "$ir/bin/$t"; done
for lib in $(ldd "$BUILD/vdisk" "$BUILD/vdisk-io" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}' | sort -u); do
    mkdir -p "$ir$(dirname "$lib")"
    cp -L "$lib" "$ir$lib"
done
# the loader at the path the binaries name (/lib64 on amd64)
interp=$(readelf -l "$BUILD/vdisk" 2>/dev/null | sed -n 's/.*interpreter: \(.*\)]/\1/p')
[ -z "$interp" ] || { mkdir -p "$ir$(dirname "$interp")"; cp -L "$interp" "$ir$interp"; }

# 16 MiB of seeded random data with holes, as a qcow2 made by QEMU
qemu-img create -q -f qcow2 "$ir/data/in.qcow2" 16M
/usr/bin/python3 - "$WORK/pattern.raw" <<'EOF'
import random, sys
r = random.Random(18)
with open(sys.argv[1], "wb") as f:
    f.truncate(16 << 20)
    for _ in range(40):
        off = r.randrange(0, (16 << 20) - 300000) & ~511
        f.seek(off)
        f.write(r.randbytes(r.randrange(512, 300000)))
EOF
qemu-img convert -n -f raw -O qcow2 "$WORK/pattern.raw" "$ir/data/in.qcow2"

cat > "$ir/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
say() { echo "NVMETEST $*"; }
step() { # step NAME CMD...: run, print the output, then ok/FAIL
    name=$1; shift
    echo "NVMETEST-BEGIN $name"
    if "$@" 2>&1; then say "ok $name"; else say "FAIL $name (exit $?)"; fi
}
for m in irqbypass vfio vfio_iommu_type1 vfio_virqfd vfio-pci-core vfio-pci; do
    insmod /mod/$m.ko || say "FAIL insmod $m"
done
dev=
for d in /sys/bus/pci/devices/*; do
    [ "$(cat $d/class)" = 0x010802 ] && dev=${d##*/}
done
[ -n "$dev" ] || say "FAIL no NVMe controller in the guest"
say "device $dev iommu_group $(basename $(readlink /sys/bus/pci/devices/$dev/iommu_group))"
echo vfio-pci > /sys/bus/pci/devices/$dev/driver_override
echo $dev > /sys/bus/pci/drivers_probe
ls /dev/vfio
u=nvme://$dev/1
# a PCI function that is not bound to vfio-pci: a clear error, exit 1
other=$(ls /sys/bus/pci/devices | grep -v "^$dev\$" | head -n 1)
step not-vfio sh -c "out=\$(vdisk info nvme://$other/1 2>&1); rc=\$?; echo \"\$out\"; [ \$rc = 1 ] && echo \"\$out\" | grep -q '$other'"
step info vdisk info --output=json $u
step convert-in vdisk convert -n -f qcow2 -O raw /data/in.qcow2 $u
step convert-back vdisk convert -f raw -O raw $u /tmp/back.raw
step compare-back vdisk compare -f qcow2 -F raw /data/in.qcow2 "json:{\"driver\":\"raw\",\"size\":16777216,\"file\":{\"driver\":\"nvme\",\"device\":\"$dev\",\"namespace\":1}}"
step io vdisk-io -f raw \
    -c "write -P 0x5a 32M 1M" -c "write -P 0xa5 33M 4k" -c "write -P 0x33 34M 1M" \
    -c "write -z 34M 1M" -c "write -P 0x44 36M 1M" -c "discard 36M 1M" \
    -c "write -P 0x77 41943140 1000" -c "flush" \
    -c "read -P 0x5a 32M 1M" -c "read -P 0xa5 33M 4k" -c "read -P 0 34M 1M" \
    -c "read -P 0x77 41943140 1000" -c "map" $u
step aio vdisk-io -f raw \
    -c "aio_write -P 0x61 48M 64k" -c "aio_write -P 0x62 49M 128k" -c "aio_write -P 0x63 50M 256k" \
    -c "aio_flush" -c "aio_read -P 0x61 48M 64k" -c "aio_read -P 0x62 49M 128k" \
    -c "aio_read -P 0x63 50M 256k" -c "aio_flush" $u
step bench-qd32 vdisk bench -f raw -c 2000 -d 32 -s 4k $u
step md5 sh -c "vdisk convert -f raw -O raw $u /tmp/all.raw && md5sum /tmp/all.raw"
say done
sync
poweroff -f
EOF
chmod +x "$ir/init"
(cd "$ir" && find . | "$ir/bin/busybox" cpio -o -H newc 2>/dev/null) > "$WORK/initrd.cpio"

# 3. boot: q35 + intel-iommu + nvme on a 64 MiB raw file
qemu-img create -q -f raw "$WORK/nvme.raw" 64M
echo "check-nvme: booting $kpkg under TCG (minutes)"
rc=0
timeout -k 10 "$TIMEOUT" qemu-system-x86_64 -M q35 -accel tcg -m 1024 -smp 1 \
    -display none -monitor none -serial "file:$WORK/console.log" -no-reboot \
    -device intel-iommu -kernel "$vmlinuz" -initrd "$WORK/initrd.cpio" \
    -append "console=ttyS0 intel_iommu=on no_timer_check panic=-1 quiet" \
    -drive "file=$WORK/nvme.raw,if=none,id=nv0,format=raw,discard=unmap" \
    -device nvme,serial=vdisk0,drive=nv0 || rc=$?
[ "$rc" = 0 ] || { tail -n 30 "$WORK/console.log" 2>/dev/null; die "the guest did not finish (exit $rc)"; }
tr -d '\r' < "$WORK/console.log" > "$WORK/console.txt"
grep -q '^NVMETEST done' "$WORK/console.txt" || { tail -n 40 "$WORK/console.txt"; die "the guest stopped early"; }

# 4. results: the guest's own steps, then the host's view of the disk
fails=0
grep '^NVMETEST' "$WORK/console.txt" | sed 's/^NVMETEST /guest: /'
grep -q '^NVMETEST FAIL' "$WORK/console.txt" && fails=1
grep -Eq 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK/console.txt" &&
    { echo "guest: FAIL a sanitizer report (an ASan/UBSan build tree)"; fails=1; }
grep -q 'Pattern verification failed' "$WORK/console.txt" &&
    { echo "guest: FAIL a pattern did not read back"; fails=1; }
host() { # host NAME CMD...
    if out=$("$@" 2>&1); then echo "host: ok $1"; else echo "host: FAIL $*: $out"; fails=1; fi
}
head -c 16M "$WORK/nvme.raw" > "$WORK/head.raw"
host qemu-img compare -q -f raw -F raw "$WORK/pattern.raw" "$WORK/head.raw"
host qemu-io -f raw -c "read -q -P 0x5a 32M 1M" -c "read -q -P 0xa5 33M 4k" \
    -c "read -q -P 0 34M 1M" -c "read -q -P 0x77 41943140 1000" \
    -c "read -q -P 0x61 48M 64k" -c "read -q -P 0x62 49M 128k" -c "read -q -P 0x63 50M 256k" \
    "$WORK/nvme.raw"
gsum=$(sed -n 's|^\([0-9a-f]\{32\}\)  /tmp/all.raw$|\1|p' "$WORK/console.txt")
hsum=$(md5sum < "$WORK/nvme.raw" | cut -d' ' -f1)
if [ -n "$gsum" ] && [ "$gsum" = "$hsum" ]; then echo "host: ok whole disk read in the guest = the host file"
else echo "host: FAIL whole disk: guest $gsum, host $hsum"; fails=1; fi
if qemu-io -f raw -c "read -q -P 0 36M 1M" "$WORK/nvme.raw" >/dev/null 2>&1; then
    echo "host: discarded range reads as zeroes"
else
    echo "host: discarded range kept its data (the controller may ignore deallocate)"
fi
echo "check-nvme: console log in $WORK/console.txt"
[ "$fails" = 0 ] && echo "check-nvme: passed" || echo "check-nvme: FAILED"
exit "$fails"
