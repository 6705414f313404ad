"""The target registry and what reads it: `targets`, export's validation, the OpenVINO INT8 choice and
its fallback (a layer OpenVINO mis-runs kept float, the precision graph rebuilt)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bundle_helpers import cli_in_process, config_file
from coatnet_deploy import targets
from coatnet_deploy.errors import UserError


def test_registry_lists_the_builtin_targets_in_order():
    assert targets.names()[:4] == ["onnx", "onnxruntime", "openvino", "tensorrt"]
    assert targets.default_name() == "onnxruntime"
    cells = targets.cells()
    assert len(cells) == 13 and {c.precision for c in cells} == {"fp32", "fp16", "int8", "fp8"}
    assert [c.target for c in targets.cells(["openvino"], ["int8"])] == ["openvino"]


def test_unknown_target_and_precision_name_the_valid_ones():
    with pytest.raises(UserError, match="unknown target 'tpu': valid targets are onnx, onnxruntime, openvino, tensorrt"):
        targets.get("tpu")
    with pytest.raises(UserError, match="unknown precision 'fp4'"):
        targets.get("onnx").cell("fp4")


def test_two_plugins_may_not_share_a_name():
    class Impostor(targets.Target):
        name = "onnx"

    with pytest.raises(UserError, match="two targets are named 'onnx'"):
        targets.register(Impostor)
    assert type(targets.get("onnx")).__name__ == "OnnxTarget"


def test_targets_command_matches_the_registry(capsys):
    rc, out, _ = cli_in_process(capsys, "targets", "--json")
    rows = json.loads(out)
    assert rc == 0 and [(r["target"], r["precision"]) for r in rows] == [(c.target, c.precision) for c in targets.cells()]
    by = {(r["target"], r["precision"]): r for r in rows}
    for t in targets.all_targets():
        for p in t.cells:
            a = t.availability(p)
            assert by[(t.name, p)]["available"] == a.ok and by[(t.name, p)]["reason"] == a.reason
    from coatnet_deploy.backends.cuda_probe import tensorrt_status

    if not tensorrt_status()[0]:  # here: no GPU; the row says why and how to go on
        assert not by[("tensorrt", "int8")]["available"] and "--defer-build" in by[("tensorrt", "int8")]["reason"]
        rc, out, _ = cli_in_process(capsys, "targets", "--json", "--defer-build")
        deferred = {(r["target"], r["precision"]): r for r in json.loads(out)}[("tensorrt", "int8")]
        assert deferred["available"] and deferred["deferred"] and "deferred to the device" in deferred["reason"]
    rc, out, _ = cli_in_process(capsys, "targets")
    table = out.splitlines()[1:1 + len(rows)]
    assert rc == 0 and [ln.split()[:3] for ln in table] == [[r["target"], r["precision"], "yes" if r["available"] else "no"] for r in rows]


def test_target_options_are_validated_per_target(tmp_path):
    from coatnet_deploy.config import make_config

    cfg = make_config(str(config_file(tmp_path, tensorrt={"workspace_mb": 512})), {})
    assert cfg.target_options == {"tensorrt": {"workspace_mb": 512}} and cfg.to_dict()["tensorrt"] == {"workspace_mb": 512}
    assert targets.get("tensorrt").option_values(cfg.target_options["tensorrt"])["opt_level"] == 3
    with pytest.raises(UserError, match="unknown key 'tensorrt.colour'.*valid keys: workspace_mb"):
        make_config(str(config_file(tmp_path, tensorrt={"colour": 1})), {})
    with pytest.raises(UserError, match="key 'tensorrt.opt_level' must be integer"):
        make_config(str(config_file(tmp_path, tensorrt={"opt_level": True})), {})
    with pytest.raises(UserError, match="key 'tensorrt' must be a mapping"):
        make_config(str(config_file(tmp_path, tensorrt=3)), {})


def _cand(passed, top1, cos, p50=None):
    c = {"passed": passed, "top1_agreement": top1, "cosine_mean": cos}
    return c if p50 is None else {**c, "p50_ms_b1": p50}


def test_openvino_int8_candidate_choice():
    from coatnet_deploy.targets.openvino import choose_candidate

    assert choose_candidate({"nncf": _cand(False, 1.0, 0.999, 5), "qdq": _cand(True, 0.8, 0.98, 9)}) == "qdq"  # gates first
    assert choose_candidate({"nncf": _cand(True, 0.9, 0.99, 5), "qdq": _cand(True, 1.0, 0.999, 6)}) == "nncf"  # then speed
    assert choose_candidate({"nncf": _cand(True, 1.0, 0.99, 6), "qdq": _cand(True, 1.0, 0.99, 6)}) == "qdq"  # tie: the shared file
    assert choose_candidate({"nncf": _cand(False, 0.9, 0.99), "qdq": _cand(False, 0.8, 0.999)}) == "nncf"  # none: the closer
    assert choose_candidate({"nncf": _cand(False, 0.9, 0.99), "qdq": _cand(False, 0.9, 0.97)}) == "nncf"
    assert choose_candidate({"nncf": _cand(False, 0.2, 0.1)}) == "nncf"


def test_openvino_int8_fallback_keeps_a_forced_culprit_float(tmp_path, monkeypatch):
    """Gates no candidate can meet force the fallback; a forced culprit must come back float in a rebuilt
    precision graph, with the report and manifest saying so, in one stage list."""
    import onnx

    from coatnet_deploy.config import make_config
    from coatnet_deploy.exporting import export
    from coatnet_deploy.precision import nncf_ov
    from coatnet_deploy.precision.plan import R_RUNTIME

    searched = []

    def forced(qdq_onnx, inputs, **_):
        m = onnx.load(str(qdq_onnx))
        node = next(n for n, _ in nncf_ov._quantized_inputs(m) if "stem" in n)
        searched.append((str(qdq_onnx), inputs.shape))
        return [{"node": node, "agreement_with_it": 0.5, "agreement_without_it": 0.99}]

    monkeypatch.setattr(nncf_ov, "openvino_int8_culprits", forced)
    cfg = make_config(str(config_file(tmp_path, target="openvino", precision="int8", calibration_samples=8, int8_method="qdq",
                                      gates={"int8": {"cosine_min": 1.0, "max_abs_err": 0.0}})), {"output": str(tmp_path / "b")})
    res = export(cfg)
    assert len(searched) == 1  # searched once, on the first build only
    kept = res.report["openvino_int8_fallback"]["kept_float"]
    assert len(kept) == 1 and res.report["precision_plan"]["reasons"][kept[0]] == R_RUNTIME
    assert kept[0] not in res.report["precision_plan"]["quantized_nodes"]
    assert [s["stage"] for s in res.report["stages"]] == ["onnx", "simplified", "quantized", "engine"]
    # the shipped model.onnx is the rebuilt one: the culprit reads float activations there
    m = onnx.load(str(res.bundle / "model.onnx"))
    assert kept[0] not in {n for n, _ in nncf_ov._quantized_inputs(m)}
    assert res.manifest["precision_details"]["scales_sha256"] and res.status == "FAILED"  # the gates stay unmeetable
    assert np.isfinite(res.report["parity"]["cosine_min"])
