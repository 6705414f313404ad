"""report.html: one self-contained page (inline CSS, plots as base64 PNG), readable without the tool.

Numbers sit in elements carrying data-key (a dotted path into report.json, list items by index;
'manifest.' paths point into manifest.json, '.length' means a list's length) and data-value
(repr of the exact value), so tests and scripts can read them back; the visible text is
report_md.fmt_num of the same value.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

from coatnet_deploy.report_md import (
    engine_rows,
    int8_candidate_rows,
    LATENCY_COLUMNS,
    STAGE_COLUMNS,
    input_text,
    is_num,
    stage_value,
    artifacts,
    environment_rows,
    fmt_bytes,
    accuracy_unit,
    fmt_num,
    gate_rows,
    latency_warnings,
    node_name,
    node_op_type,
    node_reason,
    op_type_counts,
    per_class_rows,
    sensitivity_ranked,
    short_sha,
    speedup,
    stage_artifact,
)

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1f2328;
 margin:0;background:#f6f8fa;font-size:14px;line-height:1.45}
main{max-width:1080px;margin:0 auto;padding:24px 28px 48px;background:#fff;min-height:100vh}
h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;padding-bottom:4px;border-bottom:1px solid #d0d7de}
p.note,p.muted{color:#59636e;margin:4px 0 8px}
.banner{padding:12px 16px;border-radius:6px;font-weight:600;font-size:18px;margin:12px 0 8px;color:#fff}
.banner.passed{background:#1a7f37}.banner.failed{background:#cf222e}.banner.unknown{background:#6e7781}
.banner small{font-weight:400;font-size:14px;opacity:.95;margin-left:10px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:8px 0}
dl.facts dt{color:#59636e}dl.facts dd{margin:0}
.tablewrap{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #d0d7de;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f6f8fa;font-weight:600;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.mono,code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
td.mono{word-break:break-all;max-width:520px}
tr.fail td{background:#ffebe9}
p.warn{color:#9a6700;margin:4px 0}
.pass{color:#1a7f37;font-weight:600}.fail{color:#cf222e;font-weight:600}
figure{margin:8px 0 14px}figure img{max-width:100%;height:auto;display:block}
figcaption{color:#59636e;font-size:12px;margin-top:2px}
details{margin:6px 0}summary{cursor:pointer;color:#0969da}
ul.nodes{columns:2;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;margin:4px 0}
"""


# ---------------------------------------------------------------- small html helpers


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _num(key: str | None, value: Any, tag: str = "td", sig: int | None = None, cls: str = "num") -> str:
    """A number cell: visible fmt_num text, plus data-key/data-value for machines."""
    text = fmt_num(value) if sig is None else fmt_num(value, sig)
    attrs = f' class="{cls}"' if cls else ""
    if key is not None and value is not None and not isinstance(value, bool):
        attrs += f' data-key="{_e(key)}" data-value="{_e(repr(value))}"'
    return f"<{tag}{attrs}>{_e(text)}</{tag}>"


def _td(text: Any, cls: str = "") -> str:
    return f'<td class="{cls}">{_e(text)}</td>' if cls else f"<td>{_e(text)}</td>"


