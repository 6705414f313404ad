"""`coatnet-deploy predict` and the device example examples/python/classify.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
from PIL import Image

from bundle_helpers import LABELS, PY, REPO, run_cli, stderr_lines

PHOTOS = sorted((REPO / "calibration").glob("*.jpg"))[:3]
EXAMPLE = REPO / "examples" / "python" / "classify.py"


def _example(*args) -> subprocess.CompletedProcess:
    return subprocess.run([PY, str(EXAMPLE), *map(str, args)], capture_output=True, text=True, timeout=120, cwd=str(REPO))


def test_predict_json(bundle):
    proc = run_cli("predict", bundle, *PHOTOS, "--topk", "3", "--threads", "1", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["runs"].startswith("onnxruntime") and out["status"] == "PASSED"
    assert [p["image"] for p in out["predictions"]] == [str(p) for p in PHOTOS]
    for p in out["predictions"]:
        probs = [t["prob"] for t in p["topk"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-9
        assert all(t["label"] == LABELS[t["index"]] for t in p["topk"])


def test_predict_text(bundle):
    proc = run_cli("predict", bundle, PHOTOS[0], "--topk", "2")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(PHOTOS[0]) and len(lines) == 3
    assert lines[1].split()[2] in LABELS


def test_predict_bad_image_names_file_and_prints_nothing(bundle, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    proc = run_cli("predict", bundle, PHOTOS[0], bad)
    assert proc.returncode == 1
    lines = stderr_lines(proc)
    assert len(lines) == 1 and "broken.jpg" in lines[0] and "Traceback" not in proc.stderr
    assert proc.stdout == ""  # no answers for the good image either: all images are read first


def test_predict_topk_zero_is_usage_error(bundle):
    proc = run_cli("predict", bundle, PHOTOS[0], "--topk", "0")
    assert proc.returncode == 1 and "--topk" in proc.stderr and "Traceback" not in proc.stderr


def test_example_top1_equals_predict(bundle, tmp_path):
    gray = tmp_path / "gray.png"
    Image.open(PHOTOS[1]).convert("L").save(gray)
    rgba = tmp_path / "rgba.png"
    Image.open(PHOTOS[2]).convert("RGBA").save(rgba)
    images = [*PHOTOS, gray, rgba]
    ex = _example(bundle, *images, "--topk", "5", "--json")
    assert ex.returncode == 0, ex.stderr
    pr = run_cli("predict", bundle, *images, "--topk", "5", "--json")
    assert pr.returncode == 0, pr.stderr
    ours = json.loads(pr.stdout)["predictions"]
    theirs = json.loads(ex.stdout)
    assert len(ours) == len(theirs) == len(images)
    for a, b in zip(ours, theirs):
        assert a["topk"][0]["index"] == b["topk"][0]["index"]
        assert a["topk"][0]["label"] == b["topk"][0]["label"]
        np.testing.assert_allclose([t["prob"] for t in a["topk"]], [t["prob"] for t in b["topk"]], rtol=1e-4, atol=1e-6)


def test_example_imports_no_coatnet_deploy(bundle):
    code = (f"import sys, runpy; sys.argv = ['classify.py', {str(bundle)!r}, {str(PHOTOS[0])!r}]\n"
            f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('coatnet_deploy', 'torch', 'onnx')]\n"
            "assert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr


def test_example_refuses_tampered_model(bundle, tmp_path):
    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    with open(b / "model.ort.onnx", "r+b") as f:
        f.seek(200)
        byte = f.read(1)
        f.seek(200)
        f.write(bytes([byte[0] ^ 0xFF]))
    proc = _example(b, PHOTOS[0])
    assert proc.returncode != 0 and "model.ort.onnx" in proc.stderr and "SHA-256" in proc.stderr
