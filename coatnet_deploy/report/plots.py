"""The report's plots (matplotlib, Agg): a view Figure -> PNG bytes, or None when there is nothing to draw."""

from __future__ import annotations

import io
import math
from typing import Any

from coatnet_deploy.report.formats import is_num

_TWO_PANELS = {"left": 0.075, "right": 0.985, "top": 0.9, "bottom": 0.19, "wspace": 0.22}
BLUE, ORANGE, RED, GREY, PURPLE, GOLD = "#0969da", "#bc4c00", "#cf222e", "#8c959f", "#8250df", "#d4a72c"


def draw(figure) -> bytes | None:
    """A view.Figure -> PNG bytes from plot_<figure.plot>(**figure.data)."""
    return globals()[f"plot_{figure.plot}"](**figure.data)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _png(fig, margins: dict | None = None) -> bytes:
    """Figure -> PNG bytes, then closed. Fixed margins skip tight_layout's extra draw pass (half the cost)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    try:
        if margins:
            fig.subplots_adjust(**margins)
        else:
            fig.tight_layout()
        fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)
    return buf.getvalue()


def _finite(v: Any) -> float:
    return float(v) if is_num(v) and math.isfinite(float(v)) else math.nan


def _positive_floor(values: list[float]) -> float:
    """A floor for log axes: zeros plot at a tenth of the smallest positive value."""
    pos = [v for v in values if v > 0]
    return min(pos) / 10 if pos else 1e-12


def _log_ticks(axis) -> None:
    """Decade ticks only: minor-tick labels like 2x10^-1 3x10^-1 collide on narrow panels."""
    from matplotlib.ticker import LogFormatterSciNotation, LogLocator, NullLocator

    axis.set_major_locator(LogLocator(base=10, numticks=8))
    axis.set_major_formatter(LogFormatterSciNotation(base=10, labelOnlyBase=True))
    axis.set_minor_locator(NullLocator())


def _gate_line(ax, gate: float | None, vertical: bool = False) -> None:
    if gate and gate > 0:
        (ax.axvline if vertical else ax.axhline)(gate, color=RED, linestyle="--", linewidth=1.2,
                                                 label=f"gate {gate:.2g}")


def _error_panels(cosine: list, max_abs_err: list, gates: dict[str, Any], cos_title: str, err_title: str):
    """(figure, [(axes, values, title, color, gate)]) for the cosine-distance and max-|error| panels, in plot
    units (1 - cosine), or None when neither was recorded."""
    dist = [1.0 - c if not math.isnan(c) else math.nan for c in map(_finite, cosine)]
    err = [_finite(v) for v in max_abs_err]
    if all(math.isnan(v) for v in dist + err):
        return None
    cos_gate = 1.0 - gates["cosine_min"] if is_num(gates.get("cosine_min")) else None
    err_gate = gates.get("max_abs_err") if is_num(gates.get("max_abs_err")) else None
    fig, axes = _plt().subplots(1, 2, figsize=(9.0, 2.8))
    return fig, [(axes[0], dist, cos_title, BLUE, cos_gate), (axes[1], err, err_title, ORANGE, err_gate)]


def plot_stages(names: list[str], cosine_min: list, max_abs_err: list, gates: dict[str, Any]) -> bytes | None:
    panels = _error_panels(cosine_min, max_abs_err, gates, "cosine distance (1 − cosine_min)",
                           "max |error| (logit units)")
    if panels is None:
        return None
    fig, panels = panels
    for ax, vals, title, color, gate in panels:
        finite = [v for v in vals if not math.isnan(v)]
        ax.set_title(title)
        if not finite:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        floor = _positive_floor([max(v, 0.0) for v in finite] + ([gate] if gate else []))
        _gate_line(ax, gate)
        if gate and gate > 0:
            ax.legend(loc="best", fontsize=8, framealpha=0.9)
        heights = [max(v, floor) if not math.isnan(v) else 0 for v in vals]
        ax.bar(names, heights, color=color, width=0.6)
        ax.set_yscale("log")
        ax.set_xlabel("stage")
        for x, v in enumerate(vals):
            if not math.isnan(v):
                ax.annotate(f"{v:.2g}", (x, max(v, floor)), ha="center", va="bottom", fontsize=8,
                            xytext=(0, 2), textcoords="offset points")
        ax.margins(y=0.25)
        _log_ticks(ax.yaxis)
    return _png(fig, _TWO_PANELS)


def _short_sample(name: str, limit: int = 16) -> str:
    name = name.split(":", 1)[1] if name.startswith("image:") else name
    return name if len(name) <= limit else name[: limit - 1] + "…"


def plot_per_sample(cosine: list, max_abs_err: list, names: list, gated: list,
                    gates: dict[str, Any]) -> bytes | None:
    """One marker per golden sample (log scale); samples outside the gated subset are hollow."""
    panels = _error_panels(cosine, max_abs_err, gates, "per-sample cosine distance (1 − cosine)",
                           "per-sample max |error| (logit units)")
    if panels is None:
        return None
    from matplotlib.ticker import MaxNLocator

    fig, panels = panels
    n = max(len(cosine), len(max_abs_err))
    for ax, vals, title, color, gate in panels:
        ax.set_title(title)
        finite = [(i, v) for i, v in enumerate(vals) if not math.isnan(v)]
        if not finite:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        floor = _positive_floor([v for _, v in finite] + ([gate] if gate else []))
        for in_gate, label in ((True, "gated"), (False, "not gated")):
            pts = [(i, max(v, floor)) for i, v in finite if (gated[i] if i < len(gated) else True) is in_gate]
            if pts:
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=22, linewidths=1.2, zorder=3,
                           color=color if in_gate else "none", edgecolors=color,
                           label=label if any(g is False for g in gated) else None)
        _gate_line(ax, gate)
        span = [v for _, v in finite if v > 0] + ([gate] if gate else [])
        # Log scale only when the values span decades; within one decade a log axis has no labels.
        if span and max(span) / min(span) > 30:
            ax.set_yscale("log")
            _log_ticks(ax.yaxis)
        else:
            ax.set_ylim(0, max(span or [1.0]) * 1.3)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.margins(y=0.3)
        if names and n <= 12:
            ax.set_xticks(range(n), [_short_sample(str(s)) for s in names[:n]], rotation=25, ha="right",
                          fontsize=7)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("golden sample")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8, framealpha=0.9)
    margins = dict(_TWO_PANELS, bottom=0.3) if names and n <= 12 else _TWO_PANELS
    return _png(fig, margins)


def plot_latency(series: list[tuple[str, Any]]) -> bytes | None:
    series = [(label, [v for v in map(_finite, s or []) if not math.isnan(v)]) for label, s in series]
    series = [(label, s) for label, s in series if s]
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.0, 0.9 + 0.7 * len(series)))
    bp = ax.boxplot([s for _, s in series], orientation="horizontal", widths=0.5, patch_artist=True, showfliers=True,
                    flierprops={"markersize": 3, "alpha": 0.5},
                    medianprops={"color": "#1f2328", "linewidth": 1.6})
    for patch, color in zip(bp["boxes"], (BLUE, GREY)):
        patch.set_facecolor(color)
        patch.set_alpha(0.6)
    ax.set_yticks(range(1, len(series) + 1), [f"{label}\n(n={len(s)})" for label, s in series])
    ax.set_xlabel("latency per batch (ms)")
    ax.grid(axis="y", visible=False)
    height = fig.get_figheight()
    return _png(fig, {"left": 0.15, "right": 0.98, "top": 1 - 0.15 / height, "bottom": 0.5 / height})


def plot_precision(counts: list[tuple[str, int, int]], low_label: str) -> bytes | None:
    if not counts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.0, 0.8 + 0.28 * len(counts)))
    ops = [c[0] for c in counts][::-1]
    q = [c[1] for c in counts][::-1]
    f = [c[2] for c in counts][::-1]
    ax.barh(ops, q, color=BLUE, label=low_label)
    ax.barh(ops, f, left=q, color=GOLD, label="float")
    ax.set_xlabel("nodes")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(axis="y", visible=False)
    return _png(fig)


def _short_node(name: str, limit: int = 48) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


def plot_sensitivity(entries: list[tuple[str, str, float]]) -> bytes | None:
    """entries: (node, op type, SQNR dB), worst first."""
    if not entries:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.0, 0.8 + 0.26 * len(entries)))
    labels = [f"{_short_node(node)}  [{op}]" for node, op, _ in entries][::-1]
    ax.barh(labels, [sqnr for _, _, sqnr in entries][::-1], color=PURPLE)
    ax.set_xlabel("SQNR (dB, higher = less quantization noise)")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", visible=False)
    return _png(fig)
