"""report.md: the export report as Markdown, plus the table helpers report.html shares.

Every section past status/gates is optional: a report without latency (bench_iterations=0),
reference latency, precision plan, sensitivity or accuracy still renders, with that section
saying what is missing instead of failing.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

# Parity keys shown per stage, with the column titles people read.
STAGE_COLUMNS = [
    ("cosine_min", "cosine_min"),
    ("max_abs_err", "max_abs_err"),
    ("mean_abs_err", "mean_abs_err"),
    ("top1_agreement", "top1"),
    ("top5_agreement", "top5"),
]
LATENCY_COLUMNS = [
    ("p50_ms", "p50 (ms)"),
    ("p90_ms", "p90 (ms)"),
    ("p99_ms", "p99 (ms)"),
    ("mean_ms", "mean (ms)"),
    ("throughput_ips", "throughput (img/s)"),
]
SIG_DIGITS = 5


# ---------------------------------------------------------------- formatting


def fmt_num(value: Any, sig: int = SIG_DIGITS) -> str:
    """Number -> the text both reports print (the tests compare against this exact text).

    Floats get `sig` significant digits, except values just below 1 (cosines, agreements),
    which keep enough digits that 0.9999999 does not print as a misleading "1".
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        if value == 0.0:
            return "0"
        if 0.99 < value < 1.0:
            # no cap below float64's 17 digits: 1 - 3e-14 must not print as "1."
            decimals = min(17, -math.floor(math.log10(1.0 - value)) + sig - 3)
            return f"{value:.{decimals}f}".rstrip("0")
        return f"{value:.{sig}g}"
    return str(value)


def fmt_bytes(n: Any) -> str:
    """Byte count -> '1.2 MiB' style text."""
    if not isinstance(n, (int, float)):
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def short_sha(sha: Any) -> str:
    return str(sha)[:12] if sha else "—"


def md_escape(text: Any) -> str:
    """Text -> safe inside a Markdown table cell."""
    text = str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    # Only tag-like '<' would be read as HTML; '<= 0.2' stays readable in a terminal.
    return re.sub(r"<(?=[A-Za-z/!?])", "&lt;", text)


# ---------------------------------------------------------------- shared row builders


@dataclass
class GateRow:
    name: str
    op: str  # ">=" or "<="
    threshold: Any
    measured: Any
    passed: bool | None
    min_passing: Any
    threshold_key: str | None  # dotted path into report.json, for data-key
    measured_key: str | None
    min_passing_key: str | None


def _lower_is_better(name: str) -> bool:
    return any(word in name for word in ("err", "drop", "distance", "diff"))


def gate_rows(report: dict) -> list[GateRow]:
    """parity.gates (name -> threshold, name -> {threshold, measured, passed}, or a list) -> rows."""
    parity = report.get("parity") or {}
    gates = parity.get("gates") or {}
    min_passing = parity.get("min_passing") or {}
    if isinstance(gates, dict):
        items = [(str(name), spec, f"parity.gates.{name}") for name, spec in gates.items()]
    else:
        items = [
            (str(spec.get("name") or spec.get("gate")), spec, f"parity.gates.{i}")
            for i, spec in enumerate(gates)
            if isinstance(spec, dict)
        ]
    rows = []
    for name, spec, key in items:
        if isinstance(spec, dict):
            threshold_field = next((k for k in ("threshold", "value", "limit") if k in spec), None)
            threshold = spec.get(threshold_field) if threshold_field else None
            threshold_key = f"{key}.{threshold_field}" if threshold_field else None
            if "measured" in spec:
                measured, measured_key = spec["measured"], f"{key}.measured"
            else:
                measured, measured_key = _measured(report, name)
            passed = spec.get("passed", _recorded_pass(parity, name))
            op = spec.get("op") or ("<=" if _lower_is_better(name) else ">=")
        else:
            threshold, threshold_key = spec, key
            measured, measured_key = _measured(report, name)
            passed = _recorded_pass(parity, name)
            op = "<=" if _lower_is_better(name) else ">="
        if passed is None and is_num(measured) and is_num(threshold):
            passed = measured <= threshold if op in ("<=", "<") else measured >= threshold
        mp = min_passing.get(name)
        rows.append(
            GateRow(
                name, op, threshold, measured, passed, mp,
                threshold_key if threshold is not None else None,
                measured_key if measured is not None else None,
                f"parity.min_passing.{name}" if mp is not None else None,
            )
        )
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


def is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def speedup(reference_latency: dict | None, latency: dict | None, key: str = "p50_ms") -> float | None:
    """reference / engine latency (>1 means the engine is faster), or None when either is missing."""
    if not reference_latency or not latency:
        return None
    ref, eng = reference_latency.get(key), latency.get(key)
    if not is_num(ref) or not is_num(eng) or eng <= 0:
        return None
    return float(ref) / float(eng)


