"""The fleet matrix: models x targets x precisions x device profiles, built on any builder node and
proven on a node that is (or emulates) each device.

``run_fleet(cfg)`` is the driver. For every cell it asks the scheduler for a build (``cells.build_cell``,
on a node with ``coatnet/build``), writes the bundle that comes back into ``OUTPUT/<model>/<target>-
<precision>@<device>/`` (staged, then swapped in: never half-written), and sends the same bytes to a node
that offers the cell's device (``cells.prove_bundles``: parity, predict, INT8 census, b1/b8 timing on
real hardware). A cell no node can take is ``NO NODE`` at once, naming the resource; one whose node dies
is re-run by Ray or reported ``LOST`` naming the node; ``cell_timeout`` bounds each build and each proof
from the moment a node starts it. Writes ``matrix.json``, ``matrix.md`` and ``matrix.html``.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from coatnet_deploy.bench.matrix import MatrixConfig, matrix_cells
from coatnet_deploy.bench.tables import Table, markdown_escape
from coatnet_deploy.errors import EXIT_GATE_FAILED, EXIT_OK, EXIT_USER, UserError
from coatnet_deploy.fleet import nodes
from coatnet_deploy.fleet.cells import FleetCell

#: statuses that mean "not proven as asked": the run exits 1
NOT_PROVEN = ("ERROR", "NO NODE", "LOST", "TIMEOUT", "REFUSED")
#: device-side timing of a real node: latency at the first, throughput at the second
BATCHES = (1, 8)
DEFAULT_CELL_TIMEOUT = 3600.0
FLEET_ONLY = ("models", "devices", "cluster", "emulate_missing", "cell_timeout")


@dataclass
class FleetRow:
    """One cell of the fleet: what the builder made of it and what the device said."""

    model: str
    target: str
    precision: str
    device: str
    status: str = "PENDING"  # PASSED | FAILED | UNAVAILABLE | ERROR | NO NODE | LOST | TIMEOUT | REFUSED
    reason: str | None = None
    build: dict = field(default_factory=dict)  # MatrixRow's build fields (cells.BUILD_FIELDS)
    result: dict = field(default_factory=dict)  # the device's probe result
    built_on: dict | None = None
    ran_on: dict | None = None
    placement: dict | None = None
    bundle: str | None = None
    seconds: dict = field(default_factory=dict)

    @property
    def cell(self) -> FleetCell:
        return FleetCell(self.model, self.target, self.precision, self.device)

    @property
    def key(self) -> str:
        return self.cell.key

    def set(self, status: str, reason: str | None = None) -> None:
        self.status, self.reason = status, reason

    def ran_on_text(self) -> str:
        if not self.ran_on:
            return "-"
        r = self.ran_on
        kind = "emulated" if r.get("emulated") else "real"
        profile = (self.placement or {}).get("profile") or self.device
        return f"{str(r.get('node_id', '?'))[:8]} {r.get('cpu', '?')} [{profile}, {kind}]"

    def status_text(self) -> str:
        if self.status == "PASSED":
            return "PASSED"
        text = self.status
        gates = list(self.build.get("failed_gates") or []) + list((self.result.get("parity") or {}).get("failed_gates") or [])
        if self.status == "FAILED" and gates:
            text += f" ({', '.join(dict.fromkeys(gates))})"
        elif self.reason:
            text += f": {self.reason}"
        return text

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["key"], d["status_text"], d["ran_on_text"] = self.key, self.status_text(), self.ran_on_text()
        return d


def _settle(row: FleetRow) -> None:
    """The cell's status from the build's and the device's."""
    b = row.build.get("status")
    d = row.result.get("status")
    if d == "REFUSED":
        row.set("REFUSED", row.result.get("message"))
    elif d in ("ERROR", "CRASH"):
        row.set("ERROR", f"on the device: {row.result.get('message')}")
    elif "FAILED" in (b, d):
        row.set("FAILED")
    elif b == "PASSED" and d == "PASSED":
        row.set("PASSED")
    else:
        row.set("ERROR", f"unexpected outcome: build {b}, device {d}")


