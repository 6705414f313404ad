"""INT8 and FP8 Q/DQ ONNX by NVIDIA Model Optimizer (``modelopt.onnx.quantization.quantize``).

ModelOpt is the quantizer TensorRT 10/11 documents for explicit quantization: it places Q/DQ where
TensorRT's kernels fuse them (residual Adds, pooling, BatchNorm, attention MatMuls) and it writes the
FP8 (E4M3) Q/DQ graphs that Ada, Hopper and Blackwell GPUs run. It is an optional extra
(``pip install 'coatnet-deploy[modelopt]'``) and is imported only inside these functions.

What this module fixes around the call (FIELD-NOTES, "NVIDIA ModelOpt ONNX PTQ on a CPU-only machine"):

- ``calibration_eps=['cpu']``: calibration runs on ONNX Runtime's CPU provider, no GPU needed.
- ``high_precision_dtype='fp32'``: ModelOpt's default ('fp16') casts the whole float remainder to
  float16; the project's fp16 is its own precision, so the Q/DQ graph keeps float32 around its Q/DQ.
- The precision plan's deliberate float nodes (LayerNorm, Softmax, GELU, relative-position bias,
  squeeze-excite, head, user and sensitivity exclusions) go to ``nodes_to_exclude``: what the plan keeps
  float stays float, and that is checked on the written graph.
- Calibration is the export's own set (same images, same preprocessing, same seeded selection).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from coatnet_deploy.precision.plan import QUANTIZABLE_OPS, R_OTHER, PrecisionPlan, load_named
from coatnet_deploy.precision.qdq import QuantResult, _calibration_source, _scales_digest

#: the release this project's recipe was measured with (pyproject.toml's ``modelopt`` extra pins it)
MODELOPT_VERSION = "0.47.0"
MODES = ("int8", "fp8")
#: the export's calibrate_method -> ModelOpt's calibration_method (ModelOpt offers max and entropy)
CALIBRATION_METHODS = {"minmax": "max", "entropy": "entropy"}
INSTALL_HINT = "pip install 'coatnet-deploy[modelopt]'"
#: fixed arguments of every call (recorded in precision_details)
FIXED_SETTINGS = {"calibration_eps": ["cpu"], "high_precision_dtype": "fp32"}


def available() -> bool:
    """Is ModelOpt's ONNX quantizer importable here (without importing it)."""
    return all(importlib.util.find_spec(m) is not None for m in ("modelopt", "onnx_graphsurgeon"))


def installed_version() -> str | None:
    """The installed nvidia-modelopt version, or None."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nvidia-modelopt")
    except PackageNotFoundError:
        return None


def kept_float(plan: PrecisionPlan) -> list[str]:
    """The nodes the plan keeps float on purpose (every reason but "not a quantized op type")."""
    return [n for n in plan.float_nodes if plan.reasons.get(n, R_OTHER) != R_OTHER]


def settings(mode: str, calibrate_method: str) -> dict[str, Any]:
    """The ModelOpt arguments a call uses (precision_details.settings; the plan's float nodes come on top)."""
    return {"quantize_mode": mode, "calibration_method": CALIBRATION_METHODS.get(calibrate_method, calibrate_method),
            **FIXED_SETTINGS}


def check_calibrate_method(calibrate_method: str, mode: str = "int8", target: str = "tensorrt") -> None:
    """UserError (before any heavy work) when ModelOpt does not offer ``calibrate_method``."""
    from coatnet_deploy.errors import UserError

    if calibrate_method not in CALIBRATION_METHODS:
        rules = f", or set {target}: {{quantizer: rules}} for the project's own recipe" if mode == "int8" else ""
        raise UserError(f"calibrate_method {calibrate_method!r} is not offered by ModelOpt",
                        f"ModelOpt calibrates {mode} with {' or '.join(CALIBRATION_METHODS)} (its 'max' / 'entropy')",
                        f"pass --calibrate-method minmax or entropy{rules}")


def _exclude_patterns(names: Iterable[str]) -> list[str]:
    # nodes_to_exclude are regular expressions matched against node names: anchor and escape each
    return [f"^{re.escape(n)}$" for n in names]


def dq_consumers(model) -> dict[str, int]:
    """Q/DQ placement: op type -> how many inputs of that op type read a DequantizeLinear output."""
    producer = {o: n for n in model.graph.node for o in n.output}
    counts: Counter = Counter()
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for name in n.input:
            p = producer.get(name)
            if p is not None and p.op_type == "DequantizeLinear":
                counts[n.op_type] += 1
    return dict(sorted(counts.items()))


def _quantized_nodes(model) -> list[str]:
    producer = {o: n for n in model.graph.node for o in n.output}
    return [n.name for n in model.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
            and any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)]


