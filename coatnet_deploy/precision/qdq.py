"""Explicit-Q/DQ INT8 ONNX, in the format the runtime that runs it fuses best.

``fmt="tensorrt-rules"`` (the default): TensorRT decides INT8 from the Q/DQ nodes alone (11.x has no
calibrator), and it is the strictest runtime, so the graph follows its rules: int8 (not uint8)
everywhere, symmetric (every zero point 0), weights per output channel, activations per tensor, Q/DQ
only in front of Conv / MatMul / Gemm, float biases (no int32 DQ). ``check_qdq_rules`` is the checker.
ONNX Runtime and OpenVINO run this file too, but ONNX Runtime's CPU provider finds no pattern to fuse
in it (no Q on the outputs): every convolution runs in float behind its Q/DQ pairs.

``fmt="onnxruntime-cpu"``: ONNX Runtime's own QDQ placement for its CPU provider: uint8 asymmetric
activations and int8 symmetric per-channel weights (the U8S8 kernels MLAS runs fastest on x86; its
S8S8 path is several times slower without VNNI), outputs quantized too and int32 biases, so each
DQ -> Conv -> Q fuses into one QLinearConv. The plan's float nodes stay float.
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Any, Iterable, Iterator

import numpy as np

from coatnet_deploy.precision.plan import QUANTIZABLE_OPS, PrecisionPlan, load_named

CALIBRATE_METHODS = ("minmax", "entropy", "percentile")
FORMATS = ("tensorrt-rules", "onnxruntime-cpu")


@dataclass
class QuantResult:
    """What ``qdq_from_onnx`` wrote: the path, the plan it followed and the calibration it used."""

    path: Path
    plan: PrecisionPlan
    calibrate_method: str
    calibration_samples: int
    seed: int
    quantized_nodes: list[str]
    scales_sha256: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path), "calibrate_method": self.calibrate_method,
            "calibration_samples": self.calibration_samples, "seed": self.seed,
            "quantized_nodes": len(self.quantized_nodes), "scales_sha256": self.scales_sha256,
            "seconds": round(self.seconds, 3), "notes": list(self.notes),
        }


def _as_batches(arrays: Iterable[np.ndarray]) -> list[np.ndarray]:
    out = []
    for a in arrays:
        a = np.asarray(a, dtype=np.float32)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4:
            from coatnet_deploy.errors import UserError

            raise UserError(f"calibration array has shape {a.shape}", "expected (3,H,W) or (N,3,H,W)",
                            "pass preprocessed images, e.g. CalibrationSet(...).iter_arrays()")
        out.append(np.ascontiguousarray(a))
    return out


def _ordered_samples(arrays: Iterable[np.ndarray], seed: int, limit: int | None) -> list[np.ndarray]:
    batches = _as_batches(arrays)
    if limit is not None and len(batches) > limit:
        # the subset depends on the seed only, never on iteration order of a set or a clock
        idx = np.random.default_rng(seed).permutation(len(batches))[:limit]
        batches = [batches[i] for i in sorted(idx)]
    return batches


def _reader(input_name: str, source: Callable[[], Iterator[np.ndarray]]):
    """An ORT CalibrationDataReader over ``source()``; rewind starts a fresh pass."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self._it: Iterator[np.ndarray] = iter(source())

        def get_next(self):
            b = next(self._it, None)
            return None if b is None else {input_name: np.ascontiguousarray(b, dtype=np.float32)}

        def rewind(self):
            self._it = iter(source())

    return _Reader()


def _calibration_source(calibration_arrays, seed: int, limit: int | None) -> tuple[Callable[[], Iterator[np.ndarray]], int]:
    """A replayable stream of (1,3,H,W) batches and its length.

    A CalibrationSet (anything with ``batches()``) is streamed: images are decoded one at a time on
    each pass, so a few hundred calibration images never sit in memory together.
    """
    if hasattr(calibration_arrays, "batches") and limit is None:
        return (lambda: calibration_arrays.batches(1)), len(calibration_arrays)
    batches = _ordered_samples(calibration_arrays, seed, limit)
    return (lambda: iter(batches)), len(batches)


