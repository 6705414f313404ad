"""The gates that decide exit 2: compare.compare / apply_gates on arrays (no runtime involved)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from coatnet_deploy.compare import GATE_DIRECTION, accuracy, apply_gates, compare

REF = np.array([[4.0, 1.0, 0.0, -1.0, -2.0, -3.0], [0.0, 3.0, 1.0, 0.0, 0.0, 0.0]])


def test_identical_outputs_pass_every_gate():
    res = compare(REF, REF.copy(), {"cosine_min": 1.0, "max_abs_err": 0.0, "top1_agreement": 1.0, "top5_agreement": 1.0})
    assert res and res.passed and res.failures == {} and res.cosine_min == 1.0 and res.max_abs_err == 0.0


def test_min_gates_fail_below_and_max_gates_fail_above_the_threshold():
    act = REF + np.array([[0.0, 0.0, 0.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    res = compare(REF, act, {"max_abs_err": 0.4, "cosine_min": 0.999})
    assert not res and set(res.failures) == {"max_abs_err", "cosine_min"}
    assert res.failures["max_abs_err"] == pytest.approx(0.5) and res.min_passing()["max_abs_err"] == pytest.approx(0.5)
    # exactly at the threshold passes, in both directions
    res = compare(REF, act, {"max_abs_err": 0.5, "cosine_min": res.cosine_min})
    assert res.passed


def test_a_flipped_argmax_fails_top1_but_not_top5():
    act = REF.copy()
    act[0, 1] = 5.0  # class 1 now beats class 0 in sample 0
    res = compare(REF, act, {"top1_agreement": 1.0, "top5_agreement": 1.0})
    assert res.top1_agreement == 0.5 and res.top5_agreement == 1.0 and list(res.failures) == ["top1_agreement"]


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_fail_every_gate(bad):
    act = REF.copy()
    act[1, 2] = bad
    res = compare(REF, act, {"cosine_min": 0.0, "max_abs_err": 1e9, "top1_agreement": 0.0, "top5_agreement": 0.0})
    assert set(res.failures) == {"cosine_min", "max_abs_err", "top1_agreement", "top5_agreement"}
    assert res.per_sample_cosine[1] == 0.0 and math.isinf(res.max_abs_err) and res.to_dict()["non_finite_samples"] == 1


def test_accuracy_drop_comes_from_outside_the_arrays():
    res = compare(REF, REF.copy(), {"accuracy_drop": 1.0})
    assert res.passed  # no eval set: nothing to judge, not a failure
    apply_gates(res, {"accuracy_drop": 1.0, "cosine_min": 0.9}, extra={"accuracy_drop": 1.5})
    assert res.failures == {"accuracy_drop": 1.5} and res.gates == {"accuracy_drop": 1.0, "cosine_min": 0.9}
    apply_gates(res, {"accuracy_drop": 1.0}, extra={"accuracy_drop": 1.0})
    assert res.passed


def test_unknown_gate_is_a_bug_not_a_silent_pass():
    with pytest.raises(ValueError, match="unknown gate"):
        compare(REF, REF, {"cosine_avg": 0.9})
    assert set(GATE_DIRECTION) >= {"cosine_min", "max_abs_err", "top1_agreement", "accuracy_drop"}


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape mismatch"):
        compare(REF, REF[:1])


def test_zero_vectors_and_to_dict():
    z = np.zeros((1, 4))
    assert compare(z, z).cosine_min == 1.0 and compare(z, np.ones((1, 4))).cosine_min == 0.0
    d = compare(REF, REF + 0.1, {"max_abs_err": 0.05}).to_dict()
    assert d["passed"] is False and d["failed_gates"] == ["max_abs_err"] and len(d["per_sample"]["cosine"]) == 2


def test_accuracy_in_percent():
    logits = np.eye(6)[[0, 1, 2, 3]]
    assert accuracy(logits, np.array([0, 1, 2, 4])) == (75.0, 100.0)  # 4 is in sample 3's top 5
    assert accuracy(logits, np.array([0, 1, 2, 5])) == (75.0, 75.0)
