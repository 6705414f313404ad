"""The variant registry: ``@register_model`` (as timm's) records each builder with its facts.

A model family is one module (``coatnet.py``, ``seed.py``) that keeps, in this order, as timm's
``maxxvit.py`` does: its architecture configs, ``default_cfgs`` (variant name -> :class:`VariantCfg`:
preprocessing, default size, timm name, description) and builder functions decorated with
``@register_model``. The decorator reads the facts from ``default_cfgs[fn.__name__]`` of the builder's
own module, so a variant's architecture and preprocessing sit side by side and nothing outside the
family file names a variant. A family module also defines ``variant_params(name, image_size,
num_classes)`` and ``variant_macs(...)``, so sizes and costs come from the config without building.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class VariantCfg:
    """A variant's facts as its family file states them (timm's pretrained cfg, the fields we use).

    ``arch`` is the key of the family's architecture configs; ``timm_name`` the timm model whose state
    dict loads as it is (None: not a timm model).
    """

    arch: str
    timm_name: Optional[str]
    crop_pct: float = 0.95
    mean: Tuple[float, float, float] = HALF
    std: Tuple[float, float, float] = HALF
    interpolation: str = "bicubic"
    image_size: int = 224
    num_classes: int = 1000
    description: str = ""
    trained_in_timm: bool = False


@dataclass(frozen=True)
class ModelInfo:
    """What a caller needs to know about a variant without building it."""

    name: str
    timm_name: Optional[str]
    default_image_size: int
    num_classes: int
    crop_pct: float
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    interpolation: str = "bicubic"
    description: str = ""
    trained_in_timm: bool = False

    @property
    def preprocess(self) -> dict:
        """{resize, crop, crop_pct, interpolation, mean, std} at the default image size."""
        return preprocess_for(self, self.default_image_size)


def preprocess_for(info: ModelInfo, image_size: int) -> dict:
    """ModelInfo + image size -> preprocess dict (resize shorter side, then center-crop ``image_size``)."""
    return {
        "resize": int(math.floor(image_size / info.crop_pct)),
        "crop": int(image_size),
        "crop_pct": info.crop_pct,
        "interpolation": info.interpolation,
        "mean": list(info.mean),
        "std": list(info.std),
    }


@dataclass(frozen=True)
class Variant:
    """A registered variant: its facts, its builder, and its config-only size and cost."""

    info: ModelInfo
    arch: str
    build: Callable  # (img_size=, num_classes=) -> nn.Module
    params: Callable[[int, int], int]  # (image_size, num_classes) -> parameter count
    macs: Callable[[int, int], int]  # (image_size, num_classes) -> multiply-accumulates per image


_VARIANTS: Dict[str, Variant] = {}


def register_model(fn: Callable) -> Callable:
    """Decorator: register builder ``fn`` under ``fn.__name__`` with its module's ``default_cfgs`` entry."""
    name = fn.__name__
    mod = sys.modules[fn.__module__]
    try:
        cfg: VariantCfg = mod.default_cfgs[name]
    except (AttributeError, KeyError):
        raise RuntimeError(f"{fn.__module__}.default_cfgs has no entry for {name}: define it before the builder") from None
    if name in _VARIANTS:
        raise RuntimeError(f"model {name} registered twice ({_VARIANTS[name].build.__module__}, {fn.__module__})")
    info = ModelInfo(name, cfg.timm_name, cfg.image_size, cfg.num_classes, cfg.crop_pct, tuple(cfg.mean),
                     tuple(cfg.std), cfg.interpolation, cfg.description, cfg.trained_in_timm)
    _VARIANTS[name] = Variant(
        info=info, arch=cfg.arch, build=fn,
        params=lambda image_size, num_classes: mod.variant_params(name, image_size, num_classes),
        macs=lambda image_size, num_classes: mod.variant_macs(name, image_size, num_classes),
    )
    return fn


def variants() -> Dict[str, Variant]:
    """-> {name: Variant} of every registered variant, in registration order."""
    return _VARIANTS
