"""Reading weight files safely and fitting them to a model.

``.safetensors`` via safetensors; anything else via ``torch.load(weights_only=True)`` with exactly one
class allowed beside tensors and plain containers: ``argparse.Namespace``, the ``args`` that timm's
``train.py`` stores in its checkpoints (timm itself loads them so: ``timm/models/_helpers.py:
_torch_load``). Any other global, wherever it sits in the file (inside ``args`` too), makes torch refuse
the file before anything in it runs.

Which state dict of a training checkpoint is taken: ``ema=False`` (the default) takes ``state_dict``,
then ``model``, as timm's ``validate.py`` does without ``--use-ema``; a file that holds only EMA weights
gives those. ``ema=True`` takes ``state_dict_ema``, then ``model_ema`` (timm's ``load_checkpoint(...,
use_ema=True)``) and refuses a file that has neither. A DataParallel ``module.`` or torch.compile
``_orig_mod.`` prefix is removed (timm's ``clean_state_dict``). Relative-position tables made at another
image size are resized as timm does.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Optional

if TYPE_CHECKING:  # annotations only: torch is imported where weights are read
    import torch

from coatnet_deploy.errors import UserError

EMA_KEYS = ("state_dict_ema", "model_ema")
PLAIN_KEYS = ("state_dict", "model")
WRAPPER_KEYS = EMA_KEYS + PLAIN_KEYS
HEAD_KEYS = ("head.fc.weight", "fc.weight")
_PREFIXES = ("module.", "_orig_mod.")
_REL_TABLE = "relative_position_bias_table"
_SHOW = 5


def weights_sha256(path) -> str:
    """File path -> hex SHA-256 of its bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Weights:
    """A weight file, read: its state dict, which entry of the file it came from, and the rest.

    ``key``: the checkpoint entry taken (``state_dict``, ``state_dict_ema``, ...), None for a flat file.
    ``meta``: the file's other top-level entries, tensors and ``optimizer`` left out (for a timm
    checkpoint: ``epoch``, ``arch``, ``args`` (an ``argparse.Namespace``), ``version``, ``metric``).
    """

    path: str
    state_dict: Dict[str, "torch.Tensor"] = field(repr=False)
    key: Optional[str] = None
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def is_training_checkpoint(self) -> bool:
        """True for a timm ``train.py`` checkpoint (it stores ``args`` or ``arch`` with ``epoch``)."""
        return "args" in self.meta or ("arch" in self.meta and "epoch" in self.meta)


def read_weights(path, ema: Optional[bool] = False) -> Weights:
    """Weight file path -> :class:`Weights` (state dict unwrapped, prefixes removed).

    ``ema``: True takes the EMA weights (refused when the file has none), False the trained ones;
    None is the order used before ``--ema`` existed (EMA first), for rebuilding older bundles.
    """
    path = os.fspath(path)
    obj = _read_file(path)
    if isinstance(obj, dict):
        meta = {k: v for k, v in obj.items() if k not in WRAPPER_KEYS and k != "optimizer" and not _is_tensor(v)}
    else:
        meta = {}
    sd, key = select_state_dict(obj, path, ema)
    return Weights(path=path, state_dict=sd, key=key, meta=meta)


def load_state_dict(path, ema: Optional[bool] = False) -> Dict[str, "torch.Tensor"]:
    """Weight file path -> flat {key: tensor} state dict (unwrapped, ``module.`` prefix removed)."""
    return read_weights(path, ema).state_dict


