"""Target x precision: what exists, and whether it can run here.

``targets`` prints this table and ``export`` validates ``--target/--precision`` against it, so the
two cannot disagree. Probes are cheap and never import a runtime's heavy parts at module import.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from coatnet_deploy.errors import TargetUnavailable, UserError

TARGETS = ("onnx", "onnxruntime", "openvino", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Cell:
    target: str
    precision: str
    artifacts: str  # what the bundle carries for this cell
    how: str  # how the precision gets into the artifact


TABLE: dict[tuple[str, str], Cell] = {
    ("onnx", "fp32"): Cell("onnx", "fp32", "model.onnx", "traced float32 graph, simplified"),
    ("onnx", "fp16"): Cell("onnx", "fp16", "model.onnx", "float16 graph, LayerNorm/Softmax/reductions in float32 (TensorRT 11 ready)"),
    ("onnx", "int8"): Cell("onnx", "int8", "model.onnx", "explicit Q/DQ: symmetric int8, per-channel weights (TensorRT ready)"),
    ("onnxruntime", "fp32"): Cell("onnxruntime", "fp32", "model.onnx + model.ort.onnx", "ORT graph optimizations, optimized model saved"),
    ("onnxruntime", "fp16"): Cell("onnxruntime", "fp16", "model.onnx + model.ort.onnx", "float16 graph run by ORT"),
    ("onnxruntime", "int8"): Cell("onnxruntime", "int8", "model.onnx + model.ort.onnx", "Q/DQ graph run by ORT (S8S8)"),
    ("openvino", "fp32"): Cell("openvino", "fp32", "model.xml + model.bin", "IR, inference precision pinned to f32"),
    ("openvino", "fp16"): Cell("openvino", "fp16", "model.xml + model.bin", "IR with fp16 weights; f16 compute where the CPU has it"),
    ("openvino", "int8"): Cell("openvino", "int8", "model.xml + model.bin", "NNCF PTQ (transformer preset) or the Q/DQ ONNX, whichever is closer"),
    ("tensorrt", "fp32"): Cell("tensorrt", "fp32", "model.engine + build_engine.sh", "strongly typed float32 network"),
    ("tensorrt", "fp16"): Cell("tensorrt", "fp16", "model.engine + build_engine.sh", "precision from the float16 ONNX (strongly typed)"),
    ("tensorrt", "int8"): Cell("tensorrt", "int8", "model.engine + build_engine.sh", "precision from the Q/DQ ONNX (strongly typed)"),
}


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def availability(target: str, precision: str, defer_build: bool = False) -> tuple[bool, str]:
    """(can run here, reason). The reason says what is missing when it cannot."""
    check_choice(target, precision)
    if target in ("onnx", "onnxruntime"):
        return (True, "onnxruntime installed") if _has("onnxruntime") else (False, "onnxruntime is not installed (pip install onnxruntime)")
    if target == "openvino":
        if not _has("openvino"):
            return False, "openvino is not installed (pip install openvino)"
        if precision == "int8" and not _has("nncf"):
            return True, "openvino installed; nncf missing, INT8 uses the Q/DQ ONNX only"
        return True, "openvino installed (CPU plugin)"
    # tensorrt
    if not _has("onnxruntime"):
        return False, "onnxruntime is needed to check the precision-carrying ONNX"
    from coatnet_deploy.backends.cuda_probe import tensorrt_status

    ok, reason = tensorrt_status()
    if ok:
        return True, reason
    if defer_build:
        return True, f"engine build deferred to the device ({reason})"
    return False, f"{reason}; use --defer-build to write the bundle and build the engine on the device"


def check_choice(target: str, precision: str) -> Cell:
    """Validate a target/precision pair against the table, naming the valid choices."""
    if target not in TARGETS:
        raise UserError(f"unknown target '{target}'", f"valid targets are {', '.join(TARGETS)}", "pass one of them with --target")
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision '{precision}'", f"valid precisions are {', '.join(PRECISIONS)}", "pass one of them with --precision")
    cell = TABLE.get((target, precision))
    if cell is None:
        valid = [p for (t, p) in TABLE if t == target]
        raise UserError(f"{target} does not support {precision}", f"it supports {', '.join(valid)}", "choose another --precision")
    return cell


def require(target: str, precision: str, defer_build: bool = False) -> Cell:
    """Raise TargetUnavailable (exit 3) when the cell cannot run here."""
    cell = check_choice(target, precision)
    if defer_build and target != "tensorrt":
        raise UserError("--defer-build applies to --target tensorrt only", f"'{target}' engines are built here", "drop --defer-build")
    ok, reason = availability(target, precision, defer_build)
    if not ok:
        raise TargetUnavailable(f"target {target}/{precision} cannot run on this machine", reason)
    return cell


def table_rows(defer_build: bool = False) -> list[dict]:
    rows = []
    for (t, p), cell in TABLE.items():
        ok, reason = availability(t, p, defer_build)
        rows.append({"target": t, "precision": p, "available": ok, "reason": reason, "artifacts": cell.artifacts, "how": cell.how})
    return rows
