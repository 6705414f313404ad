"""report.json + manifest.json -> the report as data (blocks.py): the ONE place that decides what each
section shows. Both templates (Markdown, HTML) only lay out what build_view returns, so the two
reports cannot disagree."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from coatnet_deploy.report.blocks import (
    Block,
    Cell,
    Figure,
    ItemList,
    Paragraph,
    ReportView,
    Section,
    Table,
    code,
    metric,
    num,
    para,
    sub_key,
    text,
)
from coatnet_deploy.report.formats import fmt_bytes, fmt_metric, fmt_num, fmt_threshold, is_num, short_sha


# ---------------------------------------------------------------- parity gates


@dataclass
class GateRow:
    name: str
    op: str  # ">=" or "<="
    threshold: Any
    measured: Any
    passed: bool | None
    min_passing: Any
    threshold_key: str | None
    measured_key: str | None
    min_passing_key: str | None


def lower_is_better(name: str) -> bool:
    """Gate direction: *_err and accuracy_drop pass below their threshold, every other metric above."""
    return name.endswith("_err") or name == "accuracy_drop"


def gate_rows(report: dict) -> list[GateRow]:
    """parity.gates (name -> threshold, name -> {threshold, measured, passed}, or a list) -> rows."""
    parity = report.get("parity") or {}
    gates = parity.get("gates") or {}
    min_passing = parity.get("min_passing") or {}
    if isinstance(gates, dict):
        items = [(str(name), spec, f"parity.gates.{name}") for name, spec in gates.items()]
    else:
        items = [(str(spec.get("name") or spec.get("gate")), spec, f"parity.gates.{i}")
                 for i, spec in enumerate(gates) if isinstance(spec, dict)]
    rows = []
    for name, spec, key in items:
        default_op = "<=" if lower_is_better(name) else ">="
        if isinstance(spec, dict):
            field_ = next((k for k in ("threshold", "value", "limit") if k in spec), None)
            threshold = spec.get(field_) if field_ else None
            threshold_key = f"{key}.{field_}" if field_ else None
            if "measured" in spec:
                measured, measured_key = spec["measured"], f"{key}.measured"
            else:
                measured, measured_key = _measured(report, name)
            passed = spec.get("passed", _recorded_pass(parity, name))
            op = spec.get("op") or default_op
        else:
            threshold, threshold_key = spec, key
            measured, measured_key = _measured(report, name)
            passed, op = _recorded_pass(parity, name), default_op
        if passed is None and is_num(measured) and is_num(threshold):
            passed = measured <= threshold if op in ("<=", "<") else measured >= threshold
        mp = min_passing.get(name)
        rows.append(GateRow(name, op, threshold, measured, passed, mp,
                            threshold_key if threshold is not None else None,
                            measured_key if measured is not None else None,
                            f"parity.min_passing.{name}" if mp is not None else None))
    return rows


def _measured(report: dict, name: str) -> tuple[Any, str]:
    """A gate's measured value and its report path (accuracy_drop lives under accuracy)."""
    parity = report.get("parity") or {}
    if name not in parity and name == "accuracy_drop":
        return (report.get("accuracy") or {}).get("drop_top1"), "accuracy.drop_top1"
    return parity.get(name), f"parity.{name}"


def _recorded_pass(parity: dict, name: str) -> bool | None:
    """What compare.py decided, when the report says: failed_gates lists the failures."""
    if "failed_gates" in parity:
        return name not in parity["failed_gates"]
    if parity.get("passed") is True:
        return True
    return None


# Parity metrics in the order the tables show them, with their column titles.
PARITY_COLUMNS = [
    ("cosine_min", "cosine_min"),
    ("cosine_mean", "cosine_mean"),
    ("max_abs_err", "max_abs_err"),
    ("mean_abs_err", "mean_abs_err"),
    ("top1_agreement", "top-1"),
    ("top5_agreement", "top-5"),
    ("sqnr_db", "SQNR (dB)"),
]
STAGE_COLUMNS = [c for c in PARITY_COLUMNS if c[0] not in ("cosine_mean", "sqnr_db")]
OPS = {">=": "≥", "<=": "≤"}


