# SPDX-License-Identifier: BSD-3-Clause
# Shared helpers for the benchmarks (source it; bash).
#   bench_init [BUILD]        sets VDISK (the vdisk binary), BENCH_SRC
#   bench_args RUNS SIZE "$@" parses [-r RUNS] [-s SIZE] [BUILD] (the
#                             defaults first), sets runs, size and
#                             bench_build, then calls bench_init
#   bench_time CMD...         runs CMD (also a shell function), prints its
#                             wall time in seconds
#   bench_time_cpu CMD...     runs CMD (a program), prints "WALL CPU"
#                             seconds (CPU = user + system)
#   bench_median N...         median of the numbers
#   bench_ratio A B           A/B with two decimals ("-" when B is 0)
#   bench_result NAME VDISK_S QEMU_S [NOTE]
#                             prints the "RESULT|..." line bench/run.sh collects
#   bench_sparse_raw FILE SIZE SEED [DATA_PERCENT] [small]
#                             a sparse raw image with scattered seeded data:
#                             extents of random bytes, some with short zero
#                             runs inside, some written zeroes (allocated
#                             but zero), holes everywhere else; "small"
#                             makes extents of 512 bytes to 128 KiB (tests)

bench_init() {
    BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
    local build=${1:-${VDISK_BUILD:-$BENCH_SRC/build}}
    build=$(cd "$build" && pwd)
    VDISK=${VDISK:-$build/tools/vdisk/vdisk}
    [ -x "$VDISK" ] || { echo "missing $VDISK (build first)" >&2; exit 1; }
    command -v qemu-img >/dev/null || { echo "missing qemu-img (scripts/deps.sh test)" >&2; exit 1; }
    export VDISK BENCH_SRC
}

bench_args() {
    runs=$1 size=$2
    shift 2
    local o OPTIND=1
    while getopts "r:s:" o; do
        case $o in
            r) runs=$OPTARG ;;
            s) size=$OPTARG ;;
            *) echo "usage: $0 [-r RUNS] [-s SIZE] [BUILD]" >&2; exit 2 ;;
        esac
    done
    shift $((OPTIND - 1))
    bench_build=${1:-}
    bench_init "$bench_build"
}

bench_time() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    /usr/bin/python3 -c "import sys; print('%.3f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$t0" "$t1"
}

bench_time_cpu() {
    # "WALL CPU" seconds, CPU = user + system of the command and its
    # children; 1 ms resolution (/usr/bin/time's 10 ms was a tenth of a
    # quiet machine's sparse 2 GiB convert)
    /usr/bin/python3 - "$@" <<'EOF'
import resource, subprocess, sys, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime
c0, t0 = cpu(), time.perf_counter()
subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
t1, c1 = time.perf_counter(), cpu()
print("%.3f %.3f" % (t1 - t0, c1 - c0))
EOF
}

bench_median() {
    /usr/bin/python3 -c "import sys, statistics; print('%.3f' % statistics.median(map(float, sys.argv[1:])))" "$@"
}

bench_ratio() {
    /usr/bin/python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print('%.2f' % (a / b) if b else '-')" "$1" "$2"
}

# bench_result NAME VDISK REFERENCE [STATUS [TARGET]]: a RESULT line; the
# row meets TARGET when VDISK / REFERENCE <= TARGET.
bench_result() {
    echo "RESULT|$1|$2|$3|$(bench_ratio "$2" "$3")|${4:-}|${5:--}"
}

bench_sparse_raw() {
    /usr/bin/python3 - "$1" "$2" "$3" "${4:-25}" "${5:-}" <<'EOF'
import os, random, sys
path, size, seed, pct = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
lens = [4096, 65536, 262144, 1 << 20, 3 << 20]
if sys.argv[5] == 'small':
    lens = [512, 4096, 8192, 65536, 131072]
units = {'k': 1 << 10, 'K': 1 << 10, 'M': 1 << 20, 'G': 1 << 30}
size = int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)
r = random.Random(seed)
target = int(size * pct / 100)
written = 0
with open(path, 'wb') as f:
    f.truncate(size)
    while written < target:
        ln = r.choice(lens) + r.randrange(0, 8) * 512
        off = r.randrange(0, size - ln) // 512 * 512
        kind = r.random()
        if kind < 0.1:
            data = bytes(ln)                      # allocated zeroes
        else:
            data = bytearray(r.randbytes(ln))
            if kind < 0.4:                        # short zero runs inside
                for _ in range(4):
                    z = r.choice([512, 2048, 4096, 8192])
                    if z >= ln:
                        continue
                    p = r.randrange(0, ln - z)
                    data[p:p + z] = bytes(z)
        f.seek(off)
        f.write(data)
        written += ln
EOF
}

# bench_fmt_to_raw FMT SIZE RUNS: times `convert -f FMT -O raw` of a SIZE
# image with scattered data (made by qemu-img) with vdisk and qemu-img,
# alternating which goes first, page cache warm; checks both outputs are
# identical and prints the bench_result line.  Returns 1 when they differ.
bench_fmt_to_raw() {
    local fmt=$1 size=$2 runs=$3 work i mv_ mq res=ok rc=0
    work=$(mktemp -d "/tmp/vdisk-bench-$fmt.XXXXXX")
    (
        trap 'rm -rf "$work"' EXIT
        cd "$work" || exit 1
        echo "== $fmt -> raw: preparing a $size $fmt image with scattered data in $work" >&2
        bench_sparse_raw in.raw "$size" 42 25
        qemu-img convert -f raw -O "$fmt" in.raw "in.$fmt"
        rm -f in.raw
        cat "in.$fmt" >/dev/null
        run_vdisk() { "$VDISK" convert -f "$fmt" -O raw "in.$fmt" out.vdisk; }
        run_qemu() { qemu-img convert -f "$fmt" -O raw "in.$fmt" out.qemu; }
        local tv=() tq=()
        for i in $(seq 1 "$runs"); do
            rm -f out.vdisk out.qemu
            sync
            if [ $((i % 2)) -eq 1 ]; then
                tv+=("$(bench_time run_vdisk)")
                tq+=("$(bench_time run_qemu)")
            else
                tq+=("$(bench_time run_qemu)")
                tv+=("$(bench_time run_vdisk)")
            fi
            echo "   run $i: vdisk ${tv[-1]} s, qemu-img ${tq[-1]} s" >&2
        done
        mv_=$(bench_median "${tv[@]}")
        mq=$(bench_median "${tq[@]}")
        cmp -s out.qemu out.vdisk || { echo "   FAIL: raw outputs differ" >&2; res=FAIL; rc=1; }
        printf "   %-28s vdisk %7ss  qemu-img %7ss  ratio %s %s\n" "convert-$fmt-to-raw" \
            "$mv_" "$mq" "$(bench_ratio "$mv_" "$mq")" "$res" >&2
        bench_result "convert $fmt->raw ($size, warm cache, median of $runs)" "$mv_" "$mq" "$res"
        exit $rc
    )
}
