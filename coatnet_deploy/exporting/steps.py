"""The export's steps: each takes typed inputs and returns a typed result (``exporting.results``).

The order lives in ``exporting.pipeline.export``; nothing here keeps state between calls.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from coatnet_deploy import __version__
from coatnet_deploy.compare import ParityResult, apply_gates, compare
from coatnet_deploy.config import ExportConfig
from coatnet_deploy.errors import UserError
from coatnet_deploy.exporting.results import ExportPlan, GoldenSet, GraphStage, Latency, Reference, StageCheck
from coatnet_deploy.targets.base import PrecisionGraph

Say = Callable[[str], None]
# onnxsim folds constants and fuses ops; more than summation-order noise means it changed the model.
SIMPLIFY_TOLERANCE = 1e-4


# -- preflight ------------------------------------------------------------------------------------

def preflight(cfg: ExportConfig, source=None) -> ExportPlan:
    """Refuse bad input before any heavy work or progress output: target, model, sizes, files, calibration.

    ``source``: the model already resolved (an in-memory module, ``models.module``); else the flags say it."""
    from coatnet_deploy import targets
    from coatnet_deploy.models import resolve_model_source

    target = targets.get(cfg.target)
    target.require(cfg.precision, cfg.defer_build)
    batch = cfg.batch_range()
    if source is None:
        source = resolve_model_source(cfg)  # the flags, and what a timm folder or checkpoint says
    image_size = source.image_size
    options = target.option_values(cfg.target_options.get(target.name))
    device = cfg.device_profile() if target.cpu else None
    if cfg.device is not None and not target.cpu:
        cpu_targets = [t.name for t in targets.all_targets() if t.cpu]
        raise UserError(f"--device applies to the CPU targets ({', '.join(cpu_targets)}) only",
                        f"'{target.name}' does not run on the device's CPU", "drop --device")
    target.preflight(cfg, options, batch, image_size)
    for key in ("images", "eval_images"):  # weights, labels: checked by the source
        value = getattr(cfg, key)
        if value is not None and not Path(value).is_dir():
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} '{value}' not found", "it must name an existing directory", f"check the path given to {flag}")
    pre = source.preprocess
    calibration = None
    if cfg.precision in ("int8", "fp8"):
        from coatnet_deploy.calibration import CalibrationSet, default_calibration_dir

        calibration = CalibrationSet(cfg.calibration or str(default_calibration_dir()), pre)
        calibration.select(cfg.calibration_samples or None, cfg.seed)
    return ExportPlan(source=source, image_size=image_size, batch=batch, preprocess=pre, target=target, options=options,
                      gates=cfg.gate_thresholds(source.random_init), gate_samples=cfg.gated_samples(), output=cfg.output or cfg.default_output(source.name), calibration=calibration,
                      labels=source.labels, device=device)


def calibration_record(calib, cfg: ExportConfig, say: Say) -> dict[str, Any]:
    """The manifest's ``calibration`` block (and a line naming files that could not be read)."""
    if calib.skipped:
        shown = "; ".join(f"{Path(p).name}: {why}" for p, why in calib.skipped[:5])
        say(f"[calibration] skipped {len(calib.skipped)} unreadable file(s): {shown}")
    return {"source": str(calib.source), "samples": len(calib), "sha256": calib.sha256(), "seed": cfg.seed,
            "method": cfg.calibrate_method, "skipped": [str(p) for p, _ in calib.skipped]}


# -- reference ------------------------------------------------------------------------------------

def reference_model(cfg: ExportConfig, plan: ExportPlan) -> Reference:
    """Build the PyTorch model and settle where it runs."""
    import torch

    from coatnet_deploy.backends.torch_ref import resolve_reference_device

    torch.manual_seed(cfg.seed)
    model = plan.source.build(seed=cfg.seed)
    device = resolve_reference_device(cfg.reference)
    note = f"random init (no --weights), seed {cfg.seed}" if plan.source.random_init else None
    return Reference(model=model, device=device, note=note)


def golden_set(cfg: ExportConfig, plan: ExportPlan, ref: Reference) -> tuple[GoldenSet, dict[str, Any]]:
    """Golden inputs (photos + seeded tensors) and the reference's logits on them -> (set, report "reference")."""
    from coatnet_deploy.backends.torch_ref import TorchRunner
    from coatnet_deploy.stages import golden_inputs

    # The user's own calibration folder is in-domain for their model: golden photos come from there too.
    images = cfg.images or (cfg.calibration if cfg.calibration and Path(cfg.calibration).is_dir() else None)
    inputs, names = golden_inputs(plan.preprocess, plan.image_size, images, cfg.golden_images, cfg.golden_random, cfg.seed)
    runner = TorchRunner(ref.model, device=ref.device, dtype="fp32", threads=cfg.threads)
    with runner:
        logits = runner.infer(inputs)
    st = runner.settings()
    entry = {"framework": "torch", "device": ref.device, "dtype": "float32", "version": st.get("version"), "threads": st.get("threads"),
             **({"cuda_device": st["cuda_device_name"]} if "cuda_device_name" in st else {})}
    return GoldenSet(inputs=inputs, names=names, reference_logits=logits), entry