def _gates_section(report: dict) -> Section:
    parity = report.get("parity") or {}
    rows = gate_rows(report)
    sec = Section("gates", "Parity gates")
    if not rows:
        sec.blocks.append(para("No gates recorded."))
        return sec
    failed = any(r.passed is False for r in rows)
    body = []
    for r in rows:
        op = OPS.get(r.op, r.op)
        result = text("—") if r.passed is None else (Cell("pass", style="pass") if r.passed
                                                      else Cell("FAIL", style="fail"))
        cells = [text(r.name), num(r.threshold_key, r.threshold, f"{op} {fmt_threshold(r.name, r.threshold)}"),
                 metric(r.measured_key, r.name, r.measured), result]
        if failed:
            cells.append(metric(r.min_passing_key, r.name, r.min_passing) if r.passed is False else text(""))
        body.append(cells)
    headers = ["gate", "threshold", "measured", "result"] + (["smallest passing tolerance"] if failed else [])
    sec.blocks.append(Table(headers, body))
    if "samples" in parity:
        sec.blocks.append(_samples_paragraph(parity))
    all_samples = parity.get("all_samples")
    if isinstance(all_samples, dict) and all_samples:
        sec.blocks.append(_gated_vs_all(parity, all_samples))
    return sec


def _samples_paragraph(parity: dict) -> Paragraph:
    count = num("parity.samples", parity.get("samples"))
    per_sample = parity.get("per_sample") or {}
    total = len(per_sample.get("cosine") or []) or (parity.get("all_samples") or {}).get("samples")
    subset = parity.get("gate_samples")
    if subset and subset != "all" and is_num(total) and total != parity.get("samples"):
        return para("Gated on ", count, f" of {total} golden samples (gate_samples: {subset}), "
                    "against the PyTorch reference.")
    return para("Measured over ", count, " golden samples against the PyTorch reference.")


def _gated_vs_all(parity: dict, all_samples: dict) -> Table:
    cols = [(k, t) for k, t in [("samples", "samples")] + PARITY_COLUMNS if k in all_samples or k in parity]
    rows = []
    for label, data, prefix in (("gated", parity, "parity"), ("all samples (not gating)", all_samples,
                                                               "parity.all_samples")):
        rows.append([text(label)] + [metric(f"{prefix}.{k}", k, data.get(k)) for k, _ in cols])
    return Table([""] + [t for _, t in cols], rows)


# ---------------------------------------------------------------- drift by stage


def stage_artifact(stage: dict) -> str:
    """'model.onnx (<runtime>)': the file a stage ran and the runtime that ran it."""
    art, runtime = stage.get("artifact") or "—", stage.get("runtime")
    return f"{art} ({runtime})" if runtime and str(runtime) != str(art) else str(art)


def _stage_key(stage: dict, key: str) -> str:
    """Stage parity key, accepting the short names (top1/top5) that older reports used."""
    return key if key in stage or key.replace("_agreement", "") not in stage else key.replace("_agreement", "")


def _gate_thresholds(report: dict) -> dict[str, Any]:
    return {r.name: r.threshold for r in gate_rows(report) if is_num(r.threshold)}


def _drift_section(report: dict) -> Section:
    stages = [s for s in report.get("stages") or [] if isinstance(s, dict)]
    parity = report.get("parity") or {}
    gates = _gate_thresholds(report)
    sec = Section("drift", "Drift by stage")
    if stages:
        sec.blocks.append(para("Each stage is compared with the PyTorch reference on the golden inputs; "
                               "the first stage where the numbers jump is the one that moved the logits.",
                               style="note"))
        rows = []
        for i, s in enumerate(stages):
            cells = [text(s.get("stage", "?")), code(stage_artifact(s))]
            for k, _ in STAGE_COLUMNS:
                sk = _stage_key(s, k)
                cells.append(metric(f"stages.{i}.{sk}", k, s.get(sk)))
            rows.append(cells)
        sec.blocks.append(Table(["stage", "artifact"] + [t for _, t in STAGE_COLUMNS], rows))
        sec.blocks.append(Figure(
            "stages", {"names": [str(s.get("stage", i)) for i, s in enumerate(stages)],
                       "cosine_min": [s.get("cosine_min") for s in stages],
                       "max_abs_err": [s.get("max_abs_err") for s in stages], "gates": gates},
            "Per-stage drift against the reference (log scale; lower is closer; dashed red line = gate).",
            "per-stage drift"))
    else:
        sec.blocks.append(para("No per-stage results recorded."))
    per_sample = parity.get("per_sample") or {}
    if per_sample:
        sec.blocks += _per_sample_blocks(per_sample, gates)
    return sec