def rules_findings(onnx_path) -> dict[str, int]:
    """The TensorRT rules checker (``qdq.check_qdq_rules``) on a graph, findings counted by kind.

    For a ModelOpt graph the "feeds <op>" findings are its design (Q/DQ in front of the Adds, pools
    and norms TensorRT fuses), not errors; the other kinds (zero points, weight axes, per-tensor
    activations) apply to INT8 as they stand.
    """
    from coatnet_deploy.precision.qdq import check_qdq_rules

    kinds: Counter = Counter()
    for v in check_qdq_rules(onnx_path):
        what = v.split(": ", 1)[-1]
        what = re.sub(r"'[^']*'", "", what)
        what = re.sub(r"\s+", " ", what).strip()
        kinds[what] += 1
    return dict(sorted(kinds.items()))


@contextlib.contextmanager
def ort_quantization_restored():
    """Undo what ModelOpt patches in ONNX Runtime's quantization package when it runs.

    ``quantize`` replaces methods of ORT's calibrators and quantizers for the whole process
    (``modelopt.onnx.quantization.ort_patching.patch_ort_modules``) and never puts them back; after
    it, ORT's own ``quantize_static`` (the rules recipe, the ONNX Runtime CPU recipe) fails in the same
    process. Every function of those modules and of their classes is put back as it was.
    """
    import inspect

    from onnxruntime.quantization import base_quantizer, calibrate, onnx_quantizer, qdq_quantizer, quantize

    saved = []
    for mod in (calibrate, quantize, base_quantizer, onnx_quantizer, qdq_quantizer):
        saved.append((mod, dict(vars(mod))))
        saved += [(obj, dict(vars(obj))) for obj in list(vars(mod).values())
                  if inspect.isclass(obj) and obj.__module__ == mod.__name__]
    try:
        yield
    finally:
        for owner, attrs in saved:
            current = dict(vars(owner))
            for name in current.keys() - attrs.keys():
                delattr(owner, name)
            for name, value in attrs.items():
                if name not in ("__dict__", "__weakref__") and current.get(name) is not value:
                    setattr(owner, name, value)  # __init__ included: ModelOpt replaces CalibraterBase.__init__


