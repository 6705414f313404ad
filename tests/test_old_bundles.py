"""Bundles written by the code at 27c6d7f (schema 1, before the targets redesign) still work with
`parity`, `predict`, `bench` and `inspect`, and with the device runtime."""

from __future__ import annotations

import json

import numpy as np

from bundle_helpers import REPO, cli_in_process

PHOTO = REPO / "calibration" / "astronaut.jpg"


def test_old_bundle_parity_inspect_predict_bench(capsys, old_bundle):
    manifest = json.loads((old_bundle / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and not (old_bundle / "manifest.sha256").exists()
    rc, out, _ = cli_in_process(capsys, "parity", old_bundle, "--json")
    assert rc == 0 and json.loads(out)["status"] == "PASSED"
    rc, out, _ = cli_in_process(capsys, "inspect", old_bundle, "--json")
    info = json.loads(out)
    assert rc == 0 and info["checksums"] == "ok" and info["schema_version"] == 1 and info["target"] == manifest["target"]
    rc, out, _ = cli_in_process(capsys, "predict", old_bundle, PHOTO, "--topk", "3", "--json")
    preds = json.loads(out)["predictions"]
    assert rc == 0 and len(preds[0]["topk"]) == 3 and preds[0]["topk"][0]["label"] in manifest["model"]["labels"]
    rc, out, _ = cli_in_process(capsys, "bench", old_bundle, "--batch", "1", "--iterations", "3", "--warmup", "1", "--json")
    rows = json.loads(out)["rows"]
    assert rc == 0 and rows and all(r["p50_ms"] > 0 for r in rows)


def test_old_bundle_runtime_logits_match_its_golden(old_bundle):
    from coatnet_deploy.parity import load_golden
    from coatnet_deploy.runtime import Classifier

    golden = load_golden(old_bundle)
    with Classifier.load(old_bundle) as clf:
        out = clf.logits(golden["inputs"])
    np.testing.assert_allclose(out, golden["reference_logits"], atol=0.05)


def test_old_bundle_tampered_is_still_refused(capsys, old_bundle):
    data = bytearray((old_bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (old_bundle / "model.onnx").write_bytes(bytes(data))
    rc, _, lines = cli_in_process(capsys, "inspect", old_bundle)
    assert rc == 1 and "'model.onnx' does not match its SHA-256" in lines[0]