def _per_sample_blocks(per_sample: dict, gates: dict[str, Any]) -> list[Block]:
    cos, err = list(per_sample.get("cosine") or []), list(per_sample.get("max_abs_err") or [])
    n = max(len(cos), len(err))
    names = list(per_sample.get("names") or [])
    gated = list(per_sample.get("gated") or [])
    some_ungated = any(g is False for g in gated)
    caption = "Error of the final engine on each golden sample; dashed red line = gate."
    if some_ungated:
        caption += " Hollow markers: samples outside the gated subset (shown, not gating)."
    blocks: list[Block] = [Figure("per_sample", {"cosine": cos, "max_abs_err": err, "names": names,
                                                 "gated": gated, "gates": gates},
                                  caption, "per-sample error")]
    rows = []
    for i in range(n):
        row = [num(None, i)]
        if names:
            row.append(code(names[i]) if i < len(names) else text("—"))
        if gated:
            row.append(text(fmt_num(gated[i]) if i < len(gated) else "—"))
        row += [metric(f"parity.per_sample.cosine.{i}", "cosine", cos[i] if i < len(cos) else None),
                metric(f"parity.per_sample.max_abs_err.{i}", "max_abs_err", err[i] if i < len(err) else None)]
        rows.append(row)
    headers = ["#"] + (["sample"] if names else []) + (["gated"] if gated else []) + ["cosine", "max_abs_err"]
    if rows:
        blocks.append(Table(headers, rows, detail=f"Per golden sample ({n})"))
    return blocks


# ---------------------------------------------------------------- latency

LATENCY_COLUMNS = [
    ("p50_ms", "p50 (ms)"),
    ("p90_ms", "p90 (ms)"),
    ("p99_ms", "p99 (ms)"),
    ("mean_ms", "mean (ms)"),
    ("throughput_ips", "throughput (img/s)"),
]


def speedup(reference_latency: dict | None, latency: dict | None, key: str = "p50_ms") -> float | None:
    """reference / engine latency (>1 means the engine is faster), or None when either is missing."""
    if not reference_latency or not latency:
        return None
    ref, eng = reference_latency.get(key), latency.get(key)
    if not is_num(ref) or not is_num(eng) or eng <= 0:
        return None
    return float(ref) / float(eng)


def latency_warnings(report: dict) -> list[str]:
    """The harness's own warnings plus a line for noisy (high-variance) measurements."""
    out = []
    for label, d in (("engine", report.get("latency")), ("reference", report.get("reference_latency"))):
        if not d:
            continue
        if d.get("noisy") and not d.get("warnings"):  # the harness's own warning already says why
            out.append(f"{label}: noisy measurement (cv {fmt_num(d.get('cv'), 3)}); compare with care.")
        out += [f"{label}: {w}" for w in d.get("warnings") or []]
    return out