def _table(headers: list[str], rows: list[str], num_cols: set[int] | None = None) -> str:
    num_cols = num_cols or set()
    head = "".join(f'<th class="num">{_e(h)}</th>' if i in num_cols else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    return f'<div class="tablewrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'


def _figure(png: bytes | None, caption: str, alt: str) -> str:
    if not png:
        return ""
    b64 = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{_e(alt)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


# ---------------------------------------------------------------- plots


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


_TWO_PANELS = {"left": 0.075, "right": 0.985, "top": 0.9, "bottom": 0.19, "wspace": 0.22}


def _floats(values: Any) -> list[float]:
    return [float(v) for v in values or [] if is_num(v) and math.isfinite(float(v))]


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


def _plot_stages(stages: list[dict], gates: dict[str, Any]) -> bytes | None:
    names = [str(s.get("stage", i)) for i, s in enumerate(stages)]
    dist = [1.0 - float(c) if is_num(c) else math.nan for c in (s.get("cosine_min") for s in stages)]
    err = [float(v) if is_num(v) else math.nan for v in (s.get("max_abs_err") for s in stages)]
    if all(math.isnan(v) for v in dist + err):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 2.8))
    cos_gate = 1.0 - gates["cosine_min"] if is_num(gates.get("cosine_min")) else None
    err_gate = gates.get("max_abs_err") if is_num(gates.get("max_abs_err")) else None
    for ax, vals, title, color, gate in (
        (axes[0], dist, "cosine distance (1 − cosine_min)", "#0969da", cos_gate),
        (axes[1], err, "max |error| (logit units)", "#bc4c00", err_gate),
    ):
        finite = [v for v in vals if not math.isnan(v)]
        floor = _positive_floor([max(v, 0.0) for v in finite] + ([gate] if gate else []))
        if gate and gate > 0:
            ax.axhline(gate, color="#cf222e", linestyle="--", linewidth=1.2, label=f"gate {gate:.2g}")
            ax.legend(loc="best", fontsize=8, framealpha=0.9)
        heights = [max(v, floor) if not math.isnan(v) else 0 for v in vals]
        ax.bar(names, heights, color=color, width=0.6)
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("stage")
        for x, v in enumerate(vals):
            if not math.isnan(v):
                ax.annotate(f"{v:.2g}", (x, max(v, floor)), ha="center", va="bottom", fontsize=8,
                            xytext=(0, 2), textcoords="offset points")
        ax.margins(y=0.25)
        _log_ticks(ax.yaxis)
    return _png(fig, _TWO_PANELS)


def _plot_per_sample(per_sample: dict, gates: dict[str, Any]) -> bytes | None:
    cos = _floats(per_sample.get("cosine"))
    err = _floats(per_sample.get("max_abs_err"))
    if not cos and not err:
        return None
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 2.8))
    panels = (
        (axes[0], [max(1.0 - c, 0.0) for c in cos], "per-sample cosine distance (1 − cosine)", "#0969da",
         1.0 - gates["cosine_min"] if is_num(gates.get("cosine_min")) else None),
        (axes[1], err, "per-sample max |error| (logit units)", "#bc4c00",
         gates.get("max_abs_err") if is_num(gates.get("max_abs_err")) else None),
    )
    for ax, vals, title, color, gate in panels:
        ax.set_title(title)
        ax.set_ylabel("samples")
        if not vals:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        floor = _positive_floor(vals + ([gate] if gate else []))
        clipped = [max(v, floor) for v in vals]
        lo, hi = min(clipped + ([gate] if gate else [])), max(clipped + ([gate] if gate else []))
        if hi <= lo:
            hi = lo * 10
        # Log bins only when the values span decades; within one decade a log axis has no labels.
        if hi / lo > 30:
            ax.hist(clipped, bins=np.logspace(math.log10(lo) - 0.05, math.log10(hi) + 0.05, 25),
                    color=color, alpha=0.85)
            ax.set_xscale("log")
            _log_ticks(ax.xaxis)
        else:
            ax.hist(vals, bins=25, range=(0.0, hi * 1.05), color=color, alpha=0.85)
            ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 3))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)  # headroom so the gate legend sits above the bars
        if gate and gate > 0:
            ax.axvline(gate, color="#cf222e", linestyle="--", linewidth=1.2, label=f"gate {gate:.2g}")
            ax.legend(loc="best", fontsize=8, framealpha=0.9)
    return _png(fig, _TWO_PANELS)


def _plot_latency(lat: dict | None, ref: dict | None) -> bytes | None:
    series = [(label, _floats(d.get("samples_ms"))) for label, d in (("engine", lat), ("PyTorch reference", ref)) if d]
    series = [(label, s) for label, s in series if s]
    if not series:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.0, 0.9 + 0.7 * len(series)))
    bp = ax.boxplot([s for _, s in series], orientation="horizontal", widths=0.5, patch_artist=True, showfliers=True,
                    flierprops={"markersize": 3, "alpha": 0.5},
                    medianprops={"color": "#1f2328", "linewidth": 1.6})
    for patch, color in zip(bp["boxes"], ("#0969da", "#8c959f")):
        patch.set_facecolor(color)
        patch.set_alpha(0.6)
    ax.set_yticks(range(1, len(series) + 1), [f"{label}\n(n={len(s)})" for label, s in series])
    ax.set_xlabel("latency per batch (ms)")
    ax.grid(axis="y", visible=False)
    height = fig.get_figheight()
    return _png(fig, {"left": 0.15, "right": 0.98, "top": 1 - 0.15 / height, "bottom": 0.5 / height})