def _rewire_stray_dq(model) -> int:
    """Point non-Conv/MatMul/Gemm consumers of a DQ back at the float tensor (in place) -> count.

    ORT puts one shared Q/DQ pair on a tensor, so a residual Add or a Shape that reads the same
    tensor as the Conv ends up reading the dequantized copy: a Q/DQ feeding an op that must stay
    float (and extra rounding on the residual path).
    """
    nodes = list(model.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    inits = {t.name for t in model.graph.initializer}
    changed = 0
    for n in nodes:
        if n.op_type in QUANTIZABLE_OPS or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, name in enumerate(n.input):
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                n.input[i] = q.input[0]
                changed += 1
            elif dq.input[0] in inits:
                pass  # a weight DQ read by a non-quantized op: left for check_qdq_rules to flag
    for o in model.graph.output:
        dq = producer.get(o.name)
        if dq is not None and dq.op_type == "DequantizeLinear":
            raise RuntimeError(f"graph output {o.name} is produced by a DequantizeLinear")
    _drop_dead(model)
    return changed


def _drop_dead(model) -> None:
    live = {o.name for o in model.graph.output}
    keep = []
    for n in reversed(list(model.graph.node)):
        if any(o in live for o in n.output):
            keep.append(n)
            live.update(i for i in n.input if i)
    keep.reverse()
    del model.graph.node[:]
    model.graph.node.extend(keep)
    used = {i for n in keep for i in n.input}
    kept_inits = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept_inits)