def _latency_section(report: dict) -> Section:
    lat, ref = report.get("latency"), report.get("reference_latency")
    sec = Section("latency", "Latency")
    note = report.get("latency_note")
    if not lat and not ref:
        sec.blocks.append(para(f"Not measured: {note}." if note else "Not measured (bench iterations = 0)."))
        return sec
    if not lat and note:
        sec.blocks.append(para(f"Engine not timed: {note}."))
    rows = []
    for label, name, d in (("engine", "latency", lat), ("reference (PyTorch)", "reference_latency", ref)):
        if d:
            rows.append([text(label), num(f"{name}.batch", d.get("batch"))]
                        + [num(f"{name}.{k}", d.get(k)) for k, _ in LATENCY_COLUMNS])
    sec.blocks.append(Table(["runner", "batch"] + [t for _, t in LATENCY_COLUMNS], rows))
    sp = speedup(ref, lat)
    if sp is not None:
        sec.blocks.append(para("Speed-up at p50: ", Cell(f"{fmt_num(sp, 3)}×", style="strong", title=repr(sp)),
                               " (reference p50 / engine p50)."))
    elif lat and not ref:
        sec.blocks.append(para("Reference latency not measured; no speed-up to report."))
    base_name, base = ("latency", lat) if lat else ("reference_latency", ref)
    harness = [k for k in ("warmup", "iterations", "threads") if base.get(k) is not None]
    if harness:
        parts: list[Cell | str] = ["Harness: "]
        for j, k in enumerate(harness):
            parts += [", " if j else "", f"{k} ", num(f"{base_name}.{k}", base.get(k))]
        sec.blocks.append(para(*parts, "."))
    sec.blocks += [para(f"⚠ {w}", style="warn") for w in latency_warnings(report)]
    series = [(label, d.get("samples_ms")) for label, d in (("engine", lat), ("PyTorch reference", ref)) if d]
    sec.blocks.append(Figure("latency", {"series": series},
                             "Latency per batch over all timed iterations (box = p25–p75, line = median, "
                             "whiskers = 1.5 IQR).", "latency box plot"))
    return sec


# ---------------------------------------------------------------- precision plan


def node_name(node: Any) -> str:
    if isinstance(node, dict):
        return str(node.get("node") or node.get("name") or "?")
    return str(node)


def node_reason(node: Any, plan: dict) -> str | None:
    """Why a plan entry sits where it is: its own 'reason' or the plan's reasons map."""
    if isinstance(node, dict) and node.get("reason"):
        return str(node["reason"])
    return (plan.get("reasons") or {}).get(node_name(node))


def node_op_type(node: Any, op_types: dict | None = None) -> str:
    """A plan entry -> its op type: the plan's op_types map, the entry's own, or the name's suffix
    ('/stem/conv1/Conv_2' -> Conv, the way torch.onnx names nodes)."""
    if isinstance(node, dict) and node.get("op_type"):
        return str(node["op_type"])
    if op_types and node_name(node) in op_types:
        return str(op_types[node_name(node)])
    last = re.sub(r"_\d+$", "", node_name(node).rstrip("/").split("/")[-1])
    return last if re.fullmatch(r"[A-Z][A-Za-z0-9]*", last) else "other"


def op_type_counts(plan: dict) -> list[tuple[str, int, int]]:
    """precision_plan -> [(op_type, quantized count, float count)], most nodes first."""
    counts: dict[str, list[int]] = {}
    for col, field_ in ((0, "quantized_nodes"), (1, "float_nodes")):
        for node in plan.get(field_) or []:
            counts.setdefault(node_op_type(node, plan.get("op_types")), [0, 0])[col] += 1
    return sorted(((op, q, f) for op, (q, f) in counts.items()), key=lambda r: (-(r[1] + r[2]), r[0]))


def _node_item(node: Any, plan: dict) -> list[Cell]:
    reason = node_reason(node, plan)
    return [code(node_name(node))] + ([text(f": {reason}")] if reason else [])


def _precision_section(report: dict) -> Section | None:
    plan = report.get("precision_plan")
    if not plan:
        return None
    lists = {k: list(plan.get(k) or []) for k in ("quantized_nodes", "float_nodes", "excluded")}
    low = str(report.get("precision") or "low precision").upper()

    def count(field_: str) -> Cell:
        n = len(lists[field_])
        return Cell(str(n), f"precision_plan.{field_}.length", n, True, "strong")

    float_names = {node_name(n) for n in lists["float_nodes"]}
    inside = bool(lists["excluded"]) and all(node_name(n) in float_names for n in lists["excluded"])
    tail = ([" (", count("excluded"), " of them excluded by rule although quantizable)."] if inside
            else [", ", count("excluded"), " excluded by rule."])
    sec = Section("precision", "Precision plan", [
        para(count("quantized_nodes"), f" nodes in {low}, ", count("float_nodes"), " kept in float", *tail)])
    counts = op_type_counts(plan)
    if counts:
        sec.blocks.append(Table(["op type", low, "float"],
                                [[text(op), num(None, q), num(None, f)] for op, q, f in counts]))
        sec.blocks.append(Figure("precision", {"counts": counts[:15], "low_label": low},
                                 f"Nodes by op type: {low} vs kept in float"
                                 + (" (15 most common op types)." if len(counts) > 15 else "."),
                                 "precision plan by op type"))
    if lists["excluded"]:
        sec.blocks.append(para("Excluded by rule (kept in float):"))
        sec.blocks.append(ItemList([_node_item(n, plan) for n in lists["excluded"]]))
    for title, field_ in ((f"{low} nodes", "quantized_nodes"), ("Float nodes", "float_nodes")):
        if lists[field_]:
            sec.blocks.append(ItemList([_node_item(n, plan) for n in lists[field_]],
                                       detail=f"{title} ({len(lists[field_])})"))
    return sec


