"""compare.json -> the comparison as data (blocks.py), laid out by the same templates as a bundle's report.

Cells carry data-keys into compare.json, so compare.html can be read back the way report.html is.
"""

from __future__ import annotations

from typing import Any

from coatnet_deploy.report.blocks import Cell, ReportView, Section, Table, code, metric, num, para, text
from coatnet_deploy.report.formats import fmt_bytes, fmt_num, fmt_pct, short_sha


def build_compare_view(data: dict[str, Any]) -> ReportView:
    o, n = data["old"], data["new"]
    failed = list(data.get("failed_budgets") or {})
    status = data["status"]
    detail = ("exceeded: " + ", ".join(failed)) if failed else f"all {sum(c['passed'] is not None for c in data['checks'])} checks within budget"
    facts = [
        ("old", f"{o['bundle']} ({o['model']} → {o['target']} / {o['precision']}, {o['status']})"),
        ("new", f"{n['bundle']} ({n['model']} → {n['target']} / {n['precision']}, {n['status']})"),
        ("inputs", _inputs_text(data["inputs"])),
        ("old runs", o["runs"]),
        ("new runs", n["runs"]),
    ]
    sections = [_warnings(data), _budgets(data), _agreement(data), _own(data), _accuracy(data), _latency(data), _size(data),
                _differences(data)]
    return ReportView(
        title=f"compare: {n['bundle']} against {o['bundle']}",
        page_title=f"compare {n['model']} — {status}",
        status=status, status_detail=detail, facts=facts, sections=[s for s in sections if s is not None],
    )


def _inputs_text(inputs: dict[str, Any]) -> str:
    return (f"{inputs['total']} ({inputs['images']} real images; golden sets of {inputs['golden_old']} and "
            f"{inputs['golden_new']}, {inputs['shared_golden']} shared; {inputs['extra_images']} from --images, "
            f"{inputs.get('eval_images', 0)} from --eval-images)")


def _warnings(data: dict[str, Any]) -> Section | None:
    if not data.get("warnings"):
        return None
    return Section("warnings", "Warnings", [para(w, style="warn") for w in data["warnings"]])


def _budgets(data: dict[str, Any]) -> Section:
    rows = []
    for i, c in enumerate(data["checks"]):
        verdict = {True: text("pass", "pass"), False: text("FAIL", "fail"), None: text("not measured")}[c["passed"]]
        measured = c["measured"]
        shown = num(f"checks.{i}.measured", measured) if not isinstance(measured, str) else text(measured)
        limit = num(f"checks.{i}.limit", c["limit"]) if c["limit"] is not None else text("—")
        rows.append([code(c["budget"]), text(c["what"]), limit, shown, verdict])
    return Section("budgets", "Budgets", [
        para("A budget exceeded makes the comparison FAILED (exit 2). Set them with --max-disagreement, --max-drop, "
             "--max-slowdown; defaults in docs/GATES.md.", style="note"),
        Table(["budget", "what", "limit", "measured", "verdict"], rows)])


def _agreement(data: dict[str, Any]) -> Section:
    ag = data["agreement"]
    rows = []
    for part in ("images", "all"):
        a = ag.get(part)
        if a is None:
            continue
        k = f"agreement.{part}"
        rows.append([text("real images" if part == "images" else "every input"), num(f"{k}.samples", a["samples"]),
                     num(f"{k}.top1_agreement", a["top1_agreement"], fmt_pct(a["top1_agreement"])),
                     num(f"{k}.disagreements", a["disagreements"]),
                     num(f"{k}.top5_agreement", a["top5_agreement"], fmt_pct(a["top5_agreement"])),
                     metric(f"{k}.cosine_min", "cosine_min", a["cosine_min"]), metric(f"{k}.cosine_mean", "cosine_mean", a["cosine_mean"]),
                     metric(f"{k}.max_abs_err", "max_abs_err", a["max_abs_err"])])
    names = data["inputs"]["names"]
    differing = [names[i] for i in ag["differing"]]
    blocks = [para("The new engine's logits against the old engine's, on the same inputs.", style="note"),
              Table(["inputs", "n", "top-1 agreement", "differ", "top-5 agreement", "cosine min", "cosine mean", "max abs"], rows)]
    if differing:
        blocks.append(para("Top-1 differs on: ", ", ".join(differing)))
    return Section("agreement", "New engine against old engine", blocks)


