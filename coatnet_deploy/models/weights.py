"""Reading weight files safely and fitting them to a model.

``.safetensors`` via safetensors; anything else via ``torch.load(weights_only=True)`` so a checkpoint
can never run code on load. Training wrappers (``state_dict``, ``model``, ``state_dict_ema``,
``model_ema``) and a DataParallel ``module.`` prefix are unwrapped. Relative-position tables made at
another image size are resized as timm does.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from typing import TYPE_CHECKING, Dict, Optional

if TYPE_CHECKING:  # annotations only: torch is imported where weights are read
    import torch

from coatnet_deploy.errors import UserError

WRAPPER_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
HEAD_KEYS = ("head.fc.weight", "fc.weight")
_REL_TABLE = "relative_position_bias_table"
_SHOW = 5


def weights_sha256(path) -> str:
    """File path -> hex SHA-256 of its bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_state_dict(path) -> Dict[str, "torch.Tensor"]:
    """Weight file path -> flat {key: tensor} state dict (unwrapped, ``module.`` prefix removed)."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"weights file {path} not found", None, "pass an existing .safetensors or .pth file")
    if os.path.getsize(path) == 0:
        raise UserError(f"weights file {path} is empty", "0 bytes", "re-download or re-save the checkpoint")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            sd = load_file(path, device="cpu")
        except Exception as e:  # safetensors raises its own error type for truncated/corrupt headers
            raise UserError(f"cannot read weights file {path}", f"not a valid safetensors file ({e})",
                            "re-download or re-save it with safetensors.torch.save_file") from None
    else:
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise UserError(
                f"refusing to load {path}: checkpoint needs pickled code to load",
                "only tensors are read (torch.load weights_only=True) so a file cannot run code"
                + _unsupported_global(str(e)),
                "re-save it as safetensors or a plain state_dict (torch.save(model.state_dict(), path))",
            ) from None
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            raise UserError(f"cannot read weights file {path}", f"truncated or not a torch checkpoint ({e})",
                            "re-download or re-save the checkpoint") from None
    return unwrap_state_dict(sd, source=path)


def _unsupported_global(msg: str) -> str:
    """torch's long weights_only message -> '; it references GLOBAL x.y' (or '' when absent)."""
    m = re.search(r"GLOBAL ([\w.]+)", msg)
    return f"; it references {m.group(1)}" if m else ""


def unwrap_state_dict(obj, source: str = "checkpoint") -> Dict[str, "torch.Tensor"]:
    """Checkpoint object -> flat state dict: picks a wrapper key when present, strips ``module.``."""
    import torch

    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"{source} holds no state dict", f"found {type(obj).__name__}",
                        f"save a dict of tensors (optionally under one of {', '.join(WRAPPER_KEYS)})")
    sd = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue  # e.g. an epoch counter stored next to the tensors
        sd[k[len("module."):] if k.startswith("module.") else k] = v
    if not sd:
        raise UserError(f"{source} holds no tensors", None, "save model.state_dict()")
    return sd


def infer_num_classes(sd: Dict[str, "torch.Tensor"]) -> Optional[int]:
    """State dict -> classifier output size (rows of the head weight), or None without a head."""
    for k in HEAD_KEYS:
        if k in sd and sd[k].ndim >= 2:
            return int(sd[k].shape[0])
    return None


def _fit_to_model(sd, model):
    """Resize rel-pos tables to the model's image size; drop derived index buffers; conv<->linear."""
    from coatnet_deploy.models.coatnet import resize_rel_pos_bias_table

    target = model.state_dict()
    out = {}
    for k, v in sd.items():
        if k.endswith("relative_position_index"):
            continue  # derived from the image size, rebuilt by the model (older timm saved it)
        t = target.get(k)
        if t is not None and k.endswith(_REL_TABLE) and v.shape != t.shape and v.ndim == 2 and v.shape[1] == t.shape[1]:
            window = model.get_submodule(k[: -len(_REL_TABLE) - 1]).window_size
            try:
                v = resize_rel_pos_bias_table(v, window)
            except ValueError as e:
                raise UserError(f"cannot resize {k} from {tuple(v.shape)} to {tuple(t.shape)}", str(e),
                                "load the weights at the image size they were trained at") from None
        if t is not None and v.ndim != t.ndim and v.numel() == t.numel() and v.ndim in (2, 4):
            v = v.reshape(t.shape)
        out[k] = v
    return out


def _listing(title: str, items) -> str:
    items = list(items)
    if not items:
        return ""
    shown = ", ".join(items[:_SHOW]) + (", ..." if len(items) > _SHOW else "")
    return f"{len(items)} {title} ({shown})"


def load_into(model, sd, name: str = "model", source: str = "weights") -> None:
    """Load ``sd`` into ``model`` strictly; mismatches raise UserError listing keys and shapes."""
    sd = _fit_to_model(sd, model)
    target = model.state_dict()
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in target
             if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or wrong:
        parts = [p for p in (_listing("missing", missing), _listing("unexpected", unexpected),
                             _listing("wrongly shaped (file vs model)", wrong)) if p]
        raise UserError(f"{source} do not fit {name}", "; ".join(parts),
                        "pass weights saved from the same variant (see 'coatnet-deploy models')")
    model.load_state_dict(sd, strict=True)