# -- checking an artifact -------------------------------------------------------------------------

def check_stage(stage: str, artifact: str, runner, golden: GoldenSet, plan: ExportPlan, say: Say,
                on_open: Callable[[Any], None] | None = None, on_done: Callable[[Any], None] | None = None) -> StageCheck:
    """Run a runner on the golden inputs and compare with the reference's logits under the plan's gates.

    ``on_open`` sees the runner before the run, ``on_done`` after it (still active: what it compiled
    for the batch sizes it ran, e.g. OpenVINO's effective precision, is known only then)."""
    from coatnet_deploy.stages import run_batched

    with runner:
        if on_open is not None:
            on_open(runner)
        out = run_batched(runner, golden.inputs, plan.batch[2])
        if on_done is not None:
            on_done(runner)
        version = runner.settings().get("version")
    res = compare(golden.reference_logits, out, plan.gates, gated=golden.gated(plan.gate_samples), names=golden.names,
                  gate_samples=plan.gate_samples)
    say(f"[parity:{stage}] {res.summary()}")
    runtime = runner.framework or runner.name
    return StageCheck(stage=stage, artifact=artifact, runtime=runtime, parity=res, outputs=out,
                      versions={runtime: str(version)} if version else {})


def check_onnx(stage: str, path: Path, golden: GoldenSet, cfg: ExportConfig, plan: ExportPlan, say: Say,
               on_open: Callable[[Any], None] | None = None) -> StageCheck:
    from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

    return check_stage(stage, path.name, OnnxRuntimeRunner(str(path), threads=cfg.threads), golden, plan, say, on_open)


# -- graphs ---------------------------------------------------------------------------------------

def onnx_graph(cfg: ExportConfig, plan: ExportPlan, ref: Reference, golden: GoldenSet, work: Path, say: Say) -> GraphStage:
    """Trace the reference to ONNX, check it at both ends of the batch range and on the golden inputs."""
    import onnx

    from coatnet_deploy.stages import check_batch_range, onnx_from_model

    path = work / "model.fp32.onnx"
    meta = {"coatnet_deploy.version": __version__, "model": plan.source.name, "image_size": str(plan.image_size),
            "preprocess": json.dumps(plan.preprocess.to_dict(), sort_keys=True), "labels": json.dumps(plan.labels, sort_keys=True)}
    facts = onnx_from_model(ref.model, path, plan.image_size, cfg.opset, meta)
    check = check_onnx("onnx", path, golden, cfg, plan, say, on_open=lambda r: facts.update(check_batch_range(r, plan.image_size, plan.batch)))
    return GraphStage(path=path, check=check, facts=facts, versions={"onnx": onnx.__version__})


def simplified_graph(cfg: ExportConfig, plan: ExportPlan, plain: GraphStage, golden: GoldenSet, work: Path, say: Say) -> GraphStage:
    """onnxsim the graph; keep the plain one when onnxsim fails or changes the outputs."""
    from coatnet_deploy.stages import keep_plain, simplified_onnx

    if not cfg.simplify:
        return GraphStage(path=plain.path, check=None, facts={"ok": False, "skipped": "simplify: false"})
    dst = work / "model.sim.onnx"
    info = simplified_onnx(plain.path, dst)
    versions = {"onnxsim": info["version"]} if info.get("version") else {}
    if info["ok"]:
        check = check_onnx("simplified", dst, golden, cfg, plan, say)
        diff = float(np.abs(check.outputs - plain.check.outputs).max())
        info["max_abs_diff_vs_plain"] = diff
        if diff <= SIMPLIFY_TOLERANCE:
            return GraphStage(path=dst, check=check, facts=info, versions=versions)
        keep_plain(plain.path, dst, info, f"simplified graph differs from the plain graph by {diff:.3g} (> {SIMPLIFY_TOLERANCE:g})")
    say(f"[simplify] failed, keeping the plain graph: {info['error']}")
    return GraphStage(path=dst, check=check_onnx("simplified", dst, golden, cfg, plan, say), facts=info, versions=versions)


