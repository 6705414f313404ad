"""What `bench` and `matrix` time engines against: a bundle's golden inputs and the PyTorch model
rebuilt from its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from coatnet_deploy.errors import UserError

#: the runner name (and matrix row target) of the PyTorch reference
REFERENCE = "pytorch"


def golden_inputs(bundle: str | Path) -> np.ndarray:
    """The bundle's preprocessed golden inputs, (N, 3, H, W) float32."""
    from coatnet_deploy.parity import load_golden

    return np.ascontiguousarray(load_golden(Path(bundle))["inputs"], dtype=np.float32)


def reference_model(manifest: dict[str, Any], weights: str | None = None):
    """Rebuild the PyTorch model a bundle was exported from -> (nn.Module, note).

    The weights must be the ones the manifest records (SHA-256); a bundle exported without weights is
    rebuilt from the seeded random init of its export config.
    """
    from coatnet_deploy.models import build_model
    from coatnet_deploy.models.weights import weights_sha256

    m = manifest["model"]
    recorded = m.get("weights_sha256")
    if weights:
        if not Path(weights).is_file():
            raise UserError(f"weights file '{weights}' not found", "the path is not a file", "pass the weights the bundle was exported from")
        if recorded is None:
            raise UserError(f"--weights {weights} given, but the bundle was exported without weights",
                            "its manifest records a seeded random init (weights_sha256 null)", "drop --weights")
        got = weights_sha256(weights)
        if got != recorded:
            raise UserError(f"weights '{weights}' are not the ones this bundle was exported from",
                            f"sha256 {got[:16]}... != manifest {recorded[:16]}...", "pass the same weights file as at export")
        note = f"weights {Path(weights).name} (sha256 {got[:12]})"
    else:
        if recorded is not None:
            raise UserError("--reference needs the bundle's weights", f"the bundle was exported from weights with sha256 {recorded[:16]}...",
                            "pass --weights PATH (the same file as at export)")
        note = None
    seed = int((manifest.get("config") or {}).get("seed") or 0)
    note = note or f"random init, seed {seed} (as at export)"
    image_size = m.get("image_size") or manifest["input"]["shape"][2]
    model = build_model(m["name"], num_classes=m.get("num_classes"), image_size=int(image_size), weights=weights, seed=seed)
    return model, note


def reference_check(runner, bundle: str | Path, max_batch: int) -> dict[str, Any]:
    """Run the rebuilt reference on the golden inputs against the stored reference logits."""
    from coatnet_deploy.compare import compare
    from coatnet_deploy.parity import load_golden
    from coatnet_deploy.stages import run_batched

    g = load_golden(Path(bundle))
    out = run_batched(runner, g["inputs"].astype(np.float32), max_batch)
    res = compare(g["reference_logits"], out, {"max_abs_err": 1e-3, "top1_agreement": 1.0})
    return {"matches_golden": res.passed, "max_abs_err": res.max_abs_err, "cosine_min": res.cosine_min}

