"""Numbers as people read them in both reports (the exact values stay in report.json and data-value)."""

from __future__ import annotations

import math
from typing import Any

# A cosine this close to 1 is unreadable as a decimal (0.9999999999999204): show its distance from 1.
COSINE_DISTANCE_BELOW = 1e-3


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fmt_num(value: Any, sig: int = 4) -> str:
    """Any report value -> short text: `sig` significant digits, '—' for missing, ∞ spelled out."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if value == 0.0:
            return "0"
        if abs(value) >= 10 ** sig:
            return f"{value:.0f}"  # 12345 img/s, never 1.234e+04
        return f"{value:.{sig}g}"
    return str(value)


def fmt_pct(fraction: Any) -> str:
    """A fraction (agreement, share) -> '96.9%'; never rounds a value short of 100% up to '100%'."""
    if not is_num(fraction) or not math.isfinite(fraction):
        return fmt_num(fraction)
    if fraction in (0, 1):
        return f"{int(fraction) * 100}%"
    pct, digits = 100.0 * fraction, 1
    while digits < 6 and (round(pct, digits) >= 100.0 or round(pct, digits) <= 0.0):
        digits += 1
    if abs(pct - round(pct)) < 1e-9:  # 0.9 -> 90%, not 90.0%
        return f"{round(pct)}%"
    return f"{pct:.{digits}f}%"


def fmt_cosine(value: Any) -> str:
    """A cosine similarity -> '1 - cos = 8e-14' near 1, '0.9876' further away."""
    if not is_num(value) or not math.isfinite(value):
        return fmt_num(value)
    if value == 1:
        return "1"
    if abs(1.0 - value) < COSINE_DISTANCE_BELOW:
        return f"1 - cos = {1.0 - value:.2g}"
    return f"{value:.4f}"


def metric_kind(name: str) -> str:
    """A metric name -> how its numbers read: 'cosine', 'share' (fractions as %), or 'num'."""
    if name.startswith("cosine"):
        return "cosine"
    if "agreement" in name or name == "share" or name.endswith("_share"):
        return "share"
    return "num"


def fmt_metric(name: str, value: Any) -> str:
    """A metric's value, formatted by the metric's kind (see metric_kind)."""
    kind = metric_kind(name)
    if kind == "cosine":
        return fmt_cosine(value)
    if kind == "share":
        return fmt_pct(value)
    if name == "passed" and isinstance(value, bool):
        return "pass" if value else "FAIL"
    if name == "accuracy_drop":
        return fmt_num(value, 3)  # as the accuracy section prints it
    return fmt_num(value)


def fmt_threshold(name: str, value: Any) -> str:
    """A gate threshold as the user wrote it (0.99999, 0.0001), shares as %."""
    if metric_kind(name) == "share":
        return fmt_pct(value)
    if isinstance(value, float) and math.isfinite(value):
        text = repr(value)
        if len(text) <= 10:
            return text[:-2] if text.endswith(".0") else text
    return fmt_metric(name, value)


def fmt_bytes(n: Any) -> str:
    """Byte count -> '1.2 MiB' style text."""
    if not is_num(n):
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def short_sha(sha: Any) -> str:
    return str(sha)[:12] if sha else "—"
