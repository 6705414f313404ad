"""TensorRT target: CUDA probe, per-version build plans, build_engine.sh, compat checks, and (on a GPU
with TensorRT) a real engine from a tiny ONNX.

The plan tests pin what each TensorRT version's API offers (sources cited in backends/tensorrt.py):
10.x builds strongly typed networks and must not set FP16/INT8 flags; 11.x has neither those flags
nor EXPLICIT_BATCH, and trtexec 11 has no --fp16/--int8/--best.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from coatnet_deploy.backends import cuda_probe
from coatnet_deploy.backends.tensorrt import (
    BuildSettings,
    TensorRTRunner,
    build_engine,
    build_plans,
    check_engine_compat,
    parse_batch_range,
    parse_trt_version,
    plan_build,
    unavailable_message,
    write_build_script,
)
from coatnet_deploy.errors import TargetUnavailable, UserError

PRECISION_FLAGS = {"FP16", "INT8", "BF16", "FP8"}
REMOVED_TRTEXEC_11 = {"--fp16", "--int8", "--best", "--bf16", "--fp8", "--int4", "--calib", "--stronglyTyped"}


def _settings(precision="fp32", **kw) -> BuildSettings:
    kw.setdefault("onnx_path", "model.onnx")
    kw.setdefault("engine_path", "model.engine")
    kw.setdefault("image_size", 64)
    kw.setdefault("timing_cache", "timing.cache")
    return BuildSettings.from_batch_string("1:4:8", precision=precision, **kw)


# -- CUDA probe ---------------------------------------------------------------------------------
def test_probe_without_driver_is_clean_and_never_imports_tensorrt():
    # A fresh interpreter, so nothing else in the test session can have imported tensorrt first.
    code = (
        "import json, sys\n"
        "from coatnet_deploy.backends.cuda_probe import probe_cuda, tensorrt_status\n"
        "p = probe_cuda(); ok, why = tensorrt_status()\n"
        "print(json.dumps({'probe': p.to_dict(), 'ok': ok, 'why': why, 'trt': 'tensorrt' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["trt"] is False
    if res["probe"]["ok"]:
        pytest.skip(f"this machine has a usable GPU: {res['probe']['reason']}")
    reason = res["probe"]["reason"]
    assert any(key in reason for key in ("libcuda.so.1 not found", "cuInit failed with CUDA_ERROR", "no CUDA device", "CUDA probe")), reason
    assert res["ok"] is False and res["why"].startswith("no usable NVIDIA GPU: ")
    assert res["probe"]["devices"] == [] and res["probe"]["device_count"] == 0


def test_probe_child_runs_standalone_and_prints_json():
    out = subprocess.run([sys.executable, cuda_probe.__file__], capture_output=True, text=True, timeout=60)
    data = json.loads(out.stdout)
    assert set(data) == {"ok", "reason", "driver_version", "device_count", "devices"}
    assert isinstance(data["ok"], bool) and data["reason"]


def test_probe_is_cached_per_process():
    cuda_probe.clear_cache()
    first = cuda_probe.probe_cuda()
    assert cuda_probe.probe_cuda() is first


@pytest.mark.parametrize(
    "rc, stdout, stderr, expect",
    [
        (-11, "", "", "crashed with signal 11"),
        (1, "", "Traceback ...\nOSError: boom", "exit 1): OSError: boom"),
        (0, "not json", "", "CUDA probe failed"),
    ],
)
def test_probe_child_failures_become_reasons(rc, stdout, stderr, expect):
    res = cuda_probe._parse_child(rc, stdout, stderr)
    assert res.ok is False and expect in res.reason


def test_probe_parses_a_gpu_answer():
    answer = {"ok": True, "reason": "Orin", "driver_version": "12.6", "device_count": 1,
              "devices": [{"name": "Orin", "compute_capability": "8.7", "total_memory": 1 << 34}]}
    res = cuda_probe._parse_child(0, json.dumps(answer), "")
    assert res.ok and res.gpu_name == "Orin" and res.compute_capability == "8.7"


# -- settings ------------------------------------------------------------------------------------
def test_batch_string_parses():
    s = _settings()
    assert (s.min_batch, s.opt_batch, s.max_batch) == (1, 4, 8)
    assert s.profile_shapes() == {"min": [1, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [8, 3, 64, 64]}


@pytest.mark.parametrize("bad", ["1:4", "1:4:8:9", "a:b:c", "1.5:2:3", "0:1:2", "8:4:1", "1:9:8", ""])
def test_bad_batch_string_is_a_user_error(bad):
    with pytest.raises(UserError, match="MIN:OPT:MAX|MIN <= OPT <= MAX|at least 1|whole numbers"):
        parse_batch_range(bad)
    with pytest.raises(UserError):
        BuildSettings.from_batch_string(bad, onnx_path="m.onnx", engine_path="m.engine")


@pytest.mark.parametrize("kw, match", [
    ({"precision": "int4"}, "unknown precision"),
    ({"hardware_compat": "turing+"}, "hardware_compat"),
    ({"opt_level": 6}, "opt_level"),
    ({"workspace_mb": 0}, "workspace_mb"),
])
def test_bad_settings_name_the_valid_choices(kw, match):
    with pytest.raises(UserError, match=match):
        BuildSettings(onnx_path="m.onnx", engine_path="m.engine", **kw)


@pytest.mark.parametrize("text, expect", [
    ("10.3.0", (10, 3, 0)), ("10.3.0.30", (10, 3, 0)), ("11.4.0", (11, 4, 0)), ("11", (11, 0, 0)),
    ("100300", (10, 3, 0)), ("8601", (8, 6, 1)), ("v101600", (10, 16, 0)),
])
def test_trt_version_parsing(text, expect):
    assert parse_trt_version(text) == expect


# -- plan_build -----------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_plan_10x_is_strongly_typed_without_precision_flags(precision):
    plan = plan_build(_settings(precision), "10.3.0")
    assert plan.network_flags == ["STRONGLY_TYPED"]  # EXPLICIT_BATCH is deprecated/ignored in 10.x
    assert not PRECISION_FLAGS & set(plan.builder_flags)  # strongly typed forbids them
    argv = plan.trtexec
    assert "--stronglyTyped" in argv
    assert not {"--fp16", "--int8", "--best"} & set(argv)
    assert "--minShapes=input:1x3x64x64" in argv and "--optShapes=input:4x3x64x64" in argv
    assert "--maxShapes=input:8x3x64x64" in argv
    assert "--memPoolSize=workspace:1024" in argv and "--builderOptimizationLevel=3" in argv
    assert "--timingCacheFile=timing.cache" in argv
    assert argv[1] == "--onnx=model.onnx" and argv[2] == "--saveEngine=model.engine"
    assert plan.memory_pool_limits == {"WORKSPACE": 1024 << 20}
    assert plan.config == {"builder_optimization_level": 3}


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_plan_11x_uses_no_removed_api(precision):
    plan = plan_build(_settings(precision), "11.4.0")
    assert plan.network_flags == []  # always strongly typed; EXPLICIT_BATCH removed
    assert not PRECISION_FLAGS & set(plan.builder_flags)
    assert not REMOVED_TRTEXEC_11 & {a.split("=")[0] for a in plan.trtexec}
    assert "--minShapes=input:1x3x64x64" in plan.trtexec and "--timingCacheFile=timing.cache" in plan.trtexec


def test_plan_10_and_11_differ_only_in_strong_typing_switch():
    ten, eleven = plan_build(_settings("int8"), "10.3.0"), plan_build(_settings("int8"), "11.4.0")
    assert [a for a in ten.trtexec if a != "--stronglyTyped"] == eleven.trtexec


@pytest.mark.parametrize("precision, flag", [("fp32", None), ("fp16", "FP16"), ("int8", "INT8")])
def test_plan_86_is_weakly_typed_with_explicit_batch(precision, flag):
    plan = plan_build(_settings(precision), "8.6.1")
    assert plan.network_flags == ["EXPLICIT_BATCH"]
    assert plan.builder_flags == ([flag] if flag else [])
    assert ("--" + flag.lower() in plan.trtexec) if flag else not {"--fp16", "--int8"} & set(plan.trtexec)
    assert "--stronglyTyped" not in plan.trtexec


def test_plan_rejects_tensorrt_older_than_86():
    with pytest.raises(UserError, match="8.6 or newer"):
        plan_build(_settings(), "8.5.2")


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_plan_compat_options(version):
    s = _settings("int8", hardware_compat="ampere_plus", version_compatible=True, opt_level=5, workspace_mb=512)
    plan = plan_build(s, version)
    assert plan.builder_flags == ["VERSION_COMPATIBLE"]
    assert plan.config == {"builder_optimization_level": 5, "hardware_compatibility_level": "AMPERE_PLUS"}
    assert {"--hardwareCompatibilityLevel=ampere+", "--versionCompatible", "--builderOptimizationLevel=5",
            "--memPoolSize=workspace:512"} <= set(plan.trtexec)
    assert any("Jetson" in n for n in plan.notes)
    same = plan_build(_settings(hardware_compat="same_compute_capability"), version)
    assert "--hardwareCompatibilityLevel=sameComputeCapability" in same.trtexec
    assert same.config["hardware_compatibility_level"] == "SAME_COMPUTE_CAPABILITY"


def test_plan_without_timing_cache_has_no_cache_flag():
    plan = plan_build(_settings(timing_cache=None), "10.3.0")
    assert plan.timing_cache is None and not any(a.startswith("--timingCacheFile") for a in plan.trtexec)


def test_build_plans_are_bundle_relative():
    plans = build_plans(_settings(onnx_path="/tmp/x/a.onnx", engine_path="/tmp/x/a.engine"))
    assert set(plans) == {"10", "11"}
    assert plans["10"]["trtexec"][1] == "--onnx=model.onnx"


# -- build_engine.sh ------------------------------------------------------------------------------
FAKE_TRTEXEC = """#!/usr/bin/env bash
echo "&&&& RUNNING TensorRT.trtexec [TensorRT v${FAKE_CODE}] # trtexec $*"
[ "${1:-}" = "--help" ] && exit 0
echo "$*" >> "$TRTEXEC_LOG"
for a in "$@"; do case "$a" in --saveEngine=*) echo engine > "${a#--saveEngine=}" ;; esac; done
"""


def _write_script(tmp_path: Path, **kw) -> Path:
    bundle = tmp_path / "bundle"
    path = write_build_script(bundle, _settings("int8", **kw))
    (bundle / "model.onnx").write_bytes(b"onnx")
    return path


def test_build_script_is_valid_bash(tmp_path):
    path = _write_script(tmp_path)
    assert os.access(path, os.X_OK)
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -eu" in text
    assert "--stronglyTyped" in text and "--saveEngine=model.engine" in text and "parity" in text
    subprocess.run(["bash", "-n", str(path)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)")
def test_build_script_passes_shellcheck(tmp_path):
    path = _write_script(tmp_path, hardware_compat="ampere_plus", version_compatible=True)
    res = subprocess.run(["shellcheck", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout


@pytest.mark.parametrize("code, expect_strong", [("100300", True), ("110400", False)])
def test_build_script_picks_flags_by_installed_version(tmp_path, code, expect_strong):
    path = _write_script(tmp_path)
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    trtexec = fake_bin / "trtexec"
    trtexec.write_text(FAKE_TRTEXEC)
    trtexec.chmod(trtexec.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "trtexec.log"
    # No python3 with tensorrt and no coatnet-deploy on this PATH: the banner decides the version.
    env = {"PATH": f"{fake_bin}:/usr/bin:/bin", "FAKE_CODE": code, "TRTEXEC_LOG": str(log), "HOME": str(tmp_path)}
    res = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr + res.stdout
    args = log.read_text().split()
    assert ("--stronglyTyped" in args) is expect_strong
    assert "--onnx=model.onnx" in args and "--timingCacheFile=timing.cache" in args
    assert (path.parent / "model.engine").is_file()
    assert "coatnet-deploy parity" in res.stdout


def test_build_script_fails_clearly_without_trtexec(tmp_path):
    path = _write_script(tmp_path)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    if shutil.which("trtexec", path=env["PATH"]) or Path("/usr/src/tensorrt/bin/trtexec").exists():
        pytest.skip("a real trtexec is installed here")
    res = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode != 0 and "trtexec not found" in res.stderr


# -- compat check ---------------------------------------------------------------------------------
META = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7",
        "hardware_compat": "none", "version_compatible": False}
HERE_ORIN = SimpleNamespace(gpu_name="Orin", compute_capability="8.7")


def test_compat_passes_on_the_same_machine():
    check_engine_compat(META, HERE_ORIN, "10.3.0")


@pytest.mark.parametrize("probe, version, names", [
    (HERE_ORIN, "10.7.0", ["TensorRT version"]),
    (SimpleNamespace(gpu_name="NVIDIA A100", compute_capability="8.0"), "10.3.0", ["compute capability", "GPU name"]),
    (SimpleNamespace(gpu_name="Orin (64GB)", compute_capability="8.7"), "10.3.0", ["GPU name"]),
    (SimpleNamespace(gpu_name="NVIDIA T4", compute_capability="7.5"), "11.4.0", ["TensorRT version", "compute capability", "GPU name"]),
])
def test_compat_names_what_differs(probe, version, names):
    with pytest.raises(UserError) as exc:
        check_engine_compat(META, probe, version)
    why = exc.value.why  # the "what differs" part; the fix text names all three on purpose
    for n in names:
        assert n in why
    for other in {"TensorRT version", "compute capability", "GPU name"} - set(names):
        assert other not in why
    assert "build_engine.sh" in str(exc.value)


def test_compat_honors_version_and_hardware_compat():
    meta = dict(META, version_compatible=True, hardware_compat="ampere_plus", gpu_name="NVIDIA A100", compute_capability="8.0")
    check_engine_compat(meta, SimpleNamespace(gpu_name="NVIDIA L4", compute_capability="8.9"), "10.7.0")
    with pytest.raises(UserError, match="TensorRT version"):
        check_engine_compat(meta, HERE_ORIN, "11.4.0")  # version compatibility stays within a major
    with pytest.raises(UserError, match="compute capability"):
        check_engine_compat(meta, SimpleNamespace(gpu_name="NVIDIA T4", compute_capability="7.5"), "10.3.0")


# -- no GPU: clean failure ------------------------------------------------------------------------
def _no_trt_here() -> bool:
    return not cuda_probe.tensorrt_status()[0]


@pytest.mark.skipif(not _no_trt_here(), reason="TensorRT and a GPU are available here")
def test_build_and_run_fail_with_exit_3_and_defer_hint(tmp_path):
    with pytest.raises(TargetUnavailable) as exc:
        build_engine(_settings(onnx_path=tmp_path / "m.onnx", engine_path=tmp_path / "m.engine"))
    assert exc.value.exit_code == 3 and "--defer-build" in str(exc.value)
    with pytest.raises(TargetUnavailable):
        TensorRTRunner(tmp_path / "m.engine").activate()
    assert "tensorrt" not in sys.modules
    msg = unavailable_message()
    assert "--defer-build" in msg and "build_engine.sh" in msg
    assert cuda_probe.probe_cuda().reason in msg or "TensorRT Python package" in msg


def test_unavailable_message_names_the_missing_package_when_gpu_is_fine():
    msg = unavailable_message(SimpleNamespace(ok=True, reason="Orin"))
    assert "TensorRT Python package not installed" in msg and "--defer-build" in msg


# -- GPU + TensorRT: a real engine ----------------------------------------------------------------
_TRT_OK, _TRT_WHY = cuda_probe.tensorrt_status()


def _tiny_onnx(path: Path) -> None:
    import torch

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5),
    ).eval()
    x = torch.randn(2, 3, 32, 32)  # batch 2: a batch-1 trace can pin the batch (FIELD-NOTES)
    torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(not _TRT_OK, reason=f"needs TensorRT and a GPU: {_TRT_WHY}")
def test_real_engine_builds_runs_and_matches_onnxruntime(tmp_path):
    import onnxruntime as ort

    onnx_path = tmp_path / "model.onnx"
    _tiny_onnx(onnx_path)
    s = BuildSettings.from_batch_string("1:2:4", onnx_path=onnx_path, engine_path=tmp_path / "model.engine",
                                        image_size=32, workspace_mb=256, timing_cache=tmp_path / "timing.cache")
    meta = build_engine(s)
    assert s.engine_path.stat().st_size > 0 and s.timing_cache.stat().st_size > 0
    probe = cuda_probe.probe_cuda()
    assert meta["gpu_name"] == probe.gpu_name and meta["profile"]["max"] == [4, 3, 32, 32]
    build_engine(s)  # second build reuses (and rewrites) the timing cache

    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    ref = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    for graph in (False, True):
        with TensorRTRunner(s.engine_path, meta, cuda_graph=graph) as r:
            out = r.infer(x)
            out2 = r.infer(x)
            assert out.shape == (3, 5)
            np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-3)
            np.testing.assert_array_equal(out, out2)
            times = r.time_gpu(2, iterations=5, warmup=1)
            assert len(times) == 5 and all(t > 0 for t in times)
            assert r.settings()["cuda_graph"] is graph
    with TensorRTRunner(s.engine_path, meta) as r, pytest.raises(UserError, match="outside the engine's profile"):
        r.infer(np.zeros((5, 3, 32, 32), np.float32))


# -- export configs -------------------------------------------------------------------------------
CONFIG_KEYS = set("model weights num_classes labels image_size target precision calibration calibration_samples "
                  "batch reference defer_build output opset simplify seed threads bench_iterations eval_images "
                  "sensitivity max_drop int8_method calibrate_method gates tensorrt".split())


@pytest.mark.parametrize("name", ["tensorrt-fp16", "tensorrt-int8", "jetson-orin-int8"])
def test_tensorrt_configs_use_known_keys_and_valid_settings(name):
    import yaml

    cfg = yaml.safe_load((Path(__file__).parents[1] / "export_configs" / f"{name}.yaml").read_text())
    assert set(cfg) <= CONFIG_KEYS and cfg["target"] == "tensorrt"
    trt = cfg["tensorrt"]
    s = BuildSettings.from_batch_string(cfg["batch"], onnx_path="model.onnx", engine_path="model.engine",
                                        image_size=cfg["image_size"], precision=cfg["precision"], **trt)
    for v in ("10.3.0", "11.4.0"):
        plan_build(s, v)
    assert cfg["defer_build"] is (name == "jetson-orin-int8")
