PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-slow test-cluster bench fuzz clean cpp-app cpp-app-asan cpp-app-dist cpp-app-aarch64 cpp-app-aarch64-dist device-check bench-fleet \
	soak-short reliability

# One command sets everything up: a virtual environment with the CPU build of torch
# (pinned in pyproject.toml) and the package in editable mode with its test extras.
install:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	@# The emulated ARM device (tests/test_devices.py, tools/devices/check.py), where its system packages are installed.
	@if command -v qemu-aarch64-static >/dev/null && dpkg --print-foreign-architectures 2>/dev/null | grep -qx arm64; then \
		PY=$(BIN)/python bash tools/devices/aarch64-sysroot.sh >/dev/null; \
	else echo "make install: no qemu-user-static or arm64 dpkg architecture: the emulated ARM device tests will be skipped (README: Set up)"; fi

test:
	$(BIN)/python -m pytest -q

test-slow:
	$(BIN)/python -m pytest -q -m slow

# The fleet on a local multi-node Ray cluster (tests/test_fleet_cluster.py): the cluster extra, then the tests in
# a loopback-only network namespace (tools/loopback.sh; root or user namespaces). COATNET_REQUIRE_CLUSTER=1
# turns "not possible here" skips into failures (CI sets it).
test-cluster:
	$(BIN)/pip install -q -e '.[cluster]'
	tools/loopback.sh $(BIN)/python -m pytest -q -m cluster tests/test_fleet_cluster.py

bench-fleet:
	tools/loopback.sh $(BIN)/python benchmarks/bench_fleet.py

bench:
	$(BIN)/python benchmarks/bench_export.py
	$(BIN)/python benchmarks/bench_engines.py

# The C++ device app (examples/cpp) on the OpenVINO C++ SDK inside the venv's openvino wheel;
# CMake asks the venv's python where that wheel is. Incremental: the build folders are kept.
CPP_JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CPP_CONFIGURE = cmake -S examples/cpp -DCOATNET_PYTHON=$(abspath $(BIN)/python)

cpp-app:
	@test -f build/cpp/CMakeCache.txt || $(CPP_CONFIGURE) -B build/cpp -DCMAKE_BUILD_TYPE=Release
	cmake --build build/cpp --parallel $(CPP_JOBS)

# The same app with AddressSanitizer + UndefinedBehaviorSanitizer (tests run both builds).
cpp-app-asan:
	@test -f build/cpp-asan/CMakeCache.txt || $(CPP_CONFIGURE) -B build/cpp-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOATNET_SANITIZE=ON
	cmake --build build/cpp-asan --parallel $(CPP_JOBS)

# A folder to copy to a device: the binary and the OpenVINO libraries it loads (examples/README.md).
cpp-app-dist: cpp-app
	rm -rf build/cpp-dist
	cmake --install build/cpp --prefix build/cpp-dist

# The same app cross-compiled for 64-bit ARM Linux (Raspberry Pi 4/5, Jetson Orin; examples/cpp/README.md
# "Cross-building for aarch64"): Debian's aarch64-linux-gnu-g++ against the arm64 sysroot and the aarch64
# openvino wheel that tools/devices/aarch64-sysroot.sh lays out in build/aarch64 (idempotent: a stamp per
# part; the venv's python only downloads the wheels, at the venv's versions). Run it on this machine with
# tools/devices/cpp_aarch64.py (QEMU user-mode); copy build/cpp-aarch64-dist to the device.
AARCH64_ROOT ?= build/aarch64
AARCH64_PY = $(if $(wildcard $(BIN)/python),$(abspath $(BIN)/python),python3)

cpp-app-aarch64:
	PY=$(AARCH64_PY) tools/devices/aarch64-sysroot.sh $(AARCH64_ROOT) >/dev/null
	@test -f build/cpp-aarch64/CMakeCache.txt || cmake -S examples/cpp -B build/cpp-aarch64 -DCMAKE_BUILD_TYPE=Release \
		-DCMAKE_TOOLCHAIN_FILE=$(abspath examples/cpp/cmake/aarch64-linux-gnu.cmake) -DCOATNET_AARCH64_ROOT=$(abspath $(AARCH64_ROOT))
	cmake --build build/cpp-aarch64 --parallel $(CPP_JOBS)

cpp-app-aarch64-dist: cpp-app-aarch64
	rm -rf build/cpp-aarch64-dist
	cmake --install build/cpp-aarch64 --prefix build/cpp-aarch64-dist

# libFuzzer on the C++ app's own parsers (examples/cpp/fuzz; docs/RELIABILITY.md "Fuzzing"): clang builds the
# targets in build/fuzz, the regression inputs run once, then each target fuzzes FUZZ_SECONDS, FUZZ_JOBS at a
# time, on its committed seeds (the working corpus in build/fuzz/corpus grows from run to run). Exit 1 on a finding.
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= $(CPP_JOBS)

fuzz:
	python3 tools/fuzz/run.py --seconds $(FUZZ_SECONDS) --parallel $(FUZZ_JOBS)

# Every CPU bundle on emulated CPUs (QEMU user-mode), on a local fleet (the cluster extra): docs/DEVICES.md.
device-check:
	$(BIN)/pip install -q -e '.[cluster]'
	tools/loopback.sh $(BIN)/python tools/devices/check.py

# Under load and soak (docs/RELIABILITY.md): the tiny bundles are exported once into RELIABILITY_BUNDLES
# and reused. soak-short is CI's version (a few minutes); reliability is the full run that rewrites the doc.
RELIABILITY_BUNDLES ?= build/reliability-bundles
SHORT_BUNDLES = onnxruntime-fp32,openvino-int8

soak-short: cpp-app
	$(BIN)/python tools/reliability/load.py --images 200 --bundles $(SHORT_BUNDLES) --bundle-dir $(RELIABILITY_BUNDLES) --no-doc
	$(BIN)/python tools/reliability/soak.py --inferences 3000 --every 500 --warmup 1000 --bundles $(SHORT_BUNDLES) \
		--bundle-dir $(RELIABILITY_BUNDLES) --no-doc

reliability: cpp-app
	$(BIN)/python tools/reliability/load.py --bundle-dir $(RELIABILITY_BUNDLES)
	$(BIN)/python tools/reliability/soak.py --bundle-dir $(RELIABILITY_BUNDLES)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build