# -- precision ------------------------------------------------------------------------------------

def precision_graph(cfg: ExportConfig, plan: ExportPlan, graph: Path, golden: GoldenSet, work: Path, say: Say,
                    revised_plan=None, previous: PrecisionGraph | None = None) -> tuple[PrecisionGraph, StageCheck | None]:
    """The target's recipe applied to the float graph -> (precision graph, its parity check or None).

    ``revised_plan`` (from an engine build that needs layers kept float) replaces the plan; the
    sensitivity ranking and accuracy budget of the ``previous`` pass are kept, not redone.
    """
    recipe = plan.target.recipe(cfg.precision, cfg)
    if recipe.kind == "float":
        return PrecisionGraph(path=graph, recipe=recipe, details=dict(recipe.details)), None
    if recipe.kind == "fp16":
        out = work / "model.fp16.onnx"
        result = _fp16_graph(graph, out, recipe)
    elif recipe.kind in ("int8", "fp8"):
        out = work / (f"model.{recipe.kind}.onnx" if revised_plan is None else f"model.{recipe.kind}.revised.onnx")
        if recipe.prepare is not None:
            # the plan, the quantizer and the sensitivity ranking all read the prepared graph
            graph = Path(recipe.prepare(graph, work / "model.prepared.onnx"))
        result = _int8_graph(cfg, plan, graph, out, recipe, golden, work, revised_plan, previous)
    else:
        raise ValueError(f"unknown recipe kind {recipe.kind!r}")
    return result, check_onnx("quantized", out, golden, cfg, plan, say)


def _fp16_graph(graph: Path, out: Path, recipe) -> PrecisionGraph:
    import onnx

    from coatnet_deploy.precision.fp16 import DEFAULT_KEEP_FLOAT32_OPS, fp16_from_onnx

    fp16_from_onnx(graph, out)
    m = onnx.load(str(out), load_external_data=False)
    kept = [n.name or n.op_type for n in m.graph.node if n.op_type in DEFAULT_KEEP_FLOAT32_OPS]
    casts = sum(1 for n in m.graph.node if n.op_type == "Cast")
    low = [n.name or n.op_type for n in m.graph.node if n.op_type not in DEFAULT_KEEP_FLOAT32_OPS and n.op_type != "Cast"]
    report = {"precision_plan": {"kind": "fp16", "low_precision": "float16", "low_precision_nodes": low, "float_nodes": kept,
                                 "kept_float32_ops": list(DEFAULT_KEEP_FLOAT32_OPS), "casts": casts,
                                 "counts": {"float16": len(low), "float32": len(kept), "cast": casts}}}
    return PrecisionGraph(path=out, recipe=recipe, details=dict(recipe.details), report=report)


def _int8_graph(cfg: ExportConfig, plan: ExportPlan, graph: Path, out: Path, recipe, golden: GoldenSet, work: Path,
                revised_plan, previous: PrecisionGraph | None) -> PrecisionGraph:
    """Explicit Q/DQ INT8 by the precision plan; optional sensitivity ranking and accuracy budget."""
    from coatnet_deploy.precision.plan import plan_from_onnx

    calib = plan.calibration

    def quantize(p, dst=out):
        return recipe.quantize(graph, dst, calib, p, calibrate_method=cfg.calibrate_method, seed=cfg.seed)

    report: dict[str, Any] = {}
    if revised_plan is not None:
        pplan = revised_plan
        res = quantize(pplan)
        if previous is not None:
            report.update({k: v for k, v in previous.report.items() if k != "precision_plan"})
    else:
        pplan = plan_from_onnx(graph, **recipe.plan_options)
        res = quantize(pplan)
        ranking = None
        if cfg.sensitivity or cfg.max_drop is not None:
            from coatnet_deploy.precision.sensitivity import sensitivity, suggest_exclusions

            probe = np.concatenate([b for _, b in zip(range(8), calib.batches(1))])
            ranking = sensitivity(graph, out, [probe])
            report["sensitivity"] = ranking
            report["sensitivity_suggested_exclusions"] = suggest_exclusions(ranking)
        if cfg.max_drop is not None:
            pplan, budget = _accuracy_budget(cfg, plan, graph, pplan, ranking, quantize, golden, work)
            res = quantize(pplan)
            report["accuracy_budget"] = budget
    report["precision_plan"] = {"kind": recipe.kind, **pplan.to_dict(), "reduce_range": recipe.details.get("reduce_range")}
    details = {**recipe.details, **res.to_dict()}
    details.pop("path", None)
    return PrecisionGraph(path=out, recipe=recipe, plan=pplan, details=details, report=report)


