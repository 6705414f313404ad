"""The one place that writes a bundle's documents: report.json, report.md, report.html, manifest.json.

``write_bundle`` takes the export's typed results and writes, into the staging directory, the golden
data (golden.npz for Python, .npy files for device apps without a zip library), the reports and the
manifest (with its checksum file). Keys are the contract's (../shared/design/CONTRACT.md) plus the
ones docs/ARCHITECTURE.md lists.
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from coatnet_deploy import __version__
from coatnet_deploy.bundle import BundleWriter, utc_now, write_json
from coatnet_deploy.compare import ParityResult
from coatnet_deploy.config import ExportConfig
from coatnet_deploy.exporting.results import ExportPlan, GoldenSet, GraphStage, Latency, Reference, StageCheck
from coatnet_deploy.stages import INPUT_NAME, OUTPUT_NAME
from coatnet_deploy.targets.base import EngineBuild, PrecisionGraph

GOLDEN_NPY = {"inputs": "golden_inputs.npy", "reference_logits": "golden_logits.npy"}


def versions_of(graphs: tuple[GraphStage, ...], checks: list[StageCheck], engine: EngineBuild) -> dict[str, str]:
    """Every library that touched the bundle: the tracer, the graph tools, each runtime that ran a stage."""
    import torch

    versions = {"coatnet-deploy": __version__, "torch": torch.__version__}
    for g in graphs:
        versions.update(g.versions)
    for c in checks:
        versions.update(c.versions)
    versions.update(engine.versions)
    versions["numpy"] = np.__version__
    versions["python"] = platform.python_version()
    return versions


def write_golden(writer: BundleWriter, golden: GoldenSet) -> dict[str, Any]:
    """golden.npz + the .npy pair -> the manifest's ``golden`` block."""
    np.savez_compressed(writer.path("golden.npz"), inputs=golden.inputs, reference_logits=golden.reference_logits,
                        names=np.array(golden.names))
    np.save(writer.path(GOLDEN_NPY["inputs"]), np.ascontiguousarray(golden.inputs, dtype=np.float32))
    np.save(writer.path(GOLDEN_NPY["reference_logits"]), np.ascontiguousarray(golden.reference_logits, dtype=np.float32))
    return {"file": "golden.npz", "npy": dict(GOLDEN_NPY), "samples": int(len(golden.inputs)), "names": list(golden.names)}


