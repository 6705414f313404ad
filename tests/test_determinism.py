"""The same export twice gives the same bytes: model.onnx, golden inputs and reference outputs.

INT8: the same calibration set and seed give the same scales and the same Q/DQ file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from bundle_helpers import REPO, export_tiny, tiny_bundle
from coatnet_deploy.bundle import verify_bundle


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_fp32_export_twice_is_byte_identical(tmp_path):
    first = tiny_bundle()
    second = export_tiny(tmp_path / "again")
    m1, m2 = verify_bundle(first), verify_bundle(second)
    assert _sha(first / "model.onnx") == _sha(second / "model.onnx")
    with np.load(first / "golden.npz") as a, np.load(second / "golden.npz") as b:
        assert a.files == b.files
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
    assert m1["model"] == m2["model"] and m1["preprocess"] == m2["preprocess"]


def _scales(model_path: Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    out = {}
    for n in m.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1 and n.input[1] in inits:
            out[n.input[1]] = inits[n.input[1]]
    return out


def test_int8_same_calibration_and_seed_gives_same_scales(tmp_path):
    calib = str(REPO / "calibration")
    kw = dict(precision="int8", calibration=str(calib), calibration_samples=8, target="onnx")
    a = export_tiny(tmp_path / "a", **kw)
    b = export_tiny(tmp_path / "b", **kw)
    sa, sb = _scales(a / "model.onnx"), _scales(b / "model.onnx")
    assert sa and sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    assert _sha(a / "model.onnx") == _sha(b / "model.onnx")