def node_reason(node: Any, plan: dict) -> str | None:
    """Why a plan entry sits where it is: its own 'reason' or the plan's reasons map."""
    if isinstance(node, dict) and node.get("reason"):
        return str(node["reason"])
    return (plan.get("reasons") or {}).get(node_name(node))


def plan_summary(report: dict) -> str:
    """precision_plan -> one sentence of counts."""
    plan = report.get("precision_plan") or {}
    quant, flt, excl = (plan.get(k) or [] for k in ("quantized_nodes", "float_nodes", "excluded"))
    low = str(report.get("precision") or "low precision").upper()
    names = {node_name(n) for n in flt}
    inside = all(node_name(n) in names for n in excl)
    return (f"{len(quant)} nodes in {low}, {len(flt)} kept in float"
            + (f" ({len(excl)} of them excluded by rule although quantizable)." if inside and excl
               else f", {len(excl)} excluded by rule."))


def accuracy_unit(acc: dict) -> str:
    """'%' when accuracies are percentages (compare.accuracy), '' when fractions."""
    vals = [acc.get(k) for k in ("reference_top1", "reference_top5", "engine_top1", "engine_top5")]
    return "%" if any(is_num(v) and v > 1.0 for v in vals) else ""


def node_name(node: Any) -> str:
    if isinstance(node, dict):
        return str(node.get("node") or node.get("name") or "?")
    return str(node)


def node_op_type(node: Any, op_types: dict | None = None) -> str:
    """A plan entry -> its op type: the plan's op_types map, the entry's own, or the name's suffix
    ('/stem/conv1/Conv_2' -> Conv, the way torch.onnx names nodes)."""
    if isinstance(node, dict) and node.get("op_type"):
        return str(node["op_type"])
    if op_types and node_name(node) in op_types:
        return str(op_types[node_name(node)])
    last = node_name(node).rstrip("/").split("/")[-1]
    last = re.sub(r"_\d+$", "", last)
    return last if re.fullmatch(r"[A-Z][A-Za-z0-9]*", last) else "other"


def op_type_counts(report: dict) -> list[tuple[str, int, int]]:
    """precision_plan -> [(op_type, quantized count, float count)], most nodes first."""
    plan = report.get("precision_plan") or {}
    counts: dict[str, list[int]] = {}
    for col, field in ((0, "quantized_nodes"), (1, "float_nodes")):
        for node in plan.get(field) or []:
            counts.setdefault(node_op_type(node, plan.get("op_types")), [0, 0])[col] += 1
    return sorted(
        ((op, q, f) for op, (q, f) in counts.items()), key=lambda r: (-(r[1] + r[2]), r[0])
    )


def sensitivity_ranked(report: dict) -> list[dict]:
    """sensitivity -> entries, most sensitive (lowest SQNR) first."""
    entries = [e for e in report.get("sensitivity") or [] if isinstance(e, dict)]
    return sorted(entries, key=lambda e: e.get("sqnr_db") if is_num(e.get("sqnr_db")) else math.inf)


def per_class_rows(accuracy: dict) -> list[tuple[str, Any, Any]]:
    """accuracy.per_class (class -> agreement | {agreement, n, ...} or a list) -> [(class, agreement, n)]."""
    per_class = accuracy.get("per_class") or {}
    rows = []
    if isinstance(per_class, dict):
        items: Iterable = per_class.items()
    else:
        items = [(e.get("class", e.get("label", i)), e) for i, e in enumerate(per_class)]
    for cls, val in items:
        if isinstance(val, dict):
            agreement = val.get("agreement", val.get("top1_agreement", val.get("top1")))
            rows.append((str(cls), agreement, val.get("n", val.get("count", val.get("samples")))))
        else:
            rows.append((str(cls), val, None))
    return rows


def artifacts(report: dict, manifest: dict) -> list[dict]:
    return list((manifest or {}).get("artifacts") or report.get("artifacts") or [])


# ---------------------------------------------------------------- markdown


