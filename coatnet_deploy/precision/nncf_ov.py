"""OpenVINO INT8, two ways: NNCF post-training quantization of the FP32 model, or OpenVINO reading
the Q/DQ ONNX. The openvino target measures both against the reference and keeps the one that passes
its gates and runs faster.

NNCF settings, measured on coatnet_0_rw_224 (random init, 16 calibration photos, cosine against fp32
on the 24 photos; tests don't redo this, the numbers are in docs/INT8.md):

- model type: NNCF's default. ``ModelType.TRANSFORMER`` gave 0.963 (0.08 on the project's AVX2 machine).
- preset PERFORMANCE (symmetric activations): 0.9965; MIXED (asymmetric activations): 0.991.
- ``OverflowFix.ENABLE`` (7-bit weights in every layer): on a CPU without VNNI the int8 kernels add
  u8 x s8 pairs in int16 and saturate with full-range weights: 0.9965 with the fix, 0.908 without
  (ONEDNN_MAX_CPU_ISA=AVX2). On VNNI/AMX the fix costs nothing measurable (0.9943 vs 0.9942), and it
  keeps the IR right on edge boxes without VNNI, so it is always on.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

from coatnet_deploy.precision.plan import PrecisionPlan, load_named


#: OpenVINO op types the precision plan keeps float wherever they are (LayerNorm, softmax, the SE gate)
FLOAT_OV_TYPES = ("MVN", "Softmax", "Sigmoid")


def _ov_model(fp32_onnx_or_ov_model):
    import onnx
    import openvino as ov

    if isinstance(fp32_onnx_or_ov_model, ov.Model):
        return fp32_onnx_or_ov_model
    model = load_named(fp32_onnx_or_ov_model)  # the same node names the plan was computed on
    with tempfile.TemporaryDirectory(prefix="nncf_") as tmp:
        path = Path(tmp) / "named.onnx"
        onnx.save(model, str(path))
        return ov.convert_model(str(path))


def ov_names_for(ov_model, onnx_node_names: Iterable[str]) -> list[str]:
    """OpenVINO op names that came from the given ONNX nodes.

    OpenVINO's ONNX frontend names the op after the ONNX node and its helpers after it with a
    suffix ("/stem/Conv" and "/stem/Conv/WithoutBiases"); Gemm and LayerNormalization also spawn
    a few unnamed ops, which NNCF's own TRANSFORMER patterns keep in float anyway.
    """
    wanted = set(onnx_node_names)
    out = []
    for op in ov_model.get_ordered_ops():
        name = op.get_friendly_name()
        if name in wanted or name.rsplit("/", 1)[0] in wanted:
            out.append(name)
    return out


def _subset(arrays: Iterable[np.ndarray], subset_size: int, seed: int) -> list[np.ndarray]:
    from coatnet_deploy.precision.qdq import _ordered_samples

    return _ordered_samples(arrays, seed, subset_size)


def nncf_int8_ir(
    fp32_onnx_or_ov_model,
    out_dir,
    calibration_arrays: Iterable[np.ndarray],
    plan: PrecisionPlan,
    subset_size: int = 300,
    seed: int = 0,
    *,
    preset: str = "performance",
    model_type: str | None = None,
    fast_bias_correction: bool = True,
    overflow_fix: str = "enable",
) -> tuple[Path, Path]:
    """FP32 ONNX path (or ov.Model) + calibration arrays + plan -> (model.xml, model.bin) in out_dir.

    The plan's float nodes and excluded Conv/MatMul/Gemm go to NNCF's ignored scope (mapped to
    OpenVINO op names); NNCF quantizes the rest. Calibration uses at most ``subset_size`` arrays,
    picked by ``seed``. Defaults: see the module docstring; ``model_type`` "transformer" only
    when measured right for the model.
    """
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from coatnet_deploy.errors import UserError

    presets = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    fixes = {"enable": OverflowFix.ENABLE, "first_layer_only": OverflowFix.FIRST_LAYER,
             "disable": OverflowFix.DISABLE}
    if overflow_fix not in fixes:
        raise UserError(f"unknown overflow_fix {overflow_fix!r}", "choose enable, first_layer_only or disable")
    if preset not in presets:
        raise UserError(f"unknown NNCF preset {preset!r}", "choose mixed or performance")
    types = {None: None, "transformer": nncf.ModelType.TRANSFORMER}
    if model_type not in types:
        raise UserError(f"unknown NNCF model type {model_type!r}", "choose transformer, or leave it unset")
    batches = _subset(calibration_arrays, subset_size, seed)
    if not batches:
        raise UserError("no calibration data", "INT8 needs representative images",
                        "pass --calibration DIR with images of the target domain")
    model = _ov_model(fp32_onnx_or_ov_model)
    ignored = ov_names_for(model, plan.float_nodes)
    quantized = nncf.quantize(
        model,
        nncf.Dataset(batches),
        model_type=types[model_type],
        preset=presets[preset],
        subset_size=len(batches),
        fast_bias_correction=fast_bias_correction,
        # validate=False: a plan node may have been folded away by the frontend (e.g. a Shape)
        # The plan's float ops by type too: OpenVINO's frontend names the MVN of a LayerNormalization after
        # nothing in the plan, and NNCF's default model type would quantize its input.
        ignored_scope=nncf.IgnoredScope(names=ignored, types=list(FLOAT_OV_TYPES), validate=False),
        advanced_parameters=AdvancedQuantizationParameters(overflow_fix=fixes[overflow_fix]),
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / "model.xml"
    # fp32 storage for what stays float: fp16 weight compression would add its own error to the
    # float layers the plan protects
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    return xml, xml.with_suffix(".bin")


def qdq_ir(qdq_onnx, out_dir) -> tuple[Path, Path]:
    """Q/DQ ONNX -> (model.xml, model.bin): OpenVINO turns the Q/DQ pairs into FakeQuantize/INT8."""
    import openvino as ov

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    xml = out_dir / "model.xml"
    ov.save_model(ov.convert_model(str(qdq_onnx)), str(xml), compress_to_fp16=False)
    return xml, xml.with_suffix(".bin")


def int8_ops(xml_or_model) -> dict[str, int]:
    """Count of FakeQuantize nodes and of the op types they feed (what actually runs INT8)."""
    import openvino as ov

    model = ov.Core().read_model(str(xml_or_model)) if not isinstance(xml_or_model, ov.Model) else xml_or_model
    counts: dict[str, int] = {}
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        counts["FakeQuantize"] = counts.get("FakeQuantize", 0) + 1
        for target in op.output(0).get_target_inputs():
            t = target.get_node().get_type_name()
            counts[t] = counts.get(t, 0) + 1
    return counts


def _quantized_inputs(model) -> list[tuple[str, list[tuple[int, str]]]]:
    """[(node name, [(input index, float tensor behind its Q/DQ pair)])] in graph order."""
    from coatnet_deploy.precision.plan import QUANTIZABLE_OPS

    producer = {o: n for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type not in QUANTIZABLE_OPS:
            continue
        slots = []
        for i, t in enumerate(n.input):
            dq = producer.get(t)
            if dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":  # activations only; weights stay int8
                    slots.append((i, q.input[0]))
        if slots:
            out.append((n.name, slots))
    return out


def _float_inputs_for(model, nodes: set[str]):
    """A copy of the Q/DQ model whose ``nodes`` read their activations in float again."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    table = dict(_quantized_inputs(m))
    for n in m.graph.node:
        if n.name in nodes:
            for i, src in table[n.name]:
                n.input[i] = src
    return m


