#!/bin/bash
# SPDX-License-Identifier: BSD-3-Clause
# The per-request cost of the nvme driver's queue logic: 4 KiB random reads
# per second at queue depth 1 and 32 against the software NVMe controller of
# the unit tests (tests/unit/nvme-model.c), in one process.  The figure
# includes the model's own work (decoding the command, walking the PRP and
# copying 4 KiB) and the bounce-buffer copy of the driver; there is no
# reference tool (QEMU's nvme driver needs hardware), so no ratio.
# Usage: bench/nvme.sh [BUILD]   (env: N=200000 requests per depth)
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$src/build}" && pwd)
bin="$build/tests/unit-nvme-queue"
[ -x "$bin" ] || { echo "missing $bin (build first)" >&2; exit 1; }
"$bin" bench "${N:-200000}"
