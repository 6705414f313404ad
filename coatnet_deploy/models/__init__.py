"""The model family: names, preprocessing facts, building (optionally from weights), size and cost.

``build_model(name, ...)`` -> ``nn.Module`` in eval mode; ``model_info(name)`` -> ``ModelInfo``;
``list_models()``; ``count_params``; ``gmacs`` (both from the config, no model built). Torch is
imported inside the functions that need it, so ``model_info`` / ``list_models`` stay torch-free.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from coatnet_deploy.errors import UserError

__all__ = ["ModelInfo", "build_model", "model_info", "list_models", "count_params", "gmacs",
           "validate_image_size"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


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


def _i(name, timm_name, crop_pct=0.95, mean=HALF, std=HALF, size=224, desc="", trained=False):
    return ModelInfo(name, timm_name, size, 1000, crop_pct, mean, std, "bicubic", desc, trained)


# Preprocessing as in timm's pretrained cfgs (maxxvit.default_cfgs): mean = std = 0.5 and crop 0.95
# unless noted; nano 0.9; bn_0_rw ImageNet mean/std.
_MODELS: Dict[str, ModelInfo] = {m.name: m for m in [
    _i("coatnet_pico_rw_224", "coatnet_pico_rw_224", desc="timm rw, untrained in timm"),
    _i("coatnet_nano_rw_224", "coatnet_nano_rw_224", crop_pct=0.9, desc="timm rw, ImageNet-1k 81.70", trained=True),
    _i("coatnet_0_rw_224", "coatnet_0_rw_224", desc="timm rw, ImageNet-1k 82.40", trained=True),
    _i("coatnet_1_rw_224", "coatnet_1_rw_224", desc="timm rw, ImageNet-1k 83.62", trained=True),
    _i("coatnet_2_rw_224", "coatnet_2_rw_224", desc="timm rw, in12k ft in1k 86.58", trained=True),
    _i("coatnet_bn_0_rw_224", "coatnet_bn_0_rw_224", mean=IMAGENET_MEAN, std=IMAGENET_STD,
       desc="timm rw with BatchNorm transformer blocks, ImageNet-1k", trained=True),
    _i("coatnet_0_224", "coatnet_0_224", desc="paper CoAtNet-0 (untrained in timm)"),
    _i("coatnet_1_224", "coatnet_1_224", desc="paper CoAtNet-1 (untrained in timm)"),
    _i("coatnet_2_224", "coatnet_2_224", desc="paper CoAtNet-2 (untrained in timm)"),
    _i("coatnet_3_224", "coatnet_3_224", desc="paper CoAtNet-3 (untrained in timm)"),
    _i("coatnet_4_224", "coatnet_4_224", desc="paper CoAtNet-4 (untrained in timm)"),
    _i("coatnet_seed", None, crop_pct=0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD,
       desc="the seed chapter's network (not CoAtNet; see models/seed.py)"),
    _i("coatnet_tiny", None, crop_pct=0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD, size=64,
       desc="tiny test/smoke variant on the rw code path"),
]}


def list_models() -> list:
    """-> variant names, in table order."""
    return list(_MODELS)


def model_info(name: str) -> ModelInfo:
    """Variant name -> ModelInfo; unknown names raise UserError listing the valid ones."""
    try:
        return _MODELS[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown model {name!r}", f"valid models: {', '.join(_MODELS)}",
                        "pick one of those (see 'coatnet-deploy models')") from None


def validate_image_size(image_size) -> int:
    """Image size -> int; anything but a multiple of 32 from 64 up raises UserError naming valid values."""
    ok = isinstance(image_size, int) and not isinstance(image_size, bool) and image_size >= 64 \
        and image_size % 32 == 0
    if not ok:
        raise UserError(f"invalid image size {image_size!r}",
                        "the relative-position tables need a multiple of 32 from 64 up "
                        "(64, 96, 128, 160, 192, 224, 256, 288, 320, 384, ...)",
                        "pass e.g. --image-size 224")
    return image_size


# variant name -> key of coatnet.model_cfgs (timm drops the resolution suffix the same way)
_CFG_NAMES = {n: n[: -len("_224")] for n in _MODELS if n.endswith("_224")}


def _constructor(name: str) -> Callable:
    if name == "coatnet_seed":
        from coatnet_deploy.models.seed import coatnet_seed

        return coatnet_seed
    from coatnet_deploy.models import coatnet

    return getattr(coatnet, name)


def _construct(name: str, num_classes: int, image_size: int, seed: int, device=None):
    import torch

    ctor = _constructor(name)
    if device is not None:
        with torch.device(device):
            return ctor(img_size=image_size, num_classes=num_classes)
    # fork_rng: seeding here must not change the caller's global RNG stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ctor(img_size=image_size, num_classes=num_classes)


def build_model(name: str, num_classes: Optional[int] = None, image_size: Optional[int] = None,
                weights=None, seed: int = 0):
    """Variant name (+ head size, square input size, weights file) -> ``nn.Module`` in eval mode.

    Without weights the model is randomly initialised from ``seed``. With weights, ``num_classes``
    defaults to the head in the file; relative-position tables trained at another size are resized.
    """
    info = model_info(name)
    image_size = validate_image_size(info.default_image_size if image_size is None else image_size)
    sd = None
    if weights is not None:
        from coatnet_deploy.models.weights import infer_num_classes, load_state_dict

        sd = load_state_dict(weights)
        file_classes = infer_num_classes(sd)
        if num_classes is None:
            num_classes = file_classes
        elif file_classes is not None and file_classes != num_classes:
            raise UserError(f"--num-classes {num_classes} does not match the weights",
                            f"the head in {weights} has {file_classes} classes",
                            f"drop --num-classes or pass {file_classes}")
    if num_classes is None:
        num_classes = info.num_classes
    if not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"invalid number of classes {num_classes!r}", "it must be a positive integer")
    model = _construct(name, num_classes, image_size, seed)
    if sd is not None:
        from coatnet_deploy.models.weights import load_into

        load_into(model, sd, name=f"{name} at {image_size}px", source=f"weights {weights}")
    return model.eval()


def count_params(model_or_name, num_classes: int = 1000, image_size: Optional[int] = None) -> int:
    """Module, or variant name (+ image size, default the variant's) -> number of parameters.

    For names the count comes from the config: no model is built, so coatnet_4 costs nothing.
    """
    if not isinstance(model_or_name, str):
        return sum(p.numel() for p in model_or_name.parameters())
    info = model_info(model_or_name)
    image_size = validate_image_size(info.default_image_size if image_size is None else image_size)
    if model_or_name == "coatnet_seed":
        from coatnet_deploy.models.seed import count_params as seed_params

        return seed_params(num_classes)
    from coatnet_deploy.models import coatnet

    return coatnet.count_params(coatnet.model_cfgs[_CFG_NAMES.get(model_or_name, model_or_name)], image_size,
                                num_classes)


def gmacs(name: str, image_size: Optional[int] = None, num_classes: int = 1000) -> float:
    """Variant name (+ image size) -> multiply-accumulates for one image, in G, computed from the config
    (no model is built): convolutions, linear layers and the two attention matmuls."""
    info = model_info(name)
    image_size = validate_image_size(info.default_image_size if image_size is None else image_size)
    if name == "coatnet_seed":
        from coatnet_deploy.models.seed import count_macs

        return count_macs(image_size, num_classes) / 1e9
    from coatnet_deploy.models import coatnet

    return coatnet.count_macs(coatnet.model_cfgs[_CFG_NAMES.get(name, name)], image_size, num_classes) / 1e9


def _gmacs_traced(name: str, image_size: Optional[int] = None, num_classes: int = 1000) -> float:
    """Cross-check of ``gmacs``: the same count from forward hooks on a meta-device build (slower)."""
    import torch
    from torch import nn

    info = model_info(name)
    image_size = validate_image_size(info.default_image_size if image_size is None else image_size)
    model = _construct(name, num_classes, image_size, 0, device="meta").eval()
    total = [0]

    def conv_hook(m, inp, out):
        total[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        total[0] += out.numel() * m.in_features

    def attn_hook(m, inp, out):  # q k^T and attn v: 2 * heads * N^2 * head_dim
        n = out.shape[-2] * out.shape[-1] if out.ndim == 4 else out.shape[0]
        heads, dh = m.num_heads, getattr(m, "dim_head", getattr(m, "head_dim", 0))
        total[0] += 2 * heads * n * n * dh
        if isinstance(m, MultiheadSelfAttention):  # its q/k/v projection is F.linear, not a module
            total[0] += out.shape[0] * out.shape[1] * 3 * m.embed_dim * m.embed_dim

    from coatnet_deploy.models.coatnet import Attention2d
    from coatnet_deploy.models.seed import MultiheadSelfAttention

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(linear_hook)
        elif isinstance(m, (Attention2d, MultiheadSelfAttention)):
            m.register_forward_hook(attn_hook)
    with torch.no_grad():
        model(torch.empty(1, 3, image_size, image_size, device="meta"))
    return total[0] / 1e9
