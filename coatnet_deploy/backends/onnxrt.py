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
