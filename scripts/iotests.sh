#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
#
# Runs QEMU's own qemu-iotests (from Debian's source package of the installed
# qemu-utils) twice: once with QEMU's qemu-img/qemu-io/qemu-nbd, once with
# vdisk's tools started under those names, and prints a table of the runs that
# pass per format, then the tests that pass with QEMU and fail with vdisk.
#
#   scripts/iotests.sh BUILD [FORMAT...] [-- TEST...]
#
# FORMAT is one of qcow2 raw qed vdi vpc qcow luks nbd bochs cloop dmg
# parallels vmdk vhdx (nbd = raw over the NBD protocol); the default is all of them.  Environment:
#   IOTESTS_JOBS      parallel tests (default 2), run under nice
#   IOTESTS_CACHE     where the unpacked QEMU source lives (default
#                     /var/cache/vdisk-iotests, or $XDG_CACHE_HOME/vdisk-iotests
#                     when /var/cache is not writable)
#   IOTESTS_TIMEOUT   seconds one test may run (default 600)
#   IOTESTS_RERUN_QEMU=1  run QEMU's side again instead of reusing its cached
#                     results (they only depend on the installed QEMU)
#   IOTESTS_ONLY=vdisk|qemu  run one side only
#   IOTESTS_RESUME=1  keep the vdisk results of an interrupted run
#   IOTESTS_REPORT=1  run nothing, print the table of what was measured
#
# Only tests that need no virtual machine are run: a test that starts the
# system emulator, the storage daemon or talks QMP is left out (the list of
# the ones run is in BUILD/iotests/tests.txt).  QEMU_PROG is a stub that only
# answers the harness's two questions (-machine help, -drive format=help).
set -u

BUILD=${1:?usage: iotests.sh BUILD [FORMAT...] [-- TEST...]}
shift
BUILD=$(cd "$BUILD" && pwd) || exit 1
ALL_FORMATS="qcow2 raw qed vdi vpc qcow luks nbd bochs cloop dmg parallels vmdk vhdx"
FORMATS=()
ONLY_TESTS=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then
        shift
        ONLY_TESTS=("$@")
        break
    fi
    FORMATS+=("$1")
    shift
done
if [ ${#FORMATS[@]} -eq 0 ]; then
    read -r -a FORMATS <<<"$ALL_FORMATS"
fi
for f in "${FORMATS[@]}"; do
    case " $ALL_FORMATS " in
        *" $f "*) ;;
        *) echo "iotests.sh: unknown format '$f' (one of: $ALL_FORMATS)" >&2; exit 2 ;;
    esac
done
JOBS=${IOTESTS_JOBS:-2}
TIMEOUT=${IOTESTS_TIMEOUT:-600}

for t in vdisk vdisk-io vdisk-nbd; do
    if [ ! -x "$BUILD/tools/$t/$t" ]; then
        echo "iotests.sh: $BUILD/tools/$t/$t missing: run make first" >&2
        exit 1
    fi
done
for t in qemu-img qemu-io qemu-nbd dpkg-source apt-get; do
    if ! command -v $t >/dev/null; then
        echo "iotests.sh: $t not installed (qemu-utils, dpkg-dev, apt)" >&2
        exit 1
    fi
done

# --- 1. QEMU's test suite matching the installed qemu-utils ----------------
if [ -n "${IOTESTS_CACHE:-}" ]; then
    CACHE=$IOTESTS_CACHE
elif mkdir -p /var/cache/vdisk-iotests 2>/dev/null && [ -w /var/cache/vdisk-iotests ]; then
    CACHE=/var/cache/vdisk-iotests
else
    CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/vdisk-iotests
fi
mkdir -p "$CACHE" || exit 1
# Debian's binNMU suffix (+bN) names a rebuild of the same source.
VERSION=$(dpkg-query -W -f '${Version}' qemu-utils | sed -e 's/+b[0-9]*$//')
SRC=$CACHE/qemu-$(echo "$VERSION" | tr ':' '_')
IOT=$SRC/tests/qemu-iotests

