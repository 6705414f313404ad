"""coatnet-deploy: export CoAtNet (and other) image classifiers to edge runtimes and prove them against PyTorch.

The Python API (``api.py``): ``export(model, target=..., precision=..., calibration=..., **options)``,
``load(bundle)``, ``compare_bundles(old, new)`` and ``matrix(...)`` (with ``cluster=``/``devices=``: the fleet
on Ray); the CLI is a thin layer over the same calls.
Importing the package pulls in no torch, ONNX or runtime: each is imported where it is used.
"""

from coatnet_deploy.api import compare_bundles, export, load, matrix
from coatnet_deploy.errors import TargetUnavailable, UserError

__all__ = ["export", "load", "compare_bundles", "matrix", "build_model", "UserError", "TargetUnavailable", "__version__"]


def __getattr__(name: str):
    # Computed on first use: reading the installed metadata costs tens of ms that the device
    # runtime, which imports this package, should not pay at start-up.
    if name == "__version__":
        global __version__
        __version__ = _version()
        return __version__
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _version() -> str:
    """The installed distribution's version (what pip shows); for a never-installed source tree,
    the version its pyproject.toml declares."""
    import re
    from importlib import metadata
    from pathlib import Path

    try:
        return metadata.version("coatnet-deploy")
    except metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8") if pyproject.is_file() else ""
    found = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    return found.group(1) if found else "0+unknown"


def build_model(name, num_classes=None, image_size=None, weights=None, **kwargs):
    """Build a CoAtNet variant in eval mode (see ``coatnet_deploy.models.build_model``).

    Imported lazily so that ``import coatnet_deploy`` (and the device runtime) never pulls in torch.
    """
    from coatnet_deploy.models import build_model as _build

    return _build(name, num_classes=num_classes, image_size=image_size, weights=weights, **kwargs)