def _read_file(path: str):
    import torch

    if not os.path.isfile(path):
        raise UserError(f"weights file {path} not found", None, "pass an existing .safetensors or .pth file")
    if os.path.getsize(path) == 0:
        raise UserError(f"weights file {path} is empty", "0 bytes", "re-download or re-save the checkpoint")
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        try:
            return load_file(path, device="cpu")
        except Exception as e:  # safetensors raises its own error type for truncated/corrupt headers
            raise UserError(f"cannot read weights file {path}", f"not a valid safetensors file ({e})",
                            "re-download or re-save it with safetensors.torch.save_file") from None
    try:
        # exactly one class beyond torch's tensor-only set: timm train.py's args (see module docstring)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(
            f"refusing to load {path}: checkpoint needs pickled code to load",
            "only tensors and argparse.Namespace (timm train.py args) are read (torch.load weights_only=True) "
            "so a file cannot run code" + _unsupported_global(str(e)),
            "re-save it as safetensors or a plain state_dict (torch.save(model.state_dict(), path))",
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise UserError(f"cannot read weights file {path}", f"truncated or not a torch checkpoint ({e})",
                        "re-download or re-save the checkpoint") from None


def _is_tensor(v) -> bool:
    import torch

    return isinstance(v, torch.Tensor)


def _unsupported_global(msg: str) -> str:
    """torch's long weights_only message -> '; it references GLOBAL x.y' (or '' when absent)."""
    m = re.search(r"GLOBAL ([\w.]+)", msg)
    return f"; it references {m.group(1)}" if m else ""


def select_state_dict(obj, source: str = "checkpoint", ema: Optional[bool] = False):
    """Checkpoint object -> (flat state dict, the wrapper key taken or None); see :func:`read_weights`."""
    import torch

    key = None
    if isinstance(obj, dict):
        present = [k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)]
        if ema is True:
            order = EMA_KEYS
        elif ema is False:
            order = PLAIN_KEYS + EMA_KEYS  # a file of EMA weights only still gives its weights
        else:
            order = WRAPPER_KEYS
        key = next((k for k in order if k in present), None)
        if ema is True and key is None:
            entries = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
            why = (f"it holds no state_dict_ema or model_ema (entries: {', '.join(entries[:8])})" if entries
                   else "it is a plain state dict, not a training checkpoint")
            raise UserError(f"--ema given, but {source} has no EMA weights", why,
                            "drop --ema (timm's train.py saves them with --model-ema)")
        if key is not None:
            obj = obj[key]
    elif ema is True:
        raise UserError(f"--ema given, but {source} has no EMA weights", "it is not a training checkpoint",
                        "drop --ema")
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"{source} holds no state dict", f"found {type(obj).__name__}",
                        f"save a dict of tensors (optionally under one of {', '.join(WRAPPER_KEYS)})")
    sd = {}
    for k, v in obj.items():
        if not isinstance(v, torch.Tensor):
            continue  # e.g. an epoch counter stored next to the tensors
        for prefix in _PREFIXES:
            if k.startswith(prefix):
                k = k[len(prefix):]
        sd[k] = v
    if not sd:
        raise UserError(f"{source} holds no tensors", None, "save model.state_dict()")
    return sd, key


def unwrap_state_dict(obj, source: str = "checkpoint") -> Dict[str, "torch.Tensor"]:
    """Checkpoint object -> flat state dict (the trained weights; EMA only when nothing else is there)."""
    return select_state_dict(obj, source, ema=False)[0]


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


def load_into(model, sd, name: str = "model", source: str = "weights",
              fix: str = "pass weights saved from the same variant (see 'coatnet-deploy models')") -> None:
    """Load ``sd`` into ``model`` strictly; mismatches raise UserError listing keys and shapes, then ``fix``."""
    sd = _fit_to_model(sd, model)
    target = model.state_dict()
    missing = [k for k in target if k not in sd]
    unexpected = [k for k in sd if k not in target]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(target[k].shape)}" for k in target
             if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)]
    if missing or unexpected or wrong:
        parts = [p for p in (_listing("missing", missing), _listing("unexpected", unexpected),
                             _listing("wrongly shaped (file vs model)", wrong)) if p]
        raise UserError(f"{source} do not fit {name}", "; ".join(parts), fix)
    model.load_state_dict(sd, strict=True)