def write_bundle(writer: BundleWriter, *, cfg: ExportConfig, plan: ExportPlan, ref: Reference, golden: GoldenSet,
                 reference_entry: dict[str, Any], graphs: tuple[GraphStage, GraphStage], precision: PrecisionGraph,
                 engine: EngineBuild, engine_settings: dict[str, Any], checks: list[StageCheck], final: ParityResult,
                 status: str, latency: Latency | None, accuracy: dict[str, Any] | None, calibration: dict[str, Any] | None,
                 inspection: dict[str, Any], clock) -> tuple[dict[str, Any], dict[str, Any]]:
    """Write golden data, reports and manifest into the staging directory -> (report, manifest)."""
    from coatnet_deploy.bundle import artifact_entries
    from coatnet_deploy.host import environment

    versions = versions_of(graphs, checks, engine)
    golden_block = write_golden(writer, golden)
    num_classes = int(golden.reference_logits.shape[1])
    created = utc_now()
    report: dict[str, Any] = {
        "schema_version": 1,
        "status": status,
        "target": cfg.target,
        "precision": cfg.precision,
        "model": plan.source.name,
        "reference": reference_entry,
        "reference_note": ref.note,
        "parity": final.to_dict(),
        "stages": [c.entry() for c in checks],
    }
    report.update(precision.report)
    report.update(engine.report)
    report.update({k: v for k, v in inspection.items() if k != "warnings"})
    report["warnings"] = plan.source.warnings() + list(inspection.get("warnings", [])) + device_warnings(plan.device, cfg)
    if latency is not None:
        report["latency"] = latency.engine
        if latency.engine is None:
            report["latency_note"] = latency.note
        report["reference_latency"] = latency.reference
        if latency.speedup is not None:
            report["speedup_vs_reference"] = latency.speedup
    elif engine.runner is None:
        # the contract: a report always has `latency`; null says why
        report["latency"] = None
        report["latency_note"] = engine.latency_note
    if accuracy is not None:
        report["accuracy"] = accuracy
    report.update({"stage_times_s": clock.times, "stage_peak_rss_mb": clock.peaks,
                   "environment": environment(versions, cfg.threads), "created": created})

    engine_block = dict(engine.engine)
    if engine_settings:
        engine_block["settings"] = engine_settings
    manifest: dict[str, Any] = {
        "export": graphs[0].facts,
        "simplify": graphs[1].facts,
        **({"calibration": calibration} if calibration is not None else {}),
        **({"precision_details": precision.details} if precision.details else {}),
        "engine": engine_block,
        "tool": {"name": "coatnet-deploy", "version": __version__},
        "model": {**plan.source.manifest_model(cfg.seed), "num_classes": num_classes, "image_size": plan.image_size},
        "input": {"name": INPUT_NAME, "layout": "NCHW", "dtype": "float32",
                  "shape": [[plan.batch[0], plan.batch[2]], 3, plan.image_size, plan.image_size],
                  "batch": {"min": plan.batch[0], "opt": plan.batch[1], "max": plan.batch[2]}},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [[plan.batch[0], plan.batch[2]], num_classes]},
        "preprocess": plan.preprocess.to_dict(),
        "target": cfg.target,
        "precision": cfg.precision,
        **({"device": plan.device.to_manifest(cfg.target, cfg.precision)} if plan.device is not None else {}),
        "status": status,
        "golden": golden_block,
        "gates": dict(plan.gates),
        "gate_samples": plan.gate_samples,
        "config": {**cfg.to_dict(), **({plan.target.name: plan.options} if plan.options else {})},
        "versions": versions,
        "created": created,
    }
    # The reports list the engine files with checksums; they cannot list their own.
    manifest["artifacts"] = artifact_entries(writer.dir)
    write_json(writer.path("report.json"), report)
    render_reports(writer.dir, report, manifest)
    return report, writer.write_manifest(manifest)


def device_warnings(profile, cfg: ExportConfig) -> list[str]:
    """What the report must say about the device profile: a build host outside it, INT8 on ARM."""
    if profile is None:
        return []
    from coatnet_deploy import host

    out = []
    missing = profile.covers(host.features(), host.machine())
    if missing:
        out.append(f"this host ({host.cpu_name()}) is outside the device profile {profile.name} (lacks {', '.join(missing)}): the "
                   f"parity and latency here are this host's; run `coatnet-deploy parity` on the device (docs/DEVICES.md)")
    if cfg.precision == "int8" and profile.arch == "aarch64" and cfg.target == "openvino":
        out.append("INT8 on aarch64: OpenVINO's ARM CPU plugin runs int8 only in FullyConnected layers, and this profile keeps the "
                   "head float, so on the device this IR runs in f16/f32, with no int8 speed-up (docs/DEVICES.md, the census)")
    return out


def render_reports(root, report: dict[str, Any], manifest: dict[str, Any]) -> None:
    """report.md and report.html from report.json's data, with the bundle's target's own sections."""
    from coatnet_deploy import targets
    from coatnet_deploy.report import render_html, render_markdown

    name = manifest.get("target")
    extra = targets.get(name).report_sections(report, manifest) if name in targets.names() else []
    (root / "report.md").write_text(render_markdown(report, manifest, extra_sections=extra), encoding="utf-8")
    (root / "report.html").write_text(render_html(report, manifest, extra_sections=extra), encoding="utf-8")
