"""ONNX Runtime: the runner, and the writer of an ORT-optimized model for the device.

onnxruntime is imported inside functions so that importing this module stays cheap and torch-free.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from coatnet_deploy.backends.base import Runner
from coatnet_deploy.errors import TargetUnavailable, UserError

#: user-facing name -> ``onnxruntime.GraphOptimizationLevel`` member
OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}

OPTIMIZED_MODEL_NAME = "model.ort.onnx"


def _check_optimization(optimization: str) -> str:
    if optimization not in OPTIMIZATION_LEVELS:
        raise UserError(
            f"unknown ONNX Runtime optimization level '{optimization}'",
            "it is not one ONNX Runtime has",
            f"use one of: {', '.join(OPTIMIZATION_LEVELS)}",
        )
    return optimization


def _check_model_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"ONNX model '{p}' not found", "the path is not a file", "pass the path of a .onnx file")
    return p


def session_options(
    threads: int | None = None,
    optimization: str = "all",
    optimized_model_out: str | Path | None = None,
):
    """SessionOptions for a reproducible, single-stream CPU run -> ``onnxruntime.SessionOptions``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # 0 lets ORT pick (one thread per physical core); a number pins it so runs are comparable.
    opts.intra_op_num_threads = int(threads) if threads else 0
    # One request at a time through a sequential graph: inter-op threads would only compete
    # with the intra-op pool for the same cores.
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[_check_optimization(optimization)])
    if optimized_model_out is not None:
        opts.optimized_model_filepath = str(optimized_model_out)
    return opts


def save_optimized_model(onnx_path: str | Path, out_path: str | Path, optimization: str = "all") -> Path:
    """Write the model as ORT optimizes it: ONNX path, file or directory -> path of the written file.

    A directory gets ``model.ort.onnx``. With ``optimization='all'`` ORT may write CPU-specific
    fused ops (e.g. NCHWc layouts): fine for the ORT CPU target, not a portable ONNX.
    """
    import onnxruntime as ort

    src = _check_model_path(onnx_path)
    out = Path(out_path)
    if out.is_dir() or out.suffix == "":
        out = out / OPTIMIZED_MODEL_NAME
    out.parent.mkdir(parents=True, exist_ok=True)
    opts = session_options(optimization=optimization, optimized_model_out=out)
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])
    if not out.is_file():
        raise RuntimeError(f"ONNX Runtime did not write the optimized model to {out}")
    return out


class OnnxRuntimeRunner(Runner):
    """ONNX Runtime session over an ONNX file; float32 NCHW in, logits out."""

    name = "onnxruntime"
    framework = "onnxruntime"
    thread_safe = True  # InferenceSession.run is documented thread-safe

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        optimization: str = "all",
        optimized_model_out: str | Path | None = None,
        providers: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        self.threads = threads
        self.optimization = _check_optimization(optimization)
        self.optimized_model_out = Path(optimized_model_out) if optimized_model_out else None
        # Only the CPU provider by default: the pip wheel also lists Azure, which is not a device.
        self.providers = list(providers) if providers else ["CPUExecutionProvider"]
        self.session = None
        self.input_name: str | None = None
        self.output_name: str | None = None

    def _activate(self) -> None:
        import onnxruntime as ort

        _check_model_path(self.path)
        available = ort.get_available_providers()
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise TargetUnavailable(
                f"ONNX Runtime provider(s) {', '.join(missing)} not available here",
                f"this onnxruntime build has {', '.join(available)}",
                "install the onnxruntime build for that provider or leave providers unset",
            )
        opts = session_options(self.threads, self.optimization, self.optimized_model_out)
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers)
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise UserError(
                f"{self.path} has {len(inputs)} inputs",
                "a classifier takes one NCHW image batch",
                "export the model with a single input named 'input'",
            )
        self.input_name = inputs[0].name
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "logits" if "logits" in outputs else outputs[0]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: batch})[0]

    def _deactivate(self) -> None:
        self.session = None

    def settings(self) -> dict[str, Any]:
        import onnxruntime as ort

        s: dict[str, Any] = {
            "framework": "onnxruntime",
            "version": ort.__version__,
            "providers": self.session.get_providers() if self.session is not None else self.providers,
            "threads": self.threads,
            "intra_op_num_threads": int(self.threads) if self.threads else 0,
            "inter_op_num_threads": 1,
            "execution_mode": "sequential",
            "optimization": self.optimization,
            "input_name": self.input_name,
            "output_name": self.output_name,
        }
        if self.optimized_model_out is not None:
            s["optimized_model"] = str(self.optimized_model_out)
            s["optimized_model_portable"] = self.optimization != "all"
        return s


