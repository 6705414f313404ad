"""The target x precision matrix: one model exported to every cell that can run here, checked and timed.

``run_matrix(cfg)`` exports ``cfg.model`` to every requested cell (``pipeline.export`` per cell, each
failure caught and recorded in its row), then times every engine interleaved with the PyTorch reference
(the one session, ``session.time_interleaved``) at the latency batch (latency mode) and the throughput
batch (throughput mode), names the fastest engine that passed its gates at each, and writes the table
to ``matrix.json`` and ``matrix.md``.

The cells come from ``matrix_cells()``, the one place this module reads the target table.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

from coatnet_deploy.bench.harness import BENCH_FIELDS, NOISY_CV, BenchConfig
from coatnet_deploy.bench.ranking import fastest_line, fastest_passing
from coatnet_deploy.bench.reference import REFERENCE, golden_inputs, reference_model
from coatnet_deploy.bench.session import time_interleaved
from coatnet_deploy.bench.tables import Table, markdown_escape
from coatnet_deploy.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_USER, TargetUnavailable, UserError
from coatnet_deploy.fields import Field, check_fields


# ================================================================================================
# the cells (the seam the target registry replaces)
# ================================================================================================

class KnownCell(NamedTuple):
    """A target x precision the tool knows; ``availability()`` -> (runs here, reason, build deferred to the device)."""

    target: str
    precision: str
    availability: Callable[[], tuple[bool, str, bool]]


def matrix_cells() -> list[KnownCell]:
    """Every target x precision cell the target registry lists, in its order. Probes run only when
    ``availability`` is called.

    A cell that cannot run here but whose target can write the bundle and leave the engine build to
    the device (``can_defer``) is available as deferred.
    """
    from coatnet_deploy import targets

    def probe(target: str, precision: str) -> tuple[bool, str, bool]:
        t = targets.get(target)
        avail = t.availability(precision)
        if not avail.ok and t.can_defer:
            avail = t.availability(precision, defer_build=True)
        return avail.ok, avail.reason, bool(avail.ok and avail.deferred)

    return [KnownCell(c.target, c.precision, lambda t=c.target, p=c.precision: probe(t, p)) for c in targets.cells()]


def _names(attr: str) -> list[str]:
    return list(dict.fromkeys(getattr(c, attr) for c in matrix_cells()))


# ================================================================================================
# the config
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
    targets: list = field(default_factory=lambda: _names("target"))
    precisions: list = field(default_factory=lambda: _names("precision"))
    eval_images: str | None = None
    output: str | None = None
    threads: int | None = None
    latency_batch: int = 1
    throughput_batch: int = 8
    bench: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)
    # the fleet (coatnet_deploy.fleet): any of these makes a cell model x target x precision x device
    models: list | None = None
    devices: list | None = None
    cluster: str | None = None
    emulate_missing: bool = False
    cell_timeout: float | None = None

    @property
    def is_fleet(self) -> bool:
        return bool(self.cluster or self.devices or self.models)

    def default_output(self) -> str:
        if self.is_fleet:
            return str(Path("bundles") / "fleet")
        return str(Path("bundles") / f"matrix-{self.model}")

    def bench_config(self, mode: str) -> BenchConfig:
        return BenchConfig(**{**MATRIX_BENCH_DEFAULTS, **self.bench, "mode": mode})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: shorter than `bench`'s defaults: a matrix times up to 12 engines plus the reference, twice
MATRIX_BENCH_DEFAULTS = {"warmup_iters": 3, "warmup_s": 0.2, "min_iters": 10, "min_time_s": 1.0, "max_time_s": 30.0, "async_batches": 2}


def _check_export_section(export: dict, source: str, key: str) -> None:
    from coatnet_deploy.config import validate

    for k in export:
        if k in _CELL_KEYS:
            raise UserError(f"{source}: '{key}.{k}' is set per cell by the matrix", None, "remove it (use targets/precisions/output)")
    validate(dict(export), f"{source} (export)")


def _check_bench_section(bench: dict, source: str, key: str) -> None:
    BenchConfig(**{**MATRIX_BENCH_DEFAULTS, **bench})  # what one key alone cannot say: max_time_s below min_time_s


def matrix_fields() -> dict[str, Field | tuple]:
    """The matrix YAML's keys (the one validator's table); targets and precisions come from ``matrix_cells``."""
    targets, precisions = tuple(_names("target")), tuple(_names("precision"))
    return {
        "model": ((str,), "variant name from `coatnet-deploy models`"),
        "weights": ((str, type(None)), "weights for every cell and the reference; null = seeded random init"),
        "num_classes": ((int, type(None)), "head size; inferred from the weights when null"),
        "image_size": ((int, type(None)), "square input size; null = the variant's"),
        "targets": Field((list,), f"subset of {', '.join(targets)}", items=targets, nonempty=True),
        "precisions": Field((list,), f"subset of {', '.join(precisions)}", items=precisions, nonempty=True),
        "eval_images": ((str, type(None)), "ImageFolder tree: adds the accuracy drop per cell"),
        "output": ((str, type(None)), "directory for OUTPUT/<target>-<precision>/ bundles and matrix.json/md"),
        "threads": ((int, type(None)), "runtime threads for every engine and the reference"),
        "latency_batch": Field((int,), "batch size of the p50 column (latency mode)", minimum=1),
        "throughput_batch": Field((int,), "batch size of the images/s column (throughput mode: runners with an async queue overlap requests)",
                                  minimum=1),
        "bench": Field((dict,), f"harness settings ({', '.join(MATRIX_BENCH_DEFAULTS)}, settle_s)",
                       section={k: f for k, f in BENCH_FIELDS.items() if k != "mode"}, check=_check_bench_section),
        "export": Field((dict,), "export config keys applied to every cell (see export_configs/*.yaml), e.g. calibration_samples, gates",
                        check=_check_export_section),
        "models": Field((list, type(None)), "several variants in one fleet run (each x every target x precision x device)",
                        check=_check_models),
        "devices": Field((list, type(None)), "device profiles to prove each cell on (x86-64-v3, aarch64-v8.0, ..., gpu, gpu-ccX.Y)",
                         check=_check_devices),
        "cluster": ((str, type(None)), "Ray address (HOST:PORT, ray://HOST:PORT, auto) or local; null = this process"),
        "emulate_missing": ((bool,), "send cells whose device profile no node offers to an emulator node (QEMU)"),
        "cell_timeout": Field((int, float, type(None)), "seconds each build and each device proof may run (fleet)", minimum=1),
    }


def _check_models(models: list | None, source: str, key: str) -> None:
    from coatnet_deploy.models import list_models

    known = list_models()
    for m in models or []:
        if m not in known:
            raise UserError(f"{source}: '{key}' names unknown model '{m}'", f"known: {', '.join(known)}", "pick from `coatnet-deploy models`")


def _check_devices(devices: list | None, source: str, key: str) -> None:
    from coatnet_deploy.fleet.nodes import check_device_name

    for d in devices or []:
        check_device_name(d)


def load_matrix_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a matrix YAML (export_configs/matrix.yaml) -> the keys it sets."""
    from coatnet_deploy.config import read_yaml_mapping

    values = read_yaml_mapping(path, "export_configs/matrix.yaml")
    check_fields(values, matrix_fields(), str(path))
    return values