def qdq_scales(onnx_path) -> dict[str, np.ndarray]:
    """Every Q/DQ scale in a graph, by the node that holds it (for determinism checks and reports)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.name: inits[n.input[1]] for n in model.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear") and n.input[1] in inits}


def _scales_digest(onnx_path) -> str:
    h = hashlib.sha256()
    for name, s in sorted(qdq_scales(onnx_path).items()):
        h.update(name.encode())
        h.update(np.ascontiguousarray(s, dtype=np.float32).tobytes())
    return h.hexdigest()


def qdq_from_onnx(
    fp32_onnx,
    out_path,
    calibration_arrays: Iterable[np.ndarray],
    plan: PrecisionPlan,
    calibrate_method: str = "minmax",
    seed: int = 0,
    *,
    max_samples: int | None = None,
    percentile: float = 99.999,
    reduce_range: bool = False,
    fmt: str = "tensorrt-rules",
) -> QuantResult:
    """FP32 ONNX + calibration arrays ((3,H,W) or (N,3,H,W) float32) + plan -> INT8 Q/DQ ONNX in ``fmt``.

    ``reduce_range=True`` stores 7-bit weights (still int8, symmetric): CPUs without VNNI (AVX2,
    like the project machines) saturate int16 partial sums with full-range int8 weights in both
    ORT and OpenVINO (seen: OpenVINO cosine 0.964 -> 0.9998 on the tiny fixture). Keep False for
    TensorRT and VNNI/AMX CPUs.
    Raises UserError for an unknown ``calibrate_method`` or empty calibration data, and
    RuntimeError if the written graph breaks a rule of ``check_qdq_rules`` (a bug, not user input).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from coatnet_deploy.errors import UserError

    t0 = time.perf_counter()
    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise UserError(f"unknown calibration method {calibrate_method!r}",
                        f"choose one of {', '.join(CALIBRATE_METHODS)}")
    if fmt not in FORMATS:
        raise ValueError(f"unknown Q/DQ format {fmt!r} (one of {FORMATS})")
    source, n_batches = _calibration_source(calibration_arrays, seed, max_samples)
    if not n_batches:
        raise UserError("no calibration data", "INT8 needs representative images to set activation ranges",
                        "pass --calibration DIR with a few hundred images of the target domain")
    np.random.seed(seed)  # the histogram calibrators draw nothing at random today; pin it anyway

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = load_named(fp32_onnx)
    input_name = model.graph.input[0].name
    missing = [n for n in plan.quantized_nodes if n not in {x.name for x in model.graph.node}]
    if missing:
        raise UserError(f"precision plan names {len(missing)} node(s) not in {fp32_onnx}",
                        f"e.g. {missing[0]!r}", "compute the plan from the same ONNX file")

    notes = []
    with tempfile.TemporaryDirectory(prefix="qdq_") as tmp:
        named, prep = Path(tmp) / "named.onnx", Path(tmp) / "prep.onnx"
        onnx.save(model, str(named))
        # skip_optimization: ORT's optimizer renames and fuses nodes (MatMul+Add -> Gemm), which
        # would break the plan's node names; shape inference is all quantize_static needs.
        quant_pre_process(str(named), str(prep), skip_optimization=True)
        tensorrt = fmt == "tensorrt-rules"
        extra = {
            "ActivationSymmetric": tensorrt,
            "WeightSymmetric": True,
            "QuantizeBias": not tensorrt,
            "ForceQuantizeNoInputCheck": False,
            "CalibPercentile": percentile,
            # Not "CalibMaxIntermediateOutputs": in ORT 1.32 it discards collected batches instead of
            # folding them into the ranges. MinMax keeps only per-tensor ReduceMin/ReduceMax outputs,
            # so memory stays small; the images themselves are streamed by the reader.
        }
        if tensorrt:
            # Q/DQ on Conv/MatMul/Gemm outputs would feed BN/SiLU/Add/Softmax: inputs only.
            extra["OpTypesToExcludeOutputQuantization"] = list(QUANTIZABLE_OPS)
            # TensorRT fuses one Q/DQ into each consumer; a shared DQ feeding a float Add is not
            # what the plan says (the stray consumers are rewired below as well).
            extra["DedicatedQDQPair"] = True
        quantize_static(
            str(prep), str(out_path), _reader(input_name, source),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZABLE_OPS),
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_quantize=list(plan.quantized_nodes),
            nodes_to_exclude=list(plan.excluded),
            calibrate_method=methods[calibrate_method],
            extra_options=extra,
        )
    qmodel = onnx.load(str(out_path))
    if tensorrt:
        rewired = _rewire_stray_dq(qmodel)
        if rewired:
            notes.append(f"rewired {rewired} float consumer(s) of shared DQ outputs back to the float tensor")
        onnx.save(qmodel, str(out_path))
        violations = check_qdq_rules(out_path)
        if violations:
            raise RuntimeError("Q/DQ graph breaks TensorRT's rules:\n  " + "\n  ".join(violations[:20]))
    quantized = _quantized_consumers(qmodel)
    return QuantResult(
        path=out_path, plan=plan, calibrate_method=calibrate_method, calibration_samples=n_batches,
        seed=seed, quantized_nodes=quantized, scales_sha256=_scales_digest(out_path),
        seconds=time.perf_counter() - t0, notes=notes,
    )


def _quantized_consumers(model) -> list[str]:
    producer = {o: n for n in model.graph.node for o in n.output}
    return [n.name for n in model.graph.node if n.op_type in QUANTIZABLE_OPS
            and any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)]


def _weight_axis(consumer, input_index: int) -> int | None:
    """The output-channel axis TensorRT expects for a weight input, or None if not a weight slot."""
    if input_index != 1:
        return None
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "MatMul":
        return 1  # B is [K, N]: N output channels
    if consumer.op_type == "Gemm":
        trans_b = next((a.i for a in consumer.attribute if a.name == "transB"), 0)
        return 0 if trans_b else 1
    return None


