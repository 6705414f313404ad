"""Benchmarking bundles with the one harness, and the target x precision matrix.

Two jobs share this module because the matrix is "export every cell, then benchmark the bundles":

- ``bench_bundles(bundles, spec)``: verify each bundle, open its runner (``runtime.engines.open_runner``),
  optionally rebuild the PyTorch reference from the manifest and add a ``--baseline`` bundle, and
  time them all round-robin (``bench.compare_interleaved``) at each batch size on the same inputs:
  the first bundle's golden inputs, tiled to the batch.
- ``run_matrix(cfg)``: export one model to every target x precision that can run here
  (``pipeline.export`` per cell, each failure caught and recorded in its row), then time every engine
  interleaved with the PyTorch reference at batch 1 (latency) and batch 8 (throughput), and write the
  table to ``matrix.json`` and ``matrix.md``.

Ratios are only ever taken between results of one interleaved run: a baseline from an old file
saw another machine state.
"""

from __future__ import annotations

import dataclasses
import json
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coatnet_deploy import targets
from coatnet_deploy.bench import NOISY_CV, BenchConfig, LatencyResult, compare_interleaved
from coatnet_deploy.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_USER, TargetUnavailable, UserError

REFERENCE = "pytorch"


# ================================================================================================
# shared: inputs, the reference, batch lists
# ================================================================================================

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


def golden_inputs(bundle: str | Path) -> np.ndarray:
    """The bundle's preprocessed golden inputs, (N, 3, H, W) float32."""
    from coatnet_deploy.parity import load_golden

    return np.ascontiguousarray(load_golden(Path(bundle))["inputs"], dtype=np.float32)


def tile(inputs: np.ndarray, batch: int) -> np.ndarray:
    """Golden inputs repeated (or cut) to exactly ``batch`` samples: real data, any batch size."""
    return np.ascontiguousarray(np.resize(inputs, (batch,) + inputs.shape[1:]), dtype=np.float32)


def reference_model(manifest: dict[str, Any], weights: str | None = None):
    """Rebuild the PyTorch model a bundle was exported from -> (nn.Module, note).

    The weights (file, timm folder or checkpoint) must be the ones the manifest records (SHA-256); a
    bundle exported without weights is rebuilt from the seeded random init of its export config.
    """
    from coatnet_deploy.models.source import rebuild_reference

    return rebuild_reference(manifest, weights)


def reference_check(runner, bundle: str | Path, max_batch: int) -> dict[str, Any]:
    """Run the rebuilt reference on the golden inputs against the stored reference logits."""
    from coatnet_deploy.compare import compare
    from coatnet_deploy.parity import load_golden
    from coatnet_deploy.stages import run_batched

    g = load_golden(Path(bundle))
    out = run_batched(runner, g["inputs"].astype(np.float32), max_batch)
    res = compare(g["reference_logits"], out, {"max_abs_err": 1e-3, "top1_agreement": 1.0})
    return {"matches_golden": res.passed, "max_abs_err": res.max_abs_err, "cosine_min": res.cosine_min}


def _unique_name(path: str | Path, taken: set[str]) -> str:
    p = Path(path)
    name = p.name or str(p)
    if name in taken or name == REFERENCE:
        name = str(p)
    while name in taken:
        name += "'"
    taken.add(name)
    return name