# ---------------------------------------------------------------- sensitivity

TOP = 10  # rows of the ranked tables both reports show in full; the rest is a detail table


def _sensitivity_section(report: dict) -> Section | None:
    entries = [(i, e) for i, e in enumerate(report.get("sensitivity") or []) if isinstance(e, dict)]
    if not entries:
        return None
    ranked = sorted(entries, key=lambda ie: ie[1]["sqnr_db"] if is_num(ie[1].get("sqnr_db")) else math.inf)
    with_out = any("output_sqnr_db" in e for _, e in ranked)
    sec = Section("sensitivity", "Quantization sensitivity", [
        para("Per-node signal-to-quantization-noise ratio (SQNR); the lowest-SQNR nodes are the first "
             "candidates to keep in float.", style="note")])
    worst = [(str(e.get("node", "?")), str(e.get("op_type", "?")), float(e["sqnr_db"]))
             for _, e in ranked if is_num(e.get("sqnr_db")) and math.isfinite(e["sqnr_db"])][:20]
    if worst:
        sec.blocks.append(Figure("sensitivity", {"entries": worst}, f"Worst {len(worst)} nodes by SQNR (dB).",
                                 "sensitivity ranking"))
    suggested = report.get("sensitivity_suggested_exclusions") or []
    if suggested:
        parts: list[Cell | str] = ["Suggested to keep in float: "]
        for j, n in enumerate(suggested):
            parts += ([", "] if j else []) + [code(node_name(n))]
        sec.blocks.append(para(*parts))

    def rows(part):
        out = []
        for rank, (i, e) in enumerate(part, 1):
            row = [num(None, rank), code(e.get("node", "?")), text(e.get("op_type", "?")),
                   num(f"sensitivity.{i}.sqnr_db", e.get("sqnr_db"))]
            if with_out:
                row.append(num(f"sensitivity.{i}.output_sqnr_db", e.get("output_sqnr_db")))
            out.append(row)
        return out

    headers = ["rank", "node", "op type", "SQNR (dB)"] + (["output SQNR (dB)"] if with_out else [])
    sec.blocks.append(Table(headers, rows(ranked[:TOP])))
    if len(ranked) > TOP:
        sec.blocks.append(Table(headers, rows(ranked), detail=f"All {len(ranked)} nodes, lowest SQNR first"))
    return sec


# ---------------------------------------------------------------- accuracy


def accuracy_in_percent(acc: dict) -> bool:
    """compare.accuracy gives percentages; older reports held fractions."""
    vals = [acc.get(k) for k in ("reference_top1", "reference_top5", "engine_top1", "engine_top5")]
    return any(is_num(v) and v > 1.0 for v in vals)


def per_class_rows(accuracy: dict) -> list[tuple[str, Any, Any, str | None]]:
    """accuracy.per_class (class -> agreement | {agreement, n, ...}, or a list) -> [(class, agreement, n, key)]."""
    per_class = accuracy.get("per_class") or {}
    if isinstance(per_class, dict):
        items: Iterable = [(str(c), v, sub_key("accuracy.per_class", c)) for c, v in per_class.items()]
    else:
        items = [(str(e.get("class", e.get("label", i))) if isinstance(e, dict) else str(i), e,
                  f"accuracy.per_class.{i}") for i, e in enumerate(per_class)]
    rows = []
    for cls, val, key in items:
        if isinstance(val, dict):
            field_ = next((k for k in ("agreement", "top1_agreement", "top1") if k in val), None)
            n = val.get("n", val.get("count", val.get("samples")))
            rows.append((cls, val.get(field_) if field_ else None, n, f"{key}.{field_}" if key and field_ else None))
        else:
            rows.append((cls, val, None, key))
    return rows