def _plot_precision(counts: list[tuple[str, int, int]], low_label: str) -> bytes | None:
    if not counts:
        return None
    counts = counts[:15]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.0, 0.8 + 0.28 * len(counts)))
    ops = [c[0] for c in counts][::-1]
    q = [c[1] for c in counts][::-1]
    f = [c[2] for c in counts][::-1]
    ax.barh(ops, q, color="#0969da", label=low_label)
    ax.barh(ops, f, left=q, color="#d4a72c", label="float")
    ax.set_xlabel("nodes")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    ax.grid(axis="y", visible=False)
    return _png(fig)


def _plot_sensitivity(ranked: list[dict]) -> bytes | None:
    worst = [e for e in ranked if is_num(e.get("sqnr_db"))][:20]
    if not worst:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9.0, 0.8 + 0.26 * len(worst)))
    labels = [_short_node(str(e.get("node", "?"))) + f"  [{e.get('op_type', '?')}]" for e in worst][::-1]
    ax.barh(labels, [float(e["sqnr_db"]) for e in worst][::-1], color="#8250df")
    ax.set_xlabel("SQNR (dB, higher = less quantization noise)")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", visible=False)
    return _png(fig)


def _short_node(name: str, limit: int = 48) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1):]


# ---------------------------------------------------------------- sections


def _header(report: dict, manifest: dict) -> str:
    model = manifest.get("model") or {}
    status = str(report.get("status", "UNKNOWN")).upper()
    cls = {"PASSED": "passed", "FAILED": "failed"}.get(status, "unknown")
    rows = gate_rows(report)
    failed = [r.name for r in rows if r.passed is False]
    detail = ("gate(s) failed: " + ", ".join(failed)) if failed else (
        f"all {len(rows)} parity gates passed" if rows and status == "PASSED" else "")
    ref = report.get("reference") or {}
    facts = [
        ("model", model.get("name")),
        ("target", report.get("target")),
        ("precision", report.get("precision")),
        ("reference", " / ".join(str(ref.get(k)) for k in ("framework", "device", "dtype") if ref.get(k))),
        ("classes", model.get("num_classes")),
        ("input", input_text(manifest)),
        ("created", manifest.get("created")),
        ("note", report.get("reference_note")),
    ]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts if v not in (None, ""))
    title = f"{model.get('name', 'model')} → {report.get('target', '?')} / {report.get('precision', '?')}"
    return (f"<h1>{_e(title)}</h1>"
            f'<div class="banner {cls}"><span id="status" data-key="status" data-value="{_e(status)}">{_e(status)}</span>'
            f"{f'<small>{_e(detail)}</small>' if detail else ''}</div>"
            f'<dl class="facts">{dl}</dl>')


def _gates(report: dict) -> str:
    parity = report.get("parity") or {}
    rows = gate_rows(report)
    out = ['<section id="gates"><h2>Parity gates</h2>']
    if not rows:
        return out[0] + '<p class="muted">No gates recorded.</p></section>'
    failed = any(r.passed is False for r in rows)
    body = []
    for r in rows:
        result = "—" if r.passed is None else ("pass" if r.passed else "FAIL")
        rcls = "" if r.passed is None else ("pass" if r.passed else "fail")
        op = {">=": "≥", "<=": "≤"}.get(r.op, r.op)
        cells = (_td(r.name) + f'<td class="num">{_e(op)} ' + _num(r.threshold_key, r.threshold, "span", cls="")
                 + "</td>" + _num(r.measured_key, r.measured) + f'<td class="{rcls}">{_e(result)}</td>')
        if failed:
            cells += _num(r.min_passing_key, r.min_passing) if r.passed is False else "<td></td>"
        body.append(f'<tr class="{"fail" if r.passed is False else ""}">{cells}</tr>')
    headers = ["gate", "threshold", "measured", "result"] + (["smallest passing tolerance"] if failed else [])
    out.append(_table(headers, body, {1, 2, 4}))
    if "samples" in parity:
        out.append(f'<p class="muted">Measured over {_num("parity.samples", parity.get("samples"), "span", cls="")}'
                   " golden samples against the PyTorch reference.</p>")
    out.append("</section>")
    return "".join(out)