@dataclass
class FleetResult:
    config: MatrixConfig
    rows: list[FleetRow]
    output: Path
    scheduler: str
    environment: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        if any(r.status in NOT_PROVEN for r in self.rows):
            return EXIT_USER
        if any(r.status == "FAILED" for r in self.rows):
            return EXIT_GATE_FAILED
        return EXIT_OK

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "fleet", "models": _models(self.config), "config": self.config.to_dict(), "scheduler": self.scheduler,
                "environment": self.environment, "seconds": round(self.seconds, 2), "columns": list(COLUMNS),
                "rows": [r.to_dict() for r in self.rows], "table": fleet_table(self).rows, "exit_code": self.exit_code}


# ------------------------------------------------------------------------------------------------
# the cells
# ------------------------------------------------------------------------------------------------

def _models(cfg: MatrixConfig) -> list[str]:
    return list(dict.fromkeys(cfg.models or [cfg.model]))


def fleet_cells(cfg: MatrixConfig) -> list[FleetCell]:
    """model x target x precision x device. CPU targets pair with CPU profiles; a target that builds its
    engine on the device (TensorRT) with ``gpu`` devices. Default devices: the export's own profile
    (``export.device``, else the default) for CPU targets, ``gpu`` for TensorRT."""
    from coatnet_deploy import devices, targets

    named = [nodes.check_device_name(d) for d in cfg.devices or []]
    cpu_default = [str(cfg.export.get("device") or devices.DEFAULT)]
    out = []
    for model in _models(cfg):
        for known in matrix_cells():
            if known.target not in cfg.targets or known.precision not in cfg.precisions:
                continue
            gpu_target = targets.get(known.target).can_defer
            if named:
                devs = [d for d in named if nodes.is_gpu_device(d) == gpu_target]
            else:
                devs = ["gpu"] if gpu_target else cpu_default
            out += [FleetCell(model, known.target, known.precision, d) for d in devs]
    return out


def _reads_driver_files(cfg: MatrixConfig) -> list[str]:
    keys = [k for k in ("weights", "eval_images") if getattr(cfg, k)]
    return keys + [k for k in ("calibration", "labels") if cfg.export.get(k)]


def cell_settings(cfg: MatrixConfig) -> dict[str, Any]:
    d = cfg.to_dict()
    for k in FLEET_ONLY:
        d.pop(k, None)
    return d


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------

def make_scheduler(cfg: MatrixConfig):
    from coatnet_deploy.fleet.schedulers import RayScheduler, SerialScheduler

    return RayScheduler(cfg.cluster) if cfg.cluster else SerialScheduler()


def write_bundle(data: bytes, dest: Path) -> None:
    """Bytes from a builder -> ``dest``, staged beside it and swapped in (the BundleWriter every export uses)."""
    from coatnet_deploy.bundle import BundleWriter
    from coatnet_deploy.fleet import transport

    with BundleWriter(dest) as w:
        transport.unpack(data, w.dir)
        w.commit()


def run_fleet(cfg: MatrixConfig, scheduler=None, say: Callable[[str], None] | None = None) -> FleetResult:
    """Build and prove every fleet cell of ``cfg`` on ``scheduler`` (default: Ray when ``cfg.cluster``,
    else this process) -> FleetResult; writes OUTPUT/matrix.json, .md, .html.

    Never stops at a failing cell. Ctrl-C (KeyboardInterrupt) cancels every job, closes a Ray it
    started, and leaves in OUTPUT only whole bundles; it is re-raised.
    """
    from coatnet_deploy.bundle import check_output_path, write_json
    from coatnet_deploy.host import environment

    say = say or (lambda line: None)
    out = Path(cfg.output or cfg.default_output())
    if out.exists() and not out.is_dir():
        check_output_path(out)
    cells = fleet_cells(cfg)
    if not cells:
        raise UserError("the fleet has no cells", "no target x precision pairs with the devices given",
                        "CPU targets need CPU profiles in --devices; tensorrt needs gpu or gpu-ccX.Y")
    own = scheduler is None
    scheduler = scheduler or make_scheduler(cfg)
    t0 = time.perf_counter()
    rows = [FleetRow(c.model, c.target, c.precision, c.device) for c in cells]
    where = scheduler.describe()
    try:
        on_driver = _reads_driver_files(cfg)
        if on_driver and not scheduler.driver_builds():
            raise UserError(f"the fleet reads {', '.join(on_driver)} from this machine, which is no builder node",
                            "files on the driver's disk never leave it except inside bundles, so those builds run here",
                            "run the matrix on a builder node (`coatnet-deploy worker` without --emulate joins one)")
        say(f"fleet: {len(rows)} cell(s) on {where}")
        _drive(cfg, scheduler, rows, out, bool(on_driver), say)
    finally:
        if own:
            scheduler.close()
    result = FleetResult(cfg, rows, out, where)
    result.seconds = time.perf_counter() - t0
    result.environment = environment({}, cfg.threads)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "matrix.json", result.to_dict())
    (out / "matrix.md").write_text(fleet_markdown(result), encoding="utf-8")
    (out / "matrix.html").write_text(fleet_html(result), encoding="utf-8")
    return result


