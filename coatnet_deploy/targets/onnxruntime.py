"""Target ``onnxruntime``: ONNX Runtime's CPU execution provider, with its optimized graph saved.

The bundle carries the portable ``model.onnx`` and ``model.ort.onnx``, the graph as ORT optimizes it
for this CPU (fused ops, NCHWc layouts), so the device skips the optimization passes at load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coatnet_deploy.targets import register
from coatnet_deploy.targets.base import EngineBuild, EngineJob, Target

OPTIMIZED = "model.ort.onnx"


@register
class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    order = 20
    default = True  # runs on any CPU with only a pip install, and has every precision
    summary = "ONNX Runtime, CPU execution provider (optimized graph saved)"
    module = "onnxruntime"
    install_hint = "pip install onnxruntime"
    cells = {
        "fp32": ("model.onnx + model.ort.onnx", "ORT graph optimizations, optimized model saved"),
        "fp16": ("model.onnx + model.ort.onnx", "float16 graph run by ORT"),
        "int8": ("model.onnx + model.ort.onnx", "Q/DQ graph run by ORT"),
    }

    def recipe(self, precision: str, cfg):
        from coatnet_deploy.host import cpu_has_vnni
        from coatnet_deploy.precision import recipes

        if precision == "int8":
            # Without VNNI, x86 int8 kernels add pairs of u8*s8 products in int16 and saturate with
            # full-range weights; 7-bit weights avoid that.
            return recipes.tensorrt_qdq_recipe(reduce_range=not cpu_has_vnni())
        return recipes.default_recipe(precision)

    def build(self, job: EngineJob) -> EngineBuild:
        from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner, save_optimized_model

        opt = job.bundle_dir / OPTIMIZED
        save_optimized_model(str(job.bundle_dir / "model.onnx"), str(opt))
        threads = job.cfg.threads
        return EngineBuild(
            engine={"runtime": "onnxruntime", "files": [OPTIMIZED], "graph_optimization": "all (pre-applied, saved)",
                    "note": f"{OPTIMIZED} holds ORT's CPU-specific fused ops; model.onnx is the portable graph"},
            runner=lambda: OnnxRuntimeRunner(str(opt), threads=threads, optimization="disable"))

    def open_runner(self, bundle: Path, manifest: dict[str, Any], threads: int | None = None, mode: str = "latency"):
        self.need_module()
        from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(str(Path(bundle) / OPTIMIZED), threads=threads, optimization="disable"), f"onnxruntime on {OPTIMIZED}"
