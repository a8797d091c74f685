#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The nvme protocol on a machine without NVMe hardware bound to vfio-pci:
# every tool fails with one clear line and exit 1 (never a crash), with
# qemu-img's text where QEMU 7.2 gets as far: without /dev/vfio/vfio both
# stop at "Failed to open /dev/vfio/vfio"; with VFIO present, a PCI address
# that does not exist is named in the message.  Filename and option parse
# errors are compared with qemu-img's.  The driver's I/O paths run against a
# software controller in unit-nvme-queue and unit-nvme-driver.
. "$VDISK_SRC/tests/lib.sh"
need qemu-img qemu-io

# the message after "Could not open '...': " of both tools
msg_of() { "$@" 2>&1 | sed -n "s/^[a-z-]*: Could not open '[^']*': //p"; }
same_as_qemu() {
    local v q
    v=$(msg_of "$VDISK" info "$@")
    q=$(msg_of qemu-img info "$@")
    [ -n "$v" ] || fail "no message from vdisk info $*"
    [ "$v" = "$q" ] || fail "vdisk info $*: '$v', qemu-img: '$q'"
}

# parse errors, before any device access
same_as_qemu 'nvme://0000:00:04.0/1/2'
same_as_qemu 'nvme:foo'
same_as_qemu 'nvme://'
same_as_qemu 'json:{"file":{"driver":"nvme"}}'
expect_exit 1 "$VDISK" info 'nvme://0000:00:04.0/x'

if [ ! -e /dev/vfio/vfio ]; then
    # no VFIO at all: the same message as QEMU for every form
    for f in 'nvme://0000:00:04.0/1' 'nvme://0000:00:04.0' 'nvme://0000:ff:1f.7/3' \
        'json:{"file":{"driver":"nvme","device":"0000:00:04.0","namespace":1}}'; do
        same_as_qemu "$f"
        expect_fail "Failed to open /dev/vfio/vfio: No such file or directory" \
            "$VDISK" info "$f"
    done
    expect_fail "Failed to open /dev/vfio/vfio: No such file or directory" \
        "$VDISK_IO" --image-opts -c 'read 0 512' 'driver=nvme,device=0000:00:04.0,namespace=1'
    expect_fail "Failed to open /dev/vfio/vfio: No such file or directory" \
        "$VDISK_IO" -f raw -c 'read 0 512' 'nvme://0000:00:04.0/1'
    expect_fail "Failed to open /dev/vfio/vfio: No such file or directory" \
        "$VDISK" convert -O raw 'nvme://0000:00:04.0/1' out.img
    # create opens the device (QEMU's bdrv_co_create_opts_simple)
    v=$("$VDISK" create -f raw 'nvme://0000:00:04.0/1' 1M 2>&1 >/dev/null) && fail "create worked"
    q=$(qemu-img create -f raw 'nvme://0000:00:04.0/1' 1M 2>&1 >/dev/null) || true
    [ "${v#vdisk: }" = "${q#qemu-img: }" ] || fail "create: '$v', qemu-img: '$q'"
else
    # VFIO exists: a missing device and a device not bound to vfio-pci are named
    expect_fail "PCI device 0000:ff:1f.7 does not exist" \
        "$VDISK" info 'nvme://0000:ff:1f.7/1'
    expect_fail "Invalid PCI address '../x'" "$VDISK" info 'nvme://../x/1'
    for d in /sys/bus/pci/devices/*; do
        [ "$(basename "$(readlink "$d/driver" 2>/dev/null)")" = vfio-pci ] && continue
        a=$(basename "$d")
        expect_fail "PCI device $a is not bound to vfio-pci" "$VDISK" info "nvme://$a/1"
        break
    done
fi
# vdisk-nbd refuses to export it the same way
expect_exit 1 "$VDISK_NBD" -f raw 'nvme://0000:00:04.0/1' --socket "$PWD/s"
echo "nvme protocol errors as expected"