def _own(data: dict[str, Any]) -> Section:
    rows = []
    for role in ("old", "new"):
        r = data["own_reference"][role]
        k = f"own_reference.{role}"
        rows.append([text(role), text(r["status"], "pass" if r["status"] == "PASSED" else "fail"), text(r["gate_samples"]),
                     metric(f"{k}.cosine_min", "cosine_min", r["cosine_min"]), metric(f"{k}.cosine_mean", "cosine_mean", r["cosine_mean"]),
                     metric(f"{k}.max_abs_err", "max_abs_err", r["max_abs_err"]),
                     num(f"{k}.top1_agreement", r["top1_agreement"], fmt_pct(r["top1_agreement"]))])
    return Section("own-reference", "Each engine against its own reference", [
        para("Each bundle's engine, run here on its own golden inputs, against the PyTorch logits stored at its export, "
             "under its own gates.", style="note"),
        Table(["bundle", "gates", "gated samples", "cosine min", "cosine mean", "max abs", "top-1 agreement"], rows)])


def _accuracy(data: dict[str, Any]) -> Section | None:
    acc = data.get("accuracy")
    if not acc:
        return None
    rows = [[text(role), num(f"accuracy.{role}.images", acc[role]["images"]), num(f"accuracy.{role}.top1", acc[role]["top1"], f"{acc[role]['top1']:.2f}%"),
             num(f"accuracy.{role}.top5", acc[role]["top5"], f"{acc[role]['top5']:.2f}%")] for role in ("old", "new")]
    return Section("accuracy", "Accuracy on --eval-images", [
        Table(["bundle", "images", "top-1", "top-5"], rows),
        para("Drop (old − new): top-1 ", num("accuracy.drop_top1", acc["drop_top1"], f"{acc['drop_top1']:+.2f} pt"),
             ", top-5 ", num("accuracy.drop_top5", acc["drop_top5"], f"{acc['drop_top5']:+.2f} pt"), ".")])


def _latency(data: dict[str, Any]) -> Section:
    lat = data.get("latency")
    if not lat:
        return Section("latency", "Latency", [para("Not timed (--no-timing).", style="note")])
    rows = []
    for b, r in lat["batches"].items():
        k = f"latency.batches.{b}"
        rows.append([num(None, int(b)), num(f"{k}.old_p50_ms", r["old_p50_ms"]), num(f"{k}.new_p50_ms", r["new_p50_ms"]),
                     num(f"{k}.slowdown", r["slowdown"], f"x{fmt_num(r['slowdown'])}"), num(f"{k}.old_cv", r["old_cv"]),
                     num(f"{k}.new_cv", r["new_cv"]), num(f"{k}.iterations", r["iterations"])])
    blocks = [para("Both engines timed round-robin in one session (same machine state): p50 in ms; slowdown = new / old.", style="note"),
              Table(["batch", "old p50 ms", "new p50 ms", "new / old", "old cv", "new cv", "iterations each"], rows)]
    if lat.get("skipped_batches"):
        blocks.append(para(f"Not timed: batch {', '.join(map(str, lat['skipped_batches']))} (outside a bundle's batch range)."))
    return Section("latency", "Latency", blocks)


def _size(data: dict[str, Any]) -> Section:
    o, n = data["old"], data["new"]
    return Section("size", "Size", [Table(["bundle", "all files", "engine + model.onnx"], [
        [text("old"), num("old.bytes", o["bytes"], fmt_bytes(o["bytes"])), num("old.engine_bytes", o["engine_bytes"], fmt_bytes(o["engine_bytes"]))],
        [text("new"), num("new.bytes", n["bytes"], fmt_bytes(n["bytes"])), num("new.engine_bytes", n["engine_bytes"], fmt_bytes(n["engine_bytes"]))]])])


def _differences(data: dict[str, Any]) -> Section:
    diffs = data["differences"]
    if not diffs:
        return Section("differences", "What the manifests say differently", [para("Nothing: same model, weights, recipe, runtime and versions.")])
    rows = [[code(d["key"]), _value(d["old"]), _value(d["new"])] for d in diffs]
    return Section("differences", "What the manifests say differently", [Table(["manifest key", "old", "new"], rows)])


def _value(v: Any) -> Cell:
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return Cell(short_sha(v), title=v, style="code")
    shown = "—" if v is None else (str(v) if not isinstance(v, (list, dict)) else _short(v))
    return Cell(shown if len(shown) <= 120 else shown[:117] + "...", title=shown if len(shown) > 120 else None)


def _short(v: Any) -> str:
    import json

    return json.dumps(v, ensure_ascii=False)