def make_matrix_config(config_file: str | None, overrides: dict[str, Any]) -> MatrixConfig:
    """The config file's values, then every flag that was given (None = not given)."""
    values = load_matrix_config(config_file) if config_file else {}
    given = {k: v for k, v in overrides.items() if v is not None}
    check_fields(given, matrix_fields(), "command line")
    values.update(given)
    return MatrixConfig(**values)


# ================================================================================================
# rows and the result
# ================================================================================================

@dataclass
class MatrixRow:
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
    from coatnet_deploy import targets

    files = targets.get(manifest["target"]).engine_files(manifest)
    sizes = {a["path"]: a["bytes"] for a in manifest["artifacts"]}
    return sum(sizes.get(f, 0) for f in files) / 1e6


@dataclass
class MatrixResult:
    config: MatrixConfig
    cells: list[MatrixRow]
    reference: MatrixRow
    output: Path
    environment: dict[str, Any] = field(default_factory=dict)
    errors: list = field(default_factory=list)  # matrix-level (benchmark) errors
    session: dict[str, Any] = field(default_factory=dict)  # {batch: {wall_s, settle_s, rounds}}

    @property
    def exit_code(self) -> int:
        if self.errors or any(c.status == "ERROR" for c in self.cells):
            return EXIT_USER
        if any(c.status == "FAILED" for c in self.cells):
            return EXIT_GATE_FAILED
        return EXIT_OK

    def fastest_passing(self) -> dict[str, str | None]:
        """{str(batch): the key of the PASSED cell with the lowest p50 at that batch, or None}."""
        rows = [{"name": c.key, "batch": d["batch"], "status": c.status, "p50_ms": d["p50_ms"]}
                for c in self.cells for d in (c.latency, c.throughput) if d]
        return fastest_passing(rows, dict.fromkeys([self.config.latency_batch, self.config.throughput_batch]))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.config.model, "image_size": self.environment.get("image_size"), "config": self.config.to_dict(),
                "environment": self.environment, "columns": _columns(self.config),
                "rows": [self.reference.to_dict()] + [c.to_dict() for c in self.cells],
                "table": matrix_table(self).rows, "fastest_passing": self.fastest_passing(), "session": self.session,
                "errors": self.errors, "exit_code": self.exit_code}


