#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# `vdisk convert` against `qemu-img convert` over iSCSI, side by side in one
# run, on the same LUN of a private tgtd (127.0.0.1, unusual port): out of
# the LUN into a local raw file, and from a local raw file into the LUN
# (-n).  The LUN's backing file is a sparse raw image with scattered seeded
# data, read once before timing so tgtd serves it from the page cache.
# Runs alternate (vdisk first on odd runs); prints the medians and the
# ratio vdisk/qemu-img, and checks that the outputs equal the source.
#
# Usage: bench/iscsi.sh [-r RUNS] [-s SIZE] [BUILD]   (defaults: 3 runs, 1G)
set -eu
. "$(dirname "$0")/lib.sh"

bench_args 3 1G "$@"
"$VDISK" --help | grep -qw iscsi || { echo "vdisk was built without libiscsi: skipped" >&2; exit 0; }

work=$(mktemp -d /tmp/vdisk-bench-iscsi.XXXXXX)
cd "$work"
# tests/lib.sh's poll_for (iscsi-common.bash waits with it); our own
# fail and skip below replace its
# shellcheck source=../tests/lib.sh
. "$BENCH_SRC/tests/lib.sh"
fail() { echo "   FAIL: $*" >&2; exit 1; }
skip() { echo "   skipped: $*" >&2; exit 0; }
# shellcheck source=../tests/interop/iscsi-common.bash
. "$BENCH_SRC/tests/interop/iscsi-common.bash"
trap 'iscsi_cleanup; rm -rf "$work"' EXIT
start_tgtd

echo "== iscsi: preparing a $size sparse raw image with scattered data in $work" >&2
bench_sparse_raw src.raw "$size" 42 25
cp --sparse=always src.raw lun.img
cat src.raw lun.img >/dev/null # warm the page cache
add_target 1 iqn.2026-11.bench:lun lun.img
U=$(iscsi_url iqn.2026-11.bench:lun)

declare -A t
for dir in from to; do
    tv=(); tq=()
    for i in $(seq 1 "$runs"); do
        for who in $([ $((i % 2)) -eq 1 ] && echo "v q" || echo "q v"); do
            rm -f out.raw
            sync
            if [ "$dir" = from ]; then
                src=$U; dst=out.raw; n=
            else
                src=src.raw; dst=$U; n=-n
            fi
            if [ "$who" = v ]; then
                # shellcheck disable=SC2086
                tv+=("$(bench_time "$VDISK" convert $n -f raw -O raw "$src" "$dst")")
            else
                # shellcheck disable=SC2086
                tq+=("$(bench_time qemu-img convert $n -f raw -O raw "$src" "$dst")")
            fi
            if [ "$dir" = from ]; then
                cmp -s src.raw out.raw || fail "$who: the copy out of the LUN differs"
            fi
        done
        echo "   $dir LUN run $i: vdisk ${tv[-1]} s, qemu-img ${tq[-1]} s" >&2
    done
    t[$dir-v]=$(bench_median "${tv[@]}")
    t[$dir-q]=$(bench_median "${tq[@]}")
done
cmp -s src.raw lun.img || fail "the LUN differs from the source after the copies in"

for dir in from to; do
    name="iscsi convert $([ $dir = from ] && echo "LUN -> raw" || echo "raw -> LUN")"
    printf "   %-28s vdisk %7ss  qemu-img %7ss  ratio %s\n" "$name" "${t[$dir-v]}" "${t[$dir-q]}" \
        "$(bench_ratio "${t[$dir-v]}" "${t[$dir-q]}")" >&2
    bench_result "$name ($size, median of $runs)" "${t[$dir-v]}" "${t[$dir-q]}" ok
done
