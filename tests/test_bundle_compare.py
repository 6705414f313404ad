"""`coatnet-deploy compare OLD NEW`: two exports of the same weights pass, other weights fail with exit 2,
each budget fails when set below what was measured, the documents carry the numbers, and it is torch-free."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundle_helpers import LABELS, REPO, export_tiny, run_cli, stderr_lines

PHOTOS = sorted((REPO / "calibration").glob("*.jpg"))
# Tiny engines take well under a millisecond: one runtime thread (no spinning pool to wait out between calls)
# and a short warm-up let each reach the harness's 20 calls in a few seconds.
QUICK = ["--threads", "1", "--warmup-time", "0.02", "--min-time", "0.1", "--max-time", "6"]


def tiny_weights(path: Path, seed: int) -> Path:
    import torch
    from safetensors.torch import save_file

    import coatnet_deploy

    torch.manual_seed(seed)
    model = coatnet_deploy.build_model("coatnet_tiny", num_classes=10, image_size=64, seed=seed)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    w0, w1 = tiny_weights(root / "w0.safetensors", 0), tiny_weights(root / "w1.safetensors", 1)
    common = {"golden_images": 4, "golden_random": 2}
    return {
        "released": export_tiny(root / "released", weights=str(w0), **common),
        "again": export_tiny(root / "again", weights=str(w0), **common),
        "other_weights": export_tiny(root / "other-weights", weights=str(w1), **common),
        "openvino": export_tiny(root / "openvino", weights=str(w0), target="openvino", **common),
        "eleven": export_tiny(root / "eleven", num_classes=11, labels=None, golden_images=1, golden_random=1),
        "root": root,
    }


def compare(*args, cwd: Path | None = None) -> tuple[int, dict, subprocess.CompletedProcess]:
    proc = run_cli("compare", *args, "--json", cwd=cwd)
    data = json.loads(proc.stdout) if proc.stdout.strip().startswith("{") else {}
    return proc.returncode, data, proc


def test_two_exports_of_the_same_model_pass(bundles, tmp_path):
    rc, data, proc = compare(bundles["released"], bundles["again"], "--output", tmp_path / "report", *QUICK)
    assert rc == 0, proc.stderr
    assert data["status"] == "PASSED" and data["failed_budgets"] == {}
    ag = data["agreement"]
    assert ag["all"]["top1_agreement"] == 1.0 and ag["all"]["max_abs_err"] == 0.0 and ag["disagreement"] == 0.0
    # the two golden sets are the same tensors: the union holds each once
    assert data["inputs"]["total"] == 6 and data["inputs"]["shared_golden"] == 6 and data["inputs"]["images"] == 4
    assert data["own_reference"]["old"]["status"] == data["own_reference"]["new"]["status"] == "PASSED"
    assert set(data["latency"]["batches"]) == {"1", "8"}
    assert all(r["old_p50_ms"] > 0 and r["new_p50_ms"] > 0 and r["iterations"] >= 20 for r in data["latency"]["batches"].values())
    assert [c["passed"] for c in data["checks"] if c["budget"].startswith("max_slowdown")] == [True, True]  # judged, within 1.5
    assert data["differences"] == []  # only created / output paths differ, which are not the engine
    assert data["old"]["engine_bytes"] == data["new"]["engine_bytes"] > 0  # reports differ by their paths and times
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["compare.html", "compare.json", "compare.md"]


def test_other_weights_are_flagged_with_exit_2(bundles, tmp_path):
    rc, data, proc = compare(bundles["released"], bundles["other_weights"], "--output", tmp_path / "r", "--batch", "1", *QUICK)
    assert rc == 2, proc.stderr
    assert data["status"] == "FAILED" and "max_disagreement" in data["failed_budgets"]
    assert data["agreement"]["disagreement"] > 0.1
    keys = {d["key"]: d for d in data["differences"]}
    assert keys["model.weights_sha256"]["old"] != keys["model.weights_sha256"]["new"]
    # each engine still matches its own reference: the engines are fine, the model changed
    assert data["own_reference"]["old"]["status"] == data["own_reference"]["new"]["status"] == "PASSED"
    md = (tmp_path / "r" / "compare.md").read_text()
    assert "**Status: FAILED** — exceeded: max_disagreement" in md and "model.weights\\_sha256" not in md
    assert "`model.weights_sha256`" in md
    html = (tmp_path / "r" / "compare.html").read_text()
    assert re.search(r'data-key="agreement\.disagreement"|data-key="checks\.0\.measured" data-value="([0-9.]+)"', html)
    measured = float(re.search(r'data-key="checks\.0\.measured" data-value="([0-9.e-]+)"', html).group(1))
    assert measured == pytest.approx(data["agreement"]["disagreement"])
    # the text summary says the same
    proc = run_cli("compare", bundles["released"], bundles["other_weights"], "--no-timing", "--output", tmp_path / "t")
    assert proc.returncode == 2 and proc.stdout.startswith("FAILED:") and "exceeded   max_disagreement" in proc.stdout


def test_a_runtime_change_reports_what_differs(bundles, tmp_path):
    """ONNX Runtime -> OpenVINO of the same weights: the same answers, a manifest that says what moved."""
    rc, data, proc = compare(bundles["released"], bundles["openvino"], "--no-timing", "--output", tmp_path / "r")
    assert rc == 0, proc.stderr
    assert data["agreement"]["all"]["top1_agreement"] == 1.0 and data["agreement"]["all"]["cosine_min"] > 0.9999
    keys = {d["key"] for d in data["differences"]}
    assert {"target", "engine.runtime"} <= keys and "model.weights_sha256" not in keys
    assert any(k.startswith("versions.openvino") for k in keys)
    assert data["latency"] is None


def test_each_budget_fails_when_below_the_measurement(bundles, tmp_path):
    evals = tmp_path / "eval"
    for i, label in enumerate(LABELS[:2]):
        (evals / label).mkdir(parents=True)
        for p in PHOTOS[i * 3:(i + 1) * 3]:
            shutil.copy(p, evals / label / p.name)
    rc, data, proc = compare(bundles["released"], bundles["other_weights"], "--eval-images", evals, "--images", REPO / "calibration",
                             "--max-disagreement", "1", "--max-drop", "100", "--max-slowdown", "0.001", "--batch", "1",
                             "--output", tmp_path / "r", *QUICK)
    assert rc == 2, proc.stderr
    assert list(data["failed_budgets"]) == ["max_slowdown@b1"]
    from coatnet_deploy.preprocess import image_files

    photos = len(image_files(REPO / "calibration"))  # 4 of them are the golden photos already: they run once
    assert data["inputs"]["extra_images"] == photos - 4
    assert data["inputs"]["eval_images"] == 6 and data["agreement"]["images"]["samples"] == photos + 6
    acc = data["accuracy"]
    assert acc["old"]["images"] == acc["new"]["images"] == 6
    assert acc["drop_top1"] == pytest.approx(acc["old"]["top1"] - acc["new"]["top1"])
    rc, data, _ = compare(bundles["released"], bundles["again"], "--eval-images", evals, "--no-timing", "--max-drop", "0",
                          "--output", tmp_path / "r2")
    assert rc == 0 and data["accuracy"]["drop_top1"] == 0.0


def test_the_new_bundle_failing_its_own_gates_fails(bundles, tmp_path):
    """A new bundle whose engine no longer matches its own stored reference (a tampered golden set) fails."""
    import numpy as np

    from bundle_helpers import REPO as _  # noqa: F401
    bad = shutil.copytree(bundles["again"], tmp_path / "bad")
    with np.load(bad / "golden.npz") as z:
        g = {k: z[k] for k in z.files}
    g["reference_logits"] = g["reference_logits"][:, ::-1].copy()
    np.savez(bad / "golden.npz", **g)
    _rewrite_checksums(bad)
    rc, data, proc = compare(bundles["released"], bad, "--no-timing", "--output", tmp_path / "r")
    assert rc == 2, proc.stderr
    assert data["own_reference"]["new"]["status"] == "FAILED" and "own_gates" in data["failed_budgets"]


def _rewrite_checksums(bundle: Path) -> None:
    import hashlib

    m = json.loads((bundle / "manifest.json").read_text())
    for e in m["artifacts"]:
        data = (bundle / e["path"]).read_bytes()
        e["sha256"], e["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    text = json.dumps(m, indent=2)
    (bundle / "manifest.json").write_text(text)
    digest = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    (bundle / "manifest.sha256").write_text(f"{digest}  manifest.json\n")


@pytest.mark.parametrize("make, words", [
    (lambda b, t: (b["released"], t / "missing"), ["missing", "not found"]),
    (lambda b, t: (b["released"], b["eleven"]), ["10 and 11 classes", "one task"]),
    (lambda b, t: (b["released"], _edited(b["again"], t, lambda m: m["model"].update(labels=["x"] + LABELS[1:]))),
     ["name class 0 differently", "'label-00' and 'x'"]),
], ids=["missing", "classes", "labels"])
def test_bundles_of_another_task_are_one_line(bundles, tmp_path, make, words):
    old, new = make(bundles, tmp_path)
    proc = run_cli("compare", old, new, "--no-timing", "--output", tmp_path / "r")
    lines = stderr_lines(proc)
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), (proc.returncode, lines)
    for w in words:
        assert w in lines[0], lines[0]
    assert not (tmp_path / "r").exists()


def _edited(bundle: Path, tmp_path: Path, edit) -> Path:
    dst = shutil.copytree(bundle, tmp_path / "edited")
    m = json.loads((dst / "manifest.json").read_text())
    edit(m)
    (dst / "manifest.json").write_text(json.dumps(m, indent=2))
    _rewrite_checksums(dst)
    return dst


def test_compare_is_torch_free_and_callable_from_python(bundles, tmp_path):
    code = ("import sys, coatnet_deploy; "
            f"r = coatnet_deploy.compare_bundles({str(bundles['released'])!r}, {str(bundles['again'])!r}, timing=False, "
            f"output={str(tmp_path / 'r')!r}); "
            "print(r.status, 'torch' in sys.modules, len(r.files), r._repr_html_().startswith('<iframe'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.stdout.split() == ["PASSED", "False", "3", "True"], proc.stderr[-3000:]


def test_a_timing_cut_short_is_not_judged(bundles, tmp_path):
    """Fewer calls than the harness's minimum give no slowdown verdict (a median of 1 call is noise), and say so."""
    rc, data, proc = compare(bundles["released"], bundles["again"], "--batch", "1", "--max-slowdown", "0.001",
                             "--warmup-time", "5", "--min-time", "0.1", "--max-time", "0.5", "--output", tmp_path / "r")
    assert rc == 0, proc.stdout
    (check,) = [c for c in data["checks"] if c["budget"] == "max_slowdown@b1"]
    assert check["passed"] is None and "not judged" in check["what"]
    assert any("--max-slowdown was not judged" in w for w in data["warnings"])
