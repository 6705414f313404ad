"""Accuracy on real data: the committed coatnet_tiny trained on scikit-learn's digits, exported to
INT8 and FP16, evaluated on the held-out split (never used for training or calibration).

Requirements (from the issue): reference top-1 >= 95%; INT8 drop <= 1.0 point and top-1 agreement
with the float model >= 98%; FP16 drop <= 0.2 point and agreement >= 98%. The checkpoint and how to
remake it: tests/fixtures/digits/README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from coatnet_deploy.config import make_config
from coatnet_deploy.export import export

FIXTURE = Path(__file__).parent / "fixtures" / "digits"
WEIGHTS = FIXTURE / "coatnet_tiny_digits.safetensors"
LABELS = FIXTURE / "labels.txt"

pytest.importorskip("sklearn", reason="the digits data set ships with scikit-learn (dev dependency)")
sys.path.insert(0, str(FIXTURE))
from digits_data import write_digits_folders  # noqa: E402

# (target, precision) -> (max top-1 drop in points, min top-1 agreement)
CASES = {
    ("onnxruntime", "int8"): (1.0, 0.98),
    ("openvino", "int8"): (1.0, 0.98),
    ("onnxruntime", "fp16"): (0.2, 0.98),
    ("openvino", "fp16"): (0.2, 0.98),
}
MIN_REFERENCE_TOP1 = 95.0


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return write_digits_folders(tmp_path_factory.mktemp("digits"), calibration_images=200)


def digits_cfg(digits, target, precision, out, **kw):
    calib, eval_dir = digits
    base = dict(model="coatnet_tiny", weights=str(WEIGHTS), labels=str(LABELS), image_size=64, target=target,
                precision=precision, output=str(out), calibration=str(calib), calibration_samples=200,
                images=str(eval_dir), golden_images=8, golden_random=2, eval_images=str(eval_dir),
                bench_iterations=0, seed=0)
    base.update(kw)
    return make_config(None, base)


@pytest.fixture(scope="module")
def exported(digits, tmp_path_factory):
    root = tmp_path_factory.mktemp("digits-bundles")
    cache = {}

    def get(target, precision):
        if (target, precision) not in cache:
            cache[(target, precision)] = export(digits_cfg(digits, target, precision, root / f"{target}-{precision}"))
        return cache[(target, precision)]

    return get


def test_checkpoint_metrics_match_the_committed_fixture():
    metrics = json.loads((FIXTURE / "metrics.json").read_text())
    assert metrics["heldout_images"] == 540
    assert metrics["heldout_top1"] >= MIN_REFERENCE_TOP1


@pytest.mark.parametrize("case", list(CASES), ids=[f"{t}-{p}" for t, p in CASES])
def test_accuracy_on_heldout_digits(exported, case):
    res = exported(*case)
    max_drop, min_agree = CASES[case]
    acc = res.report["accuracy"]
    summary = {k: acc[k] for k in ("images", "reference_top1", "engine_top1", "drop_top1", "top1_agreement")}
    assert res.status == "PASSED", res.report["parity"]
    assert acc["images"] == 540
    assert acc["reference_top1"] >= MIN_REFERENCE_TOP1, summary
    assert acc["drop_top1"] <= max_drop, summary
    assert acc["top1_agreement"] >= min_agree, summary
    assert set(acc["per_class"]) == {str(d) for d in range(10)}
    assert all(v["n"] > 0 for v in acc["per_class"].values())


def test_openvino_nncf_int8_on_heldout_digits(digits, tmp_path):
    # `auto` ships the Q/DQ IR for this model (closer on the golden set), so the NNCF IR is checked
    # on its own. Golden inputs are real images only: NNCF's min cosine on seeded random tensors
    # (out of distribution for a digits model) is ~0.94, below the int8 gate, while real images stay >= 0.98.
    res = export(digits_cfg(digits, "openvino", "int8", tmp_path / "nncf", int8_method="nncf", golden_random=0))
    assert res.manifest["engine"]["int8_method"] == "nncf"
    acc = res.report["accuracy"]
    summary = {k: acc[k] for k in ("images", "reference_top1", "engine_top1", "drop_top1", "top1_agreement")}
    assert res.status == "PASSED", res.report["parity"]
    assert acc["drop_top1"] <= 1.0, summary
    assert acc["top1_agreement"] >= 0.98, summary


def test_accuracy_budget_holds_on_heldout_digits(digits, tmp_path):
    res = export(digits_cfg(digits, "onnxruntime", "int8", tmp_path / "budget", max_drop=0.5))
    budget = res.report["accuracy_budget"]
    assert budget["metric"].startswith("top-1 accuracy"), budget
    assert budget["history"], budget
    assert budget["passed"] is True, budget
    assert budget["gate"] == pytest.approx(budget["reference"] - 0.5)
    # the budget's last trial is what shipped: the engine's drop on the same images fits the budget
    assert res.report["accuracy"]["drop_top1"] <= 0.5 + 1e-9, res.report["accuracy"]