# ================================================================================================
# the run
# ================================================================================================

def run_matrix(cfg: MatrixConfig, progress=None) -> MatrixResult:
    """Export ``cfg.model`` to every requested target x precision, benchmark, write matrix.json/md.

    Never stops at a failing cell: each export's UserError / exception is recorded in its row.
    ``progress`` is a ``progress.ProgressLine`` or None.
    """
    from coatnet_deploy.bundle import write_json
    from coatnet_deploy.host import environment

    out = Path(cfg.output or cfg.default_output())
    out.mkdir(parents=True, exist_ok=True)
    known = [c for c in matrix_cells() if c.target in cfg.targets and c.precision in cfg.precisions]
    cells = [MatrixRow(c.target, c.precision) for c in known]
    manifests: dict[str, dict[str, Any]] = {}
    for i, (known_cell, cell) in enumerate(zip(known, cells), 1):
        if progress is not None:
            progress.prefix = f"[{i}/{len(cells)}] {cell.target}/{cell.precision}: "
        manifest = export_cell(cfg, cell, known_cell, out, progress)
        if manifest is not None:
            manifests[cell.key] = manifest
    if progress is not None:
        progress.prefix = ""
    reference = MatrixRow(REFERENCE, "fp32", status="REFERENCE")
    result = MatrixResult(cfg, cells, reference, out)
    try:
        _bench_cells(cfg, cells, reference, manifests, result, progress)
    except Exception as e:  # noqa: BLE001 - the exports are done; record why timing failed and still write the tables
        result.errors.append({"stage": "benchmark", "error": _one_line(e), "traceback": traceback.format_exc()})
    versions: dict[str, str] = {}
    for m in manifests.values():
        versions.update(m.get("versions") or {})
    result.environment = {**environment(versions, cfg.threads), "image_size": next((m["model"].get("image_size") for m in manifests.values()), cfg.image_size)}
    write_json(out / "matrix.json", result.to_dict())
    (out / "matrix.md").write_text(matrix_markdown(result), encoding="utf-8")
    return result


def export_cell(cfg: MatrixConfig, cell: MatrixRow, known: KnownCell, out: Path, progress, force_defer: bool = False) -> dict[str, Any] | None:
    """Export one cell into ``out/<target>-<precision>``, filling ``cell`` (status, parity, size, export time)
    -> its manifest, or None when it is unavailable or failed (the row says why). The serial matrix and
    every fleet build (``fleet.cells.build_cell``) call this. ``force_defer``: leave the engine build to
    the device even where it could run here (a fleet's TensorRT cells build on their GPU node)."""
    from coatnet_deploy.config import ExportConfig, validate
    from coatnet_deploy.exporting import export

    ok, reason, defer = known.availability()
    if force_defer and ok and not defer:
        defer = True
    if not ok:
        cell.status, cell.reason = "UNAVAILABLE", reason
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


def _open_cell(cell: MatrixRow, manifest: dict[str, Any], threads: int | None, mode: str, x) -> Any | None:
    """The cell's runner, active and known to run ``x`` -> runner; None (and the cell's error) when it cannot."""
    from coatnet_deploy.runtime.engines import open_runner

    try:
        runner, runs = open_runner(cell.bundle, manifest, threads=threads, mode=mode)
        runner.name = cell.key
        runner.activate()
        runner.infer(x)  # a runner that cannot run this batch is this cell's error, not the matrix's
    except Exception as e:  # noqa: BLE001
        cell.error(f"benchmark: {_one_line(e)}", traceback.format_exc())
        return None
    cell.runs = runs
    return runner


