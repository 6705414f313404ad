"""Target ``openvino``: OpenVINO IR (model.xml + model.bin) on the CPU plugin.

fp32 and fp16 are properties of the IR (fp16: weights stored in fp16, compute pinned by the
inference-precision hint), built from the float32 graph. INT8 is built two ways, NNCF post-training
quantization of the float graph and OpenVINO reading the Q/DQ ONNX; of those that pass the gates
the faster at batch 1 is kept. When neither passes, OpenVINO may be mis-running a layer that ONNX Runtime
runs right on the same Q/DQ file: those layers are found by bisection and the build asks the export
for a precision graph that keeps them float (``EngineBuild.revised_plan``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from coatnet_deploy.targets import register
from coatnet_deploy.targets.base import EngineBuild, EngineJob, Target

FILES = ["model.xml", "model.bin"]
INT8_METHODS = ("nncf", "qdq")
# Every OpenVINO engine compiles one model per batch size (on first use of that size), for two measured
# reasons: OpenVINO 2026.4's CPU plugin runs a dynamic-batch INT8 model wrong on AMX-INT8 CPUs once the
# batch shrinks after a larger one (cosine 0.24-0.71 for batch 2 or 1 after batch 4; right with
# ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI, and right compiled per batch size), and a dynamic-batch fp32
# model ran 1.13x slower than the same IR compiled for its batch (coatnet_0_rw_224, batch 1).
STATIC_BATCH_NOTE = ("compiled per batch size: a dynamic batch ran 1.13x slower (fp32), and INT8 ran wrong on AMX CPUs "
                     "after the batch shrank")


def static_batch(manifest: dict[str, Any]) -> bool:
    """Whether a bundle's OpenVINO engine compiles per batch size (the key; bundles that predate it: INT8 only)."""
    engine = manifest.get("engine") or {}
    return bool(engine.get("static_batch", manifest.get("precision") == "int8"))


