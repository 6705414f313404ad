"""Target ``tensorrt``: a TensorRT engine (10.x or 11.x) built from the precision-carrying ONNX.

The precision lives in the ONNX (float16 tensors; INT8 Q/DQ by NVIDIA ModelOpt when the ``modelopt``
extra is installed, else by TensorRT's rules; FP8 Q/DQ by ModelOpt), so every build is a strongly
typed network. FP8 needs a GPU of compute capability 8.9 or higher (Ada, Hopper, Blackwell).
Engines are tied to the GPU model and the TensorRT version that built them: ``--defer-build`` writes
the bundle with ``model.onnx`` and ``build_engine.sh`` and leaves the build to the device; until then
the bundle runs its ONNX on ONNX Runtime. Nothing touches TensorRT before the CUDA probe
(``backends.cuda_probe``) says a driver is alive.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coatnet_deploy.errors import TargetUnavailable, UserError
from coatnet_deploy.targets import register
from coatnet_deploy.targets.base import Availability, EngineBuild, EngineJob, Option, Target

FP8_NOTE = "FP8 engines need compute capability >= 8.9 (Ada, Hopper, Blackwell)"
DEFERRED_NOTE = "engine not built here: run build_engine.sh on the device, then `coatnet-deploy parity` there"


def check_quantizer(target: Target, cfg) -> None:
    """Refuse, before any heavy work, a Q/DQ recipe that cannot run: quantizer modelopt without the
    extra, a calibration method ModelOpt does not offer."""
    if cfg.precision not in ("int8", "fp8"):
        return
    recipe = target.recipe(cfg.precision, cfg)
    if recipe.details.get("format") == "modelopt":
        from coatnet_deploy.precision.modelopt_ptq import check_calibrate_method

        check_calibrate_method(cfg.calibrate_method, cfg.precision, target.name)


def quantizer_section(manifest: dict[str, Any]) -> list[Any]:
    """report.md / report.html: which quantizer wrote the Q/DQ graph (ModelOpt or the rules), why, and its settings."""
    details = manifest.get("precision_details") or {}
    if details.get("kind") not in ("int8 Q/DQ", "fp8 Q/DQ"):
        return []
    from coatnet_deploy.report import Section
    from coatnet_deploy.report.blocks import code, para

    precision = str(manifest.get("precision", "")).upper()
    if details.get("format") == "modelopt":
        who = f"NVIDIA ModelOpt {details.get('quantizer_version') or ''}".strip()
        settings = details.get("settings") or {}
        how = [", ".join(f"{k}={v}" for k, v in settings.items())]
    else:
        who = "the project's TensorRT rules (precision/qdq.py, checked by check_qdq_rules)"
        how = [details.get("rules", "")]
    parts = [f"{precision} Q/DQ by {who}."]
    if details.get("quantizer_choice"):
        parts.append(f" Chosen: {details['quantizer_choice']}.")
    blocks = [para(*parts), para("Settings: ", code(how[0]))]
    if manifest.get("precision") == "fp8":
        blocks.append(para(f"{FP8_NOTE}; a GPU below that refuses the build (build_engine.sh, export) naming itself.", style="note"))
    return [Section("quantizer", "Quantizer", blocks)]


@register
class TensorRTTarget(Target):
    name = "tensorrt"
    order = 40
    summary = "TensorRT engine on an NVIDIA GPU (or --defer-build: built on the device)"
    module = "tensorrt"
    can_defer = True
    cells = {
        "fp32": ("model.engine + build_engine.sh", "strongly typed float32 network"),
        "fp16": ("model.engine + build_engine.sh", "precision from the float16 ONNX (strongly typed)"),
        "int8": ("model.engine + build_engine.sh", "precision from the Q/DQ ONNX (strongly typed): ModelOpt's with the "
                 "modelopt extra, else TensorRT rules"),
        "fp8": ("model.engine + build_engine.sh", "FP8 Q/DQ ONNX by NVIDIA ModelOpt (strongly typed); needs compute "
                "capability >= 8.9 (Ada, Hopper, Blackwell)"),
    }
    options = {
        "workspace_mb": Option((int,), 2048, "builder scratch memory pool in MiB"),
        "opt_level": Option((int,), 3, "builder_optimization_level 0-5"),
        "timing_cache": Option((str, type(None)), None, "timing cache file, reused across builds"),
        "hardware_compat": Option((str,), "none", "none | ampere_plus | same_compute_capability"),
        "version_compatible": Option((bool,), False, "true: loads on newer TensorRT of the same major version"),
        "quantizer": Option((str,), "auto", "int8 Q/DQ by: auto (NVIDIA ModelOpt when the modelopt extra is installed, "
                            "else rules) | modelopt | rules (precision/qdq.py); fp8 is always ModelOpt's",
                            choices=("auto", "modelopt", "rules")),
    }

    def availability(self, precision: str, defer_build: bool = False) -> Availability:
        avail = self._availability(precision, defer_build)
        if precision == "fp8" and "compute capability" not in avail.reason:
            # `targets` says what an FP8 engine needs, whatever this machine has
            avail = Availability(avail.ok, f"{avail.reason}; {FP8_NOTE}", avail.deferred)
        return avail

    def _availability(self, precision: str, defer_build: bool = False) -> Availability:
        import importlib.util

        self.cell(precision)
        if importlib.util.find_spec("onnxruntime") is None:
            return Availability(False, "onnxruntime is needed to check the precision-carrying ONNX")
        from coatnet_deploy.backends.cuda_probe import tensorrt_status

        if precision == "fp8":
            from coatnet_deploy.precision import modelopt_ptq

            if not modelopt_ptq.available():
                return Availability(False, f"FP8 Q/DQ comes from NVIDIA ModelOpt, which is not installed ({modelopt_ptq.INSTALL_HINT})")
        ok, reason = tensorrt_status()
        if ok and precision == "fp8":
            from coatnet_deploy.backends.cuda_probe import fp8_refusal, probe_cuda

            refusal = fp8_refusal(probe_cuda())
            if refusal is not None:
                if defer_build:
                    return Availability(True, f"engine build deferred to the device ({refusal})", deferred=True)
                return Availability(False, f"{refusal}; use --defer-build to build the engine on an FP8 GPU")
        if ok:
            return Availability(True, reason)
        if defer_build:
            return Availability(True, f"engine build deferred to the device ({reason})", deferred=True)
        return Availability(False, f"{reason}; use --defer-build to write the bundle and build the engine on the device")

    def recipe(self, precision: str, cfg):
        """int8: ModelOpt's Q/DQ or TensorRT rules (option ``quantizer``); fp8: ModelOpt's FP8 Q/DQ."""
        from coatnet_deploy.precision import recipes

        if precision == "int8":
            quantizer = self.option_values(cfg.target_options.get(self.name))["quantizer"]
            return recipes.tensorrt_int8_recipe(quantizer, cfg.calibrate_method)
        if precision == "fp8":
            return recipes.modelopt_qdq_recipe("fp8", cfg.calibrate_method)
        return recipes.default_recipe(precision)

    def settings(self, cfg, options: dict[str, Any], batch: tuple[int, int, int], image_size: int, bundle_dir: Path):
        from coatnet_deploy.backends import tensorrt as trt_backend
        from coatnet_deploy.stages import INPUT_NAME

        return trt_backend.BuildSettings(
            onnx_path=bundle_dir / "model.onnx", engine_path=bundle_dir / "model.engine", input_name=INPUT_NAME,
            min_batch=batch[0], opt_batch=batch[1], max_batch=batch[2], image_size=image_size, precision=cfg.precision,
            workspace_mb=options["workspace_mb"], opt_level=options["opt_level"], timing_cache=options["timing_cache"],
            hardware_compat=options["hardware_compat"], version_compatible=options["version_compatible"])

    def preflight(self, cfg, options, batch, image_size) -> None:
        self.settings(cfg, options, batch, image_size, Path("."))  # BuildSettings refuses bad values
        check_quantizer(self, cfg)

    def build(self, job: EngineJob) -> EngineBuild:
        from coatnet_deploy.backends import tensorrt as trt_backend

        settings = self.settings(job.cfg, job.options, job.batch, job.image_size, job.bundle_dir)
        script = trt_backend.write_build_script(job.bundle_dir, settings)
        eng: dict[str, Any] = {"runtime": "tensorrt", "build_script": script.name, "profile": settings.profile_shapes(),
                               **{k: v for k, v in settings.to_dict().items() if k in ("workspace_mb", "opt_level", "hardware_compat", "version_compatible")}}
        if job.cfg.defer_build:
            eng.update({"deferred": True, "files": ["model.onnx", script.name], "build_plans": trt_backend.build_plans(settings),
                        "note": DEFERRED_NOTE})
            return EngineBuild(engine=eng, runner=None, latency_note="the TensorRT engine is built on the device (--defer-build): "
                               "time it there with `coatnet-deploy bench BUNDLE` after build_engine.sh")
        meta = trt_backend.build_engine(settings)
        eng.update({"deferred": False, "files": ["model.engine", script.name], **meta})
        engine_path = job.bundle_dir / "model.engine"
        return EngineBuild(engine=eng, runner=lambda: trt_backend.TensorRTRunner(str(engine_path), eng),
                           versions={"tensorrt": str(meta.get("tensorrt_version", ""))})

    def report_sections(self, report: dict[str, Any], manifest: dict[str, Any]) -> list[Any]:
        return quantizer_section(manifest)

    def open_runner(self, bundle: Path, manifest: dict[str, Any], threads: int | None = None, mode: str = "latency"):
        root = Path(bundle)
        engine = manifest.get("engine", {})
        engine_file = root / "model.engine"
        if not engine_file.is_file():
            if engine.get("deferred"):
                from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

                return (OnnxRuntimeRunner(str(root / "model.onnx"), threads=threads),
                        "onnxruntime on model.onnx (TensorRT engine not built yet: run build_engine.sh on the device)")
            raise UserError(f"bundle '{bundle}': model.engine is missing", "the manifest names a built TensorRT engine",
                            "copy the whole bundle, or rebuild with build_engine.sh")
        from coatnet_deploy.backends.cuda_probe import tensorrt_status

        ok, reason = tensorrt_status()
        if not ok:
            raise TargetUnavailable("this bundle's TensorRT engine cannot run on this machine", reason)
        from coatnet_deploy.backends.tensorrt import TensorRTRunner

        return TensorRTRunner(str(engine_file), engine), "tensorrt on model.engine"
