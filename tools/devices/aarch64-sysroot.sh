#!/usr/bin/env bash
# An aarch64 device to emulate, without root tricks: Debian arm64 packages unpacked into a folder
# (python3.11 and the C/C++ libraries the runtimes and the C++ app load, plus the -dev packages the
# cross-build of examples/cpp links against), the project's runtime wheels for aarch64 beside it, and
# an ARM /proc/cpuinfo that qemu-user serves in place of the x86 host's (ONNX Runtime's cpuinfo
# crashes at import on the host's). Used by tools/devices/check.py and `make cpp-app-aarch64`.
#
#   tools/devices/aarch64-sysroot.sh [DIR]      # default build/aarch64; idempotent (a stamp per part)
#
# Needs: `dpkg --add-architecture arm64 && apt-get update` once (the README's apt line), network to
# Debian and PyPI, and python3 with pip on the host (only to download the wheels).
set -euo pipefail
cd "$(dirname "$0")/../.."
DIR=${1:-build/aarch64}
SYSROOT="$DIR/sysroot"
SITE="$DIR/site"
PY=${PY:-python3}
mkdir -p "$DIR"

# Runtime libraries (python and what onnxruntime / openvino / Pillow / the C++ app load) and, for the
# cross-build, the headers and link libraries of libjpeg, libpng, OpenSSL and zlib.
PKGS=(libc6 libstdc++6 libgcc-s1 libgomp1 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5 libuuid1
      libsqlite3-0 libncursesw6 libtinfo6 libreadline8 libdb5.3 libcrypt1 libnsl2 libtirpc3 libgssapi-krb5-2
      libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1
      python3.11-minimal libpython3.11-minimal libpython3.11-stdlib
      libjpeg62-turbo libpng16-16
      libc6-dev linux-libc-dev libcrypt-dev libnsl-dev libtirpc-dev
      libjpeg62-turbo-dev libpng-dev libssl-dev zlib1g-dev)

if [ ! -f "$SYSROOT/.debs-done" ]; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "aarch64-sysroot: dpkg has no arm64 architecture; run: dpkg --add-architecture arm64 && apt-get update" >&2
    exit 1
  fi
  rm -rf "$SYSROOT" "$DIR/debs"
  mkdir -p "$SYSROOT" "$DIR/debs"
  (cd "$DIR/debs" && apt-get download -q "${PKGS[@]/%/:arm64}" >/dev/null)
  for deb in "$DIR"/debs/*.deb; do dpkg -x "$deb" "$SYSROOT"; done
  # Debian's absolute symlinks (e.g. libjpeg.so -> /usr/lib/...) must point inside the sysroot for the cross linker.
  find "$SYSROOT" -type l -lname '/*' | while read -r link; do
    target=$(readlink "$link"); ln -sf "$(realpath -m --relative-to="$(dirname "$link")" "$SYSROOT$target")" "$link"
  done
  touch "$SYSROOT/.debs-done"
fi

if [ ! -f "$SITE/.wheels-done" ]; then
  rm -rf "$SITE"
  # The device runtime's imports only: no torch, onnx or nncf (tools/devices/check.py runs the torch-free runtime).
  "$PY" -m pip install -q --disable-pip-version-check --target "$SITE" --only-binary=:all: --python-version 3.11 \
    --implementation cp --platform manylinux_2_17_aarch64 --platform manylinux_2_28_aarch64 \
    --platform manylinux_2_31_aarch64 --platform manylinux_2_34_aarch64 --platform manylinux_2_35_aarch64 \
    --platform manylinux2014_aarch64 \
    "onnxruntime==$("$PY" -c 'import onnxruntime as o; print(o.__version__)' 2>/dev/null || echo 1.32.0)" \
    "openvino==$("$PY" -c 'import openvino as o; print(o.__version__.split("-")[0])' 2>/dev/null || echo 2026.4.1)" \
    numpy pillow pyyaml click jinja2
  touch "$SITE/.wheels-done"
fi
echo "$SYSROOT"
