"""`coatnet-deploy bench`: several bundles (and the rebuilt reference, a baseline bundle) in one session.

``bench_bundles(bundles, spec)`` verifies each bundle, opens its runner (``runtime.engines.open_runner``),
optionally rebuilds the PyTorch reference from the manifest and adds a ``--baseline`` bundle, and times
them all with the one session (``session.time_interleaved``) at each batch size on the same inputs:
the first bundle's golden inputs, tiled to the batch. ``update_reports`` writes the result into each
bundle's report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coatnet_deploy.bench.harness import BenchConfig
from coatnet_deploy.bench.ranking import fastest_line, fastest_passing
from coatnet_deploy.bench.reference import REFERENCE, golden_inputs, reference_check, reference_model
from coatnet_deploy.bench.session import BatchTiming, time_interleaved
from coatnet_deploy.bench.tables import Table
from coatnet_deploy.errors import UserError


def parse_batches(text: str | list[int] | tuple[int, ...]) -> list[int]:
    """'1,8' (or a list) -> [1, 8]; refuses anything that is not a positive integer."""
    items = [str(t).strip() for t in (text.split(",") if isinstance(text, str) else text)]
    try:
        out = [int(t) for t in items if t]
    except ValueError:
        out = []
    if not out or any(b < 1 for b in out):
        raise UserError(f"bad batch list '{text}'", "expected positive integers separated by commas", "pass e.g. --batch 1,8")
    return list(dict.fromkeys(out))


def _unique_name(path: str | Path, taken: set[str]) -> str:
    p = Path(path)
    name = p.name or str(p)
    if name in taken or name == REFERENCE:
        name = str(p)
    while name in taken:
        name += "'"
    taken.add(name)
    return name


@dataclass
class BenchSpec:
    """What `coatnet-deploy bench` was asked for."""

    batches: list[int] = field(default_factory=lambda: [1, 8])
    config: BenchConfig = field(default_factory=BenchConfig)
    threads: int | None = None
    reference: bool = False
    weights: str | None = None
    baseline: str | None = None
    reference_device: str = "auto"

    @property
    def mode(self) -> str:
        return self.config.mode


@dataclass
class _Entry:
    name: str
    role: str  # "engine" | "baseline" | "reference"
    runner: Any
    bundle: str | None = None
    manifest: dict[str, Any] | None = None
    runs: str = ""

    def describe(self) -> dict[str, Any]:
        m = self.manifest or {}
        return {"runner": self.name, "role": self.role, "bundle": self.bundle, "target": m.get("target", REFERENCE),
                "precision": m.get("precision", "fp32"), "bundle_status": m.get("status"), "runs": self.runs}


def _check_compatible(paths: list[str], manifests: list[dict[str, Any]], batches: list[int]) -> None:
    shapes = {tuple(m["input"]["shape"][1:]) for m in manifests}
    if len(shapes) > 1:
        raise UserError("the bundles take different input shapes", f"{sorted(shapes)}",
                        "benchmark bundles of one model at one image size together (they run on the same inputs)")
    for p, m in zip(paths, manifests):
        b = m["input"].get("batch") or {}
        lo, hi = int(b.get("min", 1)), int(b.get("max", max(batches)))
        bad = [x for x in batches if not lo <= x <= hi]
        if bad:
            raise UserError(f"bundle '{p}' takes batch {lo}..{hi}", f"--batch asks for {', '.join(map(str, bad))}",
                            f"use batch sizes within {lo}..{hi}, or export with --batch {lo}:{lo}:{max(bad)}")


def bench_bundles(bundles: list[str], spec: BenchSpec, progress=None) -> dict[str, Any]:
    """Time every bundle (and the reference / baseline) interleaved, per batch size -> result dict.

    ``progress`` is a ``progress.ProgressLine`` (or None). The result holds one row per runner and
    batch (``rows``), each with the harness keys, ``settings`` and the speed-ups, and
    ``fastest_passing`` {batch: runner}; see ``format_bench``.
    """
    from coatnet_deploy.bundle import verify_bundle
    from coatnet_deploy.runtime.engines import open_runner

    if not bundles:
        raise UserError("no bundle given", None, "pass one or more bundle directories")
    paths = [str(b) for b in bundles]
    all_paths = paths + ([spec.baseline] if spec.baseline else [])
    manifests = [verify_bundle(p) for p in all_paths]  # a tampered bundle is refused before anything runs
    _check_compatible(all_paths, manifests, spec.batches)
    inputs = golden_inputs(paths[0])

    taken: set[str] = set()
    entries: list[_Entry] = []
    for i, (p, m) in enumerate(zip(all_paths, manifests)):
        runner, runs = open_runner(p, m, threads=spec.threads, mode=spec.mode)
        role = "baseline" if spec.baseline and i == len(all_paths) - 1 else "engine"
        name = _unique_name(p, taken)
        if role == "baseline":
            name = f"baseline:{name}"
        runner.name = name
        entries.append(_Entry(name, role, runner, p, m, runs))

    result: dict[str, Any] = {"bundles": paths, "baseline": spec.baseline, "batches": spec.batches, "mode": spec.mode,
                              "threads": spec.threads, "bench_config": spec.config.to_dict(), "inputs": f"golden inputs of {paths[0]}, tiled to the batch",
                              "reference": None, "rows": [], "warnings": []}
    if spec.reference:
        models = {(m["model"]["name"], m["model"].get("num_classes"), tuple(m["input"]["shape"][1:])) for m in manifests}
        if len(models) > 1:
            raise UserError("--reference with bundles of different models", f"{sorted(models)}",
                            "benchmark one model's bundles per run when comparing with the reference")
        from coatnet_deploy.backends.torch_ref import TorchRunner

        if progress is not None:
            progress.say("rebuilding the PyTorch reference ...", force=True)
        model, note = reference_model(manifests[0], spec.weights)
        ref = TorchRunner(model, device=spec.reference_device, dtype="fp32", threads=spec.threads)
        ref.name = REFERENCE
        entries.append(_Entry(REFERENCE, "reference", ref, None, None, f"torch eager on {ref.device} ({note})"))
        result["reference"] = {"note": note, "device": ref.device}
    elif spec.weights:
        raise UserError("--weights is only used with --reference", None, "add --reference, or drop --weights")

    try:
        for e in entries:
            e.runner.activate()
        if spec.reference:
            max_batch = int(manifests[0]["input"]["batch"]["max"])
            check = reference_check(entries[-1].runner, paths[0], max_batch)
            result["reference"].update(check)
            if not check["matches_golden"]:
                result["warnings"].append(
                    f"the rebuilt PyTorch reference differs from the bundle's golden reference logits (max abs err {check['max_abs_err']:.3g}): "
                    "another torch version or weights? Speed-ups still compare the same architecture")
        timings = time_interleaved({e.name: e.runner for e in entries}, inputs, spec.batches, spec.config, progress)
    finally:
        for e in entries:
            e.runner.deactivate()
    for b in spec.batches:
        result["rows"].extend(_rows(entries, timings[b]))
    result["session"] = {str(b): {"wall_s": round(t.stats.wall_s, 3), "settle_s": round(t.stats.settle_s, 3), "rounds": t.stats.rounds}
                         for b, t in timings.items()}
    result["fastest_passing"] = fastest_passing(
        ({"name": r["runner"], "batch": r["batch"], "status": r["bundle_status"], "p50_ms": r["p50_ms"]}
         for r in result["rows"] if r["role"] != "reference"), spec.batches)
    for row in result["rows"]:
        for w in row["warnings"]:
            result["warnings"].append(f"{row['runner']} batch {row['batch']}: {w}")
    return result


def _rows(entries: list[_Entry], timing: BatchTiming) -> list[dict[str, Any]]:
    vs_ref = timing.speedups(REFERENCE) if REFERENCE in timing.results else {}
    base = next((e.name for e in entries if e.role == "baseline"), None)
    vs_base = timing.speedups(base) if base is not None else {}
    return [{**e.describe(), **timing.results[e.name].to_dict(),
             "speedup_vs_reference": vs_ref.get(e.name), "speedup_vs_baseline": vs_base.get(e.name)} for e in entries]


BENCH_COLUMNS = ("runner", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "cv", "img/s", "vs ref", "vs baseline")


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def bench_table(result: dict[str, Any]) -> Table:
    """The bench table (BENCH_COLUMNS), one row per runner and batch."""
    rows = []
    for r in result["rows"]:
        rows.append([r["runner"], str(r["batch"]), f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}",
                     f"{r['mean_ms']:.3f}", f"{r['std_ms']:.3f}", f"{r['cv']:.3f}" + (" !" if r["noisy"] else ""),
                     f"{r['throughput_ips']:.1f}", _x(r["speedup_vs_reference"]), _x(r["speedup_vs_baseline"])])
    return Table(list(BENCH_COLUMNS), rows)


def format_bench(result: dict[str, Any]) -> str:
    """The bench result for people: what ran, the table, the fastest passing engine, warnings."""
    lines = []
    for r in result["rows"]:
        if r["batch"] == result["batches"][0]:
            lines.append(f"{r['runner']}: {r['runs']}" + (f" [bundle {r['bundle_status']}]" if r.get("bundle_status") not in (None, "PASSED") else ""))
    cfg = result["bench_config"]
    lines.append(f"mode {result['mode']}, threads {result['threads'] or 'runtime default'}, warm-up >= {cfg['warmup_iters']} it / {cfg['warmup_s']} s, "
                 f"measure >= {cfg['min_iters']} it / {cfg['min_time_s']} s, interleaved; {result['inputs']}")
    lines += ["", bench_table(result).text(), ""]
    lines.append("vs ref / vs baseline: speed-up of the median (p50) in the same interleaved run; img/s = batch x 1000 / p50.")
    lines.append(fastest_line(result["fastest_passing"]) + " (bundles whose gates passed; lowest p50 in this run)")
    for w in result["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


#: the harness keys a bundle's report keeps from a bench row
_REPORT_KEYS = ("batch", "warmup", "iterations", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "std_ms",
                "cv", "throughput_ips", "first_inference_ms", "load_time_s", "samples_ms", "threads", "settings", "mode", "noisy", "warnings")


def update_reports(result: dict[str, Any]) -> list[str]:
    """Write each engine's latency (first batch; all batches under ``latency_by_batch``) into its
    bundle's report.json, re-render report.md/html and refresh the manifest checksums -> bundles updated."""
    from coatnet_deploy.bundle import read_manifest, rewrite_reports, write_json

    first = result["batches"][0]
    updated = []
    for path in result["bundles"]:
        root = Path(path)
        rows = [r for r in result["rows"] if r["bundle"] == path and r["role"] == "engine"]
        ref_rows = {r["batch"]: r for r in result["rows"] if r["role"] == "reference"}
        report_path = root / "report.json"
        try:
            report = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"bundle '{path}': report.json cannot be read", str(e).splitlines()[0], "export the bundle again") from None
        by_batch = [{k: r[k] for k in _REPORT_KEYS if k in r} for r in rows]
        report["latency"] = next(d for d in by_batch if d["batch"] == first)
        report["latency_by_batch"] = by_batch
        report["latency_source"] = {"command": "coatnet-deploy bench", "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "interleaved_with": sorted({r["runner"] for r in result["rows"]} - {r["runner"] for r in rows})}
        if first in ref_rows:
            report["reference_latency"] = {k: ref_rows[first][k] for k in _REPORT_KEYS if k in ref_rows[first]}
            report["speedup_vs_reference"] = round(next(r for r in rows if r["batch"] == first)["speedup_vs_reference"], 3)
        else:
            # the export's reference timing came from another run; a ratio across runs would mislead
            report.pop("reference_latency", None)
            report.pop("speedup_vs_reference", None)
        manifest = read_manifest(root)
        write_json(report_path, report)
        from coatnet_deploy.exporting.documents import render_reports

        render_reports(root, report, manifest)
        rewrite_reports(root, manifest)
        updated.append(path)
    return updated
