"""``export``: build -> ONNX -> simplify -> precision -> engine -> parity -> latency -> bundle.

A linear chain of the steps in ``exporting.steps``: each returns a typed result and takes the earlier
ones as arguments. Every artifact is checked against the PyTorch reference on the same golden
inputs, stage by stage, so the report can say which stage moved the logits. The bundle is staged
in a temporary directory and swapped into place only when complete (``bundle.BundleWriter``);
``exporting.documents`` writes report.json and manifest.json from the typed results, once.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from coatnet_deploy.bundle import BundleWriter
from coatnet_deploy.config import ExportConfig
from coatnet_deploy.exporting import documents, steps
from coatnet_deploy.targets.base import EngineJob

Progress = Callable[[str], None]
#: how often an engine build may ask for the precision graph again (layers kept float)
MAX_REVISIONS = 1


@dataclass
class ExportResult:
    """What ``coatnet_deploy.export`` returns: the committed bundle, its status (PASSED / FAILED) and documents."""

    bundle: Path
    status: str
    report: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def passed(self) -> bool:
        return self.status == "PASSED"

    def load(self, threads: int | None = None, max_batch: int | None = None):
        """The bundle as a torch-free ``Classifier`` (``coatnet_deploy.load``)."""
        from coatnet_deploy.runtime.classifier import Classifier

        return Classifier.load(self.bundle, threads=threads, max_batch=max_batch)

    def __repr__(self) -> str:
        p = self.report.get("parity") or {}
        return (f"ExportResult({self.status}: {self.manifest['model']['name']} -> {self.report.get('target')}/"
                f"{self.report.get('precision')}, bundle={str(self.bundle)!r}, cosine_min={p.get('cosine_min')}, "
                f"top1_agreement={p.get('top1_agreement')})")

    def _repr_html_(self) -> str:
        """Jupyter shows the bundle's report.html."""
        from coatnet_deploy.report.render import notebook_iframe

        return notebook_iframe((self.bundle / "report.html").read_text(encoding="utf-8"), "coatnet-deploy report")


def _quiet(_: str) -> None:
    pass


def export(cfg: ExportConfig, progress: Progress | None = None, source: Any = None) -> ExportResult:
    """Run the whole export for ``cfg``; returns the committed bundle's path, status and report.

    Raises UserError for bad input (nothing is written at ``cfg.output`` then), TargetUnavailable
    when the target cannot run here. A failed parity gate is not an exception: the bundle is
    written with status FAILED and the caller maps it to exit 2.
    """
    say = progress or _quiet
    plan = steps.preflight(cfg, source)
    target = plan.target
    writer = BundleWriter(plan.output)
    with writer, tempfile.TemporaryDirectory(prefix="coatnet-deploy-") as tmp:
        work = Path(tmp)
        clock = steps.StepClock(say)
        calibration = steps.calibration_record(plan.calibration, cfg, say) if plan.calibration is not None else None
        ref = clock.run("reference model", steps.reference_model, cfg, plan)
        golden, reference_entry = clock.run("golden inputs", steps.golden_set, cfg, plan, ref)
        plain = clock.run("ONNX export", steps.onnx_graph, cfg, plan, ref, golden, work, say)
        graph = clock.run("simplify", steps.simplified_graph, cfg, plan, plain, golden, work, say)
        precision, quantized = clock.run("precision", steps.precision_graph, cfg, plan, graph.path, golden, work, say)

        def build(prec, revision=None):
            shutil.copyfile(prec.path, writer.path("model.onnx"))
            job = EngineJob(cfg=cfg, options=plan.options, bundle_dir=writer.dir, work=work, float_graph=graph.path, precision=prec,
                            golden=golden.inputs, golden_names=golden.names, reference_logits=golden.reference_logits, batch=plan.batch,
                            image_size=plan.image_size, gates=plan.gates, gate_samples=plan.gate_samples, calibration=plan.calibration,
                            say=say, revision=revision)
            return target.build(job)

        engine = clock.run(f"{target.name} engine", build, precision)
        for _ in range(MAX_REVISIONS):
            if engine.revised_plan is None:
                break
            # The engine needs layers kept float: a new precision graph from the revised plan, then one more build.
            precision, quantized = clock.run("precision", steps.precision_graph, cfg, plan, graph.path, golden, work, say,
                                             revised_plan=engine.revised_plan, previous=precision)
            engine = clock.run(f"{target.name} engine", build, precision, engine.revision)
        settings: dict[str, Any] = {}
        engine_check = None
        if engine.runner is not None:
            engine_check = clock.run("parity", steps.check_stage, "engine", target.name, engine.runner(), golden, plan, say,
                                     on_done=lambda r: settings.update(r.settings()))
        inspection: dict[str, Any] = {}
        if cfg.precision == "int8" and engine.runner is not None:
            inspection = clock.run("int8 inspection", steps.int8_inspection, cfg, plan, golden, engine, graph.path, writer.dir, say)
        checks = [c for c in (plain.check, graph.check, quantized, engine_check) if c is not None]
        final = checks[-1].parity  # the last artifact decides the status
        latency = None
        if cfg.bench_iterations > 0:
            latency = clock.run("latency", steps.latency, cfg, plan, ref, golden, engine.runner, engine.latency_note)
        accuracy = None
        if cfg.eval_images and engine.runner is not None:
            accuracy = clock.run("dataset accuracy", steps.dataset_accuracy, cfg, plan, ref, engine.runner, final)
        status = "PASSED" if final.passed else "FAILED"
        report, manifest = clock.run("bundle", documents.write_bundle, writer, cfg=cfg, plan=plan, ref=ref, golden=golden,
                                     reference_entry=reference_entry, graphs=(plain, graph), precision=precision, engine=engine,
                                     engine_settings=settings, checks=checks, final=final, status=status, latency=latency,
                                     accuracy=accuracy, calibration=calibration, inspection=inspection, clock=clock)
        path = writer.commit()
    say(f"bundle: {path} [{status}]")
    return ExportResult(bundle=path, status=status, report=report, manifest=manifest)
