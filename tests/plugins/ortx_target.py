"""A target that lives outside coatnet_deploy: ONNX Runtime under another name ("ortx").

Used by tests/test_target_plugin.py to prove that a target is files only. It is a real runtime (an
ONNX Runtime session on the graph saved at the "extended" optimization level), not a fake one; it
is registered the way a plug-in package would be, through the ``coatnet_deploy.targets`` entry point.
"""

from __future__ import annotations

from pathlib import Path

from coatnet_deploy.targets.base import EngineBuild, Target

ENGINE = "model.ortx.onnx"


class OrtxTarget(Target):
    name = "ortx"
    summary = "ONNX Runtime, extended optimizations (test plug-in)"
    module = "onnxruntime"
    cells = {"fp32": (f"model.onnx + {ENGINE}", "ORT extended graph optimizations, saved")}

    def build(self, job):
        from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner, save_optimized_model

        out = job.bundle_dir / ENGINE
        save_optimized_model(str(job.bundle_dir / "model.onnx"), str(out), optimization="extended")
        threads = job.cfg.threads
        return EngineBuild(engine={"runtime": "onnxruntime", "files": [ENGINE], "graph_optimization": "extended"},
                           runner=lambda: OnnxRuntimeRunner(str(out), threads=threads, optimization="disable"))

    def open_runner(self, bundle, manifest, threads=None, mode="latency"):
        from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(str(Path(bundle) / ENGINE), threads=threads, optimization="disable"), f"onnxruntime on {ENGINE} (ortx)"
