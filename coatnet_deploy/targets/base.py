"""What a target is: the one interface every deployment target implements.

A target is a runtime a bundle is made for. It says which precisions it offers and what its bundle
carries (its capability cells), whether it can run on this machine and why not, which options of
its own an export config may set, how the float graph becomes a precision-carrying graph (its
recipe), how that graph becomes its engine files, and how a device opens a runner on a bundle.

Everything a target knows lives in its own module under ``coatnet_deploy/targets/`` (or in a
plug-in package registered through the ``coatnet_deploy.targets`` entry point group). The rest of
the package asks the registry (``coatnet_deploy.targets.get`` / ``all_targets``) and never names a
target. Target modules import only the standard library at the top: ``targets`` and the device
runtime load them all, and neither may pull in torch or a runtime it does not use.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from coatnet_deploy.errors import TargetUnavailable, UserError
from coatnet_deploy.precision.recipes import Recipe

if TYPE_CHECKING:  # pragma: no cover - types only
    import numpy as np

    from coatnet_deploy.backends.base import Runner
    from coatnet_deploy.config import ExportConfig
    from coatnet_deploy.precision.plan import PrecisionPlan

#: fp8: FP8 (E4M3) Q/DQ, for the GPUs that run it (TensorRT on compute capability 8.9+)
PRECISIONS = ("fp32", "fp16", "int8", "fp8")


@dataclass(frozen=True)
class Cell:
    """One target x precision pair: what its bundle carries and how the precision gets there."""

    target: str
    precision: str
    artifacts: str
    how: str


@dataclass(frozen=True)
class Availability:
    """Can this cell run here, and why (not). ``deferred``: only with the engine build left to the device."""

    ok: bool
    reason: str
    deferred: bool = False


@dataclass(frozen=True)
class Option:
    """One key of a target's own config section (``tensorrt: {workspace_mb: 4096}``)."""

    types: tuple[type, ...]
    default: Any
    help: str
    choices: tuple[Any, ...] = ()


# -- the precision graph and the engine build ----------------------------------------------

@dataclass
class PrecisionGraph:
    """The precision step's result: the graph the engine is built from, and what is in it."""

    path: Path
    recipe: Recipe
    plan: "PrecisionPlan | None" = None
    details: dict[str, Any] = field(default_factory=dict)  # manifest precision_details
    report: dict[str, Any] = field(default_factory=dict)  # report keys: precision_plan, sensitivity, ...


@dataclass
class EngineJob:
    """What a target's ``build`` gets: every input as an argument, nothing reached for."""

    cfg: "ExportConfig"
    options: dict[str, Any]  # this target's own config section, defaults filled in
    bundle_dir: Path  # the staging directory of the bundle (files written here ship)
    work: Path  # scratch directory (not shipped)
    float_graph: Path  # the (simplified) float32 ONNX
    precision: PrecisionGraph
    golden: "np.ndarray"  # preprocessed golden inputs (N, 3, S, S)
    golden_names: list[str]
    reference_logits: "np.ndarray"
    batch: tuple[int, int, int]
    image_size: int
    gates: dict[str, float]
    gate_samples: str = "all"  # which golden samples the gates read (compare.gate_mask)
    calibration: Any = None  # CalibrationSet for int8
    say: Callable[[str], None] = lambda _msg: None
    #: on a second build: what the first one asked to change (its EngineBuild.revision)
    revision: dict[str, Any] | None = None

    def compare(self, outputs: "np.ndarray"):
        """The engine's outputs on the golden inputs against the reference, under the export's gates."""
        from coatnet_deploy.compare import compare, gate_mask

        return compare(self.reference_logits, outputs, self.gates, gated=gate_mask(self.golden_names, self.gate_samples),
                       names=self.golden_names, gate_samples=self.gate_samples)


@dataclass
class EngineBuild:
    """What a target's ``build`` returns.

    ``engine``: the manifest's ``engine`` block (``runtime``, ``files`` and the target's facts).
    ``runner``: a factory for a runner on the built engine, or None when the engine is built later
    on the device (the bundle is then checked at the precision graph's level).
    ``report``: keys the target adds to report.json (e.g. its INT8 candidates).
    ``revised_plan``: set when the engine needs the precision graph rebuilt with another plan (layers
    the runtime mis-runs kept float); the export then runs the precision step again with it and
    builds once more. ``revision``: why, for the report.
    """

    engine: dict[str, Any]
    runner: Callable[[], "Runner"] | None
    report: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    revised_plan: "PrecisionPlan | None" = None
    revision: dict[str, Any] | None = None
    latency_note: str | None = None  # why there is no latency (deferred builds)