def _accuracy_budget(cfg: ExportConfig, plan: ExportPlan, graph: Path, pplan, ranking, quantize, golden: GoldenSet, work: Path):
    """Move the worst layers back to float until the accuracy (or agreement) drop fits ``max_drop``."""
    from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner
    from coatnet_deploy.precision.sensitivity import accuracy_budget
    from coatnet_deploy.stages import run_batched

    trial = work / "budget.onnx"
    mb = plan.batch[2]
    if cfg.eval_images:
        from coatnet_deploy.calibration import EvalSet
        from coatnet_deploy.compare import accuracy

        evalset = EvalSet(cfg.eval_images, plan.preprocess, labels=plan.labels)
        xs, ys = zip(*evalset.batches(mb))
        x, y = np.concatenate(xs), np.concatenate(ys)
        with OnnxRuntimeRunner(str(graph), threads=cfg.threads) as r:
            ref_top1 = accuracy(run_batched(r, x, mb), y)[0]
        metric_name = "top-1 accuracy (%)"

        def evaluate(path):
            with OnnxRuntimeRunner(str(path), threads=cfg.threads) as r:
                return accuracy(run_batched(r, x, mb), y)[0]
    else:
        ref_top1 = 100.0
        metric_name = "top-1 agreement with the reference on golden inputs (%)"

        def evaluate(path):
            with OnnxRuntimeRunner(str(path), threads=cfg.threads) as r:
                out_ = run_batched(r, golden.inputs, mb)
            return float(np.mean(out_.argmax(1) == golden.reference_logits.argmax(1)) * 100.0)

    gate = ref_top1 - float(cfg.max_drop)
    pplan, history = accuracy_budget(lambda p: quantize(p, trial).path, evaluate, ranking, gate, plan=pplan)
    return pplan, {"metric": metric_name, "reference": ref_top1, "max_drop": cfg.max_drop, "gate": gate,
                   "passed": bool(history[-1]["passed"]), "history": history, "excluded": list(pplan.excluded)}


# -- latency and accuracy -------------------------------------------------------------------------

def latency(cfg: ExportConfig, plan: ExportPlan, ref: Reference, golden: GoldenSet, engine_runner, note: str | None) -> Latency:
    """The engine (when it exists here) and the reference, timed interleaved at the batch's OPT size."""
    from coatnet_deploy.backends.torch_ref import TorchRunner
    from coatnet_deploy.bench import export_latency

    reference = TorchRunner(ref.model, device=ref.device, dtype="fp32", threads=cfg.threads)
    engine = engine_runner() if engine_runner is not None else None
    res = export_latency(engine, reference, golden.inputs, plan.batch[1], cfg.bench_iterations)
    return Latency(engine=res["latency"], reference=res["reference_latency"], speedup=res["speedup_vs_reference"],
                   note=note if engine is None else None)


def dataset_accuracy(cfg: ExportConfig, plan: ExportPlan, ref: Reference, engine_runner, final: ParityResult) -> dict[str, Any]:
    """Reference and engine top-1/top-5 on ``--eval-images``; applies the accuracy-drop gate to ``final``."""
    from coatnet_deploy.backends.torch_ref import TorchRunner
    from coatnet_deploy.calibration import EvalSet
    from coatnet_deploy.compare import accuracy

    evalset = EvalSet(cfg.eval_images, plan.preprocess, labels=plan.labels)
    ref_out, eng_out, ys = [], [], []
    with TorchRunner(ref.model, device=ref.device, dtype="fp32", threads=cfg.threads) as r, engine_runner() as eng:
        for xb, yb in evalset.batches(plan.batch[2]):
            ref_out.append(r.infer(xb))
            eng_out.append(eng.infer(xb))
            ys.append(np.asarray(yb))
    ref_logits, eng_logits, y = np.concatenate(ref_out), np.concatenate(eng_out), np.concatenate(ys)
    r1, r5 = accuracy(ref_logits, y)
    e1, e5 = accuracy(eng_logits, y)
    agree = ref_logits.argmax(1) == eng_logits.argmax(1)
    classes = evalset.classes

    def share(mask, hits):
        return float(hits[mask].mean()) if mask.any() else None

    per_class = {}
    for c in range(len(classes)):
        m = y == c
        per_class[classes[c]] = {"n": int(m.sum()), "agreement": share(m, agree),
                                 "reference_top1": None if not m.any() else share(m, ref_logits.argmax(1) == c) * 100,
                                 "engine_top1": None if not m.any() else share(m, eng_logits.argmax(1) == c) * 100}
    acc = {"images": int(len(y)), "reference_top1": r1, "reference_top5": r5, "engine_top1": e1, "engine_top5": e5,
           "drop_top1": round(r1 - e1, 4), "drop_top5": round(r5 - e5, 4), "top1_agreement": float(agree.mean()), "per_class": per_class}
    if "accuracy_drop" in plan.gates:
        apply_gates(final, plan.gates, extra={"accuracy_drop": acc["drop_top1"]})
    return acc


