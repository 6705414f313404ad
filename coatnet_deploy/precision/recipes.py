"""Precision recipes targets pick from: how fp32 / fp16 / int8 get into the graph an engine is built from.

A recipe is data plus one quantize function (``targets.base.Recipe``); the export's precision step
runs it the same way for every target (plan, calibration, sensitivity, accuracy budget), so a target
only says *which* format its runtime runs best.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

@dataclass(frozen=True)
class Recipe:
    """How a target's precision gets into the ONNX graph its engine is built from.

    ``kind``: "float" (the float32 graph itself; the engine may still store weights in fp16),
    "fp16" (the float16 graph pass), "int8" or "fp8" (explicit Q/DQ by the precision plan).
    For "int8" and "fp8": ``plan_options`` go to ``precision.plan.plan_from_onnx`` and ``quantize`` writes the
    Q/DQ file: ``quantize(graph, dst, calibration, plan, calibrate_method=..., seed=...) -> QuantResult``.
    ``details`` is what the manifest says about the format (``precision_details``).
    """

    kind: str
    details: dict[str, Any] = field(default_factory=dict)
    plan_options: dict[str, Any] = field(default_factory=dict)
    quantize: Callable[..., Any] | None = None
    #: for "int8": a float-graph pass run before the plan and the quantizer, ``prepare(src, dst) -> dst``
    prepare: Callable[[Any, Any], Any] | None = None


QDQ_RULES = "int8 symmetric, zero point 0, per-channel weights, per-tensor activations, Conv/MatMul/Gemm inputs only"


def float_recipe(**details: Any) -> Recipe:
    return Recipe("float", details=dict(details))


def fp16_graph_recipe() -> Recipe:
    from coatnet_deploy.precision.fp16 import DEFAULT_KEEP_FLOAT32_OPS

    return Recipe("fp16", details={"kind": "fp16 graph", "kept_float32_ops": list(DEFAULT_KEEP_FLOAT32_OPS), "io": "float32"})


def tensorrt_qdq_recipe(reduce_range: bool = False, **plan_options: Any) -> Recipe:
    """Explicit Q/DQ by TensorRT's rules (``precision.qdq``), checked by ``check_qdq_rules``.

    ``reduce_range`` stores 7-bit weights: for CPU runtimes without VNNI (see ``host.cpu_has_vnni``);
    TensorRT-bound graphs keep the full range.
    """
    from coatnet_deploy.precision.qdq import qdq_from_onnx

    return Recipe("int8", details={"kind": "int8 Q/DQ", "format": "tensorrt-rules", "rules": QDQ_RULES, "reduce_range": reduce_range},
                  plan_options=dict(plan_options), quantize=partial(qdq_from_onnx, reduce_range=reduce_range))


def _ort_basic_graph(src, dst):
    # ORT's basic passes (constant folding, Conv + BatchNorm / Mul / Add folding) are plain ONNX; done
    # before quantizing, the folded BNs no longer sit between a QLinearConv and its Q/DQ pairs, where ORT
    # cannot fuse them (measured on coatnet_0_rw_224: 0.88x instead of 1.02x plain ORT at batch 1).
    from coatnet_deploy.backends.onnxrt import save_optimized_model

    return save_optimized_model(src, dst, optimization="basic")


def ort_cpu_qdq_recipe(reduce_range: bool, device: str | None = None, **plan_options: Any) -> Recipe:
    """ONNX Runtime's QDQ placement for its CPU provider (``precision.qdq`` fmt "onnxruntime-cpu"):
    U8 asymmetric activations, S8 per-channel weights, outputs and biases quantized, so ORT fuses
    QLinearConv; the float graph first gets ORT's basic passes. Not a TensorRT file: the manifest says
    which format the bundle holds."""
    from coatnet_deploy.host import int8_isa
    from coatnet_deploy.precision.qdq import qdq_from_onnx

    return Recipe("int8", details={"kind": "int8 Q/DQ", "format": "onnxruntime-cpu", "activations": "uint8 asymmetric",
                                   "weights": "int8 symmetric per-channel", "reduce_range": reduce_range, "host_int8_isa": int8_isa(),
                                   **({"device": device} if device else {}),
                                   "rules": "ONNX Runtime CPU QDQ: Conv/MatMul/Gemm inputs and outputs, int32 biases",
                                   "float_graph_passes": "onnxruntime basic (Conv+BatchNorm folding, constant folding)"},
                  plan_options=dict(plan_options), quantize=partial(qdq_from_onnx, reduce_range=reduce_range, fmt="onnxruntime-cpu"),
                  prepare=_ort_basic_graph)


#: the INT8 quantizers of the targets that feed TensorRT (``tensorrt.quantizer``, ``onnx.quantizer``)
QUANTIZERS = ("auto", "modelopt", "rules")


def modelopt_qdq_recipe(mode: str = "int8", calibrate_method: str = "minmax", **plan_options: Any) -> Recipe:
    """Explicit Q/DQ by NVIDIA ModelOpt (``precision.modelopt_ptq``): "int8" or "fp8" (E4M3).

    Needs the ``modelopt`` extra; ``precision_details`` names the quantizer, its version and its settings.
    """
    from coatnet_deploy.precision import modelopt_ptq as mo

    details = {"kind": f"{mode} Q/DQ", "format": "modelopt", "quantizer": "nvidia-modelopt",
               "quantizer_version": mo.installed_version(), "settings": mo.settings(mode, calibrate_method),
               "rules": "ModelOpt's TensorRT placement: Conv/MatMul inputs (attention MatMuls included) and the "
                        "Add/pool/norm inputs TensorRT fuses; the plan's float nodes excluded",
               "reduce_range": False}
    return Recipe(mode, details=details, plan_options=dict(plan_options), quantize=partial(mo.modelopt_qdq_from_onnx, mode=mode))


def tensorrt_int8_recipe(quantizer: str = "auto", calibrate_method: str = "minmax", **plan_options: Any) -> Recipe:
    """INT8 for a TensorRT-bound graph: ModelOpt's Q/DQ (``quantizer`` "modelopt", or "auto" with the
    ``modelopt`` extra installed) or the project's TensorRT rules ("rules", or "auto" without it).

    "auto" picks ModelOpt by measurement (docs/INT8.md: same held-out accuracy as the rules on the
    digits model, and TensorRT's own fusion-aware placement); ``details["quantizer_choice"]`` says why.
    """
    from coatnet_deploy.errors import TargetUnavailable, UserError
    from coatnet_deploy.precision import modelopt_ptq as mo

    if quantizer not in QUANTIZERS:
        raise UserError(f"unknown quantizer '{quantizer}'", f"valid quantizers are {', '.join(QUANTIZERS)}", "fix the export config")
    if quantizer == "rules" or (quantizer == "auto" and not mo.available()):
        recipe = tensorrt_qdq_recipe(**plan_options)
        why = "asked for (quantizer: rules)" if quantizer == "rules" else f"nvidia-modelopt not installed ({mo.INSTALL_HINT})"
        recipe.details.update({"quantizer": "tensorrt-rules", "quantizer_choice": f"{quantizer}: tensorrt-rules, {why}"})
        return recipe
    if not mo.available():
        raise TargetUnavailable("quantizer: modelopt needs nvidia-modelopt", "it is not installed here", mo.INSTALL_HINT)
    recipe = modelopt_qdq_recipe("int8", calibrate_method, **plan_options)
    recipe.details["quantizer_choice"] = f"{quantizer}: nvidia-modelopt" + (", installed" if quantizer == "auto" else "")
    return recipe


def default_recipe(precision: str) -> Recipe:
    """fp32: the float graph; fp16: the float16 graph pass; int8: TensorRT-rule Q/DQ, full range."""
    if precision == "fp32":
        return float_recipe()
    if precision == "fp16":
        return fp16_graph_recipe()
    return tensorrt_qdq_recipe()
