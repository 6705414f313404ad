"""An in-memory ``torch.nn.Module`` as the model to export (the Python API's ``export(module, ...)``).

Any image classifier that maps a float (N, 3, S, S) batch to (N, classes) logits: a timm model
object, a CoAtNet built here, a torchvision-style ResNet of the user's own. What the file-based
sources read from a variant's facts or a timm folder must come from somewhere here too, and it is
never guessed silently:

- preprocessing (input size, mean, std, interpolation, crop_pct, crop_mode): from the module's timm
  ``pretrained_cfg`` when it has one, else from the caller's explicit arguments (which also override
  the pretrained_cfg). Input size, mean and std are required; interpolation, crop_pct and crop_mode,
  when neither names them, take timm's defaults (bilinear, 0.875, center) and are recorded as
  ``default`` in the manifest's provenance, with a warning in the report;
- the number of classes: from one forward pass at the input size (which also proves the mapping);
- labels: the caller's file or list, else ``pretrained_cfg['label_names']``;
- the name: the caller's, else the pretrained_cfg's architecture, else the class name.

The manifest's ``model.provenance`` says which of ``argument``, ``pretrained_cfg``, ``module`` or
``default`` gave each value; ``weights_sha256`` is the SHA-256 of the state dict's tensors (names,
dtypes, shapes and bytes in order), so two bundles of the same weights say so and ``compare`` can
tell other weights apart.
"""

from __future__ import annotations

import copy
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from coatnet_deploy.errors import UserError
from coatnet_deploy.models.source import IN_MEMORY, ModelSource, read_labels
from coatnet_deploy.preprocess import PreprocessConfig

ARGUMENT = "argument"  # an explicit argument of coatnet_deploy.export(...)
PRETRAINED_CFG = "pretrained_cfg"  # the module's timm pretrained_cfg
MODULE = "module"  # measured on the module (a forward pass) or its class
DEFAULT = "default"  # timm's default, recorded (never silent)

# timm's resolve_data_config defaults for what a classifier's pretrained_cfg may leave out
TIMM_DEFAULTS = {"interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center"}
REQUIRED = ("image_size", "mean", "std")


@dataclass
class ModuleSource(ModelSource):
    """A ModelSource whose model is a module already in memory (see the module docstring)."""

    module: Any = field(default=None, repr=False, compare=False)
    module_class: str = ""
    timm_architecture: Optional[str] = None
    defaulted: List[str] = field(default_factory=list)

    @property
    def info(self):
        raise UserError(f"'{self.name}' is an in-memory module, not a registered variant",
                        "variant facts exist for the CoAtNet family only", "use the module's own facts")

    @property
    def timm_name(self) -> Optional[str]:
        return self.timm_architecture

    @property
    def random_init(self) -> bool:
        return False

    def build(self, seed: int = 0):
        # ``module`` is module_source's eval-mode copy: the caller's module (and its training mode) is never touched.
        return self.module

    def manifest_model(self, seed: int = 0) -> Dict[str, Any]:
        block = super().manifest_model(seed)
        block.update(weights_note=f"in-memory {self.module_class}", module_class=self.module_class)
        return block

    def warnings(self) -> List[str]:
        if not self.defaulted:
            return []
        shown = ", ".join(f"{k} {getattr(self.preprocess, k)}" for k in self.defaulted)
        return [f"preprocessing not stated by the module or the call, timm's defaults taken: {shown}; "
                "pass them to export() if the model was trained otherwise"]


