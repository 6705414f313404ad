"""The target registry: every deployment target, found as files.

Built-in targets are the modules of this package (each defines a ``Target`` subclass decorated with
``@register``); plug-in targets come from installed packages through the ``coatnet_deploy.targets``
entry point group (value: ``package.module:TargetClass``, a Target instance, or a module that
registers on import). ``targets``, export's validation, the CLI's ``--target`` help, the matrix's
cells, the device runtime's runner choice and the reports' engine section all read this registry,
so a new target is new files, never edits across the package.

Loading is cheap: target modules import only the standard library at their top.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Iterable

from coatnet_deploy.errors import UserError
from coatnet_deploy.targets.base import (
    PRECISIONS,
    Availability,
    Cell,
    EngineBuild,
    EngineJob,
    Option,
    PrecisionGraph,
    Target,
)
from coatnet_deploy.precision.recipes import Recipe

__all__ = ["PRECISIONS", "Availability", "Cell", "EngineBuild", "EngineJob", "Option", "PrecisionGraph", "Recipe",
           "Target", "register", "unregister", "get", "names", "default_name", "all_targets", "cells", "table_rows",
           "ENTRY_POINT_GROUP"]

ENTRY_POINT_GROUP = "coatnet_deploy.targets"
_NOT_TARGETS = {"base"}

_registry: dict[str, Target] = {}
_order: dict[str, int] = {}
_loaded = False


def register(target: "type[Target] | Target", order: int | None = None):
    """Add a target (class or instance) to the registry; usable as a class decorator.

    ``order`` places it in listings (built-ins use 10, 20, ...; default: after everything so far).
    A second target under a name already taken is refused: two plug-ins must not shadow each other.
    """
    inst = target() if isinstance(target, type) else target
    if not isinstance(inst, Target) or not inst.name:
        raise TypeError(f"{target!r} is not a coatnet_deploy Target with a name")
    old = _registry.get(inst.name)
    if old is not None and type(old) is not type(inst):
        raise UserError(f"two targets are named '{inst.name}'", f"{type(old).__module__} and {type(inst).__module__}",
                        "uninstall one of the plug-ins")
    _registry[inst.name] = inst
    _order[inst.name] = order if order is not None else getattr(inst, "order", None) or (max(_order.values(), default=0) + 10)
    return target


def unregister(name: str) -> None:
    """Remove a target (tests that register their own clean up with this)."""
    _registry.pop(name, None)
    _order.pop(name, None)


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if mod.name not in _NOT_TARGETS and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    _load_plugins()


def _load_plugins() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plug-in must say which one, not crash `targets`
            raise UserError(f"target plug-in '{ep.name}' ({ep.value}) failed to load", f"{type(e).__name__}: {e}",
                            "fix or uninstall that package") from None
        if isinstance(obj, Target) or (isinstance(obj, type) and issubclass(obj, Target)):
            register(obj)


def all_targets() -> list[Target]:
    """Every registered target, in listing order."""
    _load()
    return sorted(_registry.values(), key=lambda t: (_order.get(t.name, 1000), t.name))


def default_name() -> str:
    """The target an export uses when none is named: the one whose class sets ``default = True``."""
    return next((t.name for t in all_targets() if getattr(t, "default", False)), all_targets()[0].name)


def names() -> list[str]:
    return [t.name for t in all_targets()]


def get(name: str) -> Target:
    """Target by name; UserError listing the valid ones otherwise."""
    _load()
    try:
        return _registry[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown target '{name}'", f"valid targets are {', '.join(names())}", "pass one of them with --target") from None


def cells(targets: Iterable[str] | None = None, precisions: Iterable[str] | None = None) -> list[Cell]:
    """Every target x precision cell (optionally a subset), in listing order."""
    want_t = set(targets) if targets is not None else None
    want_p = set(precisions) if precisions is not None else None
    out = []
    for t in all_targets():
        if want_t is not None and t.name not in want_t:
            continue
        for p in PRECISIONS:
            if p in t.cells and (want_p is None or p in want_p):
                out.append(t.cell(p))
    return out


def table_rows(defer_build: bool = False) -> list[dict]:
    """The `targets` table: one row per cell with whether it runs here and why (not)."""
    rows = []
    for c in cells():
        a = get(c.target).availability(c.precision, defer_build)
        rows.append({"target": c.target, "precision": c.precision, "available": a.ok, "reason": a.reason,
                     "deferred": a.deferred, "artifacts": c.artifacts, "how": c.how, "summary": get(c.target).summary})
    return rows
