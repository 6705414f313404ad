"""The whole export chain on the tiny variant, for every target and precision that runs here,
read back from disk as a device would: ONNX at both ends of the batch range, the IR, the report
keys, the checksums."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from coatnet_deploy.bundle import verify_bundle
from coatnet_deploy.config import make_config
from coatnet_deploy.errors import UserError
from coatnet_deploy.exporting import export

CASES = [
    ("onnx", "fp32"),
    ("onnxruntime", "fp32"),
    ("openvino", "fp32"),
    ("onnx", "fp16"),
    ("openvino", "fp16"),
    ("onnx", "int8"),
    ("onnxruntime", "int8"),
    ("openvino", "int8"),
]

REPORT_KEYS = {"status", "target", "precision", "reference", "parity", "stages"}
PARITY_KEYS = {"samples", "cosine_min", "max_abs_err", "mean_abs_err", "top1_agreement", "top5_agreement", "gates", "passed"}
MANIFEST_KEYS = {"schema_version", "model", "input", "preprocess", "target", "precision", "artifacts", "versions", "created"}


def tiny_cfg(target: str, precision: str, out: Path, **kw):
    base = dict(model="coatnet_tiny", target=target, precision=precision, output=str(out), golden_images=4, golden_random=2,
                bench_iterations=0, calibration_samples=16, batch="1:2:4", seed=0)
    base.update(kw)
    return make_config(None, base)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    out = {}
    for target, precision in CASES:
        res = export(tiny_cfg(target, precision, root / f"{target}-{precision}"))
        out[(target, precision)] = res
    return out


@pytest.mark.parametrize("case", CASES, ids=[f"{t}-{p}" for t, p in CASES])
def test_bundle_reads_back(bundles, case):
    res = bundles[case]
    target, precision = case
    assert res.status == "PASSED", res.report["parity"]
    manifest = verify_bundle(res.bundle)
    assert MANIFEST_KEYS <= set(manifest)
    assert manifest["target"] == target and manifest["precision"] == precision
    assert manifest["input"]["shape"] == [[1, 4], 3, 64, 64]
    for key in ("name", "num_classes", "labels", "weights_sha256"):
        assert key in manifest["model"]
    for key in ("resize", "crop", "mean", "std", "interpolation"):
        assert key in manifest["preprocess"]
    names = {a["path"] for a in manifest["artifacts"]}
    assert {"model.onnx", "golden.npz", "report.json", "report.md", "report.html"} <= names
    report = json.loads((res.bundle / "report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert PARITY_KEYS <= set(report["parity"])
    stages = [s["stage"] for s in report["stages"]]
    assert stages[:2] == ["onnx", "simplified"]
    assert stages[-1] == "engine"
    if precision == "int8" or (precision == "fp16" and target != "openvino"):
        assert "quantized" in stages  # OpenVINO fp16 is an IR property: no separate graph to check
    assert report["reference"]["framework"] == "torch"


@pytest.mark.parametrize("case", CASES, ids=[f"{t}-{p}" for t, p in CASES])
def test_onnx_runs_at_both_batch_ends(bundles, case):
    import onnxruntime as ort

    res = bundles[case]
    sess = ort.InferenceSession(str(res.bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    golden = np.load(res.bundle / "golden.npz")
    x = golden["inputs"]
    for b in (1, 4):
        y = sess.run(["logits"], {"input": x[:b]})[0]
        assert y.shape == (b, 1000)
    assert sess.get_inputs()[0].type == "tensor(float)"  # I/O stays float32 in every precision


def test_openvino_ir_matches_reference(bundles):
    import openvino as ov

    res = bundles[("openvino", "fp32")]
    golden = np.load(res.bundle / "golden.npz")
    compiled = ov.Core().compile_model(str(res.bundle / "model.xml"), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    y = compiled(golden["inputs"][:3])[0]
    assert np.abs(y - golden["reference_logits"][:3]).max() < 1e-4
    assert (res.bundle / "model.bin").stat().st_size > 0


def test_onnx_metadata_describes_the_model(bundles):
    import onnx

    m = onnx.load(str(bundles[("onnx", "fp32")].bundle / "model.onnx"))
    meta = {p.key: p.value for p in m.metadata_props}
    assert meta["model"] == "coatnet_tiny"
    assert json.loads(meta["preprocess"])["crop"] == 64
    assert m.opset_import[0].version == 17


def test_ort_target_ships_the_optimized_model(bundles):
    res = bundles[("onnxruntime", "fp32")]
    assert (res.bundle / "model.ort.onnx").is_file()


def test_simplify_is_checked_and_counted(bundles):
    m = json.loads((bundles[("onnx", "fp32")].bundle / "manifest.json").read_text())
    simp = m["simplify"]
    assert simp["ok"] is True
    assert simp["nodes_after"] <= simp["nodes_before"]
    assert simp["max_abs_diff_vs_plain"] <= 1e-4


def test_failed_gate_writes_a_failed_bundle(tmp_path):
    cfg = tiny_cfg("onnx", "fp32", tmp_path / "b", gates={"max_abs_err": 1e-12})
    res = export(cfg)
    assert res.status == "FAILED"
    rep = json.loads((res.bundle / "report.json").read_text())
    assert rep["status"] == "FAILED"
    assert rep["parity"]["failed_gates"] == ["max_abs_err"]
    # the smallest tolerance that would have passed is the measured error
    assert rep["parity"]["min_passing"]["max_abs_err"] == pytest.approx(rep["parity"]["max_abs_err"])


def test_unknown_target_is_refused_before_any_work(tmp_path):
    with pytest.raises(UserError, match="valid targets"):
        export(tiny_cfg("tflite", "fp32", tmp_path / "b"))
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_tensorrt_defer_build_bundle(tmp_path, precision):
    """Without a GPU, --defer-build writes the precision-carrying ONNX, build_engine.sh and golden data,
    checks parity at the ONNX level, and passes."""
    import shutil
    import subprocess

    res = export(tiny_cfg("tensorrt", precision, tmp_path / "trt", defer_build=True))
    assert res.status == "PASSED"
    b = res.bundle
    m = verify_bundle(b)
    assert m["engine"]["deferred"] is True
    assert not (b / "model.engine").exists()
    script = b / "build_engine.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if shutil.which("shellcheck"):
        assert subprocess.run(["shellcheck", "-S", "warning", str(script)], capture_output=True).returncode == 0
    assert set(m["engine"]["build_plans"]) == {"10", "11"}
    stages = [s["stage"] for s in res.report["stages"]]
    assert stages == ["onnx", "simplified", "quantized"]  # parity at the ONNX level, no engine here
    if precision == "int8":
        from coatnet_deploy.precision.qdq import check_qdq_rules

        if m["precision_details"]["format"] == "modelopt":  # the modelopt extra is installed (tests/test_modelopt.py)
            assert all(": feeds " in v for v in check_qdq_rules(b / "model.onnx"))  # its placement, the other rules hold
        else:
            assert check_qdq_rules(b / "model.onnx") == []
        assert m["precision_details"]["reduce_range"] is False  # TensorRT-bound: full-range int8 weights
    # the device's self-test runs here too, on the ONNX until the engine exists
    from coatnet_deploy.parity import check_bundle

    assert check_bundle(b)["status"] == "PASSED"


def test_openvino_int8_engine_is_right_at_every_batch_size_in_any_order(bundles):
    """OpenVINO's CPU plugin ran a dynamic-batch INT8 model wrong on AMX CPUs once the batch shrank
    (batch 4 then 2): the device path must give each sample's batch-1 logits whatever the order."""
    from coatnet_deploy.parity import load_golden
    from coatnet_deploy.runtime.engines import open_runner

    b = bundles[("openvino", "int8")].bundle
    manifest = verify_bundle(b)
    x = load_golden(b)["inputs"][:4]
    runner, runs = open_runner(b, manifest)
    with runner:
        alone = np.concatenate([runner.infer(x[i:i + 1]) for i in range(4)])
        for n in (4, 2, 1, 3, 4, 1):
            np.testing.assert_allclose(runner.infer(x[:n]), alone[:n], atol=1e-3, err_msg=f"batch {n} ({runs})")