def _accuracy_section(report: dict) -> Section | None:
    acc = report.get("accuracy")
    if not acc:
        return None
    scale = 1.0 if accuracy_in_percent(acc) else 100.0

    def acc_cell(k: str) -> Cell:
        v = acc.get(k)
        return num(f"accuracy.{k}", v, f"{v * scale:.2f}%" if is_num(v) else None)

    sec = Section("accuracy", "Accuracy")
    if acc.get("images") is not None:
        sec.blocks.append(para("Evaluated on ", num("accuracy.images", acc.get("images")), " labelled images."))
    sec.blocks.append(Table(["", "top-1", "top-5"], [
        [text("reference (PyTorch)"), acc_cell("reference_top1"), acc_cell("reference_top5")],
        [text("engine"), acc_cell("engine_top1"), acc_cell("engine_top5")]]))
    drop = acc.get("drop_top1")
    sec.blocks.append(para("Top-1 drop: ", num("accuracy.drop_top1", drop,
                                                fmt_num(drop * scale, 3) if is_num(drop) else None, style="strong"),
                           " percentage points."))
    rows = per_class_rows(acc)
    if rows:
        ranked = sorted(rows, key=lambda r: r[1] if is_num(r[1]) else math.inf)
        with_n = any(n is not None for _, _, n, _ in ranked)

        def table_rows(part):
            return [[text(c), metric(key, "agreement", a)] + ([num(None, n)] if with_n else [])
                    for c, a, n, key in part]

        headers = ["class", "agreement"] + (["images"] if with_n else [])
        worst = ranked[:TOP]
        sec.blocks.append(para(f"Per-class agreement, engine vs reference (lowest {len(worst)} of {len(rows)} "
                               "classes):"))
        sec.blocks.append(Table(headers, table_rows(worst)))
        if len(ranked) > TOP:
            sec.blocks.append(Table(headers, table_rows(ranked), detail=f"All {len(rows)} classes, lowest first"))
    return sec


# ---------------------------------------------------------------- op census, profile


def _op_census_section(census: Any) -> Section | None:
    if not isinstance(census, dict) or not census:
        return None
    sec = Section("op-census", "Ops by precision")
    runtime = (f"As {census['runtime']} runs the engine"
               + (f" (read from {census['source']})" if census.get("source") else "") + ". "
               if census.get("runtime") else "")
    share = ([metric("op_census.int8_share", "int8_share", census["int8_share"]),
              " of the Conv/MatMul nodes run in int8."] if is_num(census.get("int8_share")) else [])
    if runtime or share:
        sec.blocks.append(para(runtime, *share))
    if census.get("note"):
        sec.blocks.append(para(str(census["note"]), style="note"))
    rows = [[code(e.get("op", "?")), text(e.get("precision")), num(f"op_census.by_op.{i}.count", e.get("count"))]
            for i, e in enumerate(census.get("by_op") or []) if isinstance(e, dict)]
    if rows:
        sec.blocks.append(Table(["op", "precision", "count"], rows))
    return sec


def _profile_section(prof: Any) -> Section | None:
    if not isinstance(prof, dict) or not prof:
        return None
    sec = Section("profile", "Profile by layer type")
    parts: list[Cell | str] = []
    if prof.get("runtime"):
        parts.append(f"{prof['runtime']}'s own per-layer timing")
    if prof.get("batch") is not None:
        parts += [", batch " if parts else "Batch ", num("profile.batch", prof.get("batch"))]
    if is_num(prof.get("total_ms")):
        parts += [": " if parts else "", num("profile.total_ms", prof["total_ms"], style="strong"),
                  " ms per inference in total"]
    if parts:
        sec.blocks.append(para(*parts, "."))
    rows = []
    for i, e in enumerate(prof.get("by_layer_type") or []):
        if isinstance(e, dict):
            p = f"profile.by_layer_type.{i}"
            rows.append([code(e.get("layer_type", "?")), text(e.get("precision")),
                         num(f"{p}.count", e.get("count")), num(f"{p}.ms", e.get("ms")),
                         metric(f"{p}.share", "share", e.get("share"))])
    if rows:
        sec.blocks.append(Table(["layer type", "precision", "count", "time (ms)", "share"], rows))
    return sec


