"""report.md / report.html: one view, both formats the same, every number exact behind its data-key."""

from __future__ import annotations

import ast
import base64
import functools
import json
import math
import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from coatnet_deploy.report import Cell, Section, Table, build_view, candidates_section, render_html, render_markdown
from coatnet_deploy.report import plots
from coatnet_deploy.report.formats import fmt_cosine, fmt_pct

STAGES = ["onnx", "simplified", "quantized", "engine"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]
OLD_BUNDLES = ROOT / "tests" / "fixtures" / "old_bundles"


def _parity(rng, cos_floor, err_scale, n=32):
    cos = (1.0 - rng.uniform(0, cos_floor, n)).tolist()
    err = rng.uniform(0.1, 1.0, n) * err_scale
    return cos, err.tolist()


def _latency(rng, center, n=200):
    samples = (center + rng.gamma(2.0, center * 0.03, n)).tolist()
    q = np.percentile(samples, [50, 90, 99])
    return {
        "batch": 1, "warmup": 10, "iterations": n, "p50_ms": float(q[0]), "p90_ms": float(q[1]),
        "p99_ms": float(q[2]), "mean_ms": float(np.mean(samples)), "throughput_ips": 1000.0 / float(np.mean(samples)),
        "min_ms": float(min(samples)), "cv": float(np.std(samples) / np.mean(samples)), "noisy": False,
        "warnings": [], "samples_ms": samples, "threads": 2, "settings": {"threads": 2},
    }


def make_report(status="PASSED", optional=True, issue11=False):
    """A int8 onnxruntime report shaped like pipeline.py's: PASSED, or FAILED on max_abs_err;
    optional sections (reference latency, precision plan, sensitivity, accuracy) on or off;
    issue11: with the keys INTERFACES.md "Report data" adds (warnings, gated subset, op census, profile)."""
    rng = np.random.default_rng(0 if status == "PASSED" else 1)
    failed = status == "FAILED"
    stages = []
    drift = {"onnx": (1e-7, 1e-5), "simplified": (1e-7, 1.2e-5), "quantized": (2e-4, 0.08 if not failed else 0.4),
             "engine": (2.1e-4, 0.085 if not failed else 0.45)}
    for name in STAGES:
        cos, err = _parity(rng, *drift[name])
        stages.append({
            "stage": name, "artifact": {"onnx": "stages/model.onnx", "simplified": "stages/model.sim.onnx",
                                        "quantized": "model.onnx", "engine": "model.onnx (ORT CPU)"}[name],
            "runtime": "onnxruntime", "samples": 32, "cosine_min": min(cos), "max_abs_err": max(err), "mean_abs_err": float(np.mean(err)) / 4,
            "top1_agreement": 1.0 if name in ("onnx", "simplified") else 0.96875, "top5_agreement": 1.0,
        })
    final = stages[-1]
    cos, err = _parity(rng, *drift["engine"])
    cos[0], err[0] = final["cosine_min"], final["max_abs_err"]
    gates = {"cosine_min": 0.999, "max_abs_err": 0.2, "top1_agreement": 0.9}
    if optional:
        gates["accuracy_drop"] = 2.0  # percentage points; measured value lives in accuracy.drop_top1
    parity = {k: final[k] for k in ("samples", "cosine_min", "max_abs_err", "mean_abs_err",
                                    "top1_agreement", "top5_agreement")}
    parity.update({"gates": gates, "passed": not failed, "per_sample": {"cosine": cos, "max_abs_err": err}})
    if failed:
        parity["failed_gates"] = ["max_abs_err"]
        parity["min_passing"] = {"max_abs_err": final["max_abs_err"]}
    report = {
        "status": status, "target": "onnxruntime", "precision": "int8",
        "reference": {"framework": "torch 2.13.0", "device": "cpu", "dtype": "float32"},
        "parity": parity, "stages": stages,
        "latency": _latency(rng, 3.2), "reference_latency": _latency(rng, 9.7),
        "reference_note": "random init (no --weights)",
        "environment": {"python": "3.12.3", "platform": "Linux-6.8-x86_64", "cpu": "AMD EPYC 9B14 (2 threads)",
                        "cpu_count": 2, "threads": 2, "gpu": None, "versions": {"onnxruntime": "1.22.0", "onnx": "1.18.0"}},
    }
    if optional:
        ops = ["Conv"] * 14 + ["MatMul"] * 22 + ["Gemm"] * 2
        floats = ["Softmax"] * 6 + ["LayerNormalization"] * 8 + ["Gelu"] * 10 + ["Add"] * 12
        excluded = ["/head/fc/Gemm", "/stem/conv1/Conv"]
        report["precision_plan"] = {  # precision.plan.PrecisionPlan.to_dict(): excluded are also float
            "quantized_nodes": [f"/stages.{i % 4}/blocks.{i}/{op}" + (f"_{i}" if i % 3 else "") for i, op in enumerate(ops)],
            "float_nodes": [f"/stages.{i % 4}/blocks.{i}/attn/{op}" for i, op in enumerate(floats)] + excluded,
            "excluded": excluded,
            "reasons": {"/head/fc/Gemm": "last layer <stays float> & logits", "/stem/conv1/Conv": "first layer"},
            "counts": {"quantized": 38, "float": 38, "excluded": 2},
        }
        report["sensitivity"] = [
            {"node": f"/stages.{i % 4}/blocks.{i}/mlp/fc{i % 2 + 1}/MatMul", "op_type": "MatMul",
             "sqnr_db": float(12 + 1.7 * i + rng.uniform(0, 1)), "output_sqnr_db": float(10 + 1.5 * i)}
            for i in range(26)
        ]
        report["sensitivity_suggested_exclusions"] = [report["sensitivity"][0]["node"]]
        report["accuracy"] = {  # percent, as compare.accuracy returns
            "images": 640, "reference_top1": 81.25, "reference_top5": 95.3125, "engine_top1": 79.6875,
            "engine_top5": 95.3125, "drop_top1": 1.5625, "drop_top5": 0.0, "top1_agreement": 0.96875,
            "per_class": {f"class_{c}": {"n": 64, "agreement": float(a), "reference_top1": 80.0, "engine_top1": 78.5}
                          for c, a in enumerate(rng.uniform(0.8, 1, 10))}}
    else:
        del report["reference_latency"]
    if issue11:
        _add_issue11_keys(report, rng)
    return report