fetch_suite() {
    local apt=$CACHE/apt dl=$CACHE/download
    rm -rf "$apt" "$dl" "$SRC.tmp"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$dl"
    # A private apt configuration: the system's own sources stay untouched,
    # and only deb-src lines for the same mirrors are read.
    local key=/usr/share/keyrings/debian-archive-keyring.gpg
    {
        echo "deb-src [signed-by=$key] http://deb.debian.org/debian bookworm main"
        echo "deb-src [signed-by=$key] http://deb.debian.org/debian-security bookworm-security main"
    } >"$apt/sources.list"
    local opts=(-o "Dir::Etc::SourceList=$apt/sources.list"
                -o "Dir::Etc::SourceParts=/nonexistent"
                -o "Dir::State::Lists=$apt/lists"
                -o "Dir::Cache=$apt/cache")
    echo "iotests: fetching the source of qemu $VERSION into $CACHE" >&2
    apt-get -q "${opts[@]}" update >&2 || return 1
    (cd "$dl" && apt-get -q "${opts[@]}" source --download-only "qemu=$VERSION") >&2 || return 1
    (cd "$dl" && dpkg-source -x ./*.dsc "$SRC.tmp") >/dev/null || return 1
    mv "$SRC.tmp" "$SRC" && rm -rf "$dl"
}
if [ ! -x "$IOT/check" ]; then
    fetch_suite || { echo "iotests.sh: could not get QEMU $VERSION's test suite" >&2; exit 1; }
fi

# --- 2. Tools under QEMU's names, the emulator stub, the test list ---------
WORK=$BUILD/iotests
mkdir -p "$WORK"
mkbin() {   # DIR IMG IO NBD
    local d=$1
    rm -rf "$d"
    mkdir -p "$d"
    ln -s "$2" "$d/qemu-img"
    ln -s "$3" "$d/qemu-io"
    ln -s "$4" "$d/qemu-nbd"
    # The harness asks the system emulator for its default machine, its
    # block drivers and (Python tests) its devices; the tests selected
    # below never start it.
    local fmts
    fmts=$(/usr/bin/qemu-img --help | sed -n 's/^Supported formats://p')
    cat >"$d/qemu-system-stub" <<EOF
#!/bin/sh
case "\$*" in
    "-machine help") echo "Supported machines are:"; echo "pc-stub  Stub (default)" ;;
    *"format=help"*) echo "Supported formats:$fmts" ;;
    *"-device help"*) echo 'name "virtio-blk-pci", bus PCI' ;;
    *) echo "qemu-system-stub: the iotests runner starts no VM" >&2; exit 1 ;;
esac
EOF
    chmod +x "$d/qemu-system-stub"
    # Python tests start with "env python3": use the Debian interpreter.
    ln -s /usr/bin/python3 "$d/python3"
}
mkbin "$WORK/bin-qemu" /usr/bin/qemu-img /usr/bin/qemu-io /usr/bin/qemu-nbd
mkbin "$WORK/bin-vdisk" "$BUILD/tools/vdisk/vdisk" "$BUILD/tools/vdisk-io/vdisk-io" \
    "$BUILD/tools/vdisk-nbd/vdisk-nbd"

# check takes the source directory from its own symlink.
mkdir -p "$WORK/tree/tests/qemu-iotests"
ln -sfn "$IOT/check" "$WORK/tree/tests/qemu-iotests/check"

list_tests() {
    local f
    (cd "$IOT" && ls [0-9][0-9][0-9] tests/*) | grep -v -e '\.out' -e '\.py$' |
    while read -r f; do
        # 297 is QEMU's Python linter, not a block test.
        [ "$f" = 297 ] && continue
        if grep -qE '_launch_qemu|_run_qemu|run_qemu|\$QEMU( |$|")|\$\{QEMU\}|\$QEMU_PROG|iotests\.VM|\bVM\(|self\.vm|vm\.launch|\.qmp\(|QemuStorageDaemon|_launch_qsd|QSD_PROG|_send_qemu_cmd|qemu_comm_method' "$IOT/$f"; then
            continue
        fi
        # check names tests by their base name (tests/foo is "foo").
        echo "${f#tests/}"
    done
}
if [ ${#ONLY_TESTS[@]} -gt 0 ]; then
    printf '%s\n' "${ONLY_TESTS[@]}" >"$WORK/tests.txt"
else
    list_tests >"$WORK/tests.txt"
fi

# --- 3. Running ------------------------------------------------------------
# One test of one format with one tool set: RESULTS/SIDE/FMT/NAME holds
# pass, fail or notrun; the output and diff stay in its scratch directory.
run_one() {
    local side=$1 fmt=$2 test=$3
    local name=$test
    local res=$RESULTS/$side/$fmt/$name
    local dir=$WORK/scratch/$side/$fmt/$name
    rm -rf "$dir"
    mkdir -p "$dir" "$RESULTS/$side/$fmt"
    local sock
    sock=$(mktemp -d /tmp/vdio.XXXXXX)
    local args=("-$fmt")
    [ "$fmt" = nbd ] && args=(-raw -nbd)
    local bin=$WORK/bin-$side
    (
        cd "$dir" || exit 1
        PATH=$bin:$PATH TEST_DIR=$dir SOCK_DIR=$sock \
        QEMU_PROG=$bin/qemu-system-stub QEMU_IMG_PROG=$bin/qemu-img \
        QEMU_IO_PROG=$bin/qemu-io QEMU_NBD_PROG=$bin/qemu-nbd \
        QSD_PROG=$bin/qemu-system-stub \
        timeout -k 10 "$TIMEOUT" nice -n 10 /usr/bin/python3 \
            "$WORK/tree/tests/qemu-iotests/check" -tap --color off "${args[@]}" "$test" \
            >"$dir/tap" 2>&1
        echo $? >"$dir/rc"
    )
    rm -rf "$sock"
    if grep -q "^ok .*# SKIP" "$dir/tap"; then
        echo notrun >"$res"
    elif grep -q "^ok " "$dir/tap"; then
        echo pass >"$res"
    else
        echo fail >"$res"
    fi
}
export -f run_one
export WORK TIMEOUT

QEMU_RESULTS=$CACHE/results-$(echo "$VERSION" | tr ':' '_')
jobs_file=$WORK/jobs.txt
: >"$jobs_file"
# Test by test across the formats, so that an interrupted run still covers
# every format.
while read -r t; do
    for fmt in "${FORMATS[@]}"; do
        if [ "${IOTESTS_ONLY:-}" != vdisk ]; then
            if [ -n "${IOTESTS_RERUN_QEMU:-}" ] || [ ! -f "$QEMU_RESULTS/qemu/$fmt/$t" ]; then
                echo "qemu $fmt $t" >>"$jobs_file"
            fi
        fi
        if [ "${IOTESTS_ONLY:-}" != qemu ]; then
            # IOTESTS_RESUME=1 keeps vdisk results of an interrupted run.
            if [ -z "${IOTESTS_RESUME:-}" ] || [ ! -f "$WORK/results/vdisk/$fmt/$t" ]; then
                echo "vdisk $fmt $t" >>"$jobs_file"
            fi
        fi
    done
done <"$WORK/tests.txt"

# IOTESTS_REPORT=1: only print the table of the results already measured.
[ -n "${IOTESTS_REPORT:-}" ] && : >"$jobs_file"
echo "iotests: $(wc -l <"$jobs_file") runs, $JOBS at a time (QEMU $VERSION, suite in $IOT)" >&2
# QEMU's results go to the cache, vdisk's to the build directory.
grep '^qemu ' "$jobs_file" | RESULTS=$QEMU_RESULTS xargs -r -P "$JOBS" -L 1 \
    bash -c 'RESULTS=$RESULTS run_one "$@"' _ 
grep '^vdisk ' "$jobs_file" | RESULTS=$WORK/results xargs -r -P "$JOBS" -L 1 \
    bash -c 'RESULTS=$RESULTS run_one "$@"' _

# --- 4. Table --------------------------------------------------------------
mkdir -p "$WORK/results/qemu"
rm -rf "$WORK/results/qemu"
cp -r "$QEMU_RESULTS/qemu" "$WORK/results/qemu"
report=$WORK/report.md
# One line per measured run: SIDE FORMAT TEST RESULT (one awk, no process
# per result: the machine may be busy).
(cd "$WORK/results" && grep -r . qemu vdisk 2>/dev/null) |
    sed -e 's#^\([^/]*\)/\([^/]*\)/\([^:]*\):#\1 \2 \3 #' >"$WORK/results.txt"
awk -v formats="${FORMATS[*]}" '
    FILENAME == ARGV[1] { order[++nt] = $1; next }
    { r[$1, $2, $3] = $4 }
    END {
        nf = split(formats, fmts, " ")
        print "| format | tests run | pass with QEMU | pass with vdisk (of those) | rate |"
        print "|--------|----------:|---------------:|---------------------------:|-----:|"
        for (i = 1; i <= nf; i++) {
            f = fmts[i]; nrun = 0; nq = 0; nv = 0; list[f] = ""
            for (k = 1; k <= nt; k++) {
                t = order[k]
                q = r["qemu", f, t]; v = r["vdisk", f, t]
                if (q == "" || v == "") continue
                if (q == "notrun" && v == "notrun") continue
                nrun++
                if (q == "pass") {
                    nq++
                    if (v == "pass") nv++
                    else bad[f] = bad[f] " " t (v == "notrun" ? "(notrun)" : "")
                }
            }
            tq += nq; tv += nv
            printf "| %s | %d | %d | %d | %s |\n", f, nrun, nq, nv, nq ? int(nv * 100 / nq) " %" : "-"
        }
        printf "| all | | %d | %d | %s |\n\nPass with QEMU, fail with vdisk:\n\n", tq, tv, tq ? int(tv * 100 / tq) " %" : "-"
        for (i = 1; i <= nf; i++) {
            f = fmts[i]
            printf "- %s:%s\n", f, bad[f] == "" ? " none" : bad[f]
        }
    }' "$WORK/tests.txt" "$WORK/results.txt" >"$report"
cat "$report"
echo "(outputs and diffs: $WORK/scratch/vdisk/FORMAT/TEST/)" >&2