def _bench_cells(cfg: MatrixConfig, cells: list[MatrixRow], reference: MatrixRow, manifests: dict[str, dict[str, Any]],
                 result: MatrixResult, progress) -> None:
    """Time the exported engines interleaved with the PyTorch reference: latency batch, then throughput batch."""
    from coatnet_deploy.backends.torch_ref import TorchRunner
    from coatnet_deploy.bench.session import tile
    from coatnet_deploy.models import count_params

    timed = [c for c in cells if c.key in manifests and not c.deferred]
    for c in cells:
        if c.deferred:
            c.runs = "not timed: the engine is built on the device"
    if not manifests:
        return
    first = next(iter(manifests))
    model, note = reference_model(manifests[first], cfg.weights)
    reference.size_mb = count_params(model) * 4 / 1e6
    reference.runs = f"torch eager fp32 ({note})"
    inputs = golden_inputs(Path(cfg.output or cfg.default_output()) / first)
    for batch, mode, attr in ((cfg.latency_batch, "latency", "latency"), (cfg.throughput_batch, "throughput", "throughput")):
        runners: dict[str, Any] = {REFERENCE: TorchRunner(model, device=(cfg.export.get("reference") or "auto"), threads=cfg.threads)}
        try:
            for c in timed:
                if c.status != "ERROR":
                    runner = _open_cell(c, manifests[c.key], cfg.threads, mode, tile(inputs, batch))
                    if runner is not None:
                        runners[c.key] = runner
            timing = time_interleaved(runners, inputs, [batch], cfg.bench_config(mode), progress)[batch]
        finally:
            for r in runners.values():
                r.deactivate()
        result.session[str(batch)] = {"mode": mode, "wall_s": round(timing.stats.wall_s, 3), "settle_s": round(timing.stats.settle_s, 3),
                                      "rounds": timing.stats.rounds, "runners": len(runners)}
        speedup = timing.speedups(REFERENCE)
        for c in [reference] + timed:
            name = REFERENCE if c is reference else c.key
            if name not in timing.results:
                continue
            r = timing.results[name]
            setattr(c, attr, {k: v for k, v in r.to_dict().items() if k != "samples_ms"})
            # noisy runs are summarised in one line by _notes (cv is in the dict); other caveats stay whole
            c.warnings += [f"batch {batch}: {w}" for w in r.warnings if not w.startswith("noisy measurement")]
            if attr == "latency":
                c.p50_ms, c.speedup_latency = r.p50_ms, speedup[name]
            else:
                c.throughput_ips, c.speedup_throughput = r.throughput_ips, speedup[name]


# ================================================================================================
# tables
# ================================================================================================

MATRIX_COLUMNS = ("target", "precision", "status", "size MB", "cosine_min", "top1 agree", "acc drop",
                  "p50 ms b1", "img/s b8", "x PyTorch b1", "x PyTorch b8")

#: an error in the status column is cut here; the whole line is under the table and in matrix.json
STATUS_WIDTH = 72


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _columns(cfg: MatrixConfig) -> list[str]:
    cols = list(MATRIX_COLUMNS)
    cols[7], cols[8] = f"p50 ms b{cfg.latency_batch}", f"img/s b{cfg.throughput_batch}"
    cols[9], cols[10] = f"x PyTorch b{cfg.latency_batch}", f"x PyTorch b{cfg.throughput_batch}"
    return cols


def matrix_table(result: MatrixResult) -> Table:
    """The matrix as a Table; the same cells go to the terminal, matrix.md and matrix.json."""
    rows = []
    for c in [result.reference] + result.cells:
        status = c.status_text()
        if len(status) > STATUS_WIDTH:
            status = status[:STATUS_WIDTH - 3] + "..."
        rows.append([c.target, c.precision, status, _f(c.size_mb, ".2f"), _f(c.cosine_min, ".6f"), _f(c.top1_agreement, ".3f"),
                     _f(c.accuracy_drop, ".2f"), _f(c.p50_ms, ".2f"), _f(c.throughput_ips, ".1f"),
                     _f(c.speedup_latency, ".2f") + ("x" if c.speedup_latency is not None else ""),
                     _f(c.speedup_throughput, ".2f") + ("x" if c.speedup_throughput is not None else "")])
    return Table(_columns(result.config), rows, left=3)


def _notes(result: MatrixResult) -> list[str]:
    env = result.environment
    cfg = result.config
    lines = [f"model {cfg.model} at {env.get('image_size')} px, {'weights ' + cfg.weights if cfg.weights else 'random init'}; "
             f"{env.get('cpu')} ({env.get('cpu_count')} cores), threads {cfg.threads or 'runtime default'}",
             f"timed interleaved with the PyTorch reference on the golden inputs: b{cfg.latency_batch} latency mode (p50), "
             f"b{cfg.throughput_batch} throughput mode (runners with an async queue keep several requests in flight); "
             "speed-ups are ratios within one run",
             fastest_line(result.fastest_passing()) + " (cells that passed their gates; lowest p50 in this run)"]
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
    """The matrix for a terminal: what was timed, the aligned table, the fastest passing engine, warnings."""
    notes = _notes(result)
    return "\n".join(notes[:2] + ["", matrix_table(result).text(), ""] + notes[2:])


def matrix_markdown(result: MatrixResult) -> str:
    """matrix.md: the same table as matrix.json's ``table``, as a Markdown table."""
    notes = _notes(result)
    lines = [f"# coatnet-deploy matrix: {result.config.model}", ""]
    lines += [f"- {markdown_escape(n)}" for n in notes[:2]] + ["", matrix_table(result).markdown(), ""]
    lines += [f"- {markdown_escape(n)}" for n in notes[2:]] + [""]
    return "\n".join(lines)
