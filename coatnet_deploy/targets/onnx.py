"""Target ``onnx``: the portable precision-carrying ONNX itself, checked on ONNX Runtime.

The bundle's engine is ``model.onnx``: the float32 graph, the float16 graph (TensorRT 11 ready) or
the Q/DQ graph by TensorRT's rules, for any runtime that reads ONNX. When the ONNX is meant for
TensorRT, ``onnx: {quantizer: modelopt}`` makes its INT8 Q/DQ NVIDIA ModelOpt's (the ``modelopt``
extra), as the tensorrt target's is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coatnet_deploy.targets import register
from coatnet_deploy.targets.base import EngineBuild, EngineJob, Option, Target


@register
class OnnxTarget(Target):
    name = "onnx"
    order = 10
    summary = "portable ONNX (checked on ONNX Runtime)"
    cpu = True
    module = "onnxruntime"
    install_hint = "pip install onnxruntime"
    cells = {
        "fp32": ("model.onnx", "traced float32 graph, simplified"),
        "fp16": ("model.onnx", "float16 graph, LayerNorm/Softmax/reductions in float32 (TensorRT 11 ready)"),
        "int8": ("model.onnx", "explicit Q/DQ: symmetric int8, per-channel weights (TensorRT ready)"),
    }
    options = {
        "quantizer": Option((str,), "rules", "int8 Q/DQ by: rules (precision/qdq.py, portable) | modelopt (NVIDIA ModelOpt, "
                            "for an ONNX meant for TensorRT; the modelopt extra) | auto (modelopt when installed)",
                            choices=("rules", "modelopt", "auto")),
    }

    def recipe(self, precision: str, cfg):
        from coatnet_deploy.precision import recipes

        if precision == "int8":
            quantizer = self.option_values(cfg.target_options.get(self.name))["quantizer"]
            return recipes.tensorrt_int8_recipe(quantizer, cfg.calibrate_method)
        return recipes.default_recipe(precision)

    def build(self, job: EngineJob) -> EngineBuild:
        from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

        path = job.bundle_dir / "model.onnx"
        threads = job.cfg.threads
        return EngineBuild(engine={"runtime": "onnxruntime", "files": ["model.onnx"]},
                           runner=lambda: OnnxRuntimeRunner(str(path), threads=threads))

    def preflight(self, cfg, options, batch, image_size) -> None:
        from coatnet_deploy.targets.tensorrt import check_quantizer

        check_quantizer(self, cfg)

    def report_sections(self, report: dict[str, Any], manifest: dict[str, Any]) -> list[Any]:
        from coatnet_deploy.targets.tensorrt import quantizer_section

        return quantizer_section(manifest)

    def open_runner(self, bundle: Path, manifest: dict[str, Any], threads: int | None = None, mode: str = "latency"):
        self.need_module()
        from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(str(Path(bundle) / "model.onnx"), threads=threads), "onnxruntime on model.onnx"
