PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-slow bench clean cpp-app cpp-app-asan cpp-app-dist device-check

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

# Every CPU bundle on emulated CPUs (QEMU user-mode): docs/DEVICES.md.
device-check:
	$(BIN)/python tools/devices/check.py

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache build
