#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# Runs every benchmark (`make bench`) and prints a summary table.
#   convert.sh (raw -> raw; the qcow2 configurations are run by
#   qcow2-convert.sh), then every other bench/*.sh (except lib.sh and this
#   file), once, each with BUILD
# Each benchmark prints "RESULT|name|vdisk|reference|ratio|status" lines
# (bench/lib.sh bench_result); a benchmark without them contributes its
# last lines to the summary instead.
# Usage: bench/run.sh [BUILD]        (env: RUNS=5 convert runs per tool)
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -u -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd) || exit 1
runs=${RUNS:-5}
log=$(mktemp -d /tmp/vdisk-bench.XXXXXX)
failed=0

run() { # LOGNAME SCRIPT ARGS...
    local name=$1; shift
    echo "== $name" >&2
    if ! bash "$@" 2>&1 | tee "$log/$name.log" >&2; then
        failed=$((failed + 1))
        echo "   ($name FAILED)" >&2
    fi
}

run convert-raw "$here/convert.sh" -r "$runs" "$build"
for b in "$here"/*.sh; do
    case $(basename "$b") in lib.sh | run.sh | convert.sh) continue ;; esac
    run "$(basename "$b" .sh)" "$b" "$build"
done

echo
echo "Summary (times in seconds; ratio = vdisk / reference, below 1 is faster)"
printf '%-58s %9s %9s %7s  %s\n' benchmark vdisk reference ratio status
for f in "$log"/*.log; do
    if grep -q '^RESULT|' "$f"; then
        grep '^RESULT|' "$f" | while IFS='|' read -r _ name v q r st; do
            printf '%-58s %9s %9s %7s  %s\n' "$name" "$v" "$q" "$r" "$st"
        done
    else
        echo "$(basename "$f" .log):"
        tail -n 4 "$f" | sed 's/^/    /'
    fi
done
echo "(logs in $log)"
[ "$failed" -eq 0 ]