def _gate_thresholds(report: dict) -> dict[str, Any]:
    return {r.name: r.threshold for r in gate_rows(report)}


def _stages(report: dict) -> str:
    stages = report.get("stages") or []
    parity = report.get("parity") or {}
    out = ['<section id="drift"><h2>Drift by stage</h2>']
    if stages:
        out.append('<p class="note">Each stage is compared with the PyTorch reference on the golden inputs; '
                   "the first stage where the numbers jump is the one that moved the logits.</p>")
        body = []
        for i, s in enumerate(stages):
            cells = _td(s.get("stage", "?")) + _td(stage_artifact(s), "mono")
            for k, _ in STAGE_COLUMNS:
                key = k if k in s else k.replace("_agreement", "")
                cells += _num(f"stages.{i}.{key}", stage_value(s, k))
            body.append(f"<tr>{cells}</tr>")
        out.append(_table(["stage", "artifact"] + [t for _, t in STAGE_COLUMNS], body, set(range(2, 7))))
        out.append(_figure(_plot_stages(stages, _gate_thresholds(report)),
                           "Per-stage drift against the reference (log scale; lower is closer; "
                           "dashed red line = gate).", "per-stage drift"))
    else:
        out.append('<p class="muted">No per-stage results recorded.</p>')
    per_sample = parity.get("per_sample") or {}
    if per_sample:
        out.append(_figure(_plot_per_sample(per_sample, _gate_thresholds(report)),
                           "Distribution over golden samples of the final engine's error; "
                           "dashed red line = gate.", "per-sample error distribution"))
    out.append("</section>")
    return "".join(out)


def _latency(report: dict) -> str:
    lat, ref = report.get("latency"), report.get("reference_latency")
    out = ['<section id="latency"><h2>Latency</h2>']
    if not lat and not ref:
        return out[0] + '<p class="muted">Not measured (bench iterations = 0).</p></section>'
    body = []
    for label, name, d in (("engine", "latency", lat), ("reference (PyTorch)", "reference_latency", ref)):
        if d:
            cells = _td(label) + _num(f"{name}.batch", d.get("batch"))
            cells += "".join(_num(f"{name}.{k}", d.get(k)) for k, _ in LATENCY_COLUMNS)
            body.append(f"<tr>{cells}</tr>")
    out.append(_table(["runner", "batch"] + [t for _, t in LATENCY_COLUMNS], body, set(range(1, 7))))
    sp = speedup(ref, lat)
    if sp is not None:
        out.append(f'<p>Speed-up at p50: <strong id="speedup" data-value="{_e(repr(sp))}">{_e(fmt_num(sp, 3))}×</strong>'
                   " (reference p50 / engine p50).</p>")
    elif lat and not ref:
        out.append('<p class="muted">Reference latency not measured; no speed-up to report.</p>')
    base = lat or ref
    extra = [f"{k} {fmt_num(base.get(k))}" for k in ("warmup", "iterations", "threads") if base.get(k) is not None]
    if extra:
        out.append(f'<p class="muted">Harness: {_e(", ".join(extra))}.</p>')
    for warning in latency_warnings(report):
        out.append(f'<p class="warn">⚠ {_e(warning)}</p>')
    out.append(_figure(_plot_latency(lat, ref), "Latency per batch over all timed iterations (box = p25–p75, "
                       "line = median, whiskers = 1.5 IQR).", "latency box plot"))
    out.append("</section>")
    return "".join(out)