# -- what runs in int8: read from ORT itself --------------------------------------------------------

#: ops ORT runs with int8 kernels, and the float ops that do the same work (matmul-like compute)
INT8_COMPUTE_OPS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "MatMulIntegerToFloat",
                    "DynamicQuantizeMatMul", "QAttention")
FLOAT_COMPUTE_OPS = ("Conv", "FusedConv", "MatMul", "FusedMatMul", "Gemm", "FusedGemm", "ConvTranspose")


def _precision_of(op: str) -> str:
    return "int8" if op in INT8_COMPUTE_OPS or op.startswith("QLinear") else "float"


def op_census(optimized_model: str | Path) -> dict[str, Any]:
    """The graph ORT runs (a model saved by ``save_optimized_model``) -> op census (report.op_census).

    ``by_op``: every op type with the precision its kernel computes in; ``int8_share``: the fraction of
    the matmul-like compute nodes (Conv, MatMul, Gemm and their fused / QLinear forms) that run int8.
    """
    import onnx

    from collections import Counter

    m = onnx.load(str(optimized_model), load_external_data=False)
    counts = Counter(n.op_type for n in m.graph.node)
    by_op = [{"op": op, "precision": _precision_of(op), "count": n, "compute": op in INT8_COMPUTE_OPS or op in FLOAT_COMPUTE_OPS}
             for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    int8 = sum(r["count"] for r in by_op if r["compute"] and r["precision"] == "int8")
    flt = sum(r["count"] for r in by_op if r["compute"] and r["precision"] == "float")
    return {"runtime": "onnxruntime", "source": f"{Path(optimized_model).name} (the graph ORT optimized for this CPU)",
            "by_op": by_op, "int8_compute_nodes": int8, "float_compute_nodes": flt,
            "int8_share": int8 / (int8 + flt) if int8 + flt else 0.0,
            "note": "QLinear*/MatMulInteger/QGemm run int8 kernels; Conv/FusedConv/MatMul/FusedMatMul/Gemm run float"}


def profile_by_op(model: str | Path, batch: np.ndarray, threads: int | None = None, optimization: str = "disable",
                  runs: int = 5) -> dict[str, Any]:
    """Per-op-type kernel time of ``runs`` inferences on ``batch`` (ORT's own profiler) -> report.profile."""
    import json as _json
    import os
    import tempfile

    import onnxruntime as ort

    from collections import defaultdict

    opts = session_options(threads, optimization)
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as tmp:
        opts.profile_file_prefix = os.path.join(tmp, "p")
        sess = ort.InferenceSession(str(model), sess_options=opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        x = np.ascontiguousarray(batch, dtype=np.float32)
        sess.run(None, {name: x})  # warm-up; its events are dropped below
        for _ in range(runs):
            sess.run(None, {name: x})
        events = _json.loads(Path(sess.end_profiling()).read_text())
    runs_seen = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    first_end = runs_seen[0]["ts"] + runs_seen[0]["dur"] if runs_seen else 0
    ms: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time") and e["ts"] >= first_end:
            op = e["args"]["op_name"]
            ms[op] += e["dur"] / 1000.0 / runs
            count[op] += 1
    total = sum(ms.values())
    rows = [{"layer_type": op, "precision": _precision_of(op), "count": count[op] // runs, "ms": round(t, 4),
             "share": t / total if total else 0.0, "compute": op in INT8_COMPUTE_OPS or op in FLOAT_COMPUTE_OPS}
            for op, t in sorted(ms.items(), key=lambda kv: -kv[1])]
    return {"runtime": "onnxruntime", "batch": int(x.shape[0]), "runs": runs, "total_ms": round(total, 4), "by_layer_type": rows,
            "source": "onnxruntime profiler, kernel time per op type (mean over runs)"}