def _drive(cfg: MatrixConfig, scheduler, rows: list[FleetRow], out: Path, on_driver: bool, say) -> None:
    from coatnet_deploy.fleet.schedulers import CellLost

    timeout = float(cfg.cell_timeout or DEFAULT_CELL_TIMEOUT)
    settings = cell_settings(cfg)
    offered = scheduler.offered()
    active: dict[int, Any] = {}  # id(job) -> job
    row_of: dict[int, FleetRow] = {}
    started: dict[int, float] = {}  # id(job) -> when a node was seen running it (monotonic)
    placements: dict[str, nodes.Placement] = {}
    done = 0

    def finish(row: FleetRow) -> None:
        nonlocal done
        done += 1
        where = f" on {row.ran_on_text()}" if row.ran_on else ""
        say(f"[{done}/{len(rows)}] {row.key}: {row.status_text()}{where}")

    def submit(job, row) -> None:
        active[id(job)], row_of[id(job)] = job, row

    try:
        for row in rows:
            placement, why = nodes.placement_for(row.device, offered, cfg.emulate_missing)
            if placement is None or nodes.BUILD not in offered:
                row.set("NO NODE", why or f"no node offers {nodes.BUILD}")
                finish(row)
                continue
            placements[row.key] = placement
            row.placement = {**placement.to_dict(), "profile": row.device}
            submit(scheduler.build(row.cell, settings, on_driver), row)
        while active:
            ready = scheduler.wait(list(active.values()), timeout=1.0)
            now = time.monotonic()
            for job in ready:
                row = row_of.pop(id(job))
                del active[id(job)]
                started.pop(id(job), None)
                try:
                    value = scheduler.result(job)
                except CellLost as e:
                    row.set("LOST", f"{job.kind}: node {e.node or '(unknown)'} died: {e}")
                    finish(row)
                    continue
                except UserError as e:
                    row.set("ERROR", f"{job.kind}: {e}")
                    finish(row)
                    continue
                except Exception as e:  # noqa: BLE001 - a broken cell must not stop the others
                    row.set("ERROR", f"{job.kind}: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
                    row.build.setdefault("traceback", traceback.format_exc())
                    finish(row)
                    continue
                if job.kind == "build":
                    row.build, row.built_on = value["row"], value["node"]
                    row.seconds["build"] = row.build.get("export_s")
                    if row.build.get("status") not in ("PASSED", "FAILED"):
                        row.set(row.build.get("status") or "ERROR", row.build.get("reason"))
                        finish(row)
                        continue
                    data = scheduler.bundle_bytes(job)
                    dest = out / row.cell.folder
                    write_bundle(data, dest)
                    row.bundle = str(dest)
                    name = row.cell.folder.replace("/", "_")
                    submit(scheduler.prove(job, name, placements[row.key], list(BATCHES), cfg.threads, timeout), row)
                else:
                    row.result = next(iter(value["results"].values()), {})
                    row.ran_on = value["node"]
                    row.seconds["prove"] = row.result.get("seconds")
                    _settle(row)
                    finish(row)
            running = scheduler.started_jobs()
            live = scheduler.offered() if active else set()  # once a round: what the live nodes offer now
            for job in list(active.values()):
                key = id(job)
                if key not in started and f"{job.kind}:{job.key}" in running:
                    started[key] = now
                if key in started and now - started[key] > timeout:
                    scheduler.cancel(job)
                    row = row_of.pop(key)
                    del active[key]
                    row.set("TIMEOUT", f"{job.kind} ran past --cell-timeout {timeout:g} s")
                    finish(row)
                elif job.resource not in live:
                    scheduler.cancel(job)
                    row = row_of.pop(key)
                    del active[key]
                    node = scheduler.lost_node(job)
                    row.set("LOST", f"{job.kind}: node {node or '(unknown)'} is gone and no live node offers {job.resource}")
                    finish(row)
    except BaseException:
        for job in active.values():
            scheduler.cancel(job)
        raise


# ------------------------------------------------------------------------------------------------
# tables
# ------------------------------------------------------------------------------------------------

COLUMNS = ("model", "target", "precision", "device", "status", "size MB", "cosine_min", "device cos_min", "device top1",
           "acc drop", "p50 ms b1", "img/s b8", "ran on")
STATUS_WIDTH = 60


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def fleet_table(result: FleetResult) -> Table:
    """The fleet as a Table; the same cells go to the terminal, matrix.md, matrix.html and matrix.json."""
    rows = []
    for r in result.rows:
        status = r.status_text()
        if len(status) > STATUS_WIDTH:
            status = status[:STATUS_WIDTH - 3] + "..."
        p = r.result.get("parity") or {}
        timing = r.result.get("timing") or {}
        b1, b8 = timing.get(str(BATCHES[0])) or {}, timing.get(str(BATCHES[1])) or {}
        rows.append([r.model, r.target, r.precision, r.device, status, _f(r.build.get("size_mb"), ".2f"),
                     _f(r.build.get("cosine_min"), ".6f"), _f(p.get("cosine_min"), ".6f"), _f(p.get("top1_agreement"), ".3f"),
                     _f(r.build.get("accuracy_drop"), ".2f"), _f(b1.get("p50_ms"), ".2f"), _f(b8.get("throughput_ips"), ".1f"),
                     r.ran_on_text()])
    return Table(list(COLUMNS), rows, left=5)


def _notes(result: FleetResult) -> list[str]:
    lines = [f"{len(result.rows)} cell(s) on {result.scheduler} in {result.seconds:.0f} s; driver on {result.environment.get('cpu')}",
             "cosine_min: the export's parity against PyTorch on the builder; device cos_min / top1: the engine on the device "
             "against the bundle's golden logits; timings from the device itself (none from emulated nodes)"]
    for r in result.rows:
        if r.status not in ("PASSED", "FAILED") and r.reason and len(r.status_text()) > STATUS_WIDTH:
            lines.append(f"{r.status.lower()}: {r.key}: {r.reason}")
        for w in (r.result.get("warnings") or []):
            lines.append(f"warning: {r.key}: {w}")
    return lines


def format_fleet(result: FleetResult) -> str:
    notes = _notes(result)
    return "\n".join(notes[:2] + ["", fleet_table(result).text(), ""] + notes[2:])


def fleet_markdown(result: FleetResult) -> str:
    notes = _notes(result)
    lines = [f"# coatnet-deploy fleet matrix: {', '.join(_models(result.config))}", ""]
    lines += [f"- {markdown_escape(n)}" for n in notes[:2]] + ["", fleet_table(result).markdown(), ""]
    lines += [f"- {markdown_escape(n)}" for n in notes[2:]] + [""]
    return "\n".join(lines)


def fleet_html(result: FleetResult) -> str:
    """matrix.html: the same table through the report templates (self-contained, no script)."""
    from coatnet_deploy.report.blocks import Cell, ReportView, Section, para
    from coatnet_deploy.report.blocks import Table as ViewTable
    from coatnet_deploy.report.render import render_view_html

    table = fleet_table(result)
    styles = {"PASSED": "pass", "FAILED": "fail"}
    numeric = range(5, len(COLUMNS) - 1)  # size .. img/s: right-aligned where filled
    rows = [[Cell(c, style=styles.get(r.status, "fail") if i == 4 else "", numeric=i in numeric and c != "-") for i, c in enumerate(cells)]
            for r, cells in zip(result.rows, table.rows)]
    notes = _notes(result)
    sections = [Section("cells", "Cells", [para(notes[1], style="note"), ViewTable(list(table.columns), rows)])]
    if notes[2:]:
        sections.append(Section("notes", "Notes", [para(n, style="warn") for n in notes[2:]]))
    status = {EXIT_OK: "PASSED", EXIT_GATE_FAILED: "FAILED"}.get(result.exit_code, "ERROR")
    view = ReportView(title=f"Fleet matrix: {', '.join(_models(result.config))}", page_title="coatnet-deploy fleet matrix",
                      status=status, status_detail=notes[0], facts=[("scheduler", result.scheduler), ("cells", str(len(result.rows)))],
                      sections=sections)
    return render_view_html(view)
