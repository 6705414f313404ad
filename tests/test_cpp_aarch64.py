"""The C++ device app cross-compiled for aarch64 (`make cpp-app-aarch64`: Debian's aarch64-linux-gnu-g++,
the arm64 sysroot and the aarch64 openvino wheel of tools/devices/aarch64-sysroot.sh) and run on an
emulated Cortex-A72 (Raspberry Pi 4) under QEMU user-mode (tools/devices/cpp_aarch64.py), against the
x86-64 build (`make cpp-app`) on this machine: the same bundles, photos and commands.

What must be equal, and why:
- preprocessing (`preprocess`, `classify --dump-tensor`), bit for bit: integer resampling, then float32
  `x / 255` and `(x - mean) / std` with -ffp-contract=off on both builds (the aarch64 compiler would
  otherwise fuse them into FMAs), and arm64 libjpeg-turbo's NEON decoder is exact to its C code as the
  x86 SIMD one is (the default integer IDCT and fancy upsampling);
- fp32 outputs to float32 rounding: OpenVINO's ARM CPU plugin (ACL / oneDNN aarch64 kernels) sums in a
  different order from the x86 plugin's AVX kernels, so log-probabilities (the logits less one constant
  per image) differ by ~5e-7 (measured on the tiny model): the bound is 1e-5;
- INT8: each build passes the bundle's own gates against the PyTorch reference; their INT8 arithmetic
  differs (x86: VNNI / AMX kernels; the A72 has no dot-product instructions), so only top-1 must agree.

Skipped, with the reason, where qemu-aarch64-static, aarch64-linux-gnu-g++ or the sysroot (with the
openvino wheel) is missing. The aarch64 build takes ~40-65 s from scratch on 2 cores (incremental after);
the runs here take ~1 min under QEMU (about 10-20x slower than native).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle_helpers import LABELS, REPO, export_tiny, openvino_bundle_from

sys.path.insert(0, str(REPO / "tools" / "devices"))
import cpp_aarch64  # noqa: E402

CALIBRATION = sorted((REPO / "calibration").glob("*.jpg"))
CPU = "cortex-a72"
EM_AARCH64 = 183  # ELF e_machine

_lacking = cpp_aarch64.missing(app=None)
pytestmark = pytest.mark.skipif(bool(_lacking), reason="aarch64 cross-build: " + "; ".join(_lacking))


# ----------------------------------------------------------------------------- the two builds


def _make(target: str) -> None:
    # VENV: the native build asks this interpreter's environment for the openvino wheel; the aarch64
    # build's sysroot script downloads the aarch64 wheels at its versions (a no-op once done).
    proc = subprocess.run(["make", target, f"VENV={sys.prefix}"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"`make {target}` failed (examples/cpp/README.md, 'Cross-building for aarch64'):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")


@pytest.fixture(scope="session")
def arm_app() -> Path:
    _make("cpp-app-aarch64")
    assert cpp_aarch64.built(), cpp_aarch64.missing()
    return cpp_aarch64.APP


@pytest.fixture(scope="session")
def x86_app() -> Path:
    _make("cpp-app")
    return REPO / "build" / "cpp" / "coatnet-classify"


def arm(*args, app: Path = cpp_aarch64.APP) -> subprocess.CompletedProcess:
    return cpp_aarch64.run(list(args), cpu=CPU, timeout=600, app=app)


def x86(app: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(app), *map(str, args)], capture_output=True, text=True, timeout=300, errors="replace")


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


# ----------------------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def ov_fp32() -> Path:
    return openvino_bundle_from()  # shared with the other modules: read-only


@pytest.fixture(scope="module")
def ov_int8(tmp_path_factory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("aarch64-bundles") / "ov-int8", target="openvino", precision="int8")


@pytest.fixture(params=["fp32", "int8"])
def bundle(request) -> Path:
    return request.getfixturevalue(f"ov_{request.param}")


# ----------------------------------------------------------------------------- the binary


def test_the_build_is_an_aarch64_binary_that_finds_openvino_through_its_runpath(arm_app):
    header = arm_app.read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and header[4] == 2 and int.from_bytes(header[18:20], "little") == EM_AARCH64
    dyn = subprocess.run(["aarch64-linux-gnu-readelf", "-d", str(arm_app)], capture_output=True, text=True).stdout
    assert str(cpp_aarch64.OPENVINO_LIBS) in dyn and "$ORIGIN/lib" in dyn, dyn
    proc = ok(arm("--help", app=arm_app))
    assert "selftest BUNDLE" in proc.stdout


# ----------------------------------------------------------------------------- selftest


def test_selftest_passes_on_the_emulated_cortex_a72(arm_app, x86_app, bundle):
    ours = json.loads(ok(arm("selftest", bundle, "--json", app=arm_app)).stdout)
    theirs = json.loads(ok(x86(x86_app, "selftest", bundle, "--json")).stdout)
    assert ours["status"] == theirs["status"] == "PASSED" and ours["parity"]["passed"], ours
    assert ours["runs"] == theirs["runs"]
    if json.loads((bundle / "manifest.json").read_text())["precision"] == "fp32":
        # Against the golden logits (PyTorch on x86): measured 3.6e-07 here, 2.4e-07 on the x86 build.
        assert ours["parity"]["all_samples"]["max_abs_err"] <= 1e-5, ours["parity"]
        assert ours["parity"]["all_samples"]["top1_agreement"] == 1.0


# ----------------------------------------------------------------------------- classify


def _probabilities(results: list[dict]) -> np.ndarray:
    """classify --json --topk <all classes> -> N x classes probabilities."""
    out = np.zeros((len(results), len(LABELS)))
    for i, r in enumerate(results):
        assert len(r["topk"]) == len(LABELS)
        for t in r["topk"]:
            assert t["label"] == LABELS[t["index"]]
            out[i, t["index"]] = t["prob"]
    return out


_classified: dict[str, tuple] = {}


def classified(precision: str, bundle: Path, arm_app: Path, x86_app: Path, tmp_path: Path) -> tuple:
    """classify on the 24 photos, all classes, with --dump-tensor, on both builds (once per bundle)."""
    if precision not in _classified:
        args = ("classify", bundle, *CALIBRATION, "--json", "--topk", len(LABELS), "--dump-tensor")
        ours = json.loads(ok(arm(*args, tmp_path / "arm.npy", app=arm_app)).stdout)
        theirs = json.loads(ok(x86(x86_app, *args, tmp_path / "x86.npy")).stdout)
        assert [r["image"] for r in ours] == [r["image"] for r in theirs] == [str(p) for p in CALIBRATION]
        _classified[precision] = (_probabilities(ours), _probabilities(theirs),
                                  np.load(tmp_path / "arm.npy"), np.load(tmp_path / "x86.npy"))
    return _classified[precision]


def test_fp32_classify_equals_the_x86_app_on_the_calibration_photos(arm_app, x86_app, ov_fp32, tmp_path):
    p_arm, p_x86, t_arm, t_x86 = classified("fp32", ov_fp32, arm_app, x86_app, tmp_path)
    # The inputs the engine got: bit for bit.
    assert t_arm.shape == (len(CALIBRATION), 3, 64, 64) and t_arm.dtype == np.float32
    assert t_arm.tobytes() == t_x86.tobytes(), float(np.abs(t_arm - t_x86).max())
    assert np.array_equal(p_arm.argmax(1), p_x86.argmax(1))
    # log p = logit - logsumexp(logits): the logits up to one constant per image. Measured: 4.8e-07.
    err = float(np.abs(np.log(p_arm) - np.log(p_x86)).max())
    assert err <= 1e-5, err
    assert float(np.abs(p_arm - p_x86).max()) <= 1e-6


def test_int8_classify_agrees_with_the_x86_app_on_top1(arm_app, x86_app, ov_int8, tmp_path):
    p_arm, p_x86, t_arm, t_x86 = classified("int8", ov_int8, arm_app, x86_app, tmp_path)
    assert t_arm.tobytes() == t_x86.tobytes()
    # Measured: probabilities differ by up to 0.009, the x86 top-1 margins are >= 0.088.
    assert np.array_equal(p_arm.argmax(1), p_x86.argmax(1)), (p_arm.argmax(1), p_x86.argmax(1))


# ----------------------------------------------------------------------------- preprocess


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Every decoder / conversion / resize path of the app (test_cpp_app's Pillow-made set) and the photos."""
    from test_cpp_app import make_pillow_images

    return make_pillow_images(tmp_path_factory.mktemp("aarch64-images")) + CALIBRATION