# ================================================================================================
# bench: several bundles, the same harness, one interleaved run per batch size
# ================================================================================================

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
        return {"runner": self.name, "role": self.role, "bundle": self.bundle, "target": m.get("target", "pytorch"),
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
    batch (``rows``), each with the harness keys, ``settings`` and the speed-ups; see ``format_bench``.
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
            ref_entry = entries[-1]
            max_batch = int(manifests[0]["input"]["batch"]["max"])
            check = reference_check(ref_entry.runner, paths[0], max_batch)
            result["reference"].update(check)
            if not check["matches_golden"]:
                result["warnings"].append(
                    f"the rebuilt PyTorch reference differs from the bundle's golden reference logits (max abs err {check['max_abs_err']:.3g}): "
                    "another torch version or weights? Speed-ups still compare the same architecture")
        runners = {e.name: e.runner for e in entries}
        for b in spec.batches:
            cb = progress.bench_callback(f"batch {b}: ") if progress is not None else None
            res = compare_interleaved(runners, tile(inputs, b), spec.config, progress=cb)
            result["rows"].extend(_rows(entries, res))
    finally:
        for e in entries:
            e.runner.deactivate()
    for row in result["rows"]:
        for w in row["warnings"]:
            result["warnings"].append(f"{row['runner']} batch {row['batch']}: {w}")
    return result


def _rows(entries: list[_Entry], res: dict[str, LatencyResult]) -> list[dict[str, Any]]:
    ref = res.get(REFERENCE)
    base = next((res[e.name] for e in entries if e.role == "baseline"), None)
    rows = []
    for e in entries:
        r = res[e.name]
        row = {**e.describe(), **r.to_dict()}
        row["speedup_vs_reference"] = (ref.p50_ms / r.p50_ms) if ref is not None and r.p50_ms > 0 else None
        row["speedup_vs_baseline"] = (base.p50_ms / r.p50_ms) if base is not None and r.p50_ms > 0 else None
        rows.append(row)
    return rows


BENCH_COLUMNS = ("runner", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "cv", "img/s", "vs ref", "vs baseline")


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def bench_table(result: dict[str, Any]) -> list[list[str]]:
    """The rows of the bench table as text cells (BENCH_COLUMNS)."""
    out = []
    for r in result["rows"]:
        out.append([r["runner"], str(r["batch"]), f"{r['p50_ms']:.3f}", f"{r['p90_ms']:.3f}", f"{r['p99_ms']:.3f}",
                    f"{r['mean_ms']:.3f}", f"{r['std_ms']:.3f}", f"{r['cv']:.3f}" + (" !" if r["noisy"] else ""),
                    f"{r['throughput_ips']:.1f}", _x(r["speedup_vs_reference"]), _x(r["speedup_vs_baseline"])])
    return out


def text_table(header: tuple[str, ...] | list[str], rows: list[list[str]], left: int = 1) -> str:
    """Aligned plain-text table; the first ``left`` columns are left-aligned, the rest right-aligned."""
    table = [list(header)] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = []
    for n, r in enumerate(table):
        lines.append("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_bench(result: dict[str, Any]) -> str:
    """The bench result for people: what ran, the table, warnings."""
    lines = []
    for r in result["rows"]:
        if r["batch"] == result["batches"][0]:
            lines.append(f"{r['runner']}: {r['runs']}" + (f" [bundle {r['bundle_status']}]" if r.get("bundle_status") not in (None, "PASSED") else ""))
    cfg = result["bench_config"]
    lines.append(f"mode {result['mode']}, threads {result['threads'] or 'runtime default'}, warm-up >= {cfg['warmup_iters']} it / {cfg['warmup_s']} s, "
                 f"measure >= {cfg['min_iters']} it / {cfg['min_time_s']} s, interleaved; {result['inputs']}")
    lines += ["", text_table(BENCH_COLUMNS, bench_table(result)), ""]
    lines.append("vs ref / vs baseline: speed-up of the median (p50) in the same interleaved run; img/s = batch x 1000 / p50.")
    for w in result["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)


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
        keep = [k for k in ("batch", "warmup", "iterations", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "std_ms",
                            "cv", "throughput_ips", "first_inference_ms", "load_time_s", "samples_ms", "threads", "settings", "mode", "noisy", "warnings")]
        by_batch = [{k: r[k] for k in keep if k in r} for r in rows]
        report["latency"] = next(d for d in by_batch if d["batch"] == first)
        report["latency_by_batch"] = by_batch
        report["latency_source"] = {"command": "coatnet-deploy bench", "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    "interleaved_with": sorted({r["runner"] for r in result["rows"]} - {r["runner"] for r in rows})}
        if first in ref_rows:
            ref = ref_rows[first]
            report["reference_latency"] = {k: ref[k] for k in keep if k in ref}
            report["speedup_vs_reference"] = round(ref["p50_ms"] / report["latency"]["p50_ms"], 3)
        else:
            # the export's reference timing came from another run; a ratio across runs would mislead
            report.pop("reference_latency", None)
            report.pop("speedup_vs_reference", None)
        manifest = read_manifest(root)
        write_json(report_path, report)
        from coatnet_deploy.export.documents import render_reports

        render_reports(root, report, manifest)
        rewrite_reports(root, manifest)
        updated.append(path)
    return updated


# ================================================================================================
# the matrix
# ================================================================================================

#: per-cell ExportConfig keys the matrix sets itself; an ``export:`` section may not override them
_CELL_KEYS = ("target", "precision", "output", "defer_build", "bench_iterations")


@dataclass
class MatrixConfig:
    """One model, every target x precision. Read from ``--config`` (export_configs/matrix.yaml) + flags."""

    model: str = "coatnet_0_rw_224"
    weights: str | None = None
    num_classes: int | None = None
    image_size: int | None = None
    targets: list = field(default_factory=lambda: targets.names())
    precisions: list = field(default_factory=lambda: list(targets.PRECISIONS))
    eval_images: str | None = None
    output: str | None = None
    threads: int | None = None
    latency_batch: int = 1
    throughput_batch: int = 8
    bench: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)

    def default_output(self) -> str:
        return str(Path("bundles") / f"matrix-{self.model}")

    def bench_config(self, mode: str) -> BenchConfig:
        return BenchConfig(**{**MATRIX_BENCH_DEFAULTS, **self.bench, "mode": mode})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: shorter than `bench`'s defaults: a matrix times up to 12 engines plus the reference, twice
MATRIX_BENCH_DEFAULTS = {"warmup_iters": 3, "warmup_s": 0.2, "min_iters": 10, "min_time_s": 1.0, "max_time_s": 30.0, "async_batches": 2}

MATRIX_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    "model": ((str,), "variant name from `coatnet-deploy models`"),
    "weights": ((str, type(None)), "weights for every cell and the reference; null = seeded random init"),
    "num_classes": ((int, type(None)), "head size; inferred from the weights when null"),
    "image_size": ((int, type(None)), "square input size; null = the variant's"),
    "targets": ((list,), "subset of the targets `coatnet-deploy targets` lists"),
    "precisions": ((list,), f"subset of {', '.join(targets.PRECISIONS)}"),
    "eval_images": ((str, type(None)), "ImageFolder tree: adds the accuracy drop per cell"),
    "output": ((str, type(None)), "directory for OUTPUT/<target>-<precision>/ bundles and matrix.json/md"),
    "threads": ((int, type(None)), "runtime threads for every engine and the reference"),
    "latency_batch": ((int,), "batch size of the p50 column (latency mode)"),
    "throughput_batch": ((int,), "batch size of the images/s column (throughput mode: OpenVINO THROUGHPUT hint + async queue)"),
    "bench": ((dict,), f"harness settings ({', '.join(MATRIX_BENCH_DEFAULTS)})"),
    "export": ((dict,), "export config keys applied to every cell (see export_configs/*.yaml), e.g. calibration_samples, gates"),
}


def _validate_matrix(values: dict[str, Any], source: str) -> dict[str, Any]:
    from coatnet_deploy.config import _type_name, validate

    for key, value in values.items():
        if key not in MATRIX_FIELDS:
            raise UserError(f"{source}: unknown key '{key}'", f"valid keys: {', '.join(MATRIX_FIELDS)}", "remove or rename it")
        types = MATRIX_FIELDS[key][0]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise UserError(f"{source}: key '{key}' must be {_type_name(types) if list not in types else 'a list'}", f"got {value!r}", "fix the value")
    for key, valid in (("targets", targets.names()), ("precisions", targets.PRECISIONS)):
        for v in values.get(key) or []:
            if v not in valid:
                raise UserError(f"{source}: unknown {key[:-1]} '{v}'", f"valid {key}: {', '.join(valid)}", "fix the list")
        if key in values and not values[key]:
            raise UserError(f"{source}: '{key}' is empty", None, f"list at least one of {', '.join(valid)}")
    for key in ("latency_batch", "throughput_batch"):
        if key in values and values[key] < 1:
            raise UserError(f"{source}: key '{key}' is {values[key]}", "it must be at least 1", "fix the value")
    bench = values.get("bench") or {}
    bench_fields = {f.name for f in dataclasses.fields(BenchConfig)} - {"mode"}
    for key in bench:
        if key not in bench_fields:
            raise UserError(f"{source}: unknown key 'bench.{key}'", f"valid keys: {', '.join(sorted(bench_fields))}", "remove or rename it")
    BenchConfig(**{**MATRIX_BENCH_DEFAULTS, **bench})  # type/range errors as UserError
    export = values.get("export") or {}
    for key in export:
        if key in _CELL_KEYS:
            raise UserError(f"{source}: 'export.{key}' is set per cell by the matrix", None, "remove it (use targets/precisions/output)")
    validate(dict(export), f"{source} (export)")
    return values


def load_matrix_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a matrix YAML (export_configs/matrix.yaml) -> the keys it sets."""
    from coatnet_deploy.config import read_yaml_mapping

    return _validate_matrix(read_yaml_mapping(path, "export_configs/matrix.yaml"), str(path))


def make_matrix_config(config_file: str | None, overrides: dict[str, Any]) -> MatrixConfig:
    """The config file's values, then every flag that was given (None = not given)."""
    values = load_matrix_config(config_file) if config_file else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    _validate_matrix(given, "command line")
    values.update(given)
    return MatrixConfig(**values)


@dataclass
class Cell:
    """One row of the matrix (also the PyTorch reference row, target 'pytorch')."""

    target: str
    precision: str
    status: str = "PENDING"  # PASSED | FAILED | UNAVAILABLE | ERROR | REFERENCE
    reason: str | None = None  # why unavailable, or the one-line error
    deferred: bool = False
    bundle: str | None = None
    size_mb: float | None = None
    cosine_min: float | None = None
    top1_agreement: float | None = None
    accuracy_drop: float | None = None
    failed_gates: list = field(default_factory=list)
    p50_ms: float | None = None
    throughput_ips: float | None = None
    speedup_latency: float | None = None
    speedup_throughput: float | None = None
    export_s: float | None = None
    runs: str | None = None
    latency: dict | None = None
    throughput: dict | None = None
    warnings: list = field(default_factory=list)
    traceback: str | None = None

    @property
    def key(self) -> str:
        return f"{self.target}-{self.precision}"

    def status_text(self) -> str:
        if self.status == "UNAVAILABLE":
            return f"not available here: {self.reason}"
        if self.status == "ERROR":
            return f"ERROR: {self.reason}"
        if self.status == "REFERENCE":
            return "reference"
        text = self.status
        if self.status == "FAILED" and self.failed_gates:
            text += f" ({', '.join(self.failed_gates)})"
        if self.deferred:
            text += " (deferred: ONNX-level parity)"
        return text

    def error(self, message: str, tb: str | None = None) -> None:
        self.status, self.reason, self.traceback = "ERROR", message, tb

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["status_text"] = self.status_text()
        return d


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _engine_size_mb(bundle: Path, manifest: dict[str, Any]) -> float:
    files = targets.get(manifest["target"]).engine_files(manifest)
    sizes = {a["path"]: a["bytes"] for a in manifest["artifacts"]}
    return sum(sizes.get(f, 0) for f in files) / 1e6


@dataclass
class MatrixResult:
    config: MatrixConfig
    cells: list[Cell]
    reference: Cell
    output: Path
    environment: dict[str, Any] = field(default_factory=dict)
    errors: list = field(default_factory=list)  # matrix-level (benchmark) errors

    @property
    def exit_code(self) -> int:
        if self.errors or any(c.status == "ERROR" for c in self.cells):
            return EXIT_USER
        if any(c.status == "FAILED" for c in self.cells):
            return EXIT_GATE_FAILED
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.config.model, "image_size": self.environment.get("image_size"), "config": self.config.to_dict(),
                "environment": self.environment, "columns": _columns(self.config),
                "rows": [self.reference.to_dict()] + [c.to_dict() for c in self.cells],
                "table": matrix_table(self), "errors": self.errors, "exit_code": self.exit_code}


def run_matrix(cfg: MatrixConfig, progress=None) -> MatrixResult:
    """Export ``cfg.model`` to every requested target x precision, benchmark, write matrix.json/md.

    Never stops at a failing cell: each export's UserError / exception is recorded in its row.
    ``progress`` is a ``progress.ProgressLine`` or None.
    """
    from coatnet_deploy.host import environment

    out = Path(cfg.output or cfg.default_output())
    out.mkdir(parents=True, exist_ok=True)
    cells = [Cell(c.target, c.precision) for c in targets.cells(cfg.targets, cfg.precisions)]
    manifests: dict[str, dict[str, Any]] = {}
    for i, cell in enumerate(cells, 1):
        label = f"[{i}/{len(cells)}] {cell.target}/{cell.precision}: "
        if progress is not None:
            progress.prefix = label
        manifest = _export_cell(cfg, cell, out, progress)
        if manifest is not None:
            manifests[cell.key] = manifest
    if progress is not None:
        progress.prefix = ""
    reference = Cell(REFERENCE, "fp32", status="REFERENCE")
    result = MatrixResult(cfg, cells, reference, out)
    try:
        _bench_cells(cfg, cells, reference, manifests, result, progress)
    except Exception as e:  # noqa: BLE001 - the exports are done; record why timing failed and still write the tables
        result.errors.append({"stage": "benchmark", "error": _one_line(e), "traceback": traceback.format_exc()})
    versions: dict[str, str] = {}
    for m in manifests.values():
        versions.update(m.get("versions") or {})
    result.environment = {**environment(versions, cfg.threads), "image_size": next((m["model"].get("image_size") for m in manifests.values()), cfg.image_size)}
    from coatnet_deploy.bundle import write_json

    write_json(out / "matrix.json", result.to_dict())
    (out / "matrix.md").write_text(matrix_markdown(result), encoding="utf-8")
    return result


def _export_cell(cfg: MatrixConfig, cell: Cell, out: Path, progress) -> dict[str, Any] | None:
    from coatnet_deploy.config import ExportConfig, validate
    from coatnet_deploy.export import export

    target = targets.get(cell.target)
    avail = target.availability(cell.precision)
    if not avail.ok and target.can_defer:
        avail = target.availability(cell.precision, defer_build=True)
    defer = avail.ok and avail.deferred
    if not avail.ok:
        cell.status, cell.reason = "UNAVAILABLE", avail.reason
        return None
    bundle = out / cell.key
    values = {**cfg.export, "model": cfg.model, "weights": cfg.weights, "num_classes": cfg.num_classes, "image_size": cfg.image_size,
              "target": cell.target, "precision": cell.precision, "output": str(bundle), "bench_iterations": 0,
              "eval_images": cfg.eval_images, "threads": cfg.threads, "defer_build": defer}
    values = {k: v for k, v in values.items() if v is not None}
    t0 = time.perf_counter()
    try:
        res = export(ExportConfig.from_mapping(validate(values, f"matrix cell {cell.key}")),
                     progress=progress.stage_callback() if progress is not None else None)
    except TargetUnavailable as e:
        cell.status, cell.reason = "UNAVAILABLE", str(e)
        return None
    except UserError as e:
        cell.error(str(e))
        return None
    except Exception as e:  # noqa: BLE001 - one broken cell must not stop the others; the row keeps the traceback
        cell.error(_one_line(e), traceback.format_exc())
        return None
    finally:
        cell.export_s = round(time.perf_counter() - t0, 2)
    rep, man = res.report, res.manifest
    p = rep.get("parity") or {}
    cell.status, cell.bundle, cell.deferred = res.status, str(res.bundle), defer
    cell.cosine_min, cell.top1_agreement = p.get("cosine_min"), p.get("top1_agreement")
    cell.failed_gates = list(p.get("failed_gates") or [])
    if rep.get("accuracy"):
        cell.accuracy_drop = rep["accuracy"].get("drop_top1")
    cell.size_mb = _engine_size_mb(Path(res.bundle), man)
    return man


def _bench_cells(cfg: MatrixConfig, cells: list[Cell], reference: Cell, manifests: dict[str, dict[str, Any]],
                 result: MatrixResult, progress) -> None:
    """Time the exported engines interleaved with the PyTorch reference: latency batch, then throughput batch."""
    from coatnet_deploy.backends.torch_ref import TorchRunner
    from coatnet_deploy.models import count_params
    from coatnet_deploy.runtime.engines import open_runner

    timed = [c for c in cells if c.key in manifests and not c.deferred]
    for c in cells:
        if c.deferred:
            c.runs = "not timed: the engine is built on the device"
    if not manifests:
        return
    first = next(iter(manifests))
    first_manifest = manifests[first]
    model, note = reference_model(first_manifest, cfg.weights)
    reference.size_mb = count_params(model) * 4 / 1e6
    reference.runs = f"torch eager fp32 ({note})"
    inputs = golden_inputs(Path(cfg.output or cfg.default_output()) / first)
    for batch, mode, attr in ((cfg.latency_batch, "latency", "latency"), (cfg.throughput_batch, "throughput", "throughput")):
        runners: dict[str, Any] = {REFERENCE: TorchRunner(model, device=(cfg.export.get("reference") or "auto"), threads=cfg.threads)}
        x = tile(inputs, batch)
        try:
            for c in timed:
                if c.status == "ERROR":
                    continue
                try:
                    runner, runs = open_runner(c.bundle, manifests[c.key], threads=cfg.threads, mode=mode)
                    runner.name = c.key
                    runner.activate()
                    runner.infer(x)  # a runner that cannot run this batch is this cell's error, not the matrix's
                except Exception as e:  # noqa: BLE001
                    c.error(f"benchmark: {_one_line(e)}", traceback.format_exc())
                    continue
                c.runs = runs
                runners[c.key] = runner
            if progress is not None:
                progress.prefix = ""
            res = compare_interleaved(runners, x, cfg.bench_config(mode),
                                      progress=progress.bench_callback(f"timing batch {batch} ({mode}): ") if progress is not None else None)
        finally:
            for r in runners.values():
                r.deactivate()
        ref = res[REFERENCE]
        for c in [reference] + timed:
            if c.target != REFERENCE and c.key not in res:
                continue
            r = res[REFERENCE if c is reference else c.key]
            d = {k: v for k, v in r.to_dict().items() if k != "samples_ms"}
            setattr(c, attr, d)
            # noisy runs are summarised in one line by _notes (cv is in the dict); other caveats stay whole
            c.warnings += [f"batch {batch}: {w}" for w in r.warnings if not w.startswith("noisy measurement")]
            if attr == "latency":
                c.p50_ms, c.speedup_latency = r.p50_ms, ref.p50_ms / r.p50_ms
            else:
                c.throughput_ips, c.speedup_throughput = r.throughput_ips, r.throughput_ips / ref.throughput_ips


MATRIX_COLUMNS = ("target", "precision", "status", "size MB", "cosine_min", "top1 agree", "acc drop",
                  "p50 ms b1", "img/s b8", "x PyTorch b1", "x PyTorch b8")


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def matrix_table(result: MatrixResult) -> list[list[str]]:
    """The matrix rows as text cells (MATRIX_COLUMNS); the same cells go to the terminal, matrix.md and matrix.json."""
    rows = []
    for c in [result.reference] + result.cells:
        status = c.status_text()
        if len(status) > STATUS_WIDTH:
            status = status[:STATUS_WIDTH - 3] + "..."
        rows.append([c.target, c.precision, status, _f(c.size_mb, ".2f"), _f(c.cosine_min, ".6f"), _f(c.top1_agreement, ".3f"),
                     _f(c.accuracy_drop, ".2f"), _f(c.p50_ms, ".2f"), _f(c.throughput_ips, ".1f"),
                     _f(c.speedup_latency, ".2f") + ("x" if c.speedup_latency is not None else ""),
                     _f(c.speedup_throughput, ".2f") + ("x" if c.speedup_throughput is not None else "")])
    return rows


def _columns(cfg: MatrixConfig) -> list[str]:
    cols = list(MATRIX_COLUMNS)
    cols[7], cols[8] = f"p50 ms b{cfg.latency_batch}", f"img/s b{cfg.throughput_batch}"
    cols[9], cols[10] = f"x PyTorch b{cfg.latency_batch}", f"x PyTorch b{cfg.throughput_batch}"
    return cols


#: an error in the status column is cut here; the whole line is under the table and in matrix.json
STATUS_WIDTH = 72


def _notes(result: MatrixResult) -> list[str]:
    env = result.environment
    cfg = result.config
    lines = [f"model {cfg.model} at {env.get('image_size')} px, {'weights ' + cfg.weights if cfg.weights else 'random init'}; "
             f"{env.get('cpu')} ({env.get('cpu_count')} cores), threads {cfg.threads or 'runtime default'}",
             f"timed interleaved with the PyTorch reference on the golden inputs: b{cfg.latency_batch} latency mode (p50), "
             f"b{cfg.throughput_batch} throughput mode (OpenVINO THROUGHPUT hint + async queue); speed-ups are ratios within one run"]
    noisy = [f"{c.key} b{d['batch']} ({d['cv']:.2f})" for c in [result.reference] + result.cells
             for d in (c.latency, c.throughput) if d and d.get("noisy")]
    if noisy:
        lines.append(f"warning: noisy timings (coefficient of variation > {NOISY_CV}; other load on the machine?): {', '.join(noisy)}")
    for c in [result.reference] + result.cells:
        for w in c.warnings:
            lines.append(f"warning: {c.key}: {w}")
        if c.status == "ERROR" and len(c.status_text()) > STATUS_WIDTH:
            lines.append(f"error: {c.key}: {c.reason}")
    for e in result.errors:
        lines.append(f"error: {e['stage']}: {e['error']}")
    return lines


def format_matrix(result: MatrixResult) -> str:
    """The matrix for a terminal: notes, then the aligned table."""
    return "\n".join(_notes(result)[:2] + ["", text_table(_columns(result.config), matrix_table(result), left=3), ""] + _notes(result)[2:])


def matrix_markdown(result: MatrixResult) -> str:
    """matrix.md: the same table as matrix.json's ``table``, as a Markdown table."""
    cols = _columns(result.config)
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [f"# coatnet-deploy matrix: {result.config.model}", ""]
    lines += [f"- {esc(n)}" for n in _notes(result)[:2]] + [""]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "|".join("---" if i < 3 else "---:" for i in range(len(cols))) + "|")
    for row in matrix_table(result):
        lines.append("| " + " | ".join(esc(c) for c in row) + " |")
    rest = _notes(result)[2:]
    if rest:
        lines += [""] + [f"- {esc(n)}" for n in rest]
    lines.append("")
    return "\n".join(lines)