def _precision(report: dict) -> str:
    plan = report.get("precision_plan")
    if not plan:
        return ""
    quant = plan.get("quantized_nodes") or []
    flt = plan.get("float_nodes") or []
    excluded = plan.get("excluded") or []
    prec = str(report.get("precision") or "low precision").upper()
    def count(field: str, n: int) -> str:
        return f'<strong data-key="precision_plan.{field}.length" data-value="{n}">{n}</strong>'

    float_names = {node_name(n) for n in flt}
    inside = bool(excluded) and all(node_name(n) in float_names for n in excluded)
    out = ['<section id="precision"><h2>Precision plan</h2>',
           f"<p>{count('quantized_nodes', len(quant))} nodes in {_e(prec)}, {count('float_nodes', len(flt))} kept in float"
           + (f" ({count('excluded', len(excluded))} of them excluded by rule although quantizable).</p>" if inside
              else f", {count('excluded', len(excluded))} excluded by rule.</p>")]
    counts = op_type_counts(report)
    if counts:
        out.append(_figure(_plot_precision(counts, prec), f"Nodes by op type: {prec} vs kept in float"
                           + (" (15 most common op types)." if len(counts) > 15 else "."), "precision plan by op type"))
        body = [f"<tr>{_td(op, 'mono')}<td class=\"num\">{q}</td><td class=\"num\">{f}</td></tr>" for op, q, f in counts]
        out.append(f"<details><summary>Counts by op type ({len(counts)} op types)</summary>"
                   f"{_table(['op type', prec, 'float'], body, {1, 2})}</details>")
    for title, nodes in ((f"{prec} nodes", quant), ("float nodes", flt), ("excluded (kept in float)", excluded)):
        if not nodes:
            continue
        items = []
        for node in nodes:
            reason = node_reason(node, plan)
            text = f"{node_name(node)} [{node_op_type(node, plan.get('op_types'))}]" + (f" — {reason}" if reason else "")
            items.append(f"<li>{_e(text)}</li>")
        # The excluded list is short and is the decision a reviewer checks first: shown open.
        opened = " open" if nodes is excluded else ""
        out.append(f"<details{opened}><summary>{_e(title)} ({len(nodes)})</summary>"
                   f"<ul class=\"nodes\">{''.join(items)}</ul></details>")
    out.append("</section>")
    return "".join(out)


def _sensitivity(report: dict) -> str:
    ranked = sensitivity_ranked(report)
    if not ranked:
        return ""
    original = report.get("sensitivity") or []
    out = ['<section id="sensitivity"><h2>Quantization sensitivity</h2>',
           '<p class="note">Per-node signal-to-quantization-noise ratio; the lowest SQNR nodes are the first '
           "candidates to keep in float.</p>",
           _figure(_plot_sensitivity(ranked), f"Worst {min(20, len(ranked))} nodes by SQNR (dB).", "sensitivity ranking")]
    suggested = report.get("sensitivity_suggested_exclusions") or []
    if suggested:
        items = "".join(f"<li>{_e(node_name(n))}</li>" for n in suggested)
        out.append(f"<p>Suggested to keep in float ({len(suggested)}):</p><ul class=\"nodes\">{items}</ul>")
    with_out = any("output_sqnr_db" in e for e in ranked)
    body = []
    for rank, e in enumerate(ranked[:20], 1):
        idx = next(i for i, o in enumerate(original) if o is e)
        row = (f"<tr><td class=\"num\">{rank}</td>{_td(e.get('node', '?'), 'mono')}{_td(e.get('op_type', '?'))}"
               f"{_num(f'sensitivity.{idx}.sqnr_db', e.get('sqnr_db'))}")
        if with_out:
            row += _num(f"sensitivity.{idx}.output_sqnr_db", e.get("output_sqnr_db"))
        body.append(row + "</tr>")
    headers = ["rank", "node", "op type", "SQNR (dB)"] + (["output SQNR (dB)"] if with_out else [])
    out.append(f"<details><summary>Ranking table (worst {len(body)} of {len(ranked)})</summary>"
               f"{_table(headers, body, {0, 3, 4})}</details></section>")
    return "".join(out)