def _configs() -> dict[str, dict]:
    from test_cpp_app import CONFIGS, IMAGENET

    return {**CONFIGS, **{mode: dict(resize=70, crop=64, crop_mode=mode, **IMAGENET) for mode in ("squash", "border")}}


@pytest.mark.parametrize("config", list(_configs()))
def test_preprocess_dumps_equal_the_x86_app_bit_for_bit(arm_app, x86_app, images, config, tmp_path):
    cfg = tmp_path / "preprocess.json"
    cfg.write_text(json.dumps(_configs()[config]))
    dumps = {}
    for name, run in (("arm", lambda *a: arm(*a, app=arm_app)), ("x86", lambda *a: x86(x86_app, *a))):
        ok(run("preprocess", cfg, *images, "--dump-tensor", tmp_path / f"{name}-t.npy", "--dump-pixels", tmp_path / f"{name}-p.npy"))
        dumps[name] = (np.load(tmp_path / f"{name}-t.npy"), np.load(tmp_path / f"{name}-p.npy"))
    (t_arm, px_arm), (t_x86, px_x86) = dumps["arm"], dumps["x86"]
    assert px_arm.dtype == np.uint8 and t_arm.dtype == np.float32 and len(t_arm) == len(images)
    for i, path in enumerate(images):
        assert np.array_equal(px_arm[i], px_x86[i]), (path.name, int((px_arm[i] != px_x86[i]).sum()))
        assert t_arm[i].tobytes() == t_x86[i].tobytes(), (path.name, float(np.abs(t_arm[i] - t_x86[i]).max()))


# ----------------------------------------------------------------------------- on a device


def test_device_copy_runs_with_the_listed_libraries_only(arm_app, ov_fp32, tmp_path):
    """What `make cpp-app-aarch64-dist` lays out (binary + lib/) is enough: its RPATH is only $ORIGIN/lib."""
    proc = subprocess.run(["cmake", "--install", str(cpp_aarch64.BUILD), "--prefix", str(tmp_path / "device")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    libs = sorted(p.name.split(".so")[0] for p in (tmp_path / "device" / "lib").iterdir())
    assert libs == ["libhwloc", "libopenvino", "libopenvino_arm_cpu_plugin", "libopenvino_ir_frontend",
                    "libopenvino_onnx_frontend", "libtbb", "libtbbbind_2_5", "libtbbmalloc"], libs
    device = tmp_path / "device" / "coatnet-classify"
    dyn = subprocess.run(["aarch64-linux-gnu-readelf", "-d", str(device)], capture_output=True, text=True).stdout
    assert "$ORIGIN/lib" in dyn and str(cpp_aarch64.OPENVINO_LIBS) not in dyn, dyn
    assert json.loads(ok(arm("selftest", ov_fp32, "--json", app=device)).stdout)["status"] == "PASSED"
