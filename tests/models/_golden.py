"""Shared helpers for the model tests: fixture paths and golden weights applied to our models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "models"
sys.path.insert(0, str(FIXTURES))
from golden_weights import golden_state_dict  # noqa: E402


def fixture(name: str) -> dict:
    with np.load(FIXTURES / name) as f:
        return {k: f[k] for k in f.files}


def golden_torch_state_dict(model) -> dict:
    """Model -> its state dict with every float tensor replaced by the golden values (integers kept)."""
    import torch

    sd = model.state_dict()
    gold = {k: torch.from_numpy(v) for k, v in golden_state_dict(sd).items()}
    return {**sd, **gold}
