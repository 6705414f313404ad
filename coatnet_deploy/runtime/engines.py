"""Pick the runner a bundle names. Torch-free and onnx-free: the device runtime and `parity` use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coatnet_deploy.errors import TargetUnavailable, UserError


def open_runner(bundle: str | Path, manifest: dict[str, Any], threads: int | None = None, mode: str = "latency"):
    """A (not yet activated) Runner for the bundle's engine, and a note on what runs.

    A TensorRT bundle whose engine was deferred runs its precision-carrying ONNX on ONNX Runtime
    until ``build_engine.sh`` has produced ``model.engine`` on the device.
    """
    root = Path(bundle)
    target = manifest["target"]
    engine = manifest.get("engine", {})
    if target == "onnx":
        from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(str(root / "model.onnx"), threads=threads), "onnxruntime on model.onnx"
    if target == "onnxruntime":
        from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(str(root / "model.ort.onnx"), threads=threads, optimization="disable"), "onnxruntime on model.ort.onnx"
    if target == "openvino":
        _need("openvino", "pip install openvino")
        from coatnet_deploy.backends.openvino import OpenVINORunner

        hint = engine.get("inference_precision_hint", "f32")
        return OpenVINORunner(str(root / "model.xml"), threads=threads, inference_precision=hint, mode=mode), f"openvino on model.xml ({hint})"
    if target == "tensorrt":
        engine_file = root / "model.engine"
        if not engine_file.is_file():
            if engine.get("deferred"):
                from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

                return (OnnxRuntimeRunner(str(root / "model.onnx"), threads=threads),
                        "onnxruntime on model.onnx (TensorRT engine not built yet: run build_engine.sh on the device)")
            raise UserError(f"bundle '{bundle}': model.engine is missing", "the manifest names a built TensorRT engine", "copy the whole bundle, or rebuild with build_engine.sh")
        from coatnet_deploy.backends.cuda_probe import tensorrt_status

        ok, reason = tensorrt_status()
        if not ok:
            raise TargetUnavailable("this bundle's TensorRT engine cannot run on this machine", reason)
        from coatnet_deploy.backends.tensorrt import TensorRTRunner

        return TensorRTRunner(str(engine_file), engine), "tensorrt on model.engine"
    raise UserError(f"bundle '{bundle}' names unknown target '{target}'", "this coatnet-deploy does not know it", "upgrade coatnet-deploy or export again")


def _need(module: str, how: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise TargetUnavailable(f"{module} is not installed", "the bundle needs it to run", how)
