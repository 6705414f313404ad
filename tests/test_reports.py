"""report.md / report.html render every section from report.json and keep its numbers exact."""

from __future__ import annotations

import ast
import base64
import functools
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest

from coatnet_deploy.report_html import render_html
from coatnet_deploy.report_md import fmt_num, render_markdown

STAGES = ["onnx", "simplified", "quantized", "engine"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def make_report(status="PASSED", optional=True):
    """A int8 onnxruntime report shaped like pipeline.py's: PASSED, or FAILED on max_abs_err;
    optional sections (reference latency, precision plan, sensitivity, accuracy) on or off."""
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
    return report


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


VARIANTS = [("PASSED", True), ("FAILED", True), ("PASSED", False), ("FAILED", False)]


@functools.lru_cache(maxsize=None)
def _rendered(status, optional):
    """Each variant is rendered once per run: plotting dominates the test time."""
    report, manifest = make_report(status, optional), make_manifest()
    return report, manifest, render_html(report, manifest), render_markdown(report, manifest)


@pytest.fixture(params=VARIANTS, ids=[f"{s.lower()}-{'full' if o else 'minimal'}" for s, o in VARIANTS])
def case(request):
    """(report, manifest, optional sections present, html, markdown); treat as read-only."""
    status, optional = request.param
    report, manifest, page, md = _rendered(status, optional)
    return report, manifest, optional, page, md


class _Page(HTMLParser):
    """Collects tag balance, data-key cells, image sources and link targets."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.cells, self.imgs, self.urls = [], [], [], [], []
        self._open_key = None
        self._text = []

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
            self._open_key = (a["data-key"], a.get("data-value"), len(self.stack))
            self._text = []

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        if self._open_key and self._open_key[2] == len(self.stack):
            key, value, _ = self._open_key
            self.cells.append((key, value, "".join(self._text).strip()))
            self._open_key = None
        self.stack.pop()

    def handle_data(self, data):
        if self._open_key:
            self._text.append(data)


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


def _parse(page):
    parser = _Page()
    parser.feed(page)
    parser.close()
    return parser


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
        assert json.loads(json.dumps(expected)) == expected
        assert ast.literal_eval(value) == expected, (key, value, expected)  # data-value is repr(): exact round trip
        if key.startswith("manifest.artifacts."):
            continue  # shown as a human size; exact bytes live in data-value
        assert text == fmt_num(expected), (key, text, expected)
        checked += 1
    keys = {k for k, _, _ in parsed.cells}
    for must in ("status", "parity.cosine_min", "parity.max_abs_err", "parity.gates.cosine_min",
                 "latency.p50_ms", "latency.throughput_ips", *(f"stages.{i}.{k}" for i in range(4)
                 for k in ("cosine_min", "max_abs_err", "mean_abs_err", "top1_agreement", "top5_agreement"))):
        assert must in keys, must
    if optional:
        for must in ("reference_latency.p99_ms", "accuracy.engine_top1", "accuracy.drop_top1",
                     "parity.gates.accuracy_drop",
                     "precision_plan.quantized_nodes.length", "sensitivity.0.sqnr_db"):
            assert must in keys, must
    assert checked >= 30


def test_html_plots_are_embedded_pngs(case):
    report, manifest, optional, page, _ = case
    parsed = _parse(page)
    # stage drift, per-sample distributions, latency; + precision plan and sensitivity when present
    expected = 5 if optional else 3
    assert len(parsed.imgs) >= expected
    for src in parsed.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)


def test_html_status_banner_and_failed_gate(case):
    report, manifest, _, page, _ = case
    if report["status"] == "PASSED":
        assert 'class="banner passed"' in page and "FAIL<" not in page
    else:
        assert 'class="banner failed"' in page
        assert "gate(s) failed: max_abs_err" in page
        assert 'data-key="parity.min_passing.max_abs_err"' in page


def test_html_escapes_strings():
    report, manifest = make_report(optional=False), make_manifest()
    report["precision_plan"] = make_report()["precision_plan"]
    for key in ("latency", "stages"):
        del report[key]
    manifest["model"]["name"] = '<script>alert("x")</script>'
    report["reference_note"] = "a & b <i>"
    page = render_html(report, manifest)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "a &amp; b &lt;i&gt;" in page
    assert "last layer &lt;stays float&gt; &amp; logits" in page
    parsed = _parse(page)
    assert parsed.errors == [] and parsed.stack == []


def _md_tables(md):
    """Markdown -> list of tables, each a list of rows of cell strings (header included)."""
    tables, current = [], []
    for line in md.splitlines():
        if line.startswith("|"):
            if not re.fullmatch(r"\|(---\|)+", line):
                current.append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def test_markdown_tables_hold_the_report_numbers(case):
    report, manifest, optional, _, md = case
    tables = _md_tables(md)
    by_header = {tuple(t[0]): t[1:] for t in tables}
    assert f"**Status: {report['status']}**" in md

    gate_header = next(h for h in by_header if h[:4] == ("gate", "threshold", "measured", "result"))
    gates = {r[0]: r for r in by_header[gate_header]}
    p = report["parity"]
    assert gates["cosine_min"][1:3] == [f">= {fmt_num(0.999)}", fmt_num(p["cosine_min"])]
    assert gates["max_abs_err"][1:3] == [f"<= {fmt_num(0.2)}", fmt_num(p["max_abs_err"])]
    if report["status"] == "FAILED":
        assert gates["max_abs_err"][3] == "**FAIL**"
        assert gates["max_abs_err"][4] == fmt_num(p["min_passing"]["max_abs_err"])
    else:
        assert {r[3] for r in gates.values()} == {"pass"}

    stage_rows = by_header[("stage", "artifact", "cosine_min", "max_abs_err", "mean_abs_err", "top1", "top5")]
    assert [r[0] for r in stage_rows] == STAGES
    for row, stage in zip(stage_rows, report["stages"]):
        assert row[2:] == [fmt_num(stage[k]) for k in ("cosine_min", "max_abs_err", "mean_abs_err",
                                                       "top1_agreement", "top5_agreement")]

    lat_rows = {r[0]: r for r in by_header[("runner", "batch", "p50 (ms)", "p90 (ms)", "p99 (ms)", "mean (ms)",
                                            "throughput (img/s)")]}
    assert lat_rows["engine"][2:] == [fmt_num(report["latency"][k]) for k in
                                      ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput_ips")]
    if optional:
        ref = report["reference_latency"]
        assert lat_rows["reference (PyTorch)"][2] == fmt_num(ref["p50_ms"])
        assert f"**{fmt_num(ref['p50_ms'] / report['latency']['p50_ms'], 3)}×**" in md
        sens = by_header[("rank", "node", "op type", "SQNR (dB)", "output SQNR (dB)")]
        assert len(sens) == 10
        assert f"Suggested to keep in float: `{report['sensitivity'][0]['node']}`" in md
        assert sens[0][3] == fmt_num(min(e["sqnr_db"] for e in report["sensitivity"]))
        acc = {r[0]: r for r in by_header[("", "top1 (%)", "top5 (%)")]}
        assert acc["engine"][1:] == [fmt_num(79.6875), fmt_num(95.3125)]
        assert f"Top-1 drop: {fmt_num(1.5625)} percentage points." in md
        assert gates["accuracy_drop"][1:4] == [f"<= {fmt_num(2.0)}", fmt_num(1.5625), "pass"]
        ops = {r[0]: r[1:] for r in by_header[("op type", "INT8", "float")]}
        assert ops["MatMul"] == ["22", "0"] and ops["Gelu"] == ["0", "10"] and ops["Conv"] == ["14", "1"]
        assert "38 nodes in INT8, 38 kept in float (2 of them excluded by rule although quantizable)." in md
        assert "- `/head/fc/Gemm`: last layer &lt;stays float> & logits" in md  # no raw tag in markdown
    else:
        assert "reference (PyTorch)" not in lat_rows
        for section in ("## Precision plan", "## Sensitivity", "## Accuracy"):
            assert section not in md
    arts = by_header[("file", "sha256", "size")]
    assert arts[0] == ["model.onnx", "ab12ab12ab12", "1.2 MiB"]
    assert "- input: input NCHW float32 1–8 × 3 × 64 × 64" in md
    assert [r[1] for r in stage_rows] == [f"{s['artifact']} (onnxruntime)" for s in report["stages"]]


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


def test_gates_as_dicts_and_near_one_cosines():
    report = make_report("FAILED", optional=False)
    for key in ("latency", "stages"):
        del report[key]  # no plots needed here; keeps the test fast
    report["parity"]["gates"] = {"cosine_min": {"threshold": 0.9999, "measured": 0.99987, "passed": False}}
    report["parity"]["min_passing"] = {"cosine_min": 0.99987}
    page = render_html(report, make_manifest())
    assert 'data-key="parity.gates.cosine_min.threshold" data-value="0.9999"' in page
    assert 'data-key="parity.gates.cosine_min.measured" data-value="0.99987"' in page
    # a cosine just below 1 must never print as "1" (nor "1." at float64's last digits)
    assert fmt_num(0.9999999) != "1" and float(fmt_num(0.99999987)) == 0.99999987
    assert fmt_num(1 - 2.9e-14).startswith("0.9999999999999") and float(fmt_num(1 - 2.9e-14)) < 1



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