# ---------------------------------------------------------------- engine, environment, artifacts

_SHORT_LIST = 8


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def summarise(value: Any) -> str:
    """A manifest value -> one line: scalars as they are, short lists joined, long ones counted."""
    if _is_scalar(value):
        return fmt_num(value)
    if isinstance(value, (list, tuple)):
        if all(_is_scalar(v) for v in value) and len(value) <= _SHORT_LIST:
            return ", ".join(fmt_num(v) for v in value) or "none"
        return f"{len(value)} items"
    if isinstance(value, dict):
        short = all(_is_scalar(v) or (isinstance(v, (list, tuple)) and all(_is_scalar(x) for x in v)
                                      and len(v) <= _SHORT_LIST) for v in value.values())
        if short and len(value) <= _SHORT_LIST:
            return "; ".join(f"{k}: {summarise(v)}" for k, v in value.items())
        keys = list(value)
        return f"{len(keys)} entries: " + ", ".join(map(str, keys[:6])) + (", …" if len(keys) > 6 else "")
    return str(value)


def engine_rows(engine: dict, prefix: str = "manifest.engine") -> list[list[Cell]]:
    """manifest.engine -> rows, whatever the target: scalar keys as they are, a dict of mostly
    scalars (a runner's settings) one level down as 'name.key' rows, other lists and dicts summarised."""
    rows = []
    for k, v in engine.items():
        if v in (None, "", [], {}):
            continue
        key = sub_key(prefix, k)
        if isinstance(v, dict) and sum(_is_scalar(x) for x in v.values()) * 2 >= len(v) and key:
            for sk, sv in v.items():
                if sv not in (None, "", [], {}):
                    sub = sub_key(key, sk) if _is_scalar(sv) else None
                    rows.append([text(f"{k}.{sk}"), _value_cell(sub, sv)])
        else:
            rows.append([text(k), _value_cell(key if _is_scalar(v) else None, v)])
    return rows


def _value_cell(key: str | None, v: Any) -> Cell:
    return num(key, v) if is_num(v) else text(summarise(v))


def _engine_section(manifest: dict) -> Section | None:
    eng = manifest.get("engine")
    rows = engine_rows(eng) if isinstance(eng, dict) else []
    if not rows:
        return None
    return Section("engine", "Engine", [Table(["", "value"], rows)])


def environment_rows(report: dict, manifest: dict) -> list[tuple[str, str]]:
    env = report.get("environment") or {}
    rows = [(k, str(env[k])) for k in ("python", "platform", "cpu", "cpu_count", "threads", "gpu")
            if env.get(k) not in (None, "")]
    if env and env.get("gpu") in (None, ""):
        rows.append(("gpu", "none"))
    versions = dict(manifest.get("versions") or {})
    versions.update(env.get("versions") or {})
    if env.get("python"):
        versions.pop("python", None)  # already the first row
    rows += [(name, str(ver)) for name, ver in sorted(versions.items())]
    return rows


def _environment_section(report: dict, manifest: dict) -> Section | None:
    rows = environment_rows(report, manifest)
    if not rows:
        return None
    return Section("environment", "Environment", [Table(["", "value"], [[text(k), text(v)] for k, v in rows])])


def _artifacts_section(report: dict, manifest: dict) -> Section:
    arts = list(manifest.get("artifacts") or [])
    prefix = "manifest.artifacts"
    if not arts:
        arts, prefix = list(report.get("artifacts") or []), "artifacts"
    sec = Section("artifacts", "Artifacts")
    if not arts:
        sec.blocks.append(para("File list and sha256 checksums: manifest.json."))
        return sec
    rows = []
    for i, a in enumerate(arts):
        size = a.get("bytes")
        rows.append([code(a.get("path", "?")),
                     Cell(short_sha(a.get("sha256")), style="code", title=a.get("sha256") or None),
                     num(f"{prefix}.{i}.bytes", size, fmt_bytes(size),
                         title=f"{size} bytes" if size is not None else None)])
    sec.blocks += [Table(["file", "sha256 (first 12)", "size"], rows),
                   para("Full checksums are in manifest.json.")]
    return sec


