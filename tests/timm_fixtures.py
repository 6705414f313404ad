"""The timm-written fixtures of tests/fixtures/timm_models, unpacked once per test process.

``unpacked()`` -> {"folder", "border_folder", "checkpoint"}: a save_for_hf folder (config.json +
model.safetensors), the same folder with timm's crop_mode "border" config.json, and the train.py
checkpoint, each byte-identical to what timm wrote (checked against the SHA-256 recorded at generation).
``EXPECTED`` (timm's outputs, arrays) and ``META`` (expected.json) come with them.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import lzma
import shutil
import tempfile
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "timm_models"
META = json.loads((FIXTURES / "expected.json").read_text())
with np.load(FIXTURES / "expected.npz") as _f:
    EXPECTED = {k: _f[k] for k in _f.files}
REPO = FIXTURES.parents[2]
PHOTOS = [REPO / "calibration" / p for p in META["photos"]]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def unpacked() -> dict:
    root = Path(tempfile.mkdtemp(prefix="timm-fixtures-"))
    atexit.register(shutil.rmtree, root, True)
    folder = root / "hf_folder"
    folder.mkdir()
    shutil.copyfile(FIXTURES / "hf_folder" / "config.json", folder / "config.json")
    (folder / "model.safetensors").write_bytes(lzma.decompress((FIXTURES / "hf_folder" / "model.safetensors.xz").read_bytes()))
    ckpt = root / "model_best.pth.tar"
    ckpt.write_bytes(lzma.decompress((FIXTURES / "model_best.pth.tar.xz").read_bytes()))
    for rel, path in (("hf_folder/model.safetensors", folder / "model.safetensors"),
                      ("hf_folder/config.json", folder / "config.json"), ("model_best.pth.tar", ckpt)):
        assert _sha256(path) == META["sha256"][rel], f"{rel} is not the file timm wrote: regenerate the fixtures"
    border = root / "hf_border"
    border.mkdir()
    shutil.copyfile(FIXTURES / "config_border.json", border / "config.json")
    (border / "model.safetensors").symlink_to(folder / "model.safetensors")
    return {"root": root, "folder": folder, "border_folder": border, "checkpoint": ckpt}


def folder_variant(tmp_path: Path, edit=None, config_text: str | None = None) -> Path:
    """A copy of the save_for_hf folder (weights linked, not copied) with config.json edited:
    ``edit(cfg_dict)`` changes the parsed config in place, or ``config_text`` replaces the file."""
    src = unpacked()["folder"]
    dst = tmp_path / "variant"
    dst.mkdir()
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    if config_text is None:
        cfg = json.loads((src / "config.json").read_text())
        if edit is not None:
            edit(cfg)
        config_text = json.dumps(cfg, indent=2)
    (dst / "config.json").write_text(config_text)
    return dst


def checkpoint_dict() -> dict:
    """The fixture train.py checkpoint as a dict, read the way timm reads it: weights_only, with exactly
    argparse.Namespace allowed (tests edit it and save variants)."""
    import argparse

    import torch

    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(unpacked()["checkpoint"], map_location="cpu", weights_only=True)
