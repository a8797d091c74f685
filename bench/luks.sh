#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Reading a LUKS image (aes-256-xts-plain64, the default): `vdisk convert`
# against `qemu-img convert` of the same image to raw, side by side in one
# run, page cache warm, alternating which tool goes first.  The image is
# made by vdisk (QEMU 7.2 cannot measure its PBKDF2 iterations here) and
# filled through vdisk-io with seeded random data.  Prints the median wall
# and CPU time of each, their ratios and the throughput, then checks that
# both outputs are the data written.
#
# Usage: bench/luks.sh [-r RUNS] [-s SIZE] [-o CREATE-OPTS] [BUILD]
#   -r RUNS  runs per tool (default 5)
#   -s SIZE  image size (default 512M)
#   -o OPTS  more luks create options (e.g. cipher-mode=cbc,ivgen-alg=essiv)
set -eu
. "$(dirname "$0")/lib.sh"

runs=5
size=512M
copts=
while getopts "r:s:o:" o; do
    case $o in
        r) runs=$OPTARG ;;
        s) size=$OPTARG ;;
        o) copts=,$OPTARG ;;
        *) echo "usage: $0 [-r RUNS] [-s SIZE] [-o OPTS] [BUILD]" >&2; exit 2 ;;
    esac
done
shift $((OPTIND - 1))
bench_init "${1:-}"

work=$(mktemp -d /tmp/vdisk-bench-luks.XXXXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
printf 'bench passphrase' > key
OBJ="--object secret,id=k,file=key"
IMG="driver=luks,key-secret=k,file.filename=in.luks"

name="luks-read${copts:+ $copts}"
echo "== $name: a $size LUKS image in $work" >&2
"$VDISK" create -q -f luks $OBJ -o "key-secret=k,iter-time=10$copts" in.luks "$size"
bytes=$("$VDISK" info --output=json in.luks | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')
head -c "$bytes" /dev/urandom > in.raw
"$VDISK" convert -n $OBJ -f raw in.raw --target-image-opts "$IMG"
cat in.luks >/dev/null # warm the page cache

vcmd=("$VDISK" convert $OBJ --image-opts "$IMG" -O raw out.vdisk)
qcmd=(qemu-img convert $OBJ --image-opts "$IMG" -O raw out.qemu)
tv=(); tq=(); cv=(); cq=()
one() { # v|q
    sync
    local r
    if [ "$1" = v ]; then
        r=$(bench_time_cpu "${vcmd[@]}")
        tv+=("${r% *}"); cv+=("${r#* }")
    else
        r=$(bench_time_cpu "${qcmd[@]}")
        tq+=("${r% *}"); cq+=("${r#* }")
    fi
}
for i in $(seq 1 "$runs"); do
    rm -f out.vdisk out.qemu
    if [ $((i % 2)) -eq 1 ]; then one v; one q; else one q; one v; fi
    echo "   run $i: vdisk ${tv[-1]} s (cpu ${cv[-1]}), qemu-img ${tq[-1]} s (cpu ${cq[-1]})" >&2
done
mv_=$(bench_median "${tv[@]}")
mq=$(bench_median "${tq[@]}")
mcv=$(bench_median "${cv[@]}")
mcq=$(bench_median "${cq[@]}")
status=ok
cmp -s in.raw out.vdisk || { echo "   FAIL: vdisk output differs from the data" >&2; status=FAIL; }
cmp -s in.raw out.qemu || { echo "   FAIL: qemu-img output differs from the data" >&2; status=FAIL; }
mib=$((bytes >> 20))
tput() { /usr/bin/python3 -c "print('%.0f' % ($mib / max($1, 1e-9)))"; }
printf "   %-22s vdisk %7ss (%s MiB/s)  qemu-img %7ss (%s MiB/s)  ratio %s  (cpu: vdisk %ss, qemu-img %ss, ratio %s) %s\n" \
    "$name" "$mv_" "$(tput "$mv_")" "$mq" "$(tput "$mq")" "$(bench_ratio "$mv_" "$mq")" \
    "$mcv" "$mcq" "$(bench_ratio "$mcv" "$mcq")" "$status" >&2
bench_result "$name ($size, warm, median of $runs)" "$mv_" "$mq" "$status"
bench_result "$name ($size, cpu time)" "$mcv" "$mcq" "$status"
[ "$status" = ok ]
