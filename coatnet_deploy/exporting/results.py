"""Typed results the export's steps hand to each other (and, at the end, to the one document builder).

Each step returns one of these and takes the earlier ones as arguments; none of them is written
after its step returns, except the final ``StageCheck.parity``, whose gates the dataset-accuracy
step completes with the accuracy drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coatnet_deploy.compare import ParityResult


@dataclass(frozen=True)
class ExportPlan:
    """What preflight settled before any heavy work: the model's facts, sizes, target, calibration."""

    source: Any  # models.ModelSource: variant, classes, labels, size, preprocessing, weights, provenance
    image_size: int
    batch: tuple[int, int, int]
    preprocess: Any  # preprocess.PreprocessConfig
    target: Any  # targets.Target
    options: dict[str, Any]  # the target's own config section, defaults filled in
    gates: dict[str, float]
    gate_samples: str  # "all" | "images": which golden samples the gates read
    output: str
    calibration: Any = None  # calibration.CalibrationSet for int8
    labels: list[str] | None = None
    device: Any = None  # devices.Profile for CPU targets, None for the others


@dataclass(frozen=True)
class Reference:
    """The PyTorch reference model and where it runs."""

    model: Any  # torch.nn.Module
    device: str
    note: str | None  # report.json "reference_note"


@dataclass(frozen=True)
class GoldenSet:
    """Preprocessed golden inputs (real photos, then seeded random tensors) and the reference's logits."""

    inputs: np.ndarray
    names: list[str]
    reference_logits: np.ndarray

    def gated(self, gate_samples: str) -> np.ndarray:
        """Mask of the samples the gates read ('images': the photographs, when there are any)."""
        from coatnet_deploy.compare import gate_mask

        return gate_mask(self.names, gate_samples)


@dataclass
class StageCheck:
    """One artifact run on the golden inputs and compared with the reference."""

    stage: str  # onnx | simplified | quantized | engine
    artifact: str
    runtime: str
    parity: ParityResult
    outputs: np.ndarray
    versions: dict[str, str] = field(default_factory=dict)  # {runtime: version} of the runner that ran it

    def entry(self) -> dict[str, Any]:
        """The report's ``stages[i]``."""
        return {"stage": self.stage, "artifact": self.artifact, "runtime": self.runtime, **self.parity.to_dict(per_sample=False)}


@dataclass(frozen=True)
class GraphStage:
    """An ONNX graph the chain produced, its check, and its facts for the manifest."""

    path: Path
    check: StageCheck | None
    facts: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Latency:
    """The export's latency run: the engine's and the reference's, from one interleaved session."""

    engine: dict[str, Any] | None
    reference: dict[str, Any] | None
    speedup: float | None
    note: str | None = None  # why there is no engine latency
