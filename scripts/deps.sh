#!/bin/sh
# BSD-3-Clause. The one list of Debian packages vdisk needs.
#   scripts/deps.sh build   - what `make` needs
#   scripts/deps.sh test    - build + the peers the tests run against
#   scripts/deps.sh bench   - test + what `make bench` adds (its plot)
#   scripts/deps.sh nvme    - build + what `make check-nvme` adds (a TCG guest)
# Installs only what is missing; does nothing when everything is present.
set -eu
BUILD="build-essential meson ninja-build pkg-config zlib1g-dev libzstd-dev libjson-c-dev liburing-dev libgnutls28-dev nettle-dev clang libclang-rt-14-dev libargon2-dev libdeflate-dev libbz2-dev libssh-dev libiscsi-dev libglusterfs-dev librbd-dev libfuse3-dev"
TEST="qemu-utils qemu-block-extra nbdkit libnbd-bin python3-libnbd python3-pytest fio util-linux mount gnutls-bin libqcow-utils libvhdi-utils bximage strace cryptsetup-bin python3-cryptography libvmdk-utils python3-vmdkstream cloop-utils dmg2img dpkg-dev openssh-server openssh-client tgt libiscsi-bin glusterfs-server ceph-mon ceph-osd ceph-common fuse3 mtools dosfstools e2fsprogs"
BENCH="python3-matplotlib"
NVME="qemu-system-x86 qemu-utils"
want="$BUILD"
[ "${1:-build}" = test ] && want="$BUILD $TEST"
[ "${1:-build}" = bench ] && want="$BUILD $TEST $BENCH"
[ "${1:-build}" = nvme ] && want="$BUILD $NVME"
missing=""
for p in $want; do
    s=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$s" in *"install ok installed"*) ;; *) missing="$missing $p" ;; esac
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "vdisk: missing Debian packages:$missing (run as root or install them)" >&2
    exit 1
fi
echo "vdisk: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing >/dev/null