def _table(headers: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        out.append("| " + " | ".join(md_escape(c) for c in row) + " |")
    return out


def _gate_text(row: GateRow) -> str:
    if row.passed is None:
        return "—"
    return "pass" if row.passed else "**FAIL**"


def render_markdown(report: dict, manifest: dict) -> str:
    """report.json dict + manifest.json dict -> report.md text."""
    manifest = manifest or {}
    model = manifest.get("model") or {}
    status = str(report.get("status", "UNKNOWN"))
    lines: list[str] = []
    title = f"# {model.get('name', 'model')} → {report.get('target', '?')} / {report.get('precision', '?')}"
    lines += [title, "", f"**Status: {status}**", ""]
    ref = report.get("reference") or {}
    facts = [
        ("target", report.get("target")),
        ("precision", report.get("precision")),
        ("reference", " / ".join(str(ref.get(k)) for k in ("framework", "device", "dtype") if ref.get(k))),
        ("classes", model.get("num_classes")),
        ("input", input_text(manifest)),
        ("created", manifest.get("created")),
    ]
    lines += [f"- {k}: {md_escape(v)}" for k, v in facts if v not in (None, "")]
    if report.get("reference_note"):
        lines.append(f"- note: {md_escape(report['reference_note'])}")
    lines.append("")

    parity = report.get("parity") or {}
    lines += ["## Parity gates", ""]
    rows = gate_rows(report)
    if rows:
        failed = any(r.passed is False for r in rows)
        headers = ["gate", "threshold", "measured", "result"] + (["min passing"] if failed else [])
        body = []
        for r in rows:
            cells = [r.name, f"{r.op} {fmt_num(r.threshold)}", fmt_num(r.measured), _gate_text(r)]
            if failed:
                cells.append(fmt_num(r.min_passing) if r.passed is False else "")
            body.append(cells)
        lines += _table(headers, body)
    else:
        lines.append("No gates recorded.")
    if parity:
        lines += ["", f"Golden samples: {fmt_num(parity.get('samples'))}", ""]

    lines += ["## Drift by stage", ""]
    stages = report.get("stages") or []
    if stages:
        lines.append("Each row compares that stage's outputs with the PyTorch reference; "
                     "the first row where the numbers move is where the logits changed.")
        lines.append("")
        lines += _table(
            ["stage", "artifact"] + [title for _, title in STAGE_COLUMNS],
            [[s.get("stage"), stage_artifact(s)] + [fmt_num(stage_value(s, k)) for k, _ in STAGE_COLUMNS]
             for s in stages],
        )
    else:
        lines.append("No per-stage results recorded.")
    lines.append("")

    lines += _latency_md(report)
    lines += _precision_md(report)
    lines += _sensitivity_md(report)
    lines += _accuracy_md(report)
    lines += _engine_md(report, manifest)
    lines += _environment_md(report, manifest)
    lines += _artifacts_md(report, manifest)
    return "\n".join(lines).rstrip() + "\n"


def stage_artifact(stage: dict) -> str:
    """'model.onnx (onnxruntime)': the file a stage ran and the runtime that ran it."""
    art, runtime = stage.get("artifact") or "—", stage.get("runtime")
    return f"{art} ({runtime})" if runtime and str(runtime) != str(art) else str(art)


def stage_value(stage: dict, key: str) -> Any:
    """Stage parity key, accepting the short names (top1/top5) as well."""
    if key in stage:
        return stage[key]
    return stage.get(key.replace("_agreement", ""))


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


def _latency_md(report: dict) -> list[str]:
    lat, ref = report.get("latency"), report.get("reference_latency")
    lines = ["## Latency", ""]
    if not lat and not ref:
        return lines + ["Not measured (bench iterations = 0).", ""]
    rows = []
    for label, data in (("engine", lat), ("reference (PyTorch)", ref)):
        if data:
            rows.append([label, fmt_num(data.get("batch"))] + [fmt_num(data.get(k)) for k, _ in LATENCY_COLUMNS])
    lines += _table(["runner", "batch"] + [t for _, t in LATENCY_COLUMNS], rows)
    lines.append("")
    sp = speedup(ref, lat)
    if sp is not None:
        lines += [f"Speed-up at p50: **{fmt_num(sp, 3)}×** (reference p50 / engine p50).", ""]
    elif lat and not ref:
        lines += ["Reference latency not measured; no speed-up to report.", ""]
    base = lat or ref
    extra = [f"{k}: {fmt_num(base.get(k))}" for k in ("warmup", "iterations", "threads") if base.get(k) is not None]
    if extra:
        lines.append("Harness: " + ", ".join(extra) + ".")
    for warning in latency_warnings(report):
        lines += ["", f"⚠ {md_escape(warning)}"]
    return lines + [""]


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


def _precision_md(report: dict) -> list[str]:
    plan = report.get("precision_plan")
    if not plan:
        return []
    excluded = plan.get("excluded") or []
    low = str(report.get("precision") or "low precision").upper()
    lines = ["## Precision plan", "", plan_summary(report), ""]
    counts = op_type_counts(report)
    if counts:
        lines += _table(["op type", low, "float"], [[op, q, f] for op, q, f in counts])
        lines.append("")
    if excluded:
        lines.append("Excluded (kept in float):")
        lines.append("")
        for node in excluded:
            reason = node_reason(node, plan)
            lines.append(f"- `{node_name(node)}`" + (f": {md_escape(reason)}" if reason else ""))
        lines.append("")
    return lines


def _sensitivity_md(report: dict) -> list[str]:
    ranked = sensitivity_ranked(report)
    if not ranked:
        return []
    lines = ["## Sensitivity (lowest SQNR first, top 10)", ""]
    with_out = any("output_sqnr_db" in e for e in ranked)
    lines += _table(
        ["rank", "node", "op type", "SQNR (dB)"] + (["output SQNR (dB)"] if with_out else []),
        [[i + 1, e.get("node", "?"), e.get("op_type", "?"), fmt_num(e.get("sqnr_db"))]
         + ([fmt_num(e.get("output_sqnr_db"))] if with_out else []) for i, e in enumerate(ranked[:10])],
    )
    suggested = report.get("sensitivity_suggested_exclusions") or []
    if suggested:
        lines += ["", "Suggested to keep in float: " + ", ".join(f"`{node_name(n)}`" for n in suggested)]
    return lines + [""]


def _accuracy_md(report: dict) -> list[str]:
    acc = report.get("accuracy")
    if not acc:
        return []
    unit = accuracy_unit(acc)
    lines = ["## Accuracy", ""]
    if acc.get("images") is not None:
        lines += [f"Evaluated on {fmt_num(acc.get('images'))} labelled images.", ""]
    lines += _table(
        ["", f"top1{' (%)' if unit else ''}", f"top5{' (%)' if unit else ''}"],
        [["reference", fmt_num(acc.get("reference_top1")), fmt_num(acc.get("reference_top5"))],
         ["engine", fmt_num(acc.get("engine_top1")), fmt_num(acc.get("engine_top5"))]],
    )
    drop_unit = " percentage points" if unit else " (fraction of images)"
    lines += ["", f"Top-1 drop: {fmt_num(acc.get('drop_top1'))}{drop_unit}.", ""]
    rows = per_class_rows(acc)
    if rows:
        worst = sorted(rows, key=lambda r: r[1] if is_num(r[1]) else math.inf)[:10]
        lines.append(f"Per-class agreement, engine vs reference (lowest {len(worst)} of {len(rows)} classes):")
        lines.append("")
        if any(n is not None for _, _, n in worst):
            lines += _table(["class", "agreement", "images"], [[c, fmt_num(a), fmt_num(n)] for c, a, n in worst])
        else:
            lines += _table(["class", "agreement"], [[c, fmt_num(a)] for c, a, _ in worst])
        lines.append("")
    return lines


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


ENGINE_KEYS = ("runtime", "version", "device_name", "performance_hint", "threads", "inference_num_threads", "num_streams",
               "inference_precision_requested", "inference_precision_effective", "optimization", "providers",
               "int8_method", "deferred", "tensorrt_version", "gpu_name", "compute_capability")


def engine_rows(manifest: dict) -> list[tuple[str, str]]:
    """What ran the engine, with every setting that changes speed or numerics."""
    eng = manifest.get("engine") or {}
    merged = {**eng, **(eng.get("settings") or {})}
    rows = [(k, str(merged[k])) for k in ENGINE_KEYS if merged.get(k) not in (None, "", [])]
    totals = merged.get("execution_precision_totals")
    if totals:
        rows.append(("execution precisions", ", ".join(f"{k}: {v}" for k, v in sorted(totals.items()))))
    return rows


def int8_candidate_rows(report: dict) -> list[tuple[str, dict]]:
    return sorted((report.get("openvino_int8_candidates") or {}).items())


def _engine_md(report: dict, manifest: dict) -> list[str]:
    rows = engine_rows(manifest)
    if not rows:
        return []
    lines = ["## Engine", ""] + _table(["", "value"], [list(r) for r in rows]) + [""]
    cands = int8_candidate_rows(report)
    if cands:
        chosen = (manifest.get("engine") or {}).get("int8_method")
        lines += ["OpenVINO INT8 candidates (the closer one is kept):", ""]
        lines += _table(["method", "cosine_min", "max_abs_err", "top1", "gates", "kept"],
                        [[m, fmt_num(c.get("cosine_min")), fmt_num(c.get("max_abs_err")), fmt_num(c.get("top1_agreement")),
                          "pass" if c.get("passed") else "fail", "yes" if m == chosen else ""] for m, c in cands])
        lines.append("")
    return lines


def _environment_md(report: dict, manifest: dict) -> list[str]:
    rows = environment_rows(report, manifest)
    if not rows:
        return []
    return ["## Environment", ""] + _table(["", "value"], [list(r) for r in rows]) + [""]


def _artifacts_md(report: dict, manifest: dict) -> list[str]:
    arts = artifacts(report, manifest)
    if not arts:
        return ["## Artifacts", "", "File list and sha256 checksums: manifest.json.", ""]
    lines = ["## Artifacts", ""]
    lines += _table(
        ["file", "sha256", "size"],
        [[a.get("path"), short_sha(a.get("sha256")), fmt_bytes(a.get("bytes"))] for a in arts],
    )
    return lines + [""]
