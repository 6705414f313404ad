"""Parity between a reference and an artifact: arrays in, a result object out. Knows no backend."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Which direction passes, per gate: "min" gates need value >= threshold, "max" gates value <= threshold.
GATE_DIRECTION = {
    "cosine_min": "min",
    "top1_agreement": "min",
    "top5_agreement": "min",
    "max_abs_err": "max",
    "mean_abs_err": "max",
    "accuracy_drop": "max",
}


@dataclass
class ParityResult:
    samples: int
    cosine_min: float
    cosine_mean: float
    max_abs_err: float
    mean_abs_err: float
    top1_agreement: float
    top5_agreement: float
    per_sample_cosine: list[float]
    per_sample_max_abs_err: list[float]
    gates: dict[str, float] = field(default_factory=dict)
    failures: dict[str, float] = field(default_factory=dict)  # gate -> measured value
    non_finite: int = 0  # samples whose output holds NaN or Inf: they fail every gate

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def metric(self, name: str) -> float | None:
        return getattr(self, name, None)

    def min_passing(self) -> dict[str, float]:
        """The smallest tolerance that would have passed, for each failed gate."""
        return {k: v for k, v in self.failures.items()}

    def to_dict(self, per_sample: bool = True) -> dict[str, Any]:
        d = {
            "samples": self.samples,
            "cosine_min": self.cosine_min,
            "cosine_mean": self.cosine_mean,
            "max_abs_err": self.max_abs_err,
            "mean_abs_err": self.mean_abs_err,
            "top1_agreement": self.top1_agreement,
            "top5_agreement": self.top5_agreement,
            "gates": dict(self.gates),
            "passed": self.passed,
        }
        if self.non_finite:
            d["non_finite_samples"] = self.non_finite
        if self.failures:
            d["failed_gates"] = sorted(self.failures)
            d["min_passing"] = self.min_passing()
        if per_sample:
            d["per_sample"] = {"cosine": self.per_sample_cosine, "max_abs_err": self.per_sample_max_abs_err}
        return d

    def summary(self) -> str:
        state = "PASS" if self.passed else "FAIL " + ",".join(sorted(self.failures))
        return (f"cos_min={self.cosine_min:.6f} max_abs={self.max_abs_err:.3g} mean_abs={self.mean_abs_err:.3g} "
                f"top1={self.top1_agreement:.3f} top5={self.top5_agreement:.3f} [{state}]")


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[1])
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def compare(reference: np.ndarray, actual: np.ndarray, gates: dict[str, float] | None = None) -> ParityResult:
    """Compare logits (N, C) of an artifact with the reference's.

    top-1 agreement: the artifact's argmax equals the reference's. top-5 agreement: the reference's
    top-1 class is within the artifact's top 5 (the usual definition, robust to near-ties below).
    """
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs actual {act.shape}")
    ref2 = ref.reshape(ref.shape[0], -1)
    act2 = act.reshape(act.shape[0], -1)
    if not np.all(np.isfinite(act2)):
        # NaN/Inf must fail every gate, not slip through comparisons that are False for NaN.
        bad = np.where(~np.isfinite(act2).all(axis=1), 0.0, 1.0)
        cos = np.minimum(bad, _cosine(ref2, np.nan_to_num(act2)))
        abs_err = np.full(ref2.shape[0], np.inf)
    else:
        cos = _cosine(ref2, act2)
        abs_err = np.abs(ref2 - act2).max(axis=1)
    mean_err = float(np.abs(np.nan_to_num(ref2 - act2, nan=np.inf)).mean()) if ref2.size else 0.0
    top1_ref = _topk(ref2, 1)[:, 0]
    top1 = float(np.mean(_topk(np.nan_to_num(act2, nan=-np.inf), 1)[:, 0] == top1_ref))
    top5_act = _topk(np.nan_to_num(act2, nan=-np.inf), 5)
    top5 = float(np.mean([top1_ref[i] in top5_act[i] for i in range(len(top1_ref))]))
    # Identical rows are cosine 1 exactly (dot / (|a||b|) rounds to 1 - 2e-16).
    cos = np.where((ref2 == act2).all(axis=1), 1.0, cos)
    res = ParityResult(
        samples=int(ref2.shape[0]),
        cosine_min=float(cos.min()),
        cosine_mean=float(cos.mean()),
        max_abs_err=float(abs_err.max()),
        mean_abs_err=mean_err,
        top1_agreement=top1,
        top5_agreement=top5,
        per_sample_cosine=[float(c) for c in cos],
        per_sample_max_abs_err=[float(e) for e in abs_err],
        non_finite=int((~np.isfinite(act2).all(axis=1)).sum()),
    )
    apply_gates(res, gates or {})
    return res


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    denom = na * nb
    dot = (a * b).sum(axis=1)
    both_zero = (na == 0) & (nb == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(denom > 0, dot / np.where(denom > 0, denom, 1.0), np.where(both_zero, 1.0, 0.0))
    return np.clip(cos, -1.0, 1.0)


def apply_gates(res: ParityResult, gates: dict[str, float], extra: dict[str, float] | None = None) -> ParityResult:
    """Set res.gates and res.failures. ``extra`` carries metrics not in the result (accuracy_drop)."""
    res.gates = dict(gates)
    res.failures = {}
    for name, threshold in gates.items():
        direction = GATE_DIRECTION.get(name)
        if direction is None:
            raise ValueError(f"unknown gate {name}")
        value = (extra or {}).get(name, res.metric(name))
        if value is None:
            continue
        ok = value >= threshold if direction == "min" else value <= threshold
        if not ok or (isinstance(value, float) and math.isnan(value)) or (res.non_finite and name not in (extra or {})):
            res.failures[name] = float(value)
    return res


def accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(top-1, top-5) accuracy in percent."""
    labels = np.asarray(labels)
    top5 = _topk(np.asarray(logits), 5)
    t1 = float(np.mean(top5[:, 0] == labels) * 100.0)
    t5 = float(np.mean([labels[i] in top5[i] for i in range(len(labels))]) * 100.0)
    return t1, t5