class Target:
    """Base class of every target. Subclasses set the class attributes and implement ``build``
    and ``open_runner``; the rest has defaults that fit a runtime installed as a Python package."""

    name: str = ""
    summary: str = ""  # one line for --help and `targets`
    #: precision -> (artifacts the bundle carries, how the precision gets into them)
    cells: dict[str, tuple[str, str]] = {}
    #: the Python module the runtime needs (availability probe); None = nothing to probe
    module: str | None = None
    install_hint: str = ""
    #: this target's own config section (``<name>: {key: value}``), key -> Option
    options: dict[str, Option] = {}
    #: the engine may be built later, on the device (--defer-build)
    can_defer: bool = False
    #: the engine runs on the device's CPU: --device picks its profile (coatnet_deploy.devices), the
    #: manifest records it, and the runtime checks it before opening the engine
    cpu: bool = False

    # -- capability -----------------------------------------------------------------------------
    def cell(self, precision: str) -> Cell:
        if precision not in PRECISIONS:
            raise UserError(f"unknown precision '{precision}'", f"valid precisions are {', '.join(PRECISIONS)}", "pass one of them with --precision")
        if precision not in self.cells:
            from coatnet_deploy import targets

            offered = [t.name for t in targets.all_targets() if precision in t.cells]
            where = f"; {precision} is offered by --target {' and '.join(offered)}" if offered else ""
            raise UserError(f"{self.name} does not support {precision}", f"it supports {', '.join(self.cells)}{where}",
                            "choose another --precision or --target")
        artifacts, how = self.cells[precision]
        return Cell(self.name, precision, artifacts, how)

    def availability(self, precision: str, defer_build: bool = False) -> Availability:
        """Can ``precision`` run here: the default probes ``module`` without importing it."""
        self.cell(precision)
        if self.module and importlib.util.find_spec(self.module) is None:
            return Availability(False, f"{self.module} is not installed ({self.install_hint or 'pip install ' + self.module})")
        return Availability(True, f"{self.module} installed" if self.module else "nothing to install")

    def require(self, precision: str, defer_build: bool = False) -> Availability:
        """Raise TargetUnavailable (exit 3) when the cell cannot run here."""
        self.cell(precision)
        if defer_build and not self.can_defer:
            from coatnet_deploy import targets

            deferring = [t.name for t in targets.all_targets() if t.can_defer]
            raise UserError(f"--defer-build applies to {' and '.join(deferring) or 'no installed target'} only",
                            f"'{self.name}' engines are built here", "drop --defer-build")
        avail = self.availability(precision, defer_build)
        if not avail.ok:
            raise TargetUnavailable(f"target {self.name}/{precision} cannot run on this machine", avail.reason)
        return avail

    # -- options --------------------------------------------------------------------------------
    def option_values(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """This target's config section with defaults filled in (keys and types are checked by config.validate)."""
        return {**{k: o.default for k, o in self.options.items()}, **(given or {})}

    def preflight(self, cfg: "ExportConfig", options: dict[str, Any], batch: tuple[int, int, int], image_size: int) -> None:
        """Refuse bad target options before any heavy work; the default has nothing to check."""

    # -- export ---------------------------------------------------------------------------------
    def recipe(self, precision: str, cfg: "ExportConfig") -> Recipe:
        """How ``precision`` gets into the graph. Default: float32 graph for fp32, the float16
        graph for fp16, explicit Q/DQ by TensorRT's rules for int8 (``precision.recipes``)."""
        from coatnet_deploy.precision import recipes

        return recipes.default_recipe(precision)

    def build(self, job: EngineJob) -> EngineBuild:
        """Write the engine files into ``job.bundle_dir`` (model.onnx is already there)."""
        raise NotImplementedError

    # -- device side (torch-free) ---------------------------------------------------------------
    def open_runner(self, bundle: Path, manifest: dict[str, Any], threads: int | None = None,
                    mode: str = "latency") -> tuple["Runner", str]:
        """A (not yet activated) runner on the bundle's engine, and a note on what runs."""
        raise NotImplementedError

    def engine_files(self, manifest: dict[str, Any]) -> list[str]:
        """The files that make up the engine (the matrix's size column)."""
        return list((manifest.get("engine") or {}).get("files") or ["model.onnx"])

    # -- what runs in int8 (report.op_census / report.profile); None where the target cannot say ---
    def op_census(self, bundle_dir: Path, engine: dict[str, Any], runner: "Runner") -> dict[str, Any] | None:
        """What the runtime itself runs in int8 and in float, by op type (an active runner on the engine)."""
        return None

    def profile(self, bundle_dir: Path, engine: dict[str, Any], batch: "np.ndarray", threads: int | None) -> dict[str, Any] | None:
        """Time by layer type on ``batch``, from the runtime's own profiler."""
        return None

    def float_runner(self, float_graph: Path, threads: int | None) -> "Runner | None":
        """A runner of the same runtime on the float32 graph: what an INT8 engine must beat."""
        return None

    def report_sections(self, report: dict[str, Any], manifest: dict[str, Any]) -> list[Any]:
        """Extra sections for report.md / report.html (``coatnet_deploy.report`` Section objects)."""
        return []

    # -- helpers for subclasses -----------------------------------------------------------------
    def need_module(self) -> None:
        """TargetUnavailable when the runtime's Python package is missing (device side)."""
        if self.module and importlib.util.find_spec(self.module) is None:
            raise TargetUnavailable(f"{self.module} is not installed", f"bundles for {self.name} need it to run",
                                    self.install_hint or f"pip install {self.module}")

    def __repr__(self) -> str:
        return f"<target {self.name}>"