def _add_issue11_keys(report, rng):
    parity = report["parity"]
    n = len(parity["per_sample"]["cosine"])
    names = [f"image:photo_{i}.jpg" if i < 8 else f"random:0:{i - 8}" for i in range(n)]
    parity["per_sample"].update({"names": names, "gated": [nm.startswith("image:") for nm in names]})
    parity["all_samples"] = {k: parity[k] for k in ("cosine_min", "max_abs_err", "mean_abs_err",
                                                    "top1_agreement", "top5_agreement")}
    parity.update({"gate_samples": "images", "samples": 8, "cosine_mean": 0.9999999999999204,
                   "sqnr_db": float("inf")})
    parity["all_samples"].update({"samples": n, "cosine_mean": 0.99995, "sqnr_db": 31.7})
    parity["gates"].update({"cosine_mean": 0.9999, "sqnr_db": 20.0})
    report["warnings"] = ["OpenVINO ran 3 layers in bf16 <despite the hint> & was pinned",
                          "calibration set has 4 images | fewer than asked"]
    report["op_census"] = {"runtime": "onnxruntime", "source": "optimized graph",
                           "by_op": [{"op": "Conv", "precision": "int8", "count": 14},
                                     {"op": "MatMul", "precision": "int8", "count": 20},
                                     {"op": "MatMul", "precision": "fp32", "count": 2}],
                           "int8_share": 34 / 36, "note": "Gemm counted as MatMul"}
    report["profile"] = {"runtime": "onnxruntime", "batch": 1, "total_ms": 3.1415926,
                         "by_layer_type": [{"layer_type": "Conv", "precision": "int8", "count": 14, "ms": 1.75,
                                            "share": 1.75 / 3.1415926},
                                           {"layer_type": "Softmax", "precision": "fp32", "count": 6, "ms": 0.01234,
                                            "share": 0.01234 / 3.1415926}]}
    report["accuracy"]["per_class"].update(
        {f"class_{c}": {"n": 64, "agreement": float(a)} for c, a in enumerate(rng.uniform(0.7, 1, 4), start=10)})


def make_manifest():
    return {
        "schema_version": 1,
        "model": {"name": "coatnet_tiny", "num_classes": 10, "labels": None, "weights_sha256": None},
        "input": {"name": "input", "layout": "NCHW", "dtype": "float32", "shape": [[1, 8], 3, 64, 64]},
        "preprocess": {"resize": 73, "crop": 64, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                       "interpolation": "bicubic"},
        "target": "onnxruntime", "precision": "int8",
        "artifacts": [
            {"path": "model.onnx", "sha256": "ab12" * 16, "bytes": 1_234_567},
            {"path": "golden.npz", "sha256": "cd34" * 16, "bytes": 98_304},
        ],
        "versions": {"torch": "2.13.0", "onnxruntime": "1.22.0", "coatnet_deploy": "0.1.0"},
        "created": "2026-11-26T05:00:00Z",
    }


VARIANTS = [("PASSED", True, False), ("FAILED", True, False), ("PASSED", False, False), ("FAILED", False, False),
            ("FAILED", True, True)]
VARIANT_IDS = [f"{s.lower()}-{'issue11' if n else 'full' if o else 'minimal'}" for s, o, n in VARIANTS]


@functools.lru_cache(maxsize=None)
def _rendered(status, optional, issue11):
    """Each variant is rendered once per run: plotting dominates the test time."""
    report, manifest = make_report(status, optional, issue11), make_manifest()
    return report, manifest, render_html(report, manifest), render_markdown(report, manifest)


@pytest.fixture(params=VARIANTS, ids=VARIANT_IDS)
def case(request):
    """(report, manifest, optional sections present, html, markdown); treat as read-only."""
    status, optional, issue11 = request.param
    report, manifest, page, md = _rendered(status, optional, issue11)
    return report, manifest, optional, page, md


# ---------------------------------------------------------------- reading the pages back