def _accuracy(report: dict) -> str:
    acc = report.get("accuracy")
    if not acc:
        return ""
    unit = accuracy_unit(acc)
    body = [f"<tr>{_td('reference (PyTorch)')}{_num('accuracy.reference_top1', acc.get('reference_top1'))}"
            f"{_num('accuracy.reference_top5', acc.get('reference_top5'))}</tr>",
            f"<tr>{_td('engine')}{_num('accuracy.engine_top1', acc.get('engine_top1'))}"
            f"{_num('accuracy.engine_top5', acc.get('engine_top5'))}</tr>"]
    suffix = " (%)" if unit else ""
    out = ['<section id="accuracy"><h2>Accuracy</h2>']
    if acc.get("images") is not None:
        out.append(f"<p>Evaluated on {_num('accuracy.images', acc.get('images'), 'span', cls='')} labelled images.</p>")
    out += [_table(["", f"top-1{suffix}", f"top-5{suffix}"], body, {1, 2}),
            f"<p>Top-1 drop: <strong>{_num('accuracy.drop_top1', acc.get('drop_top1'), 'span', cls='')}</strong>"
            + (" percentage points" if unit else " (fraction of images)") + "</p>"]
    rows = per_class_rows(acc)
    if rows:
        worst = sorted(rows, key=lambda r: r[1] if is_num(r[1]) else math.inf)
        with_n = any(n is not None for _, _, n in worst)
        body = [f"<tr>{_td(c)}<td class=\"num\">{_e(fmt_num(a))}</td>"
                + (f"<td class=\"num\">{_e(fmt_num(n))}</td>" if with_n else "") + "</tr>" for c, a, n in worst]
        headers = ["class", "agreement"] + (["images"] if with_n else [])
        out.append(f"<details><summary>Per-class agreement, engine vs reference ({len(rows)} classes, lowest first)"
                   f"</summary>{_table(headers, body, {1, 2})}</details>")
    out.append("</section>")
    return "".join(out)


def _engine(report: dict, manifest: dict) -> str:
    rows = engine_rows(manifest)
    if not rows:
        return ""
    body = [f"<tr>{_td(k)}{_td(v, 'mono')}</tr>" for k, v in rows]
    out = f'<section id="engine"><h2>Engine</h2>{_table(["", "value"], body)}'
    cands = int8_candidate_rows(report)
    if cands:
        chosen = (manifest.get("engine") or {}).get("int8_method")
        crow = [f"<tr>{_td(m)}{_num(f'openvino_int8_candidates.{m}.cosine_min', c.get('cosine_min'))}"
                f"{_num(f'openvino_int8_candidates.{m}.max_abs_err', c.get('max_abs_err'))}"
                f"{_num(f'openvino_int8_candidates.{m}.top1_agreement', c.get('top1_agreement'))}"
                f"{_td('pass' if c.get('passed') else 'fail')}{_td('kept' if m == chosen else '')}</tr>" for m, c in cands]
        out += ("<p>OpenVINO INT8 was built two ways; the one closer to the reference is kept.</p>"
                + _table(["method", "cosine_min", "max_abs_err", "top1", "gates", ""], crow, {1, 2, 3}))
    return out + "</section>"


def _environment(report: dict, manifest: dict) -> str:
    rows = environment_rows(report, manifest)
    if not rows:
        return ""
    body = [f"<tr>{_td(k)}{_td(v, 'mono')}</tr>" for k, v in rows]
    return f'<section id="environment"><h2>Environment</h2>{_table(["", "value"], body)}</section>'


def _artifacts(report: dict, manifest: dict) -> str:
    arts = artifacts(report, manifest)
    if not arts:
        return ('<section id="artifacts"><h2>Artifacts</h2>'
                '<p class="muted">File list and sha256 checksums: manifest.json.</p></section>')
    body = []
    for i, a in enumerate(arts):
        size = a.get("bytes")
        size_cell = (f'<td class="num" data-key="manifest.artifacts.{i}.bytes" data-value="{_e(repr(size))}" '
                     f'title="{_e(size)} bytes">{_e(fmt_bytes(size))}</td>') if size is not None else "<td>—</td>"
        body.append(f"<tr>{_td(a.get('path', '?'), 'mono')}"
                    f'<td class="mono" title="{_e(a.get("sha256", ""))}">{_e(short_sha(a.get("sha256")))}</td>'
                    f"{size_cell}</tr>")
    return (f'<section id="artifacts"><h2>Artifacts</h2>{_table(["file", "sha256 (first 12)", "size"], body, {2})}'
            '<p class="muted">Full checksums are in manifest.json (hover a hash to see it).</p></section>')


def render_html(report: dict, manifest: dict) -> str:
    """report.json dict + manifest.json dict -> a self-contained report.html string."""
    manifest = manifest or {}
    model = (manifest.get("model") or {}).get("name", "model")
    title = f"{model} {report.get('target', '')} {report.get('precision', '')} — {report.get('status', '')}"
    parts = [
        _header(report, manifest), _gates(report), _stages(report), _latency(report), _precision(report),
        _sensitivity(report), _accuracy(report), _engine(report, manifest), _environment(report, manifest),
        _artifacts(report, manifest),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(p for p in parts if p)}</main></body></html>\n")
