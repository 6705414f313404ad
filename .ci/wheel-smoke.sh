#!/usr/bin/env bash
# The README's main job as a user who installed the wheel, not the checkout: build the sdist and the
# wheel (`python -m build`, isolated, as a packager would), install the wheel with no -e into a fresh
# venv outside the checkout, and from an empty directory export coatnet_tiny to OpenVINO fp32 and to
# ONNX Runtime INT8 on the defaults (the shipped calibration photos and a shipped config by name),
# then run parity, predict and inspect on the bundles. Every command must exit 0.
#
#   .ci/wheel-smoke.sh            # needs python3 >= 3.10 with venv; `make install` first for `build`
#
# torch==2.13.0 resolves to the CPU wheel on disk through the machine's pip configuration, as it
# does for `make install`. SMOKE_PYTHON picks the interpreter; SMOKE_KEEP=1 keeps the work folder.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
py=${SMOKE_PYTHON:-python3}
started=$SECONDS

# Each step is one check: it passed when the next one starts. The closing line counts them.
passed=0 current=""
step() {
    [[ -z "$current" ]] || passed=$((passed + 1))
    current=$*
    printf '\n== wheel-smoke [%ss] %s\n' "$((SECONDS - started))" "$current"
}
fail() { echo "wheel-smoke FAILED: $*" >&2; exit 1; }
on_exit() {
    local rc=$?
    [[ $rc == 0 ]] || echo "wheel-smoke: $passed passed, 1 failed (at: $current; exit $rc)" >&2
    if [[ "${SMOKE_KEEP:-0}" == 1 ]]; then echo "wheel-smoke: kept $work"; else rm -rf "$work"; fi
}
work=$(mktemp -d "${TMPDIR:-/tmp}/coatnet-wheel-smoke.XXXXXX")
trap on_exit EXIT
case "$work" in "$repo"/*) fail "work folder $work is inside the checkout: set TMPDIR elsewhere" ;; esac

step "build sdist + wheel"
# From a copy of the worktree as a fresh clone has it (plus uncommitted files): built in place,
# setuptools would also take whatever a leftover coatnet_deploy.egg-info/SOURCES.txt lists.
mkdir "$work/src"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | tar -C "$repo" --null -T - --ignore-failed-read -cf - | tar -C "$work/src" -xf -
builder="$repo/.venv/bin/python"
[[ -x "$builder" ]] || builder=$py
"$builder" -m build --outdir "$work/dist" "$work/src" >"$work/build.log" 2>&1 || { tail -n 30 "$work/build.log"; fail "python -m build"; }
wheels=("$work"/dist/coatnet_deploy-*.whl)
[[ ${#wheels[@]} == 1 && -f ${wheels[0]} ]] || fail "expected one wheel in $work/dist"
"$builder" -m twine check --strict "$work"/dist/* || fail "twine check"
ls -l "$work"/dist

step "fresh venv, pip install the wheel (no -e)"
"$py" -m venv "$work/venv"
bin="$work/venv/bin"
"$bin/python" -m pip install -q "${wheels[0]}" || fail "pip install ${wheels[0]}"

mkdir "$work/empty"
cd "$work/empty"
# The installed package must be what runs, never the checkout's folders.
site=$("$bin/python" -c 'import coatnet_deploy, pathlib; print(pathlib.Path(coatnet_deploy.__file__).parent)')
[[ "$site" == "$work/venv/"* ]] || fail "coatnet_deploy imported from $site, not from the fresh venv"

step "--version matches the installed metadata"
want=$("$bin/python" -c 'from importlib.metadata import version; print(version("coatnet-deploy"))')
got=$("$bin/coatnet-deploy" --version)
[[ "$got" == "coatnet-deploy, version $want" ]] || fail "--version says '$got', metadata says $want"
echo "$got"

step "targets (names the shipped configs)"
"$bin/coatnet-deploy" targets | tee "$work/targets.txt"
grep -q "in $site/_data/export_configs" "$work/targets.txt" || fail "targets does not name $site/_data/export_configs"

step "export fp32 (OpenVINO, the README's main job on coatnet_tiny)"
"$bin/coatnet-deploy" export --model coatnet_tiny --target openvino --precision fp32 --bench-iterations 5 --output fp32

step "export int8 (ONNX Runtime, --config onnxruntime-int8, default calibration)"
"$bin/coatnet-deploy" export --config onnxruntime-int8 --model coatnet_tiny --target onnxruntime --precision int8 \
    --bench-iterations 5 --output int8

step "the bundles used the shipped photos"
"$bin/python" - "$site" <<'EOF'
import json, pathlib, sys
shipped = pathlib.Path(sys.argv[1]) / "_data" / "calibration"
photos = [p for p in shipped.iterdir() if p.suffix == ".jpg"]
fp32, int8 = (json.load(open(f"{b}/manifest.json")) for b in ("fp32", "int8"))
source = int8["calibration"]["source"]
assert source == str(shipped), source
assert int8["calibration"]["samples"] == len(photos) >= 24, (int8["calibration"], len(photos))  # default 300: all
images = [n for n in fp32["golden"]["names"] if n.startswith("image:")]
assert len(images) == 8, fp32["golden"]["names"]
print(f"calibration {source} ({int8['calibration']['samples']} photos); golden inputs {len(images)} photos")
EOF

photo="$site/_data/calibration/grace_hopper.jpg"
for b in fp32 int8; do
    step "parity $b"
    "$bin/coatnet-deploy" parity "$b"
    step "predict $b"
    "$bin/coatnet-deploy" predict "$b" "$photo" --topk 3
    step "inspect $b"
    "$bin/coatnet-deploy" inspect "$b"
done

passed=$((passed + 1))
files=$("$bin/python" -c 'import sys, zipfile; print(len(zipfile.ZipFile(sys.argv[1]).namelist()))' "${wheels[0]}")
echo
echo "wheel-smoke: wheel $(($(stat -c %s "${wheels[0]}") / 1024)) KiB, $files files; $((SECONDS - started)) s"
echo "wheel-smoke: $passed passed, 0 failed"
