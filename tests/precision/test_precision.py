"""Precision plan, Q/DQ INT8, FP16, NNCF and sensitivity on tiny CoAtNet-like graphs.

Every artifact is loaded and run in ONNX Runtime and/or OpenVINO and compared with FP32:
a graph that only passes onnx.checker is not enough.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from make_models import export_onnx, image_like_arrays, make_tiny_onnx  # noqa: E402

from coatnet_deploy.precision.plan import (  # noqa: E402
    R_GELU, R_LAYERNORM, R_QUANT, R_RELBIAS, R_SE, R_SOFTMAX, R_USER, plan_from_onnx,
)

CALIB_DIR = Path(__file__).resolve().parents[2] / "calibration"
SIZE = 64


def _images(count: int, offset: int = 0) -> list[np.ndarray]:
    """Real photos from calibration/ (PIL resize, CoAtNet's 0.5/0.5 normalisation) or a stand-in."""
    files = sorted(p for p in CALIB_DIR.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(files) < 4:
        return image_like_arrays(count, SIZE, seed=offset)
    from PIL import Image

    out = []
    for k in range(count):
        img = Image.open(files[(k + offset) % len(files)]).convert("RGB").resize((SIZE, SIZE), Image.BICUBIC)
        if (k + offset) >= len(files):  # more arrays than photos: mirrored copies
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        arr = (np.asarray(img, np.float32) / 255.0 - 0.5) / 0.5
        out.append(arr.transpose(2, 0, 1)[None].copy())
    return out


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.min((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def _ort(path, x):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def _ov(path, x):
    import openvino as ov

    return ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(x)[0]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_onnx(tmp_path_factory.mktemp("tiny") / "tiny.onnx", image_size=SIZE)


@pytest.fixture(scope="module")
def calib():
    return _images(16)


@pytest.fixture(scope="module")
def evalx():
    return np.concatenate(_images(8, offset=16))


@pytest.fixture(scope="module")
def ref(tiny, evalx):
    return _ort(tiny, evalx)


@pytest.fixture(scope="module")
def plan(tiny):
    return plan_from_onnx(tiny)


@pytest.fixture(scope="module")
def qdq_reduced(tiny, calib, plan, tmp_path_factory):
    from coatnet_deploy.precision.qdq import qdq_from_onnx

    return qdq_from_onnx(tiny, tmp_path_factory.mktemp("q") / "int8.onnx", calib, plan, reduce_range=True)


@pytest.fixture(scope="module")
def qdq_full(tiny, calib, plan, tmp_path_factory):
    from coatnet_deploy.precision.qdq import qdq_from_onnx

    return qdq_from_onnx(tiny, tmp_path_factory.mktemp("qf") / "int8.onnx", calib, plan)


# -- plan ----------------------------------------------------------------------------------------
def test_plan_classifies_the_coatnet_op_mix(plan):
    r = plan.reasons
    assert r["/mb/se/reduce/Conv"] == R_SE and r["/mb/se/expand/Conv"] == R_SE
    assert r["/mb/se/Sigmoid"] == R_SE and r["/mb/se/Mul"] == R_SE
    # Conv + SiLU is Conv -> Sigmoid too, but the Sigmoid multiplies its own input: not a gate
    assert r["/stem/stem.0/Conv"] == R_QUANT and r["/mb/pw/pw.0/Conv"] == R_QUANT
    assert r["/mb/dw/dw.0/Conv"] == R_QUANT
    assert r["/tf/attn/Add"] == R_RELBIAS and r["/tf/attn/Softmax"] == R_SOFTMAX
    assert r["/tf/norm1/LayerNormalization"] == R_LAYERNORM
    assert {n for n, why in r.items() if why == R_GELU} == {
        "/tf/mlp/mlp.1/Div", "/tf/mlp/mlp.1/Erf", "/tf/mlp/mlp.1/Add", "/tf/mlp/mlp.1/Mul", "/tf/mlp/mlp.1/Mul_1"}
    assert {"/tf/attn/MatMul", "/tf/attn/MatMul_1", "/tf/attn/qkv/MatMul", "/head/Gemm"} <= set(plan.quantized_nodes)
    assert set(plan.excluded) == {"/mb/se/reduce/Conv", "/mb/se/expand/Conv"}
    assert not set(plan.quantized_nodes) & set(plan.float_nodes)
    d = plan.to_dict()
    assert set(d) >= {"quantized_nodes", "float_nodes", "excluded"} and d["counts"]["quantized"] == 12


def test_plan_head_and_user_excludes(tiny):
    from coatnet_deploy.errors import UserError

    p = plan_from_onnx(tiny, exclude=["/down/Conv"], keep_head_float=True)
    assert "/head/Gemm" in p.excluded and p.reasons["/down/Conv"] == R_USER
    assert "/down/Conv" not in p.quantized_nodes
    with pytest.raises(UserError):
        plan_from_onnx(tiny, exclude=["/no/such/node"])


# -- Q/DQ ----------------------------------------------------------------------------------------
def test_qdq_follows_tensorrt_rules(qdq_full, qdq_reduced, plan):
    import onnx

    from coatnet_deploy.precision.qdq import check_qdq_rules

    for res in (qdq_full, qdq_reduced):
        assert check_qdq_rules(res.path) == []
        assert set(res.quantized_nodes) == set(plan.quantized_nodes)
        m = onnx.load(str(res.path))
        producer = {o: n for n in m.graph.node for o in n.output}
        # attention matmuls between two activations: both inputs quantized (per tensor: checked above)
        for name in ("/tf/attn/MatMul", "/tf/attn/MatMul_1"):
            node = next(n for n in m.graph.node if n.name == name)
            assert all(producer[i].op_type == "DequantizeLinear" for i in node.input)
        for name in plan.excluded:
            node = next(n for n in m.graph.node if n.name == name)
            assert not any(i in producer and producer[i].op_type == "DequantizeLinear" for i in node.input)


def test_check_qdq_rules_rejects_ort_defaults(tiny, calib, tmp_path):
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from coatnet_deploy.precision.qdq import _as_batches, _reader, check_qdq_rules

    bad = tmp_path / "bad.onnx"
    quantize_static(str(tiny), str(bad), _reader("input", lambda: iter(_as_batches(calib[:2]))), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    v = check_qdq_rules(bad)
    text = "\n".join(v)
    assert "INT32" in text and "UINT8" in text and "non-zero zero point" in text
    assert "only Conv/MatMul/Gemm may" in text  # Q/DQ in front of LayerNorm/Softmax/Add...
    assert "per-tensor, expected per-channel" in text


def test_int8_runs_close_to_fp32_in_ort_and_openvino(qdq_full, qdq_reduced, ref, evalx, tmp_path):
    from coatnet_deploy.precision.nncf_ov import int8_ops, qdq_ir

    # full-range int8 weights: what TensorRT gets; ORT here runs them on AVX2 kernels too
    assert _cos(ref, _ort(qdq_full.path, evalx)) >= 0.98
    assert _cos(ref, _ort(qdq_reduced.path, evalx)) >= 0.99
    xml, _ = qdq_ir(qdq_reduced.path, tmp_path / "ov")
    assert _cos(ref, _ov(xml, evalx)) >= 0.99
    ops = int8_ops(xml)
    assert ops.get("FakeQuantize", 0) >= 12 and ops.get("MatMul", 0) >= 4


def test_nncf_ir_close_to_fp32(tiny, calib, plan, ref, evalx, tmp_path):
    from coatnet_deploy.precision.nncf_ov import int8_ops, nncf_int8_ir

    xml, binf = nncf_int8_ir(tiny, tmp_path / "nncf", calib, plan, subset_size=16, seed=0)
    assert xml.exists() and binf.exists()
    assert _cos(ref, _ov(xml, evalx)) >= 0.98
    ops = int8_ops(xml)
    assert ops.get("FakeQuantize", 0) > 0
    assert not {"MVN", "Softmax", "Sigmoid"} & set(ops)  # plan's float ops stay float


def test_qdq_scales_are_deterministic(tiny, calib, plan, qdq_full, tmp_path):
    from coatnet_deploy.precision.qdq import qdq_from_onnx, qdq_scales

    again = qdq_from_onnx(tiny, tmp_path / "again.onnx", calib, plan, seed=0)
    assert again.scales_sha256 == qdq_full.scales_sha256
    a, b = qdq_scales(qdq_full.path), qdq_scales(again.path)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    other = qdq_from_onnx(tiny, tmp_path / "other.onnx", calib[:4], plan, seed=0)
    assert other.scales_sha256 != qdq_full.scales_sha256  # the digest does see the calibration


# -- FP16 ----------------------------------------------------------------------------------------
def test_fp16_graph_runs_and_matches_in_ort_and_openvino(tiny, ref, evalx, tmp_path):
    import onnx
    from onnx import TensorProto

    from coatnet_deploy.precision.fp16 import fp16_from_onnx

    out = fp16_from_onnx(tiny, tmp_path / "fp16.onnx")
    m = onnx.load(str(out))
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    conv_w = {n.input[1] for n in m.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")}
    assert all(t.data_type == TensorProto.FLOAT16 for t in m.graph.initializer if t.name in conv_w)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in (*m.graph.value_info, *m.graph.output)}
    for n in m.graph.node:
        if n.op_type in ("LayerNormalization", "Softmax", "ReduceMean"):
            assert types[n.output[0]] == TensorProto.FLOAT, n.name
        if n.op_type in ("Conv", "MatMul", "Gemm"):
            assert types[n.output[0]] == TensorProto.FLOAT16, n.name
    o = _ort(out, evalx)
    assert o.dtype == np.float32 and _cos(ref, o) >= 0.999
    assert _cos(ref, _ov(out, evalx)) >= 0.999


# -- sensitivity ---------------------------------------------------------------------------------
def test_sensitivity_ranking_and_accuracy_budget(tiny, calib, plan, qdq_full, ref, evalx, tmp_path):
    from coatnet_deploy.precision.qdq import qdq_from_onnx
    from coatnet_deploy.precision.sensitivity import accuracy_budget, sensitivity, suggest_exclusions

    ranking = sensitivity(tiny, qdq_full.path, calib[:4])
    assert sorted(r["node"] for r in ranking) == sorted(plan.quantized_nodes)
    sq = [r["sqnr_db"] for r in ranking]
    assert sq == sorted(sq) and all(np.isfinite(sq)) and min(sq) > 5
    assert suggest_exclusions(ranking, threshold_db=sq[1] + 1e-6) == [ranking[0]["node"], ranking[1]["node"]]

    def quantize(p):
        return qdq_from_onnx(tiny, tmp_path / "budget.onnx", calib, p).path

    def evaluate(path):
        return _cos(ref, _ort(path, evalx))

    start = evaluate(qdq_full.path)
    gate = min(0.9999, start + (1 - start) * 0.5)  # halve the error: needs at least one move
    final, history = accuracy_budget(quantize, evaluate, ranking, gate, plan=plan, step=2)
    assert len(history) >= 2 and history[-1]["passed"] and history[-1]["metric"] > history[0]["metric"]
    assert set(history[-1]["moved_to_float"]) <= set(final.excluded)


# -- the real family -----------------------------------------------------------------------------
def test_coatnet_tiny_plan_int8_fp16(tmp_path):
    from coatnet_deploy.models import build_model
    from coatnet_deploy.precision.fp16 import fp16_from_onnx
    from coatnet_deploy.precision.qdq import check_qdq_rules, qdq_from_onnx

    src = export_onnx(build_model("coatnet_tiny", image_size=SIZE), tmp_path / "ct.onnx", SIZE)
    p = plan_from_onnx(src)
    assert p.quantized_nodes and any(why == R_SOFTMAX for why in p.reasons.values())
    assert any(why == R_LAYERNORM for why in p.reasons.values())
    x = np.concatenate(_images(4, offset=16))
    fp32 = _ort(src, x)
    q = qdq_from_onnx(src, tmp_path / "ct_int8.onnx", _images(16), p, reduce_range=True)
    assert check_qdq_rules(q.path) == []
    assert _cos(fp32, _ort(q.path, x)) >= 0.98
    f16 = fp16_from_onnx(src, tmp_path / "ct_fp16.onnx")
    assert _cos(fp32, _ort(f16, x)) >= 0.999 and _cos(fp32, _ov(f16, x)) >= 0.999


def test_coatnet_tiny_qdq_in_openvino_needs_float_attention_matmuls(tmp_path):
    """OpenVINO's CPU plugin loses the attention MatMuls (activation x activation) in int8 on this
    CPU: the same Q/DQ file that ORT runs at >= 0.999 falls to ~0.8 in OpenVINO. Keeping those two
    MatMuls float (what the pipeline does for the openvino target) brings it back."""
    from coatnet_deploy.models import build_model
    from coatnet_deploy.precision.qdq import qdq_from_onnx

    src = export_onnx(build_model("coatnet_tiny", image_size=SIZE), tmp_path / "ct.onnx", SIZE)
    x = np.concatenate(_images(4, offset=16))
    ref = _ort(src, x)
    full = qdq_from_onnx(src, tmp_path / "full.onnx", _images(16), plan_from_onnx(src), reduce_range=True)
    kept = qdq_from_onnx(src, tmp_path / "kept.onnx", _images(16),
                         plan_from_onnx(src, keep_attention_matmuls_float=True), reduce_range=True)
    assert _cos(ref, _ort(full.path, x)) >= 0.99
    assert _cos(ref, _ov(kept.path, x)) >= 0.99
    from coatnet_deploy.host import cpu_has_vnni

    if not cpu_has_vnni(onednn=True):
        # the runtime limitation itself, seen on AVX2 CPUs (and with ONEDNN_MAX_CPU_ISA=AVX2 on newer
        # ones; VNNI/AMX CPUs run it right): if this starts passing, OpenVINO fixed it and the rule can go
        assert _cos(ref, _ov(full.path, x)) < 0.99


def test_openvino_culprit_search_finds_nothing_where_openvino_agrees(tmp_path):
    from coatnet_deploy.models import build_model
    from coatnet_deploy.precision.nncf_ov import openvino_int8_culprits
    from coatnet_deploy.precision.qdq import qdq_from_onnx

    src = export_onnx(build_model("coatnet_tiny", image_size=SIZE), tmp_path / "ct.onnx", SIZE)
    q = qdq_from_onnx(src, tmp_path / "kept.onnx", _images(16), plan_from_onnx(src, keep_attention_matmuls_float=True),
                      reduce_range=True)
    assert openvino_int8_culprits(q.path, np.concatenate(_images(2, offset=16))) == []


@pytest.mark.slow
def test_openvino_int8_of_coatnet_0_rw_224_passes(tmp_path):
    """coatnet_0_rw_224 to OpenVINO INT8 passes its gates on this machine, whichever candidate wins. On the
    first round's AVX2 machine OpenVINO ran the int8 stem conv2 at cosine ~0.06 (ONNX Runtime: 0.9999 on the
    same file): where the fallback runs, it must have kept that layer float. (The fallback itself is
    tested in the default run by forcing a culprit: tests/test_targets.py.)"""
    from coatnet_deploy.config import make_config
    from coatnet_deploy.exporting import export

    res = export(make_config(None, {"model": "coatnet_0_rw_224", "target": "openvino", "precision": "int8",
                                    "output": str(tmp_path / "b"), "bench_iterations": 0, "calibration_samples": 16}))
    assert res.status == "PASSED", res.report["parity"]
    assert res.report["op_census"]["int8_share"] > 0.5 and res.manifest["engine"]["int8_method"] in ("nncf", "qdq")
    fallback = res.report.get("openvino_int8_fallback")
    if fallback is not None:
        assert "/stem/conv2/Conv" in fallback["kept_float"]