class _Page(HTMLParser):
    """Tag balance, data-key cells, image sources, link targets, and per section the blocks a reader
    sees in order: ("p", text), ("li", [texts]), ("table", [[header], [row]...]), ("detail", summary).
    Figures and what is inside <details> are HTML-only and kept out of `blocks`."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.cells, self.imgs, self.urls = [], [], [], [], []
        self.sections, self.facts, self.all_keys = [], [], []
        self._keys = []  # open data-key elements: (key, value, depth, text parts)
        self._text = None  # text being collected for the current p / li / th / td / summary / dt / dd
        self._row = self._table = None
        self._details = 0

    @property
    def blocks(self):
        return self.sections[-1][2] if self.sections else []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("src", "href"):
            if a.get(name):
                self.urls.append(a[name])
        if tag == "img":
            self.imgs.append(a.get("src", ""))
        if tag in self.VOID:
            return
        self.stack.append(tag)
        if "data-key" in a:
            self._keys.append((a["data-key"], a.get("data-value"), len(self.stack), []))
            self.all_keys.append((a["data-key"], self._details > 0))
        if tag == "section":
            self.sections.append([a.get("id"), None, []])
        elif tag == "details":
            self._details += 1
        elif tag in ("p", "li", "th", "td", "h2", "summary", "dt", "dd") and self._text is None:
            self._text = []
        elif tag == "table" and not self._details:
            self._table = []
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag == "ul" and not self._details:
            self.blocks.append(("li", []))

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        if self._keys and self._keys[-1][2] == len(self.stack):
            key, value, _, parts = self._keys.pop()
            self.cells.append((key, value, "".join(parts).strip()))
        self.stack.pop()
        text = "".join(self._text).strip() if self._text is not None and tag in (
            "p", "li", "th", "td", "h2", "summary", "dt", "dd") else None
        if text is not None:
            self._text = None
        if tag == "details":
            self._details -= 1
        elif tag == "summary":
            self.blocks.append(("detail", text))
        elif self._details:
            return
        elif tag == "h2":
            self.sections[-1][1] = text
        elif tag == "dt":
            self.facts.append([text])
        elif tag == "dd":
            self.facts[-1].append(text)
        elif tag == "p" and self.stack[-1:] != ["figure"]:
            self.blocks.append(("p", text))
        elif tag == "li":
            self.blocks[-1][1].append(text)
        elif tag in ("th", "td") and self._row is not None:
            self._row.append(text)
        elif tag == "tr" and self._table is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table" and self._table is not None:
            self.blocks.append(("table", self._table))
            self._table = None

    def handle_data(self, data):
        for _, _, _, parts in self._keys:
            parts.append(data)
        if self._text is not None:
            self._text.append(data)


def _parse(page):
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


def _md_plain(text):
    """Markdown inline text -> what a reader sees (code spans, bold and escapes undone)."""
    text = re.sub(r"(?<!\\)(`+) ?(.*?) ?\1(?!`)", lambda m: m.group(2).replace("\\|", "\x00"), text)
    text = text.replace("**", "")
    text = re.sub(r"\\([\\|*`])", lambda m: "\x00" if m.group(1) == "|" else m.group(1), text)
    return text.replace("&lt;", "<").replace("\x00", "|")


def _md_row(line):
    return [_md_plain(c.strip()) for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def _md_sections(md):
    """Markdown -> (facts, [(title, blocks)]) with blocks shaped as _Page.blocks."""
    facts, sections, blocks, in_table = [], [], None, False
    for line in md.splitlines():
        is_row = line.startswith("|")
        if line.startswith("## "):
            blocks = []
            sections.append((_md_plain(line[3:]), blocks))
        elif blocks is None:
            if line.startswith("- "):
                facts.append(_md_plain(line[2:]).split(": ", 1))
        elif is_row:
            if not re.fullmatch(r"\|(:?-+:?\|)+", line):
                if not in_table:
                    blocks.append(("table", []))
                blocks[-1][1].append(_md_row(line))
        elif line.startswith("- "):
            if not blocks or blocks[-1][0] != "li":
                blocks.append(("li", []))
            blocks[-1][1].append(_md_plain(line[2:]))
        elif line.endswith(": in report.html."):
            blocks.append(("detail", _md_plain(line[: -len(": in report.html.")])))
        elif line.strip():
            blocks.append(("p", _md_plain(line)))
        in_table = is_row
    return facts, sections


def _md_tables(md):
    """Markdown -> list of tables, each a list of rows of cell strings (header included)."""
    tables, current = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            if not re.fullmatch(r"\|(:?-+:?\|)+", line):
                current.append(_md_row(line))
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _lookup(report, manifest, key):
    """Dotted path (list items by index, '.length' = len, 'manifest.' = manifest.json) -> value."""
    node, parts = report, key.split(".")
    if parts[0] == "manifest":
        node, parts = manifest, parts[1:]
    for part in parts:
        if part == "length":
            return len(node)
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3}


def _half_ulp(number):
    """'2.384e-07' -> half a unit in its last shown digit (what rounding to that text can lose)."""
    mantissa, _, exp = number.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exp or 0) - decimals) * (1 + 1e-9)


def assert_shows(text, value):
    """Visible text must read as the exact value, to the digits it shows; written independently of the
    package's formatters: '1 - cos = 8e-14', '96.9%' (a fraction, or an accuracy already in percent),
    '1.2 MiB', '≥ 0.999', '∞'."""
    t = re.sub(r"^[≥≤]\s*", "", text.strip())
    if isinstance(value, float) and math.isinf(value):
        assert t == ("∞" if value > 0 else "-∞"), (text, value)
        return
    m = re.fullmatch(rf"1 - cos = ({_NUM})", t)
    if m:
        assert abs((1.0 - value) - float(m.group(1))) <= _half_ulp(m.group(1)), (text, value)
        return
    m = re.fullmatch(rf"({_NUM})\s*(%|B|KiB|MiB|GiB)?", t)
    assert m, f"not a number a reader can read: {text!r} for {value!r}"
    shown, unit, tol = float(m.group(1)), m.group(2), _half_ulp(m.group(1))
    if unit == "%":
        assert abs(shown - 100 * value) <= tol or abs(shown - value) <= tol, (text, value)
    elif unit:
        assert abs(shown * _UNITS[unit] - value) <= tol * _UNITS[unit], (text, value)
    else:
        assert abs(shown - value) <= tol, (text, value)


# ---------------------------------------------------------------- both formats, one view


def test_html_is_balanced_self_contained_and_numbers_match_report(case):
    report, manifest, optional, page, _ = case
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == [], (parsed.errors, parsed.stack)
    # Nothing the browser would fetch: every src/href is inline data.
    assert [u for u in parsed.urls if not u.startswith("data:")] == []
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page)
    assert "<script" not in page

    checked = 0
    for key, value, text in parsed.cells:
        expected = _lookup(report, manifest, key)
        if key == "status":
            assert value == text == expected
            continue
        assert value is not None, key
        assert json.loads(json.dumps(expected)) == expected or math.isinf(expected)
        exact = float(value) if value in ("inf", "-inf") else ast.literal_eval(value)
        assert exact == expected, (key, value, expected)  # data-value is repr(): exact round trip
        assert_shows(text, expected)
        checked += 1
    keys = {k for k, _, _ in parsed.cells}
    for must in ("status", "parity.cosine_min", "parity.max_abs_err", "parity.gates.cosine_min",
                 "latency.p50_ms", "latency.throughput_ips", "manifest.artifacts.0.bytes",
                 *(f"stages.{i}.{k}" for i in range(4) for k in ("cosine_min", "max_abs_err", "mean_abs_err",
                                                                 "top1_agreement", "top5_agreement")),
                 *(f"parity.per_sample.{k}.{i}" for i in range(32) for k in ("cosine", "max_abs_err"))):
        assert must in keys, must
    if optional:
        for must in ("reference_latency.p99_ms", "accuracy.engine_top1", "accuracy.drop_top1",
                     "parity.gates.accuracy_drop", "accuracy.per_class.class_3.agreement",
                     "precision_plan.quantized_nodes.length", "sensitivity.0.sqnr_db", "sensitivity.25.sqnr_db"):
            assert must in keys, must
    assert checked >= 100


def test_both_formats_show_the_same_sections_blocks_and_numbers(case):
    """Section by section, what Markdown shows is what HTML shows outside figures and folded details."""
    report, manifest, _, page, md = case
    parsed = _parse(page)
    view = build_view(report, manifest)
    assert [s[0] for s in parsed.sections] == [s.id for s in view.sections]
    md_facts, md_sections = _md_sections(md)
    html_sections = [(title, [(kind, body) for kind, body in blocks]) for _, title, blocks in parsed.sections]
    assert [t for t, _ in md_sections] == [t for t, _ in html_sections]
    for (title, md_blocks), (_, html_blocks) in zip(md_sections, html_sections):
        assert md_blocks == html_blocks, title
    assert md_facts == parsed.facts
    # every number HTML shows outside <details> sits in a Markdown table or line as the same text
    shown_md = {c for t in _md_tables(md) for row in t for c in row}
    lines_md = [b for _, blocks in md_sections for kind, b in blocks if kind == "p"]
    for key, _, text in parsed.cells:
        folded = dict(parsed.all_keys).get(key)
        if key != "status" and not folded:
            assert text in shown_md or any(text in line for line in lines_md), (key, text)


def test_every_figure_and_detail_has_its_place_in_both(case):
    report, manifest, optional, page, md = case
    view = build_view(report, manifest)
    details = [b.detail for s in view.sections for b in s.blocks if b.detail]
    assert [line[: -len(": in report.html.")] for line in md.splitlines() if line.endswith(": in report.html.")] \
        == details
    assert page.count("<summary>") == len(details)
    assert "data:image" not in md


def test_html_plots_are_embedded_pngs(case):
    report, manifest, optional, page, _ = case
    parsed = _parse(page)
    # stage drift, per-sample errors, latency; + precision plan and sensitivity when present
    expected = 5 if optional else 3
    assert len(parsed.imgs) >= expected
    for src in parsed.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)


def test_html_status_banner_and_failed_gate(case):
    report, manifest, _, page, md = case
    if report["status"] == "PASSED":
        assert 'class="banner passed"' in page and "FAIL<" not in page and "**FAIL**" not in md
        assert f"all {len(report['parity']['gates'])} parity gates passed" in page
    else:
        assert 'class="banner failed"' in page
        assert "gate(s) failed: max_abs_err" in page and "gate(s) failed: max_abs_err" in md
        assert 'data-key="parity.min_passing.max_abs_err"' in page
        assert re.search(r'<tr class="fail"><td>max_abs_err</td>', page)


def test_markdown_tables_hold_the_report_numbers(case):
    report, manifest, optional, _, md = case
    tables = _md_tables(md)
    by_header = {tuple(t[0]): t[1:] for t in tables}
    assert f"**Status: {report['status']}**" in md

    gate_header = next(h for h in by_header if h[:4] == ("gate", "threshold", "measured", "result"))
    gates = {r[0]: r for r in by_header[gate_header]}
    p = report["parity"]
    assert gates["cosine_min"][1].startswith("≥ ") and gates["max_abs_err"][1].startswith("≤ ")
    assert_shows(gates["cosine_min"][1], 0.999)
    assert_shows(gates["cosine_min"][2], p["cosine_min"])
    assert_shows(gates["max_abs_err"][1], 0.2)
    assert_shows(gates["max_abs_err"][2], p["max_abs_err"])
    assert gates["top1_agreement"][1:3] == ["≥ 90%", "96.9%"]
    if report["status"] == "FAILED":
        assert gates["max_abs_err"][3] == "FAIL" and "| **FAIL** |" in md
        assert_shows(gates["max_abs_err"][4], p["min_passing"]["max_abs_err"])
    else:
        assert {r[3] for r in gates.values()} == {"pass"}

    stage_rows = by_header[("stage", "artifact", "cosine_min", "max_abs_err", "mean_abs_err", "top-1", "top-5")]
    assert [r[0] for r in stage_rows] == STAGES
    assert [r[1] for r in stage_rows] == [f"{s['artifact']} (onnxruntime)" for s in report["stages"]]
    for row, stage in zip(stage_rows, report["stages"]):
        for text, k in zip(row[2:], ("cosine_min", "max_abs_err", "mean_abs_err", "top1_agreement",
                                     "top5_agreement")):
            assert_shows(text, stage[k])
    assert stage_rows[0][2].startswith("1 - cos = ") and stage_rows[0][5] == "100%"

    lat_rows = {r[0]: r for r in by_header[("runner", "batch", "p50 (ms)", "p90 (ms)", "p99 (ms)", "mean (ms)",
                                            "throughput (img/s)")]}
    for text, k in zip(lat_rows["engine"][2:], ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips")):
        assert_shows(text, report["latency"][k])
    if optional:
        ref = report["reference_latency"]
        assert_shows(lat_rows["reference (PyTorch)"][2], ref["p50_ms"])
        sp = re.search(r"Speed-up at p50: \*\*([\d.]+)×\*\*", md).group(1)
        assert_shows(sp, ref["p50_ms"] / report["latency"]["p50_ms"])
        sens = by_header[("rank", "node", "op type", "SQNR (dB)", "output SQNR (dB)")]
        assert len(sens) == 10
        assert f"Suggested to keep in float: `{report['sensitivity'][0]['node']}`" in md
        assert_shows(sens[0][3], min(e["sqnr_db"] for e in report["sensitivity"]))
        assert [float(r[3]) for r in sens] == sorted(float(r[3]) for r in sens)
        acc = {r[0]: r for r in by_header[("", "top-1", "top-5")]}
        assert acc["engine"][1:] == ["79.69%", "95.31%"]
        assert "Top-1 drop: **1.56** percentage points." in md
        assert gates["accuracy_drop"][1:4] == ["≤ 2", "1.56", "pass"]
        classes = by_header[("class", "agreement", "images")]
        per_class = report["accuracy"]["per_class"]
        assert len(classes) == 10 and [r[0] for r in classes] == sorted(
            per_class, key=lambda c: per_class[c]["agreement"])[:10]
        for name, text, n in classes:
            assert_shows(text, per_class[name]["agreement"]) and n == "64"
        ops = {r[0]: r[1:] for r in by_header[("op type", "INT8", "float")]}
        assert ops["MatMul"] == ["22", "0"] and ops["Gelu"] == ["0", "10"] and ops["Conv"] == ["14", "1"]
        assert "**38** nodes in INT8, **38** kept in float (**2** of them excluded by rule although quantizable)." in md
        assert "- `/head/fc/Gemm`: last layer &lt;stays float> & logits" in md  # no raw tag in markdown
    else:
        assert "reference (PyTorch)" not in lat_rows
        for section in ("## Precision plan", "## Quantization sensitivity", "## Accuracy"):
            assert section not in md
    arts = by_header[("file", "sha256 (first 12)", "size")]
    assert arts[0] == ["model.onnx", "ab12ab12ab12", "1.2 MiB"]
    assert "- input: input NCHW float32 1–8 × 3 × 64 × 64" in md


def test_one_spelling_for_top1():
    report, manifest, page, md = _rendered("FAILED", True, True)
    for text in (page, md):
        assert "top-1" in text and "top-5" in text
        assert not re.search(r"\btop[15]\b", text)


# ---------------------------------------------------------------- the keys INTERFACES.md adds


def test_warnings_come_first_in_both_formats():
    report, manifest, page, md = _rendered("FAILED", True, True)
    assert [s.id for s in build_view(report, manifest).sections][:2] == ["warnings", "gates"]
    assert md.index("## Warnings") < md.index("## Parity gates")
    assert "⚠ OpenVINO ran 3 layers in bf16 &lt;despite the hint> & was pinned" in md
    assert "⚠ calibration set has 4 images \\| fewer than asked" in md
    assert "⚠ OpenVINO ran 3 layers in bf16 &lt;despite the hint&gt; &amp; was pinned" in page
    assert _md_sections(md)[1][0][1] == [("p", "⚠ " + w) for w in report["warnings"]]


def test_gated_subset_and_all_samples_are_shown_apart():
    report, manifest, page, md = _rendered("FAILED", True, True)
    assert "Gated on 8 of 32 golden samples (gate_samples: images)" in md
    table = next(t for t in _md_tables(md) if t[0][:2] == ["", "samples"])
    rows = {r[0]: dict(zip(table[0], r)) for r in table[1:]}
    assert rows["gated"]["samples"] == "8" and rows["all samples (not gating)"]["samples"] == "32"
    assert rows["gated"]["SQNR (dB)"] == "∞" and rows["all samples (not gating)"]["SQNR (dB)"] == "31.7"
    assert rows["gated"]["cosine_mean"] == "1 - cos = 8e-14"  # 0.9999999999999204
    assert rows["all samples (not gating)"]["cosine_mean"] == "1 - cos = 5e-05"
    keys = {k for k, _, _ in _parse(page).cells}
    assert {"parity.all_samples.cosine_mean", "parity.all_samples.samples", "parity.sqnr_db"} <= keys


def test_unknown_gate_names_render_with_their_direction():
    report, manifest, page, md = _rendered("FAILED", True, True)
    gates = {r[0]: r for t in _md_tables(md) if t[0][:2] == ["gate", "threshold"] for r in t[1:]}
    assert gates["cosine_mean"][1:4] == ["≥ 0.9999", "1 - cos = 8e-14", "pass"]
    assert gates["sqnr_db"][1:4] == ["≥ 20", "∞", "pass"]
    assert gates["max_abs_err"][1].startswith("≤") and gates["accuracy_drop"][1].startswith("≤")
    assert 'data-key="parity.gates.sqnr_db" data-value="20.0"' in page
    assert 'data-key="parity.sqnr_db" data-value="inf"' in page


def test_per_sample_names_and_gated_flags():
    report, manifest, page, md = _rendered("FAILED", True, True)
    view = build_view(report, manifest)
    drift = next(s for s in view.sections if s.id == "drift")
    fig = next(f for f in drift.figures if f.plot == "per_sample")
    assert fig.data["gated"] == report["parity"]["per_sample"]["gated"] and "Hollow markers" in fig.caption
    table = next(t for t in drift.tables if t.detail)
    assert table.headers == ["#", "sample", "gated", "cosine", "max_abs_err"]
    assert [r[1].text for r in table.rows] == report["parity"]["per_sample"]["names"]
    assert [r[2].text for r in table.rows] == ["yes"] * 8 + ["no"] * 24
    # the plot tells gated from ungated samples apart: the same data, all gated, draws another image
    all_gated = dict(fig.data, gated=[True] * len(fig.data["gated"]))
    assert plots.plot_per_sample(**fig.data) != plots.plot_per_sample(**all_gated)


def test_op_census_and_profile():
    report, manifest, page, md = _rendered("FAILED", True, True)
    assert "As onnxruntime runs the engine (read from optimized graph). 94.4% of the Conv/MatMul nodes run in int8." in md
    tables = {tuple(t[0]): t[1:] for t in _md_tables(md)}
    assert tables[("op", "precision", "count")] == [["Conv", "int8", "14"], ["MatMul", "int8", "20"],
                                                   ["MatMul", "fp32", "2"]]
    prof = tables[("layer type", "precision", "count", "time (ms)", "share")]
    assert prof[0] == ["Conv", "int8", "14", "1.75", "55.7%"] and prof[1][3:] == ["0.01234", "0.4%"]
    assert "**3.142** ms per inference in total" in md
    keys = {k for k, _, _ in _parse(page).cells}
    assert {"op_census.int8_share", "op_census.by_op.2.count", "profile.total_ms",
            "profile.by_layer_type.1.share"} <= keys


def test_long_class_lists_show_the_10_worst_in_both_and_all_in_html():
    report, manifest, page, md = _rendered("FAILED", True, True)
    per_class = report["accuracy"]["per_class"]
    assert len(per_class) == 14
    assert "Per-class agreement, engine vs reference (lowest 10 of 14 classes):" in md
    assert "All 14 classes, lowest first: in report.html." in md
    parsed = _parse(page)
    folded = {k for k, inside in parsed.all_keys if inside}
    assert {f"accuracy.per_class.class_{c}.agreement" for c in range(14)} <= folded


# ---------------------------------------------------------------- target sections from outside


CANDIDATES = {"qdq": {"cosine_min": 0.99987, "max_abs_err": 0.0912, "top1_agreement": 1.0, "passed": True},
              "nncf": {"cosine_min": 0.9999999999999204, "max_abs_err": 0.031, "top1_agreement": 0.9375,
                       "passed": False}}


def test_extra_sections_render_in_both_formats_with_their_data_keys():
    report, manifest = make_report("PASSED", optional=False), make_manifest()
    for key in ("latency", "stages"):
        del report[key]
    del report["parity"]["per_sample"]
    report["int8_candidates_of_some_target"] = CANDIDATES
    manifest["engine"] = {"runtime": "some-runtime", "int8_method": "qdq"}
    extra = [candidates_section("INT8 candidates", CANDIDATES, "int8_candidates_of_some_target",
                                [("cosine_min", "cosine_min"), ("max_abs_err", "max_abs_err"),
                                 ("top1_agreement", "top-1"), ("passed", "gates")],
                                chosen="qdq", note="Built two ways; the closer one is kept.")]
    page, md = render_html(report, manifest, extra), render_markdown(report, manifest, extra)
    parsed = _parse(page)
    ids = [s[0] for s in parsed.sections]
    assert ids.index("engine") + 1 == ids.index("int8-candidates") < ids.index("artifacts")
    cells = {k: (v, t) for k, v, t in parsed.cells if k.startswith("int8_candidates_of_some_target.")}
    assert set(cells) == {f"int8_candidates_of_some_target.{n}.{m}" for n in CANDIDATES
                          for m in ("cosine_min", "max_abs_err", "top1_agreement")}
    for key, (value, text) in cells.items():
        assert ast.literal_eval(value) == _lookup(report, manifest, key)
        assert_shows(text, _lookup(report, manifest, key))
    table = next(t for t in _md_tables(md) if t[0][0] == "candidate")
    assert table == [["candidate", "cosine_min", "max_abs_err", "top-1", "gates", "kept"],
                     ["nncf", "1 - cos = 8e-14", "0.031", "93.8%", "FAIL", ""],
                     ["qdq", "1 - cos = 0.00013", "0.0912", "100%", "pass", "yes"]]
    assert "Built two ways; the closer one is kept." in md and "Built two ways; the closer one is kept." in page
    _assert_same_blocks(page, md)


def _assert_same_blocks(page, md):
    parsed = _parse(page)
    _, md_sections = _md_sections(md)
    assert [t for t, _ in md_sections] == [s[1] for s in parsed.sections]
    for (title, md_blocks), (_, _, html_blocks) in zip(md_sections, parsed.sections):
        assert md_blocks == html_blocks, title


def test_a_hand_made_section_goes_through_both_templates_alike():
    sec = Section("custom", "Custom | part", [Table(["a|b", "n"], [[Cell("x<y>&'\""), Cell("1.5", "k", 1.5, True)]])])
    report = {"status": "PASSED", "k": 1.5}
    page, md = render_html(report, {}, [sec]), render_markdown(report, {}, [sec])
    assert "## Custom \\| part" in md and "| a\\|b | n |" in md and "|---|---:|" in md
    assert "<th>a|b</th>" in page and "x&lt;y&gt;&amp;&#39;&#34;" in page
    assert 'data-key="k" data-value="1.5"' in page
    _assert_same_blocks(page, md)


# ---------------------------------------------------------------- hostile strings


HOSTILE = '<script>alert("x")</script> & \'q\' | <b>'


def test_html_escapes_strings():
    report, manifest = make_report(optional=False), make_manifest()
    report["precision_plan"] = make_report()["precision_plan"]
    for key in ("latency", "stages"):
        del report[key]
    del report["parity"]["per_sample"]
    manifest["model"]["name"] = '<script>alert("x")</script>'
    report["reference_note"] = "a & b <i>"
    report["warnings"] = [HOSTILE]
    report["precision_plan"]["excluded"].append(HOSTILE)
    report["precision_plan"]["reasons"][HOSTILE] = HOSTILE
    report["accuracy"] = {"images": 4, "reference_top1": 0.5, "engine_top1": 0.5, "drop_top1": 0.0,
                          "per_class": {HOSTILE: {"agreement": 0.5, "n": 2}}}
    report["sensitivity"] = [{"node": HOSTILE, "op_type": "<Op>", "sqnr_db": 3.0}]
    manifest["engine"] = {"runtime": HOSTILE, "settings": {"device": HOSTILE}}
    manifest["artifacts"].append({"path": HOSTILE, "sha256": "\"><script>", "bytes": 3})
    page = render_html(report, manifest)
    assert "<script" not in page and "&lt;script&gt;" in page and "<b>" not in page and "<i>" not in page
    assert "a &amp; b &lt;i&gt;" in page
    assert "last layer &lt;stays float&gt; &amp; logits" in page
    assert 'title="&#34;&gt;&lt;script&gt;"' in page  # attribute values escaped too
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == []
    # every hostile string came through as text, whole
    texts = [b for _, _, blocks in parsed.sections for kind, b in blocks if kind == "p"]
    assert "⚠ " + HOSTILE in texts
    assert any(HOSTILE in c for _, _, blocks in parsed.sections for kind, b in blocks if kind == "table"
               for row in b for c in row)


def test_markdown_escapes_pipes_and_tags():
    report, manifest = make_report(optional=False), make_manifest()
    for key in ("latency", "stages"):
        del report[key]
    del report["parity"]["per_sample"]
    report["accuracy"] = {"images": 4, "reference_top1": 0.5, "engine_top1": 0.5, "drop_top1": 0.0,
                          "per_class": {"a|b": {"agreement": 0.5, "n": 2}, HOSTILE: {"agreement": 0.75, "n": 2}}}
    report["sensitivity"] = [{"node": "/x|y/`MatMul`", "op_type": "Mat|Mul", "sqnr_db": 3.0}]
    manifest["engine"] = {"runtime": "r|t", "files": ["a|b.bin", "c.xml"]}
    md = render_markdown(report, manifest)
    assert "<script" not in md and "<b>" not in md
    for table in _md_tables(md):
        assert len({len(r) for r in table}) == 1, table  # no pipe split a row
    tables = {tuple(t[0]): t[1:] for t in _md_tables(md)}
    assert [r[0] for r in tables[("class", "agreement", "images")]] == ["a|b", HOSTILE]
    assert tables[("rank", "node", "op type", "SQNR (dB)")][0][1:3] == ["/x|y/`MatMul`", "Mat|Mul"]
    assert "| `` /x\\|y/`MatMul` `` |" in md
    engine = dict(_md_sections(md)[1])["Engine"][0][1]
    assert ["runtime", "r|t"] in engine and ["files", "a|b.bin, c.xml"] in engine


# ---------------------------------------------------------------- small quantities, missing parts


def test_gates_as_dicts_and_near_one_cosines():
    report = make_report("FAILED", optional=False)
    for key in ("latency", "stages"):
        del report[key]  # no plots needed here; keeps the test fast
    report["parity"]["gates"] = {"cosine_min": {"threshold": 0.9999, "measured": 0.99987, "passed": False}}
    report["parity"]["min_passing"] = {"cosine_min": 0.99987}
    page = render_html(report, make_manifest())
    assert 'data-key="parity.gates.cosine_min.threshold" data-value="0.9999"' in page
    assert 'data-key="parity.gates.cosine_min.measured" data-value="0.99987" title="0.99987"' in page
    assert ">1 - cos = 0.00013<" in page
    # a cosine just below 1 never prints as "1", nor as a string of nines
    assert fmt_cosine(0.9999999999999204) == "1 - cos = 8e-14"
    assert fmt_cosine(0.9999999) == "1 - cos = 1e-07" and fmt_cosine(1 - 2.9e-14) == "1 - cos = 2.9e-14"
    assert fmt_cosine(1.0) == "1" and fmt_cosine(0.98765) == "0.9877"
    assert fmt_pct(0.9995) == "99.95%" and fmt_pct(0.99999) == "99.999%" and fmt_pct(0.9) == "90%"
    assert fmt_pct(1e-7) != "0.0%"


def test_reports_render_without_latency_and_optional_keys():
    report = make_report("PASSED", optional=False)
    for key in ("latency", "stages", "environment"):
        del report[key]
    del report["parity"]["per_sample"]
    md = render_markdown(report, {})
    assert "Not measured (bench iterations = 0)." in md
    page = render_html(report, {})
    assert "Not measured (bench iterations = 0)." in page
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == [] and parsed.imgs == []
    assert render_markdown({}, None).startswith("# model → ? / ?")


def test_noisy_latency_and_missing_artifacts_are_said_not_hidden():
    report = make_report("PASSED", optional=False)
    for key in ("stages",):
        del report[key]
    del report["parity"]["per_sample"]
    report["latency"].update({"noisy": True, "cv": 0.31, "warnings": ["thermal throttling <suspected>"], "samples_ms": []})
    manifest = make_manifest()
    del manifest["artifacts"]  # pipeline renders the reports before it checksums the bundle
    md, page = render_markdown(report, manifest), render_html(report, manifest)
    assert "engine: thermal throttling" in md and "noisy measurement (cv" not in md  # harness said it already
    report["latency"]["warnings"] = []
    md, page = render_markdown(report, manifest), render_html(report, manifest)
    assert "engine: noisy measurement (cv 0.31)" in md and "engine: noisy measurement (cv 0.31)" in page
    report["latency"]["warnings"] = ["thermal throttling <suspected>"]
    md, page = render_markdown(report, manifest), render_html(report, manifest)
    assert "thermal throttling &lt;suspected>" in md and "thermal throttling &lt;suspected&gt;" in page
    assert "File list and sha256 checksums: manifest.json." in md and "manifest.json" in page
    assert _parse(page).imgs == []


# ---------------------------------------------------------------- real bundles, the engine section


@pytest.mark.parametrize("bundle", sorted(p.name for p in OLD_BUNDLES.iterdir() if p.is_dir()))
def test_reports_of_real_bundles(bundle):
    """Reports and manifests the pipeline wrote (tests/fixtures/old_bundles) render in both formats, with
    the engine section read generically from manifest.engine."""
    report = json.loads((OLD_BUNDLES / bundle / "report.json").read_text())
    manifest = json.loads((OLD_BUNDLES / bundle / "manifest.json").read_text())
    for key in ("latency", "reference_latency"):  # the plots are covered above; keep this fast
        report.pop(key, None)
    report.get("parity", {}).pop("per_sample", None)
    for s in report.get("stages") or []:
        s["max_abs_err"] = None
    page, md = render_html(report, manifest), render_markdown(report, manifest)
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == []
    for key, value, text in parsed.cells:
        if key != "status":
            assert ast.literal_eval(value) == _lookup(report, manifest, key)
            assert_shows(text, _lookup(report, manifest, key))
    _assert_same_blocks(page, md)
    engine = {r[0]: r[1] for r in dict(_md_sections(md)[1])["Engine"][0][1][1:]}
    eng = manifest["engine"]
    assert engine["runtime"] == eng["runtime"]
    assert engine["files"] == ", ".join(eng["files"])
    for k, v in (eng.get("settings") or {}).items():
        if isinstance(v, (str, int, float)) and not isinstance(v, bool) and v != "":
            assert engine[f"settings.{k}"] == str(v), k
    if "build_plans" in eng:
        assert engine["build_plans"] == f"{len(eng['build_plans'])} entries: " + ", ".join(eng["build_plans"])
    if bundle.startswith("openvino"):
        assert engine["settings.execution_precision_totals"] == "f32: 112"
        assert 'data-key="manifest.engine.settings.inference_num_threads" data-value="2"' in page


# ---------------------------------------------------------------- the package itself


def test_report_package_names_no_target():
    pkg = ROOT / "coatnet_deploy" / "report"
    for path in sorted(pkg.rglob("*")):
        if path.is_file() and path.suffix in (".py", ".j2", ".css"):
            text = path.read_text().lower()
            for name in ("openvino", "tensorrt", "onnxruntime"):
                assert name not in text, (path.name, name)


def test_templates_ship_as_package_data():
    """Every template file matches pyproject's package-data globs (else a wheel has none; test_packaging
    checks the built wheel itself)."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["*"]
    files = [p.name for p in (ROOT / "coatnet_deploy" / "report" / "templates").iterdir()]
    assert files and all(any(fnmatch(f, g) for g in globs) for f in files), (files, globs)
    assert any(d.startswith("jinja2") for d in data["project"]["dependencies"])


def test_importing_the_package_loads_neither_jinja2_nor_matplotlib():
    code = ("import sys, coatnet_deploy.report; "
            "print(sorted(m for m in ('jinja2', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
