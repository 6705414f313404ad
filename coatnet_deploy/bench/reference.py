"""What `bench` and `matrix` time engines against: a bundle's golden inputs and the PyTorch model
rebuilt from its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


#: the runner name (and matrix row target) of the PyTorch reference
REFERENCE = "pytorch"


def golden_inputs(bundle: str | Path) -> np.ndarray:
    """The bundle's preprocessed golden inputs, (N, 3, H, W) float32."""
    from coatnet_deploy.parity import load_golden

    return np.ascontiguousarray(load_golden(Path(bundle))["inputs"], dtype=np.float32)


def reference_model(manifest: dict[str, Any], weights: str | None = None):
    """Rebuild the PyTorch model a bundle was exported from -> (nn.Module, note).

    The weights (file, timm folder or checkpoint) must be the ones the manifest records (SHA-256); a
    bundle exported without weights is rebuilt from the seeded random init of its export config.
    """
    from coatnet_deploy.models.source import rebuild_reference

    return rebuild_reference(manifest, weights)


def reference_check(runner, bundle: str | Path, max_batch: int) -> dict[str, Any]:
    """Run the rebuilt reference on the golden inputs against the stored reference logits."""
    from coatnet_deploy.compare import compare
    from coatnet_deploy.parity import load_golden
    from coatnet_deploy.stages import run_batched

    g = load_golden(Path(bundle))
    out = run_batched(runner, g["inputs"].astype(np.float32), max_batch)
    res = compare(g["reference_logits"], out, {"max_abs_err": 1e-3, "top1_agreement": 1.0})
    return {"matches_golden": res.passed, "max_abs_err": res.max_abs_err, "cosine_min": res.cosine_min}