def modelopt_qdq_from_onnx(
    fp32_onnx,
    out_path,
    calibration_arrays,
    plan: PrecisionPlan,
    calibrate_method: str = "minmax",
    seed: int = 0,
    *,
    mode: str = "int8",
    max_samples: int | None = None,
) -> QuantResult:
    """FP32 ONNX + calibration (a CalibrationSet or (3,H,W)/(N,3,H,W) arrays) + plan -> ModelOpt Q/DQ ONNX.

    ``mode``: "int8" (symmetric int8, per-channel weights) or "fp8" (E4M3 activations and weights).
    ``calibrate_method``: "minmax" (ModelOpt's "max") or "entropy". Raises UserError for a method
    ModelOpt does not offer, empty calibration data or a missing ModelOpt; RuntimeError when the
    written graph quantizes a node the plan keeps float (a bug, not user input).
    """
    import onnx

    from coatnet_deploy.errors import TargetUnavailable, UserError

    t0 = time.perf_counter()
    if mode not in MODES:
        raise ValueError(f"unknown ModelOpt mode {mode!r} (one of {MODES})")
    check_calibrate_method(calibrate_method, mode)
    if not available():
        raise TargetUnavailable(f"{mode} Q/DQ by NVIDIA ModelOpt needs nvidia-modelopt", "it is not installed here", INSTALL_HINT)
    source, n_batches = _calibration_source(calibration_arrays, seed, max_samples)
    if not n_batches:
        raise UserError("no calibration data", f"{mode.upper()} needs representative images to set activation ranges",
                        "pass --calibration DIR with a few hundred images of the target domain")
    data = np.ascontiguousarray(np.concatenate([np.asarray(b, dtype=np.float32) for b in source()]))
    np.random.seed(seed)  # max and entropy draw nothing at random today; pin it anyway

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = load_named(fp32_onnx)
    names = {n.name for n in model.graph.node}
    missing = [n for n in plan.quantized_nodes if n not in names]
    if missing:
        raise UserError(f"precision plan names {len(missing)} node(s) not in {fp32_onnx}", f"e.g. {missing[0]!r}",
                        "compute the plan from the same ONNX file")
    keep = kept_float(plan)
    from modelopt.onnx.quantization import quantize  # the optional extra, imported only here

    log = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="modelopt_") as tmp:
        named = Path(tmp) / "named.onnx"
        onnx.save(model, str(named))
        # ModelOpt and ORT's calibrator print progress bars and an NVML "not found" error it handles
        # itself: kept out of the export's progress lines, shown only when the call fails.
        try:
            with ort_quantization_restored(), contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                quantize(str(named), quantize_mode=mode, calibration_data=data,
                         calibration_method=CALIBRATION_METHODS[calibrate_method],
                         nodes_to_exclude=_exclude_patterns(keep) or None, output_path=str(Path(tmp) / "out.onnx"),
                         log_level="ERROR", **FIXED_SETTINGS)
        except Exception as e:  # noqa: BLE001 - re-raised with ModelOpt's own last lines
            tail = " | ".join(line for line in log.getvalue().strip().splitlines()[-3:] if line.strip())
            raise RuntimeError(f"ModelOpt {mode} quantization failed: {type(e).__name__}: {e}" + (f" ({tail})" if tail else "")) from e
        qmodel = onnx.load(str(Path(tmp) / "out.onnx"))
    onnx.save(qmodel, str(out_path))

    quantized = _quantized_nodes(qmodel)
    lost = [n for n in keep if n not in {x.name for x in qmodel.graph.node}]
    wrong = sorted(set(keep) & set(quantized))
    if wrong:
        raise RuntimeError(f"ModelOpt quantized {len(wrong)} node(s) the precision plan keeps float, e.g. {wrong[0]!r}")
    producer = {o: n for n in qmodel.graph.node for o in n.output}
    for o in qmodel.graph.output:
        if o.name in producer and producer[o.name].op_type == "DequantizeLinear":
            raise RuntimeError(f"graph output {o.name} is produced by a DequantizeLinear")
    notes = [f"nvidia-modelopt {installed_version()}, {mode}: Q/DQ in front of "
             + ", ".join(f"{k} x{v}" for k, v in dq_consumers(qmodel).items())]
    if lost:
        notes.append(f"{len(lost)} node(s) the plan keeps float are not in ModelOpt's output under their names "
                     f"(e.g. {lost[0]!r}): not checked")
    compute = [n for n in quantized if n in plan.op_types and plan.op_types[n] in QUANTIZABLE_OPS]
    return QuantResult(
        path=out_path, plan=plan, calibrate_method=calibrate_method, calibration_samples=n_batches, seed=seed,
        quantized_nodes=compute, scales_sha256=_scales_digest(out_path), seconds=time.perf_counter() - t0, notes=notes,
    )
