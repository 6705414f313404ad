"""Files that ship with coatnet-deploy: the default INT8 calibration photos and the export configs.

The repository keeps them in its top-level folders ``calibration/`` and ``export_configs/`` (the one
copy); the build maps each into the wheel and the sdist as ``coatnet_deploy/_data/<folder>`` (see
setup.py). An installed package finds them there through importlib.resources. An editable install or a
source tree has no ``_data`` in its package folder, so the checkout's folder beside the package is
used instead.

``--config`` takes a YAML path or the name of a shipped config: ``resolve_config("openvino-int8",
"export")``. Matrix configs are the shipped files whose name starts with ``matrix``; the others are
export configs.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from coatnet_deploy.errors import UserError

DATA_FOLDERS = ("calibration", "export_configs")
CONFIG_KINDS = ("export", "matrix")


def data_candidates(folder: str) -> list[Path]:
    """Where ``folder`` (one of DATA_FOLDERS) may be, in lookup order: package data, then the checkout."""
    if folder not in DATA_FOLDERS:
        raise ValueError(f"{folder!r} is not a shipped data folder (one of {DATA_FOLDERS})")
    package = resources.files("coatnet_deploy")
    # A zip import has no real folder to hand to the exporters; only a plain directory counts.
    installed = [package / "_data" / folder] if isinstance(package, Path) else []
    return installed + [Path(__file__).resolve().parent.parent / folder]


def shipped_dir(folder: str) -> Path | None:
    """The shipped ``folder`` (one of DATA_FOLDERS) as a directory path, or None when neither place has it."""
    return next((c for c in data_candidates(folder) if c.is_dir()), None)


def _looked(folder: str) -> str:
    return " and ".join(str(c) for c in data_candidates(folder))


def calibration_dir() -> Path:
    """The shipped calibration photos (24 JPEGs and SOURCES.md); UserError naming both places when absent."""
    found = shipped_dir("calibration")
    if found is None:
        raise UserError("no default calibration folder", f"looked for {_looked('calibration')}",
                        "Pass --calibration DIR (a folder of images or an .npz of preprocessed batches), "
                        "or reinstall coatnet-deploy")
    return found


def shipped_configs(kind: str = "export") -> dict[str, Path]:
    """Shipped configs of ``kind`` ("export" or "matrix"): name (file stem) -> path, sorted by name."""
    if kind not in CONFIG_KINDS:
        raise ValueError(f"config kind {kind!r} is not one of {CONFIG_KINDS}")
    folder = shipped_dir("export_configs")
    if folder is None:
        return {}
    files = sorted(folder.glob("*.yaml"))
    return {p.stem: p for p in files if p.stem.startswith("matrix") == (kind == "matrix")}


def resolve_config(value: str, kind: str = "export") -> Path:
    """``--config VALUE`` -> the YAML file to read.

    A path that exists wins; otherwise a shipped config's name, with or without ``.yaml``. Anything
    else is a UserError listing the shipped names of ``kind`` and where they are.
    """
    given = Path(value)
    if given.exists():
        return given
    configs = shipped_configs(kind)
    name = given.name[:-5] if given.name.endswith(".yaml") else given.name
    if given.name == str(value) and name in configs:
        return configs[name]
    if not configs:
        raise UserError(f"config file '{value}' not found",
                        f"no such file, and no shipped configs at {_looked('export_configs')}", "Pass the path of a YAML file")
    raise UserError(f"config file '{value}' not found", "no such file, and no shipped config has that name",
                    f"Pass a YAML file or one of {', '.join(configs)} (shipped in {shipped_dir('export_configs')})")
