#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# `make bench`: the issue 17 benchmarks side by side with QEMU's tools (and
# nbdkit, cp) in one run, then a summary table, written also as CSV.
#   convert-matrix.sh   convert raw/qcow2/chain, -c zlib/zstd, vs qemu-img
#                       and cp --sparse=always (median of RUNS, default 3)
#   nbd-read.sh         vdisk-nbd vs qemu-nbd and nbdkit (fio)
# With ALL=1 every other bench/*.sh runs too (protocol drivers; those skip
# or fail without their servers).
# Each benchmark prints "RESULT|name|vdisk|reference|ratio|status[|target]"
# lines (bench/lib.sh bench_result); a benchmark without them contributes
# its last lines to the summary instead.  A row meets its target when
# ratio <= target (times: lower is better; for rates the benchmark prints
# the ratio reference/vdisk so that the same rule holds).
# Output: the table on stdout, bench/results/latest.csv (committed when it
# is worth keeping; README links it) and bench/results/latest.txt, both
# with the date and the load average, since the machine is shared.
# bench/results/latest.png draws the ratios and targets (bench/plot.py,
# python3-matplotlib from `scripts/deps.sh bench`; skipped without it).
# Usage: bench/run.sh [BUILD]   (env: RUNS=3, SIZE=2G, DENSITIES="10 35",
#                                ALL=1, RESULTS=dir; LOGS=dir rebuilds
#                                the tables from that earlier run's logs)
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -u -o pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd) || exit 1
runs=${RUNS:-3}
size=${SIZE:-2G}
densities=${DENSITIES:-10 35}
results=${RESULTS:-$here/results}
failed=0
if [ -n "${LOGS:-}" ]; then
    # only rebuild the tables from an earlier run's logs
    log=$LOGS
    . "$log/meta" || exit 1
else
    log=$(mktemp -d /tmp/vdisk-bench.XXXXXX)
    load_start=$(cut -d' ' -f1-3 /proc/loadavg)
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    printf 'started=%q\nload_start=%q\n' "$started" "$load_start" >"$log/meta"
fi

run() { # LOGNAME SCRIPT ARGS...
    local name=$1; shift
    echo "== $name" >&2
    if ! bash "$@" 2>&1 | tee "$log/$name.log" >&2; then
        failed=$((failed + 1))
        echo "   ($name FAILED)" >&2
    fi
}

run_all() {
    run convert-matrix "$here/convert-matrix.sh" -r "$runs" -s "$size" -d "$densities" "$build"
    [ -f "$here/nbd-read.sh" ] && run nbd-read "$here/nbd-read.sh" "$build"
    if [ -n "${ALL:-}" ]; then
        for b in "$here"/*.sh; do
            case $(basename "$b") in lib.sh | run.sh | convert-matrix.sh | nbd-read.sh) continue ;; esac
            run "$(basename "$b" .sh)" "$b" "$build"
        done
    fi
    load_end=$(cut -d' ' -f1-3 /proc/loadavg)
    printf 'load_end=%q\n' "$load_end" >>"$log/meta"
}
[ -n "${LOGS:-}" ] || run_all

mkdir -p "$results"
csv=$results/latest.csv
txt=$results/latest.txt
{
    echo "# vdisk bench, $started, $(nproc) cores, load average at start $load_start, at end $load_end"
    echo "benchmark,vdisk,reference,ratio,target,meets_target,status"
    for f in "$log"/*.log; do
        grep '^RESULT|' "$f" | while IFS='|' read -r _ name v q r st tg; do
            meets=-
            if [ -n "${tg:-}" ] && [ "$tg" != - ] && [ "$r" != - ]; then
                meets=$(awk -v r="$r" -v t="$tg" 'BEGIN { print (r <= t) ? "yes" : "no" }')
            fi
            printf '"%s",%s,%s,%s,%s,%s,"%s"\n' "$name" "$v" "$q" "$r" "${tg:--}" "$meets" "$st"
        done
    done
} >"$csv"
{
    echo "vdisk bench $started ($(nproc) cores; load average $load_start at start, $load_end at end:"
    echo "the machine is shared, so single figures are noisy; ratios are of medians of $runs runs)"
    echo "ratio = vdisk / reference (times, sizes: below 1 is better)"
    printf '%-58s %11s %11s %7s %7s %5s  %s\n' benchmark vdisk reference ratio target meets status
    # the CSV module, not IFS=, : names hold commas ("..., cpu time")
    /usr/bin/python3 - "$csv" <<'EOF'
import csv, sys
with open(sys.argv[1]) as f:
    f.readline()
    for r in csv.DictReader(f):
        print('%-58s %11s %11s %7s %7s %5s  %s' % (r['benchmark'], r['vdisk'], r['reference'],
              r['ratio'], r['target'], r['meets_target'], r['status']))
EOF
    for f in "$log"/*.log; do
        grep -q '^RESULT|' "$f" && continue
        echo "$(basename "$f" .log) (no RESULT lines; its last lines):"
        tail -n 6 "$f" | sed 's/^/    /'
    done
} >"$txt"
png=$results/latest.png
if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
    /usr/bin/python3 "$here/plot.py" "$csv" "$png" || failed=$((failed + 1))
else
    png="no plot: python3-matplotlib is missing (scripts/deps.sh bench)"
fi
echo
cat "$txt"
echo "(CSV: $csv; plot: $png; logs in $log)"
[ "$failed" -eq 0 ]