@register
class OpenVINOTarget(Target):
    name = "openvino"
    order = 30
    summary = "OpenVINO IR on the CPU plugin"
    cpu = True
    module = "openvino"
    install_hint = "pip install openvino"
    cells = {
        "fp32": ("model.xml + model.bin", "IR, inference precision pinned to f32"),
        "fp16": ("model.xml + model.bin", "IR with fp16 weights; f16 compute where the CPU has it"),
        "int8": ("model.xml + model.bin", "NNCF PTQ or the Q/DQ ONNX: of those that pass the gates, the faster (or closer)"),
    }

    def availability(self, precision: str, defer_build: bool = False):
        import importlib.util

        from coatnet_deploy.targets.base import Availability

        a = super().availability(precision, defer_build)
        if a.ok and precision == "int8" and importlib.util.find_spec("nncf") is None:
            return Availability(True, "openvino installed; nncf missing, INT8 uses the Q/DQ ONNX only")
        return Availability(a.ok, "openvino installed (CPU plugin)" if a.ok else a.reason)

    def recipe(self, precision: str, cfg):
        from coatnet_deploy.precision import recipes

        if precision == "fp16":
            # fp16 is an IR property (fp16 weights + the f16 hint), built from the float32 graph.
            return recipes.float_recipe(kind="OpenVINO IR with fp16 weights",
                                        note="compute precision is the runtime's: see engine.settings.inference_precision_effective")
        if precision == "int8":
            # The attention MatMuls (activation x activation) stay float for OpenVINO: its CPU plugin
            # lost most of their signal in per-tensor int8 where ONNX Runtime ran the same file right.
            # Reduced-range weights where the device may lack VNNI (the profile says); on ARM the head stays
            # float (the one layer OpenVINO's ARM plugin runs in int8, wrong under SME).
            profile = cfg.device_profile()
            choices = profile.choices(self.name, "int8")
            return recipes.tensorrt_qdq_recipe(reduce_range=choices["int8_reduce_range"], keep_attention_matmuls_float=True,
                                               keep_head_float=choices["openvino_int8_head"] == "float")
        return recipes.default_recipe(precision)

    # -- build --------------------------------------------------------------------------------
    def build(self, job: EngineJob) -> EngineBuild:
        import openvino as ov

        from coatnet_deploy.backends.openvino import OpenVINORunner, ir_from_onnx

        versions = {"openvino": ov.__version__}
        xml = job.bundle_dir / "model.xml"
        threads = job.cfg.threads
        report: dict[str, Any] = {}
        # The device profile's hint: f32 pins fp32 and the float remainder of INT8 (not bf16/f16); fp16 asks
        # for f16, which each device's plugin runs as it can (f16, bf16 or f32: engine.settings records it).
        hint = job.cfg.device_profile().choices(self.name, job.cfg.precision)["openvino_inference_precision"]
        if job.cfg.precision == "int8":
            method, candidates, revision, nncf_version = self._int8(job)
            if revision is not None:
                return EngineBuild(engine={}, runner=None, revised_plan=revision.pop("plan"), revision=revision, versions=versions)
            if nncf_version:
                versions["nncf"] = nncf_version
            engine = {"runtime": "openvino", "files": FILES, "int8_method": method, "int8_candidates": candidates,
                      "inference_precision_hint": hint}
            report["openvino_int8_candidates"] = candidates
            if job.revision is not None:
                report["openvino_int8_fallback"] = job.revision
        else:
            fp16 = job.cfg.precision == "fp16"
            ir_from_onnx(str(job.float_graph), str(job.bundle_dir), compress_to_fp16=fp16)
            engine = {"runtime": "openvino", "files": FILES, "inference_precision_hint": hint, **({"weights": "fp16"} if fp16 else {})}
        engine.update({"static_batch": True, "static_batch_note": STATIC_BATCH_NOTE})
        static = True
        return EngineBuild(engine=engine, runner=lambda: OpenVINORunner(str(xml), threads=threads, inference_precision=hint,
                                                                        static_batch=static),
                           report=report, versions=versions)

    def _int8(self, job: EngineJob):
        """Both candidates scored against the reference and timed -> (method, candidates, revision or None, nncf version)."""
        import numpy as np

        from coatnet_deploy.compare import gate_mask
        from coatnet_deploy.precision.nncf_ov import openvino_int8_culprits
        from coatnet_deploy.precision.plan import R_RUNTIME

        by_speed = job.cfg.device_profile().speed_counts_here()
        candidates, nncf_version = self._candidates(job, timed=by_speed)
        best = choose_candidate(candidates, by_speed=by_speed)
        if not candidates[best]["passed"] and job.revision is None:
            job.say("[openvino int8] no candidate passes: looking for layers OpenVINO runs differently from ONNX Runtime")
            # The judge runs the gated samples (the photos for INT8), where a fault shows as it would for a user.
            probe = job.golden[gate_mask(job.golden_names, job.gate_samples)][:2]
            culprits = openvino_int8_culprits(job.precision.path, np.ascontiguousarray(probe))
            if culprits:
                kept = [c["node"] for c in culprits]
                job.say(f"[openvino int8] kept float: {', '.join(kept)}")
                return best, candidates, {"culprits": culprits, "kept_float": kept,
                                          "plan": job.precision.plan.with_excluded(kept, reason=R_RUNTIME)}, nncf_version
        src = Path(candidates[best]["xml"])
        shutil.copyfile(src, job.bundle_dir / "model.xml")
        shutil.copyfile(src.with_suffix(".bin"), job.bundle_dir / "model.bin")
        for c in candidates.values():
            c.pop("xml")
        return best, candidates, None, nncf_version

    def _candidates(self, job: EngineJob, timed: bool = True) -> tuple[dict[str, Any], str | None]:
        import numpy as np

        from coatnet_deploy.backends.openvino import OpenVINORunner
        from coatnet_deploy.bench import BenchConfig, time_interleaved
        from coatnet_deploy.precision.nncf_ov import int8_ops, nncf_int8_ir, qdq_ir
        from coatnet_deploy.stages import run_batched

        cfg = job.cfg
        methods = list(INT8_METHODS) if cfg.int8_method == "auto" else [cfg.int8_method]
        candidates: dict[str, Any] = {}
        nncf_version = None
        tag = "ov" if job.revision is None else "ov-fallback"
        for m in methods:
            d = job.work / f"{tag}-{m}"
            d.mkdir()
            if m == "nncf":
                import nncf

                xml, _ = nncf_int8_ir(job.float_graph, d, job.calibration.batches(1), job.precision.plan,
                                      subset_size=len(job.calibration), seed=cfg.seed)
                nncf_version = nncf.__version__
            else:
                xml, _ = qdq_ir(job.precision.path, d)
            with OpenVINORunner(str(xml), threads=cfg.threads, inference_precision="f32", static_batch=True) as r:
                out = run_batched(r, job.golden, job.batch[2])
            res = job.compare(out)
            candidates[m] = {"xml": str(xml), "cosine_min": res.cosine_min, "cosine_mean": res.cosine_mean,
                             "top1_agreement": res.top1_agreement, "max_abs_err": res.max_abs_err, "sqnr_db": res.sqnr_db,
                             "passed": res.passed, "failed_gates": sorted(res.failures), "gate_samples": res.gate_samples,
                             "int8_ops": int8_ops(str(xml))}
            job.say(f"[openvino int8:{m}] {res.summary()}")
        if len(candidates) > 1 and timed:
            # Speed decides between candidates that pass: batch 1, interleaved, short (a choice, not a benchmark).
            x = np.ascontiguousarray(job.golden[:1], dtype=np.float32)
            runners = {m: OpenVINORunner(c["xml"], threads=cfg.threads, inference_precision="f32", static_batch=True)
                       for m, c in candidates.items()}
            timed = time_interleaved(runners, x, [1], BenchConfig(warmup_iters=3, warmup_s=0.0, min_iters=10, min_time_s=0.2, max_time_s=5.0))
            for m, t in timed[1].results.items():
                candidates[m]["p50_ms_b1"] = t.p50_ms
        return candidates, nncf_version

    def op_census(self, bundle_dir: Path, engine: dict[str, Any], runner):
        from coatnet_deploy.backends.openvino import op_census

        return op_census(runner)

    def profile(self, bundle_dir: Path, engine: dict[str, Any], batch, threads):
        from coatnet_deploy.backends.openvino import profile_by_layer

        return profile_by_layer(bundle_dir / "model.xml", batch, threads=threads,
                                inference_precision=engine.get("inference_precision_hint", "f32"))

    def float_runner(self, float_graph: Path, threads: int | None):
        from coatnet_deploy.backends.openvino import OpenVINORunner

        return OpenVINORunner(str(float_graph), threads=threads, inference_precision="f32", static_batch=True)

    def report_sections(self, report: dict[str, Any], manifest: dict[str, Any]) -> list[Any]:
        candidates = report.get("openvino_int8_candidates")
        if not candidates:
            return []
        from coatnet_deploy.report import candidates_section

        return [candidates_section(
            "OpenVINO INT8 candidates", candidates, "openvino_int8_candidates",
            [("cosine_mean", "cosine_mean"), ("cosine_min", "cosine_min"), ("top1_agreement", "top-1"), ("sqnr_db", "SQNR dB"),
             ("p50_ms_b1", "p50 ms b1"), ("passed", "gates")],
            chosen=(manifest.get("engine") or {}).get("int8_method"),
            note="OpenVINO INT8 was built two ways; of those that pass the gates, the faster at batch 1 is kept where this host's "
                 "timing speaks for the device profile, else the closer to the reference (manifest.device.choices).")]

    # -- device side --------------------------------------------------------------------------
    def open_runner(self, bundle: Path, manifest: dict[str, Any], threads: int | None = None, mode: str = "latency"):
        self.need_module()
        from coatnet_deploy.backends.openvino import OpenVINORunner

        hint = (manifest.get("engine") or {}).get("inference_precision_hint", "f32")
        static = static_batch(manifest)
        return (OpenVINORunner(str(Path(bundle) / "model.xml"), threads=threads, inference_precision=hint, mode=mode, static_batch=static),
                f"openvino on model.xml ({hint}{', compiled per batch size' if static else ''})")


def choose_candidate(candidates: dict[str, Any], by_speed: bool = True) -> str:
    """The INT8 candidate to keep: gates first; among those that pass, the faster at batch 1 when this
    host's timing speaks for the device (``by_speed``, the device profile says), else the closer; when
    none passes, the closer (top-1 agreement, then mean cosine). Ties go to the Q/DQ IR, the file the
    other targets share."""
    passing = [k for k, c in candidates.items() if c["passed"]]
    if passing and by_speed:
        return min(passing, key=lambda k: (candidates[k].get("p50_ms_b1", 0.0), k != "qdq"))
    if passing:
        return max(passing, key=lambda k: (candidates[k]["top1_agreement"], candidates[k]["cosine_mean"], k == "qdq"))
    return max(candidates, key=lambda k: (candidates[k]["top1_agreement"], candidates[k]["cosine_mean"], k == "qdq"))
