"""The model family: names, preprocessing facts, building (optionally from weights), size and cost.

``build_model(name, ...)`` -> ``nn.Module`` in eval mode; ``model_info(name)`` -> ``ModelInfo``;
``list_models()``; ``count_params``; ``gmacs`` (both from the config, no model built);
``resolve_model_source(...)`` -> ``ModelSource``: what flags, a timm folder or checkpoint and the
variant's defaults say about the model, each value with where it came from.

Variants are registered by their family modules (``@register_model`` in ``coatnet.py``, ``seed.py``,
see ``_registry.py``); this module only reads the registry. Importing a family imports torch, so the
first call of any function here does.
"""

from __future__ import annotations

import importlib
from typing import Optional

from coatnet_deploy.errors import UserError
from coatnet_deploy.models._registry import (HALF, IMAGENET_MEAN, IMAGENET_STD, ModelInfo, Variant,  # noqa: F401
                                             preprocess_for, register_model)
from coatnet_deploy.models.source import DEFAULT_MODEL, ModelSource, resolve_model_source  # noqa: F401

__all__ = ["ModelInfo", "ModelSource", "build_model", "model_info", "list_models", "count_params", "gmacs",
           "validate_image_size", "resolve_model_source", "register_model"]

# Family modules: importing one registers its variants, in this order (the `models` table's order).
_FAMILIES = ("coatnet_deploy.models.coatnet", "coatnet_deploy.models.seed")


def _variants() -> dict:
    from coatnet_deploy.models._registry import variants

    for mod in _FAMILIES:
        importlib.import_module(mod)
    return variants()


def _variant(name: str) -> Variant:
    table = _variants()
    try:
        return table[name]
    except (KeyError, TypeError):
        raise UserError(f"unknown model {name!r}", f"valid models: {', '.join(list_models())}",
                        "pick one of those (see 'coatnet-deploy models')") from None


def list_models() -> list:
    """-> variant names in table order: timm's variants as their family files list them, then this
    project's own (no timm name) by name."""
    table = _variants()
    return [n for n, v in table.items() if v.info.timm_name] + sorted(n for n, v in table.items() if not v.info.timm_name)


def model_info(name: str) -> ModelInfo:
    """Variant name -> ModelInfo; unknown names raise UserError listing the valid ones."""
    return _variant(name).info


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


def _construct(name: str, num_classes: int, image_size: int, seed: int, device=None):
    import torch

    ctor = _variant(name).build
    if device is not None:
        with torch.device(device):
            return ctor(img_size=image_size, num_classes=num_classes)
    # fork_rng: seeding here must not change the caller's global RNG stream
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ctor(img_size=image_size, num_classes=num_classes)


def build_model(name: Optional[str], num_classes: Optional[int] = None, image_size: Optional[int] = None,
                weights=None, seed: int = 0, ema: bool = False):
    """Variant name (+ head size, square input size, weights) -> ``nn.Module`` in eval mode.

    ``weights``: a ``.safetensors`` file, a torch state dict or timm ``train.py`` checkpoint (read with
    ``weights_only=True``; only ``argparse.Namespace`` is allowed beside tensors), or a folder saved by
    timm's ``save_for_hf`` (or its ``config.json``). ``name`` may be None when the weights name the
    architecture; ``num_classes`` and ``image_size`` default to what the weights say, then the variant's.
    ``ema`` takes the checkpoint's EMA weights (``state_dict_ema``, then ``model_ema``). Without weights
    the model is randomly initialised from ``seed``; relative-position tables trained at another size
    are resized.
    """
    source = resolve_model_source(model=name, weights=weights, num_classes=num_classes, image_size=image_size,
                                  ema=ema)
    return source.build(seed=seed)


def count_params(model_or_name, num_classes: int = 1000, image_size: Optional[int] = None) -> int:
    """Module, or variant name (+ image size, default the variant's) -> number of parameters.

    For names the count comes from the config: no model is built, so coatnet_4 costs nothing.
    """
    if not isinstance(model_or_name, str):
        return sum(p.numel() for p in model_or_name.parameters())
    v = _variant(model_or_name)
    return v.params(validate_image_size(v.info.default_image_size if image_size is None else image_size), num_classes)


def gmacs(name: str, image_size: Optional[int] = None, num_classes: int = 1000) -> float:
    """Variant name (+ image size) -> multiply-accumulates for one image, in G, computed from the config
    (no model is built): convolutions, linear layers and the two attention matmuls."""
    v = _variant(name)
    return v.macs(validate_image_size(v.info.default_image_size if image_size is None else image_size), num_classes) / 1e9


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
        if hasattr(m, "in_proj_weight"):  # nn.MultiheadAttention-style q/k/v projection is F.linear, not a module
            total[0] += out.shape[0] * out.shape[1] * 3 * m.embed_dim * m.embed_dim

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(conv_hook)
        elif isinstance(m, nn.Linear):
            m.register_forward_hook(linear_hook)
        elif hasattr(m, "num_heads") and (hasattr(m, "dim_head") or hasattr(m, "head_dim")):
            m.register_forward_hook(attn_hook)
    with torch.no_grad():
        model(torch.empty(1, 3, image_size, image_size, device="meta"))
    return total[0] / 1e9