def openvino_int8_culprits(qdq_onnx, inputs: np.ndarray, threshold: float = 0.95, max_culprits: int = 8) -> list[dict]:
    """Quantized nodes that OpenVINO runs wrong, found by bisection over the graph order.

    The judge is ONNX Runtime running the SAME Q/DQ file: the two should agree up to rounding, so a
    large gap is OpenVINO mis-running a layer, not quantization noise (seen on this CPU: OpenVINO ran
    a dense 3x3 stem convolution of coatnet_0_rw_224 at cosine 0.06 where ONNX Runtime ran the same
    Q/DQ at 0.9999). Graph outputs only: exposing intermediate tensors changes OpenVINO's fusions and
    can hide the fault. Each probe keeps the first k quantized nodes in int8 (the rest read float);
    the smallest failing k names a culprit, which then stays float while the search goes on.
    ``threshold`` is far below what a correct run reaches (0.999+): it flags faults, not noise.
    """
    import onnx
    import onnxruntime as ort
    import openvino as ov

    model = onnx.load(str(qdq_onnx))
    order = [name for name, _ in _quantized_inputs(model)]
    core = ov.Core()

    def agreement(int8_nodes: set[str]) -> float:
        m = _float_inputs_for(model, set(order) - int8_nodes)
        data = m.SerializeToString()
        so = ort.SessionOptions()
        ref = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, {m.graph.input[0].name: inputs})[0]
        compiled = core.compile_model(core.read_model(data, b""), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        got = compiled(inputs)[0]
        a, b = ref.reshape(len(ref), -1).astype(np.float64), got.reshape(len(got), -1).astype(np.float64)
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        return float(np.min(np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1), 1.0)))

    culprits: list[dict] = []
    bad: set[str] = set()
    while len(culprits) < max_culprits:
        live = [n for n in order if n not in bad]
        full = agreement(set(live))
        if full >= threshold:
            break
        lo, hi = 0, len(live)  # agreement(first lo) passes, agreement(first hi) fails
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if agreement(set(live[:mid])) >= threshold:
                lo = mid
            else:
                hi = mid
        node = live[hi - 1]
        with_it, without_it = agreement(set(live[:hi])), agreement(set(live[:hi - 1]))
        if without_it - with_it < 0.02:
            break  # no single layer breaks it: rounding drift summed over many layers, not a fault
        culprits.append({"node": node, "agreement_with_it": with_it, "agreement_without_it": without_it})
        bad.add(node)
    return culprits