def module_source(module: Any, *, name: Optional[str] = None, labels: Union[str, Sequence[str], None] = None,
                  image_size: Optional[int] = None, mean: Optional[Sequence[float]] = None,
                  std: Optional[Sequence[float]] = None, interpolation: Optional[str] = None,
                  crop_pct: Optional[float] = None, crop_mode: Optional[str] = None,
                  num_classes: Optional[int] = None) -> ModuleSource:
    """An ``nn.Module`` and the caller's explicit facts -> :class:`ModuleSource`; UserError (one line) for
    anything missing or contradictory."""
    import torch

    if not isinstance(module, torch.nn.Module):
        raise UserError(f"model is a {type(module).__name__}", "export() takes a variant name, a weights path or a torch.nn.Module",
                        "pass one of those")
    cls = f"{type(module).__module__}.{type(module).__qualname__}"
    pcfg = _pretrained_cfg(module)
    prov: Dict[str, str] = {}
    given = {"image_size": image_size, "mean": mean, "std": std, "interpolation": interpolation, "crop_pct": crop_pct,
             "crop_mode": crop_mode}
    stated = _stated_by(pcfg)
    facts: Dict[str, Any] = {}
    defaulted = []
    for key, value in given.items():
        if value is not None:
            facts[key], prov[key] = value, ARGUMENT
        elif stated.get(key) is not None:
            facts[key], prov[key] = stated[key], PRETRAINED_CFG
        elif key in TIMM_DEFAULTS:
            facts[key], prov[key] = TIMM_DEFAULTS[key], DEFAULT
            defaulted.append(key)
    missing = [k for k in REQUIRED if k not in facts]
    if missing:
        where = "its pretrained_cfg does not state them" if pcfg else "it has no timm pretrained_cfg"
        raise UserError(f"the preprocessing of the in-memory {type(module).__name__} is not known: {', '.join(missing)}",
                        f"{where}, and coatnet-deploy never guesses what a model was trained on",
                        "pass them, e.g. export(model, image_size=224, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))")
    size = facts["image_size"]
    if isinstance(size, bool) or not isinstance(size, int) or not 16 <= size <= 4096:
        raise UserError(f"image_size is {size!r}", "it must be a whole number of pixels from 16 to 4096", "pass e.g. image_size=224")
    pp = PreprocessConfig.for_size(size, facts["crop_pct"], facts["interpolation"], facts["mean"], facts["std"], facts["crop_mode"])

    # one copy for the whole export (a large model is not duplicated twice): measured, hashed, then traced
    model = copy.deepcopy(module).eval()
    classes = _measure_classes(model, size)
    prov["num_classes"] = MODULE
    if num_classes is not None and num_classes != classes:
        raise UserError(f"num_classes {num_classes} does not match the module", f"it maps a (1, 3, {size}, {size}) batch to {classes} logits",
                        f"drop num_classes or pass {classes}")
    if isinstance(labels, (str, bytes)) or hasattr(labels, "__fspath__"):
        names, prov["labels"] = read_labels(labels, classes), ARGUMENT
    elif labels is not None:
        names = [str(x) for x in labels]
        if len(names) != classes:
            raise UserError(f"{len(names)} labels given", f"the module has {classes} classes", "give one name per class")
        prov["labels"] = ARGUMENT
    elif isinstance(pcfg.get("label_names"), (list, tuple)) and len(pcfg["label_names"]) == classes:
        names, prov["labels"] = [str(x) for x in pcfg["label_names"]], PRETRAINED_CFG
    else:
        names, prov["labels"] = None, "none"

    arch = pcfg.get("architecture") if isinstance(pcfg.get("architecture"), str) else None
    if name is not None:
        prov["name"] = ARGUMENT
    elif arch:
        name, prov["name"] = arch, PRETRAINED_CFG
    else:
        name, prov["name"] = _snake(type(module).__name__), MODULE
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}", name):
        raise UserError(f"model name {name!r} cannot name a bundle", "use letters, digits, '_', '.', '+' or '-' (at most 100)",
                        "pass name='my_model'")
    return ModuleSource(name=name, num_classes=classes, labels=names, image_size=size, preprocess=pp, provenance=prov,
                        weights_format=IN_MEMORY, weights_sha256=state_dict_sha256(model), module=model,
                        module_class=cls, timm_architecture=arch, defaulted=defaulted)


def state_dict_sha256(module: Any) -> str:
    """SHA-256 over the state dict: each entry's name, dtype, shape and bytes, in order."""
    import torch

    h = hashlib.sha256()
    for key, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}\n".encode())
        if t.numel():  # bytes whatever the dtype (bfloat16 has no NumPy twin)
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _pretrained_cfg(module: Any) -> Dict[str, Any]:
    """timm sets ``pretrained_cfg`` (a dict) on every model it creates; older models have ``default_cfg``."""
    for attr in ("pretrained_cfg", "default_cfg"):
        cfg = getattr(module, attr, None)
        if cfg is not None and hasattr(cfg, "to_dict"):  # timm's PretrainedCfg dataclass
            cfg = cfg.to_dict()
        if isinstance(cfg, dict) and cfg:
            return cfg
    return {}


def _stated_by(pcfg: Dict[str, Any]) -> Dict[str, Any]:
    """The preprocessing facts a pretrained_cfg states (None where it states nothing usable)."""
    out: Dict[str, Any] = {}
    size = pcfg.get("test_input_size") or pcfg.get("input_size")
    if isinstance(size, (list, tuple)) and len(size) == 3:
        if size[0] != 3 or size[1] != size[2]:
            raise UserError(f"the module's pretrained_cfg input_size is {list(size)}", "coatnet-deploy exports RGB square inputs",
                            "pass image_size=S for a square input")
        out["image_size"] = size[1]
    for key in ("mean", "std", "interpolation", "crop_pct", "crop_mode"):
        out[key] = pcfg.get(key)
    if pcfg.get("test_crop_pct") is not None and pcfg.get("test_input_size"):
        out["crop_pct"] = pcfg["test_crop_pct"]
    return out


def _measure_classes(module: Any, size: int) -> int:
    """One forward pass of zeros at the input size -> the number of classes (and proof of the mapping)."""
    import torch

    x = torch.zeros(1, 3, size, size)
    try:
        with torch.inference_mode():
            out = module(x)
    except Exception as e:  # the user's module: anything may go wrong in it
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"the module failed on a (1, 3, {size}, {size}) batch: {type(e).__name__}: {first}",
                        "export() needs a classifier that maps float (N, 3, S, S) images to (N, classes) logits",
                        "check image_size, or wrap the model so it takes and returns that") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 1 or not out.is_floating_point():
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"the module maps a (1, 3, {size}, {size}) batch to {shape}",
                        "export() needs (N, classes) float logits", "wrap the model so it returns the logits tensor alone")
    return int(out.shape[1])


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower() or "model"
