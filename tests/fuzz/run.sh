#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Run every built libFuzzer target (BUILD/tests/fuzz/fuzz-*) for SECONDS
# each.  The working corpus of target NAME lives in
# ${VDISK_FUZZ_CORPUS:-/tmp/vdisk-fuzz-corpus}/NAME (kept between runs) and
# starts from the seeds in tests/fuzz/corpus/NAME/.  Crash inputs go to
# ${VDISK_FUZZ_ARTIFACTS:-/tmp/vdisk-fuzz-artifacts}.  Fails when any target
# crashes, leaks, times out on an input or goes over 256 MiB.
# With VDISK_FUZZ_RUNS=N each target instead runs N executions (SECONDS is
# then only the upper bound of its time); `make fuzz-scale` runs 10^6.
# VDISK_FUZZ_ONLY="qcow2 qed" limits the run to those targets.
# Usage: tests/fuzz/run.sh BUILD SECONDS
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:?usage: run.sh BUILD SECONDS}
secs=${2:?usage: run.sh BUILD SECONDS}
corpus_root=${VDISK_FUZZ_CORPUS:-/tmp/vdisk-fuzz-corpus}
artifacts=${VDISK_FUZZ_ARTIFACTS:-/tmp/vdisk-fuzz-artifacts}
mkdir -p "$artifacts" || exit 1

# -rss_limit_mb=512: with librados/libgfapi linked, their C++ static
# initialisers and mappings alone hold ~130 MiB of RSS before any input.
# UBSan must stop at the first report for libFuzzer to see it; a small
# quarantine keeps ASan's own memory within -rss_limit_mb (appended, so it
# also holds when the caller, e.g. make check-asan, sets ASAN_OPTIONS).
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=1:quarantine_size_mb=32:allocator_may_return_null=1"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"

pass=0
failed=0
for bin in "$build"/tests/fuzz/fuzz-*; do
    [ -f "$bin" ] && [ -x "$bin" ] || continue
    name=${bin##*/fuzz-}
    if [ -n "${VDISK_FUZZ_ONLY:-}" ]; then
        case " $VDISK_FUZZ_ONLY " in *" $name "*) ;; *) continue ;; esac
    fi
    work="$corpus_root/$name"
    mkdir -p "$work" || exit 1
    seeds="$src/tests/fuzz/corpus/$name"
    [ -d "$seeds" ] || seeds=
    log=$(mktemp "/tmp/vdisk-fuzz-$name.XXXXXX")
    # shellcheck disable=SC2086
    "$bin" -max_total_time="$secs" ${VDISK_FUZZ_RUNS:+-runs=$VDISK_FUZZ_RUNS} -rss_limit_mb=512 -timeout=25 -print_final_stats=1 \
        -artifact_prefix="$artifacts/$name-" "$work" ${seeds:+"$seeds"} >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    took=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log" | tail -n 1)
    if [ $rc -eq 0 ]; then
        echo "PASS fuzz-$name (${runs:-?} runs in ${took:-$secs}s)"
        pass=$((pass + 1))
        rm -f "$log"
    else
        echo "FAIL fuzz-$name (exit $rc) -- log: $log"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|artifact_prefix|Test unit written)' \
            "$log" | head -n 20 | sed 's/^/    | /'
        failed=$((failed + 1))
    fi
done
if [ $((pass + failed)) -eq 0 ]; then
    echo "no fuzz targets in $build/tests/fuzz (run tests/fuzz/build.sh first)" >&2
    exit 1
fi
echo "$pass passed, $failed failed"
[ $failed -eq 0 ]