# ---------------------------------------------------------------- header and the whole view


def input_text(manifest: dict) -> str | None:
    inp = manifest.get("input") or {}
    if not inp:
        return None
    shape = inp.get("shape")
    if isinstance(shape, (list, tuple)):
        # a dynamic dimension is stored as [min, max]
        shape = " × ".join(f"{d[0]}–{d[1]}" if isinstance(d, (list, tuple)) and len(d) == 2 else str(d)
                           for d in shape)
    return f"{inp.get('name', 'input')} {inp.get('layout', '')} {inp.get('dtype', '')} {shape}".strip()


def _warnings_section(report: dict) -> Section | None:
    warnings = [w for w in report.get("warnings") or [] if w not in (None, "")]
    if not warnings:
        return None
    return Section("warnings", "Warnings", [para(f"⚠ {w}", style="warn") for w in warnings])


def build_view(report: dict, manifest: dict | None, extra_sections: Sequence[Section] = ()) -> ReportView:
    """report.json dict + manifest.json dict (+ target-specific sections) -> the whole report as data.

    Every section past status and gates is optional: a report without latency, precision plan,
    sensitivity or accuracy still renders, saying what is missing instead of failing.
    extra_sections come after the engine section, in the order given.
    """
    manifest = manifest or {}
    model = manifest.get("model") or {}
    status = str(report.get("status", "UNKNOWN")).upper()
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
    name = model.get("name", "model")
    sections = [
        _warnings_section(report), _gates_section(report), _drift_section(report), _latency_section(report),
        _precision_section(report), _sensitivity_section(report), _accuracy_section(report),
        _op_census_section(report.get("op_census")), _profile_section(report.get("profile")), _engine_section(manifest), *extra_sections,
        _environment_section(report, manifest), _artifacts_section(report, manifest),
    ]
    return ReportView(
        title=f"{name} → {report.get('target', '?')} / {report.get('precision', '?')}",
        page_title=f"{name} {report.get('target', '')} {report.get('precision', '')} — {status}",
        status=status, status_detail=detail,
        facts=[(k, str(v)) for k, v in facts if v not in (None, "")],
        sections=[s for s in sections if s is not None],
    )


# ---------------------------------------------------------------- builders for target modules


def candidates_section(title: str, candidates: dict[str, dict], key_prefix: str,
                       columns: Sequence[str | tuple[str, str]], *, chosen: str | None = None,
                       note: str | None = None, section_id: str | None = None) -> Section:
    """A table of alternatives a target tried (one row per candidate, sorted by name), for extra_sections.

    candidates: name -> {metric: value}; key_prefix: where they sit in report.json, so each number
    carries data-key f"{key_prefix}.{name}.{metric}"; columns: metric names, or (metric, header)
    pairs; chosen: the candidate kept (a 'kept' column marks it); note: a sentence above the table.
    """
    cols = [(c, c) if isinstance(c, str) else (c[0], c[1]) for c in columns]
    rows = []
    for name, values in sorted(candidates.items()):
        values = values if isinstance(values, dict) else {}
        base = sub_key(key_prefix, name)
        row = [text(name)]
        for m, _ in cols:
            v = values.get(m)
            if isinstance(v, bool):
                row.append(Cell(fmt_metric(m, v), style=("pass" if v else "fail") if m == "passed" else ""))
            elif _is_scalar(v):
                row.append(metric(sub_key(base, m) if base else None, m, v))
            else:
                row.append(text(summarise(v)))
        if chosen is not None:
            row.append(text("yes" if name == chosen else ""))
        rows.append(row)
    sid = section_id or re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "candidates"
    blocks: list[Block] = [para(note)] if note else []
    blocks.append(Table(["candidate"] + [h for _, h in cols] + (["kept"] if chosen is not None else []), rows))
    return Section(sid, title, blocks)