# -- what really runs in int8 ---------------------------------------------------------------------

#: below this share of its Conv/MatMul work in int8 kernels, an INT8 engine is mostly a float one
MIN_INT8_SHARE = 0.5


def int8_inspection(cfg: ExportConfig, plan: ExportPlan, golden: GoldenSet, engine, float_graph: Path, bundle_dir: Path,
                    say: Say) -> dict[str, Any]:
    """The runtime's own account of an INT8 engine -> report keys (op_census, profile, int8_speed, warnings).

    Census: what the runtime runs in int8 and float by op type. Profile: batch-1 time by layer type.
    Speed: the engine against the same runtime's float engine on the float graph, timed interleaved at
    batch 1. A warning when most of the Conv/MatMul work runs in float, or the INT8 engine is slower.
    """
    from coatnet_deploy.bench import BenchConfig, time_interleaved

    target = plan.target
    out: dict[str, Any] = {}
    x1 = np.ascontiguousarray(golden.inputs[:1], dtype=np.float32)
    prof = target.profile(bundle_dir, engine.engine, x1, cfg.threads)
    if prof is not None:
        compute = [r for r in prof["by_layer_type"] if r.get("compute")]
        total = sum(r["ms"] for r in compute)
        prof["int8_compute_time_share"] = sum(r["ms"] for r in compute if r["precision"] in ("int8", "i8", "u8")) / total if total else 0.0
        out["profile"] = prof
    baseline = target.float_runner(float_graph, cfg.threads)
    runner = engine.runner()
    with runner:
        runner.infer(x1)  # engines that compile per batch size have nothing to read before their first call
        census = target.op_census(bundle_dir, engine.engine, runner)
        if baseline is not None:
            bcfg = BenchConfig(warmup_iters=3, warmup_s=0.0, min_iters=10, min_time_s=0.2, max_time_s=5.0)
            res = time_interleaved({"int8": runner, "float": baseline}, x1, [1], bcfg)[1].results
    if census is not None:
        out["op_census"] = census
    if baseline is not None:
        out["int8_speed"] = {"batch": 1, "engine_p50_ms": res["int8"].p50_ms, "float_engine_p50_ms": res["float"].p50_ms,
                             "speedup_vs_float_engine": res["float"].p50_ms / res["int8"].p50_ms,
                             "float_engine": f"{target.name} on the float32 graph", "iterations": res["int8"].iterations,
                             "noisy": res["int8"].noisy or res["float"].noisy}
    warnings = []
    share = (prof or {}).get("int8_compute_time_share", (census or {}).get("int8_share"))
    if share is not None and share < MIN_INT8_SHARE:
        what = "of its Conv/MatMul time" if prof is not None else "of its Conv/MatMul nodes"
        warnings.append(f"INT8 engine runs most of its Conv/MatMul work in float: only {share:.0%} {what} is in int8 kernels "
                        f"(see op_census / profile)")
    speed = out.get("int8_speed")
    if speed is not None and speed["speedup_vs_float_engine"] < 1.0:
        warnings.append(f"INT8 engine is slower than {target.name}'s float engine at batch 1: {speed['engine_p50_ms']:.2f} ms vs "
                        f"{speed['float_engine_p50_ms']:.2f} ms (p50, interleaved)")
    for w in warnings:
        say(f"warning: {w}")
    out["warnings"] = warnings
    return out


# -- measuring the steps --------------------------------------------------------------------------

class StepClock:
    """Runs named steps with a progress line each, recording wall time and peak RSS per step."""

    def __init__(self, say: Say):
        self.say = say
        self.times: dict[str, float] = {}
        self.peaks: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        self.say(f"[{name}] ...")
        _reset_peak_rss()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        dt = time.perf_counter() - t0
        self.times[name] = round(self.times.get(name, 0.0) + dt, 3)
        peak = _peak_rss_mb()
        if peak is not None:
            self.peaks[name] = max(peak, self.peaks.get(name, 0.0))
        self.say(f"[{name}] done in {dt:.1f}s" + (f", peak RSS {peak:.0f} MB" if peak is not None else ""))
        return out


def _reset_peak_rss() -> None:
    # Linux: writing 5 to clear_refs resets VmHWM, so each step reports its own peak.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        return None
    return None
