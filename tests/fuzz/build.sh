#!/bin/sh
# SPDX-License-Identifier: BSD-3-Clause
# Configure (once) and build only the libFuzzer targets in BUILD (default
# build-fuzz, relative to the source tree): clang, ASan + UBSan, static.
# Usage: tests/fuzz/build.sh [BUILD]
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-build-fuzz}
case "$build" in /*) ;; *) build="$src/$build" ;; esac

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$src" -Dfuzz=true -Db_sanitize=address,undefined \
        -Db_lundef=false -Ddefault_library=static >"$build.setup.log" 2>&1 || {
        cat "$build.setup.log" >&2
        exit 1
    }
    rm -f "$build.setup.log"
fi
# regenerate first: the target list may have grown since the last setup
ninja -C "$build" build.ninja >/dev/null
targets=$(ninja -C "$build" -t targets all | sed -n 's|^\(tests/fuzz/fuzz-[^:]*\): .*|\1|p')
if [ -z "$targets" ]; then
    echo "no fuzz targets in $build (configured without -Dfuzz=true?)" >&2
    exit 1
fi
# shellcheck disable=SC2086
ninja -C "$build" $targets
