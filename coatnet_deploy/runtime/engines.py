"""Pick the runner a bundle names, through the target registry. Torch-free and onnx-free: the device
runtime and `parity` use it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coatnet_deploy.errors import UserError


def open_runner(bundle: str | Path, manifest: dict[str, Any], threads: int | None = None, mode: str = "latency",
                any_cpu: bool = False):
    """A (not yet activated) Runner for the bundle's engine, and a note on what runs.

    The bundle's target decides (``targets.<name>.open_runner``); a target this installation does
    not know is refused, naming the ones it does. First the bundle's device profile is checked against
    this CPU (``devices.check_runs_here``): a need it lacks is refused (exit 3) unless ``any_cpu``; a CPU
    outside the profile gets a warning on stderr.
    """
    from coatnet_deploy import devices, targets

    name = manifest.get("target")
    if name not in targets.names():
        raise UserError(f"bundle '{bundle}' names unknown target '{name}'",
                        f"this coatnet-deploy knows {', '.join(targets.names())}",
                        "upgrade coatnet-deploy, install the target's plug-in, or export again")
    for warning in devices.check_runs_here(bundle, manifest, any_cpu=any_cpu):
        devices.warn(warning)
    return targets.get(name).open_runner(Path(bundle), manifest, threads=threads, mode=mode)
