"""The Python API: what the CLI's ``export``, ``predict`` and ``compare`` call, for training scripts and notebooks.

    import coatnet_deploy
    result = coatnet_deploy.export("coatnet_0_rw_224", target="openvino", precision="int8")
    result = coatnet_deploy.export("runs/exp1/model_best.pth.tar", target="onnxruntime")
    result = coatnet_deploy.export(timm_model, target="onnxruntime")   # any nn.Module classifier
    clf = coatnet_deploy.load(result.bundle)
    diff = coatnet_deploy.compare_bundles("bundles/released", result.bundle)

Every argument is checked by the same tables as the CLI's flags and config files, so a wrong one is
the same one-line :class:`~coatnet_deploy.errors.UserError`. Nothing heavy is imported here at module
level: ``import coatnet_deploy`` stays torch-free for the device runtime.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Union

from coatnet_deploy.errors import UserError

if TYPE_CHECKING:
    import torch

    from coatnet_deploy.bench.matrix import MatrixResult
    from coatnet_deploy.exporting.pipeline import ExportResult
    from coatnet_deploy.fleet.matrix import FleetResult
    from coatnet_deploy.regression import CompareResult
    from coatnet_deploy.runtime.classifier import Classifier

PathLike = Union[str, "os.PathLike[str]"]
ModelArg = Union[str, "os.PathLike[str]", "torch.nn.Module", None]
#: arguments that only an in-memory module takes (a variant or weights file states its own)
MODULE_ONLY = ("name", "mean", "std", "interpolation", "crop_pct", "crop_mode")


def export(model: ModelArg = None, target: Optional[str] = None, precision: Optional[str] = None,
           calibration: Optional[PathLike] = None, *, config: Optional[PathLike] = None,
           progress: Union[bool, Callable[[str], None]] = False,
           name: Optional[str] = None, labels: Union[PathLike, Sequence[str], None] = None,
           image_size: Optional[int] = None, mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
           interpolation: Optional[str] = None, crop_pct: Optional[float] = None, crop_mode: Optional[str] = None,
           **options: Any) -> ExportResult:
    """Export a model to a checked bundle; the same job as ``coatnet-deploy export``.

    ``model``: a variant name (``coatnet-deploy models``), a weights path or folder (anything
    ``--weights`` takes: .safetensors, a torch or timm train.py checkpoint, a timm save_for_hf folder),
    or an in-memory ``torch.nn.Module`` that maps float (N, 3, S, S) to (N, classes) logits (a timm
    model, or any classifier). None: ``options`` (or ``config``) name it, as on the command line.

    For a module, preprocessing comes from its timm ``pretrained_cfg`` or from ``image_size``, ``mean``,
    ``std`` (required when it has none), ``interpolation``, ``crop_pct``, ``crop_mode``; ``name`` names
    the bundle; the manifest records where each value came from (``models.module``).

    ``options``: any export config key (``coatnet-deploy export --help``; README "Config files"), e.g.
    ``weights``, ``output``, ``device``, ``batch="1:1:8"``, ``eval_images``, ``defer_build=True``,
    ``gates={"cosine_mean": 0.99}``, and target sections such as ``tensorrt={"workspace_mb": 2048}``.
    ``config``: a YAML file or a shipped config's name; arguments override it. ``progress``: True prints
    the stage lines to stderr, a callable receives them.

    Returns the :class:`ExportResult` (status PASSED or FAILED: a failed gate is a result, not an
    exception). Raises UserError for bad input (nothing half-written), TargetUnavailable when the
    target cannot run here.
    """
    from coatnet_deploy.config import make_config
    from coatnet_deploy.exporting import export as run_export
    from coatnet_deploy.progress import stdout_to_stderr
    from coatnet_deploy.shipped import resolve_config

    module = model if _is_module(model) else None
    # paths may be Path objects here (the config tables take the strings a file or a flag holds)
    given = {"target": target, "precision": precision, "calibration": _fspath(calibration),
             **{k: _fspath(v) for k, v in options.items()}}
    source = None
    if module is not None:
        from coatnet_deploy.models.module import module_source

        source = module_source(module, name=name, labels=labels, image_size=image_size, mean=mean, std=std,
                               interpolation=interpolation, crop_pct=crop_pct, crop_mode=crop_mode,
                               num_classes=options.pop("num_classes", None))
        given.pop("num_classes", None)
    else:
        stray = [k for k, v in (("name", name), ("mean", mean), ("std", std), ("interpolation", interpolation),
                                ("crop_pct", crop_pct), ("crop_mode", crop_mode)) if v is not None]
        if stray:
            raise UserError(f"export() got {', '.join(stray)} for {_show(model)}",
                            "only an in-memory module takes them: a variant or weights state their own preprocessing",
                            "drop them (a timm folder's config.json or the variant's facts are used)")
        named = _file_model(model)
        for key, value in named.items():
            if options.get(key) is not None:
                raise UserError(f"export() got both {_show(model)} and {key}={options[key]!r}",
                                f"the first argument already names the {'variant' if key == 'model' else 'weights'}",
                                f"drop {key}=, or pass model=None")
        given.update(named, labels=_fspath(labels) if not isinstance(labels, (list, tuple)) else labels,
                     image_size=image_size)
        if isinstance(given["labels"], (list, tuple)):
            raise UserError("labels given as a list for a variant or weights file", "the CLI's labels file is what they take",
                            "pass a text file with one class name per line")
    cfg = make_config(resolve_config(_fspath(config), "export") if config is not None else None,
                      {k: v for k, v in given.items() if v is not None}, source="export()")
    if source is not None and cfg.weights is not None:
        raise UserError("export() got an in-memory module and weights=", "the module already holds its weights", "drop weights=")
    say = progress if callable(progress) else (_to_stderr if progress else None)
    with stdout_to_stderr():  # NNCF and others print to stdout; a notebook's or the CLI's stdout is the caller's
        return run_export(cfg, progress=say, source=source)


def load(bundle: PathLike, threads: Optional[int] = None, max_batch: Optional[int] = None,
         any_cpu: bool = False) -> Classifier:
    """A bundle directory -> a verified, ready :class:`~coatnet_deploy.runtime.classifier.Classifier`
    (torch-free: what a device runs). See ``Classifier.load`` for the arguments."""
    from coatnet_deploy.runtime.classifier import Classifier

    return Classifier.load(bundle, threads=threads, max_batch=max_batch, any_cpu=any_cpu)


def compare_bundles(old: PathLike, new: PathLike, *, progress: Union[bool, Callable[[str], None]] = False,
                    **options: Any) -> CompareResult:
    """Regression of bundle ``new`` against bundle ``old`` of one task: ``coatnet-deploy compare OLD NEW``.

    ``options`` (``regression.COMPARE_FIELDS``): ``images``, ``eval_images``, the budgets ``max_disagreement``
    (share of real images whose top-1 differs, default 0.10), ``max_drop`` (points, default 1.0),
    ``max_slowdown`` (new / old p50, default 1.5), ``batches`` ([1, 8]), ``timing``, ``min_time_s``,
    ``threads``, ``output`` (a folder for compare.json/.md/.html; None writes nothing), ``any_cpu``.
    Returns the CompareResult (status FAILED when a budget is exceeded); torch-free."""
    from coatnet_deploy.regression import CompareSpec
    from coatnet_deploy.regression import compare_bundles as run

    say = progress if callable(progress) else (_to_stderr if progress else None)
    return run(_fspath(old), _fspath(new), CompareSpec.from_options(options), progress=say)


def matrix(model: Optional[str] = None, *, models: Optional[Sequence[str]] = None, targets: Optional[Sequence[str]] = None,
           precisions: Optional[Sequence[str]] = None, devices: Optional[Sequence[str]] = None, cluster: Optional[str] = None,
           emulate_missing: Optional[bool] = None, cell_timeout: Optional[float] = None, output: Optional[PathLike] = None,
           config: Optional[PathLike] = None, progress: Union[bool, Callable[[str], None]] = False,
           **options: Any) -> Union[MatrixResult, FleetResult]:
    """The matrix: ``coatnet-deploy matrix``. Without ``cluster``, ``devices`` or ``models``: one model to
    every target x precision in this process, timed against PyTorch -> MatrixResult.

    With any of them, the fleet matrix -> FleetResult: each model x target x precision x device is
    built on a builder node and proven (parity, predict, INT8 census, b1/b8 timing) on a node that is,
    or emulates, the device. ``cluster``: a Ray address (``HOST:PORT``, ``ray://HOST:PORT``, ``auto``)
    or ``"local"``; None runs the same cells here, one after another. ``devices``: profiles
    (``x86-64-v3``, ``aarch64-v8.0``, ... ; ``gpu`` / ``gpu-ccX.Y`` for TensorRT). ``emulate_missing``:
    send cells no node offers to an emulator node. ``cell_timeout``: seconds per build and per proof.

    ``options``: any other matrix config key (``weights``, ``num_classes``, ``image_size``, ``threads``,
    ``eval_images``, ``bench``, ``export``). ``config``: a matrix YAML or a shipped one's name. The
    result's ``exit_code`` is the CLI's (0 passed, 2 a gate failed, 1 an error, NO NODE, LOST, TIMEOUT
    or REFUSED). ``progress``: True prints progress lines to stderr, a callable receives them.
    """
    from coatnet_deploy.bench.matrix import make_matrix_config, run_matrix
    from coatnet_deploy.progress import stdout_to_stderr
    from coatnet_deploy.shipped import resolve_config

    listed = {"models": models, "targets": targets, "precisions": precisions, "devices": devices}
    given = {"model": model, **{k: list(v) if v is not None else None for k, v in listed.items()}, "cluster": cluster,
             "emulate_missing": emulate_missing, "cell_timeout": cell_timeout, "output": _fspath(output),
             **{k: _fspath(v) for k, v in options.items()}}
    cfg = make_matrix_config(resolve_config(_fspath(config), "matrix") if config is not None else None, given)
    say = progress if callable(progress) else (_to_stderr if progress else None)
    with stdout_to_stderr():
        if cfg.is_fleet:
            from coatnet_deploy.fleet.matrix import run_fleet

            return run_fleet(cfg, say=say)
        return run_matrix(cfg)


# ---------------------------------------------------------------------------------------------------


def _is_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")  # a module object means torch is already imported
    return torch is not None and isinstance(obj, torch.nn.Module)


def _file_model(model: Any) -> dict[str, Any]:
    """A variant name or a weights path -> the config keys that name it (``model`` / ``weights``)."""
    if model is None:
        return {}
    if not isinstance(model, (str, os.PathLike)):
        raise UserError(f"model is a {type(model).__name__}",
                        "export() takes a variant name, a weights file or folder, or a torch.nn.Module",
                        "pass one of those")
    from coatnet_deploy.models import list_models

    text = os.fspath(model)
    if isinstance(model, str) and text in list_models():
        return {"model": text}
    if Path(text).exists() or isinstance(model, os.PathLike) or os.sep in text or Path(text).suffix:
        return {"weights": text}  # the source says what is wrong with a missing or unreadable path
    return {"model": text}  # the registry's message: unknown variant, and the list


def _fspath(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _show(model: Any) -> str:
    return repr(model) if isinstance(model, (str, os.PathLike)) else f"a {type(model).__name__}"


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
