# SPDX-License-Identifier: BSD-3-Clause
# Thin wrapper around meson + ninja.  See README.md.
BUILD ?= build
PREFIX ?= /usr/local
MESON ?= meson
NINJA ?= ninja

.PHONY: all deps deps-test deps-bench demo check check-asan check-tsan check-replay check-nvme fuzz fuzz-scale fuzz-smoke bench iotests install clean format


all: deps $(BUILD)/build.ninja
	$(NINJA) -C $(BUILD)
	@for t in vdisk vdisk-io vdisk-nbd; do \
	    if [ -x $(BUILD)/tools/$$t/$$t ]; then ln -sf tools/$$t/$$t $(BUILD)/$$t; fi; done

deps:
	@sh scripts/deps.sh build

deps-test:
	@sh scripts/deps.sh test

deps-bench:
	@sh scripts/deps.sh bench

$(BUILD)/build.ninja:
	$(MESON) setup $(BUILD) --prefix=$(PREFIX)

demo: all
	@sh scripts/demo.sh

check: deps-test all
	@bash tests/run.sh $(BUILD)

check-asan: deps-test
	@test -f build-asan/build.ninja || $(MESON) setup build-asan -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
	$(NINJA) -C build-asan
	@VDISK_SANITIZED=1 ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 bash tests/run.sh build-asan

# ThreadSanitizer on the unit tests (the concurrency stress test among
# them); tests/tsan.supp lists suppressions, each with the reason.  setarch
# -R: TSan's fixed shadow layout does not fit every randomised mapping.
check-tsan: deps-test
	@test -f build-tsan/build.ninja || $(MESON) setup build-tsan -Db_sanitize=thread -Db_lundef=false -Dbuildtype=debug
	$(NINJA) -C build-tsan
	@VDISK_TEST_TIMEOUT=$${VDISK_TEST_TIMEOUT:-1800} TSAN_OPTIONS="halt_on_error=1:exitcode=66:suppressions=$(CURDIR)/tests/tsan.supp" \
	    setarch $$(uname -m) -R bash tests/run.sh build-tsan unit-
# The long crash-consistency and error-injection runs (docs/reliability.md).
check-replay: deps-test all
	@VDISK_TEST_TIMEOUT=14400 VDISK_REPLAY_STATES=200 VDISK_REPLAY_SEEDS="1 2 3" bash tests/run.sh $(BUILD) interop/replay
	@VDISK_TEST_TIMEOUT=14400 VDISK_MATRIX_FULL=1 bash tests/run.sh $(BUILD) blkdebug-matrix

# The NVMe driver through real VFIO in a TCG guest with an emulated NVMe
# controller and intel-iommu (docs/nvme.md); downloads Debian's kernel.
check-nvme: all
	@sh scripts/deps.sh nvme
	@bash scripts/check-nvme.sh $(BUILD)

# tests/fuzz/build.sh configures build-fuzz (clang, -Dfuzz=true, ASan + UBSan,
# static) once and builds only the fuzz targets.
fuzz: deps
	@sh tests/fuzz/build.sh build-fuzz
	@sh tests/fuzz/run.sh build-fuzz 300

# 10^6 executions per target (issue 10 item 4); hours on two cores
fuzz-scale: deps
	@sh tests/fuzz/build.sh build-fuzz
	@VDISK_FUZZ_RUNS=1000000 sh tests/fuzz/run.sh build-fuzz 14400

fuzz-smoke: deps
	@sh tests/fuzz/build.sh build-fuzz
	@sh tests/fuzz/run.sh build-fuzz 5

bench: deps-bench all
	@sh bench/run.sh

# QEMU's own qemu-iotests with QEMU's tools and with vdisk's (long; not in check).
# make iotests [FORMATS="qcow2 raw"] [TESTS="001 tests/qemu-img-bitmaps"]
iotests: deps-test all
	@bash scripts/iotests.sh $(BUILD) $(FORMATS) $(if $(TESTS),-- $(TESTS))

# INSTALL_QEMU_NAMES=1 also installs qemu-img, qemu-io and qemu-nbd as links
# to vdisk's tools, which then speak as QEMU's (messages, prompt).
install: all
	$(MESON) configure $(BUILD) --prefix=$(PREFIX)
	$(NINJA) -C $(BUILD) install
	@if [ "$(INSTALL_QEMU_NAMES)" = 1 ]; then \
	    bindir=$$($(MESON) introspect --buildoptions $(BUILD) | /usr/bin/python3 -c \
	        'import json,sys; o={x["name"]:x["value"] for x in json.load(sys.stdin)}; print(o["prefix"]+"/"+o["bindir"])'); \
	    for p in img:vdisk io:vdisk-io nbd:vdisk-nbd; do \
	        ln -sf $${p#*:} "$(DESTDIR)$$bindir/qemu-$${p%%:*}"; \
	        echo "Installing $(DESTDIR)$$bindir/qemu-$${p%%:*} -> $${p#*:}"; done; fi

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
