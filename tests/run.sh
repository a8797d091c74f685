#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Runs every test: built unit tests (BUILD/tests/unit-*), and every
# executable script in tests/cli, tests/interop and tests/fuzz/smoke.sh.
# Each test runs in its own temporary directory; exit 0 = pass,
# 77 = skipped (with a reason on its last line), anything else = fail.
# Usage: tests/run.sh [BUILD] [PATTERN]
set -u
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-build}" && pwd)
pattern=${2:-}
jobs=${VDISK_TEST_JOBS:-3}
# per-test limit; sanitized builds run several times slower
if [ -n "${VDISK_SANITIZED:-}" ]; then
    timeout=${VDISK_TEST_TIMEOUT:-1800}
else
    timeout=${VDISK_TEST_TIMEOUT:-600}
fi
logdir=$(mktemp -d /tmp/vdisk-tests.XXXXXX)

tests=()
for t in "$build"/tests/unit-*; do
    [ -x "$t" ] && [ -f "$t" ] && tests+=("$t")
done
for t in "$src"/tests/cli/*.sh "$src"/tests/interop/*.sh "$src"/tests/interop/*.py "$src"/tests/fuzz/smoke.sh; do
    [ -f "$t" ] && tests+=("$t")
done
if [ -n "$pattern" ]; then
    sel=()
    for t in "${tests[@]}"; do case "$t" in *$pattern*) sel+=("$t") ;; esac; done
    tests=("${sel[@]}")
fi

run_one() {
    t=$1
    name=$(echo "${t#$src/}" | sed "s|^$build/||; s|/|_|g")
    dir=$(mktemp -d /tmp/vdisk-t.XXXXXX)
    start=$(date +%s)
    case "$t" in
        *.py) cmd=(/usr/bin/python3 "$t") ;;
        *.sh) cmd=(bash "$t") ;;
        *) cmd=("$t") ;;
    esac
    # the fuzz smoke test first builds a second, clang-instrumented tree
    limit=$timeout
    case "$t" in *fuzz/smoke.sh) limit=$(( timeout * 5 / 2 )) ;; esac
    (cd "$dir" && VDISK_SRC="$src" VDISK_BUILD="$build" VDISK="$build/tools/vdisk/vdisk" \
        VDISK_IO="$build/tools/vdisk-io/vdisk-io" VDISK_NBD="$build/tools/vdisk-nbd/vdisk-nbd" \
        timeout -k 10 "$limit" "${cmd[@]}" </dev/null >"$logdir/$name.log" 2>&1)
    rc=$?
    secs=$(( $(date +%s) - start ))
    case $rc in
        0) echo "PASS $name (${secs}s)"; rm -rf "$dir" ;;
        77) echo "SKIP $name: $(tail -n 1 "$logdir/$name.log")"; rm -rf "$dir" ;;
        *) echo "FAIL $name (exit $rc, ${secs}s) -- log: $logdir/$name.log"
           tail -n 30 "$logdir/$name.log" | sed 's/^/    | /'
           rm -rf "$dir" ;;
    esac
}
export -f run_one
export src build logdir timeout

printf '%s\n' "${tests[@]}" | xargs -d '\n' -P "$jobs" -I{} bash -c 'run_one "$1"' _ {} | tee "$logdir/summary"
pass=$(grep -c '^PASS' "$logdir/summary")
fail=$(grep -c '^FAIL' "$logdir/summary")
skip=$(grep -c '^SKIP' "$logdir/summary")
echo
grep '^FAIL' "$logdir/summary" | sed 's/ --.*//'
if [ "$skip" -gt 0 ]; then
    echo "$pass passed, $fail failed, $skip skipped"
else
    echo "$pass passed, $fail failed"
fi
[ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
