"""Parity between a reference and an artifact: arrays in, a result object out. Knows no backend.

``compare(reference, actual, gates, gated=mask)`` measures every golden sample and judges the gates
on the ``gated`` ones only (INT8 and FP16 gate on the real photographs: seeded random tensors are far
from what a trained model sees, and a 10-class logit vector's worst-case cosine there says little about
the answers). The metrics over all samples stay in the result (``all_samples``), for the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

# Which direction passes, per gate: "min" gates need value >= threshold, "max" gates value <= threshold.
GATE_DIRECTION = {
    "cosine_min": "min",
    "cosine_mean": "min",
    "top1_agreement": "min",
    "top5_agreement": "min",
    "sqnr_db": "min",
    "max_abs_err": "max",
    "mean_abs_err": "max",
    "accuracy_drop": "max",
}
#: which golden samples a gate reads: all of them, or the real images (names "image:...")
GATE_SAMPLES = ("all", "images")
METRICS = ("cosine_min", "cosine_mean", "max_abs_err", "mean_abs_err", "top1_agreement", "top5_agreement", "sqnr_db")


@dataclass
class ParityResult:
    """Metrics over the gated samples (all of them unless a mask was given), the gates and their verdict."""

    samples: int
    cosine_min: float
    cosine_mean: float
    max_abs_err: float
    mean_abs_err: float
    top1_agreement: float
    top5_agreement: float
    sqnr_db: float
    per_sample_cosine: list[float]  # every golden sample, gated or not
    per_sample_max_abs_err: list[float]
    gates: dict[str, float] = field(default_factory=dict)
    failures: dict[str, float] = field(default_factory=dict)  # gate -> measured value
    non_finite: int = 0  # samples whose output holds NaN or Inf: they fail every gate
    gate_samples: str = "all"
    gated: list[bool] | None = None  # per sample, when only some are gated
    names: list[str] | None = None
    all_samples: dict[str, float] | None = None  # the metrics over every sample, when only some are gated

    @property
    def passed(self) -> bool:
        return not self.failures

    def __bool__(self) -> bool:
        return self.passed

    def metric(self, name: str) -> float | None:
        return getattr(self, name, None) if name in METRICS else None

    def min_passing(self) -> dict[str, float]:
        """The smallest tolerance that would have passed, for each failed gate."""
        return {k: v for k, v in self.failures.items()}

    def to_dict(self, per_sample: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"samples": self.samples, **{m: getattr(self, m) for m in METRICS},
                             "gates": dict(self.gates), "passed": self.passed, "gate_samples": self.gate_samples}
        if self.all_samples is not None:
            d["all_samples"] = dict(self.all_samples)
        if self.non_finite:
            d["non_finite_samples"] = self.non_finite
        if self.failures:
            d["failed_gates"] = sorted(self.failures)
            d["min_passing"] = self.min_passing()
        if per_sample:
            d["per_sample"] = {"cosine": self.per_sample_cosine, "max_abs_err": self.per_sample_max_abs_err}
            if self.names is not None:
                d["per_sample"]["names"] = list(self.names)
            if self.gated is not None:
                d["per_sample"]["gated"] = list(self.gated)
        return d

    def summary(self) -> str:
        state = "PASS" if self.passed else "FAIL " + ",".join(sorted(self.failures))
        on = "" if self.all_samples is None else f" on {self.samples} {self.gate_samples}"
        return (f"cos_min={self.cosine_min:.6f} cos_mean={self.cosine_mean:.6f} max_abs={self.max_abs_err:.3g} "
                f"top1={self.top1_agreement:.3f} top5={self.top5_agreement:.3f} sqnr={self.sqnr_db:.1f}dB{on} [{state}]")


def gate_mask(names: Sequence[str], gate_samples: str) -> np.ndarray:
    """Which golden samples the gates read: all, or the real images ('image:...'; all when there are none)."""
    if gate_samples not in GATE_SAMPLES:
        raise ValueError(f"unknown gate_samples {gate_samples!r}")
    mask = np.array([str(n).startswith("image:") for n in names], dtype=bool)
    if gate_samples == "all" or not mask.any():
        return np.ones(len(names), dtype=bool)
    return mask


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    k = min(k, x.shape[1])
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def _per_sample(ref2: np.ndarray, act2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    finite = np.isfinite(act2).all(axis=1)
    if not finite.all():
        cos = np.minimum(np.where(finite, 1.0, 0.0), _cosine(ref2, np.nan_to_num(act2)))
        abs_err = np.where(finite, np.abs(ref2 - np.nan_to_num(act2)).max(axis=1), np.inf)
    else:
        cos = _cosine(ref2, act2)
        abs_err = np.abs(ref2 - act2).max(axis=1)
    # Identical rows are cosine 1 exactly (dot / (|a||b|) rounds to 1 - 2e-16).
    cos = np.where((ref2 == act2).all(axis=1), 1.0, cos)
    return cos, abs_err, finite


def _summary(ref2: np.ndarray, act2: np.ndarray, cos: np.ndarray, abs_err: np.ndarray) -> dict[str, float]:
    """The metrics over the given rows (top-5 agreement: the reference's top-1 is in the artifact's top 5)."""
    clean = np.nan_to_num(act2, nan=-np.inf)
    top1_ref = _topk(ref2, 1)[:, 0]
    top5_act = _topk(clean, 5)
    err = np.nan_to_num(ref2 - act2, nan=np.inf, posinf=np.inf, neginf=np.inf)
    noise = float(np.sum(err * err)) if np.isfinite(err).all() else math.inf
    signal = float(np.sum(ref2 * ref2))
    sqnr = math.inf if noise == 0.0 else (10.0 * math.log10(signal / noise) if signal > 0 and math.isfinite(noise) else -math.inf)
    return {
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "max_abs_err": float(abs_err.max()),
        "mean_abs_err": float(np.abs(err).mean()) if err.size else 0.0,
        "top1_agreement": float(np.mean(_topk(clean, 1)[:, 0] == top1_ref)),
        "top5_agreement": float(np.mean([top1_ref[i] in top5_act[i] for i in range(len(top1_ref))])),
        "sqnr_db": sqnr,
    }


def compare(reference: np.ndarray, actual: np.ndarray, gates: dict[str, float] | None = None, *,
            gated: np.ndarray | None = None, names: Sequence[str] | None = None, gate_samples: str = "all") -> ParityResult:
    """Compare logits (N, C) of an artifact with the reference's.

    ``gated``: a boolean mask of the samples the metrics and gates are computed on (None = all);
    ``gate_samples`` names that choice for the report. top-1 agreement: the artifact's argmax equals the
    reference's; top-5: the reference's top-1 is within the artifact's top 5 (robust to near-ties below);
    sqnr_db: 10 log10(sum r^2 / sum (r - a)^2) pooled over the gated samples.
    """
    ref = np.asarray(reference, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if ref.shape != act.shape:
        raise ValueError(f"shape mismatch: reference {ref.shape} vs actual {act.shape}")
    ref2 = ref.reshape(ref.shape[0], -1)
    act2 = act.reshape(act.shape[0], -1)
    cos, abs_err, finite = _per_sample(ref2, act2)
    mask = np.ones(len(ref2), dtype=bool) if gated is None else np.asarray(gated, dtype=bool)
    if mask.shape != (len(ref2),) or not mask.any():
        raise ValueError("the gated mask must select at least one of the samples")
    sub = _summary(ref2[mask], act2[mask], cos[mask], abs_err[mask])
    partial = not mask.all()
    res = ParityResult(
        samples=int(mask.sum()), **sub,
        per_sample_cosine=[float(c) for c in cos],
        per_sample_max_abs_err=[float(e) for e in abs_err],
        non_finite=int((~finite).sum()),
        gate_samples=gate_samples if partial else "all",
        gated=[bool(m) for m in mask] if partial else None,
        names=list(names) if names is not None else None,
        all_samples={"samples": int(len(ref2)), **_summary(ref2, act2, cos, abs_err)} if partial else None,
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
    """Set res.gates and res.failures. ``extra`` carries metrics not in the result (accuracy_drop).

    Non-finite outputs fail every gate the arrays decide; a gate with nothing to judge (accuracy_drop
    without an eval set) is skipped, not failed.
    """
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