def check_qdq_rules(onnx_path) -> list[str]:
    """Q/DQ ONNX path or ModelProto -> list of TensorRT-rule violations (empty = compliant).

    Rules: int8 everywhere (no uint8/int32), every zero point 0, Q/DQ only feeding
    Conv/MatMul/Gemm (or the DQ of its own pair), activations per tensor, weights per channel on
    the output-channel axis, at least one quantized node.
    """
    import onnx
    from onnx import TensorProto, numpy_helper

    model = onnx.load(str(onnx_path)) if isinstance(onnx_path, (str, Path)) else onnx_path
    inits = {t.name: t for t in model.graph.initializer}
    const_nodes = {o: n for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            consumers.setdefault(name, []).append((n, i))

    def const(name):
        if name in inits:
            return numpy_helper.to_array(inits[name]), inits[name].data_type
        if name in const_nodes:
            t = next(a.t for a in const_nodes[name].attribute if a.name == "value")
            return numpy_helper.to_array(t), t.data_type
        return None, None

    v: list[str] = []
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        return ["no QuantizeLinear/DequantizeLinear nodes: the graph is not quantized"]
    for n in qdq:
        where = f"{n.op_type} {n.name!r}"
        if len(n.input) < 3 or not n.input[2]:
            v.append(f"{where}: no zero point (defaults to uint8)")
        else:
            zp, zdt = const(n.input[2])
            if zp is None:
                v.append(f"{where}: zero point is not a constant")
            else:
                if zdt != TensorProto.INT8:
                    v.append(f"{where}: zero point dtype {TensorProto.DataType.Name(zdt)}, expected INT8")
                if np.any(zp != 0):
                    v.append(f"{where}: non-zero zero point (asymmetric)")
        scale, _ = const(n.input[1])
        if scale is None:
            v.append(f"{where}: scale is not a constant")
            continue
        if n.op_type == "DequantizeLinear":
            src, sdt = const(n.input[0])
            if src is not None and sdt != TensorProto.INT8:
                v.append(f"{where}: dequantizes a {TensorProto.DataType.Name(sdt)} constant (int32 bias?)")
            q_in = producer[n.input[0]].input[0] if n.input[0] in producer and producer[n.input[0]].op_type == "QuantizeLinear" else None
            if src is None and q_in in inits:
                # a float weight initializer quantized in the graph (ModelOpt's initializer -> Q -> DQ): TensorRT folds the Q
                src, _ = const(q_in)
            users = consumers.get(n.output[0], [])
            if not users:
                v.append(f"{where}: output unused")
            for user, idx in users:
                if user.op_type not in QUANTIZABLE_OPS:
                    v.append(f"{where}: feeds {user.op_type} {user.name!r} (only Conv/MatMul/Gemm may)")
                    continue
                is_weight = src is not None
                axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
                if is_weight:
                    want = _weight_axis(user, idx)
                    if want is None:
                        v.append(f"{where}: constant on input {idx} of {user.op_type} {user.name!r}")
                    elif scale.size == 1 and src.shape[want] > 1:
                        v.append(f"{where}: weight of {user.name!r} is per-tensor, expected per-channel axis {want}")
                    elif scale.size > 1 and (axis % src.ndim != want or scale.size != src.shape[want]):
                        v.append(f"{where}: weight of {user.name!r} quantized on axis {axis}, expected {want}")
                elif scale.size != 1:
                    v.append(f"{where}: activation into {user.name!r} is per-channel, expected per-tensor")
        else:  # QuantizeLinear
            users = consumers.get(n.output[0], [])
            if any(u.op_type != "DequantizeLinear" for u, _ in users):
                v.append(f"{where}: feeds something other than a DequantizeLinear")
            src_prod = producer.get(n.input[0])
            if src_prod is not None and src_prod.op_type == "DequantizeLinear":
                v.append(f"{where}: quantizes the output of a DequantizeLinear")
            out_dtype = next((a.i for a in n.attribute if a.name == "output_dtype"), 0)
            if out_dtype not in (0, TensorProto.INT8):
                v.append(f"{where}: output_dtype {TensorProto.DataType.Name(out_dtype)}, expected INT8")
    return v
