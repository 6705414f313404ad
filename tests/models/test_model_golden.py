"""Parity with independent implementations: timm (pico/nano/0_rw/bn_0_rw/0_224) and the seed's own code.

Fixtures: tests/fixtures/models (see README.md there for the generator commands).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coatnet_deploy.models import build_model

from _golden import fixture, golden_torch_state_dict

# 0_rw / bn_0_rw (27M params each) only add SE-before-norm, act-after-pre-norm and BN transformer norms
# to what pico/nano/0_224 cover: run them with -m slow to keep the default run short
TIMM_VARIANTS = ["coatnet_pico_rw_224", "coatnet_nano_rw_224", "coatnet_0_224",
                 pytest.param("coatnet_0_rw_224", marks=pytest.mark.slow),
                 pytest.param("coatnet_bn_0_rw_224", marks=pytest.mark.slow)]


def _keys_and_shapes(model):
    sd = model.state_dict()
    return list(sd), [",".join(map(str, v.shape)) for v in sd.values()]


@pytest.mark.parametrize("name", TIMM_VARIANTS + ["coatnet_seed"])
def test_matches_reference_outputs(name):
    fx = fixture(f"{name}_64.npz")
    model = build_model(name, num_classes=int(fx["num_classes"]), image_size=int(fx["image_size"]))
    keys, shapes = _keys_and_shapes(model)
    assert keys == list(fx["keys"]), "state-dict keys differ from the reference implementation"
    assert shapes == list(fx["shapes"])
    model.load_state_dict(golden_torch_state_dict(model), strict=True)
    x = torch.from_numpy(fx["input"])
    with torch.no_grad():
        y = model(x).numpy()
    ref = fx["output"]
    # deep random BN-transformer nets (bn_0_rw) reach |logits| ~ 70 where float32 rounding alone is
    # ~1e-5 relative; there the float64 comparison below is the one that proves the maths
    tol = 1e-5 * max(1.0, float(np.abs(ref).max()))
    assert np.abs(y - ref).max() <= tol
    if "output_f64" in fx and np.abs(ref).max() > 10:
        with torch.no_grad():
            y64 = model.double()(x.double()).numpy()
        assert np.abs(y64 - fx["output_f64"]).max() <= 1e-9 * np.abs(fx["output_f64"]).max()


def test_seed_attention_is_explicit_and_keeps_mha_names():
    model = build_model("coatnet_seed", num_classes=10, image_size=64)
    assert not any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    assert {"s5.0.mhsa.in_proj_weight", "s5.0.mhsa.in_proj_bias", "s5.0.mhsa.out_proj.weight"} <= set(
        model.state_dict())


def test_rel_pos_tables_resized_like_timm(tmp_path):
    """Weights made at 64 px loaded into a 96 px model give timm's 96 px outputs (checkpoint_filter_fn)."""
    from safetensors.torch import save_file

    fx = fixture("coatnet_pico_rw_224_64_to_96.npz")
    small = build_model("coatnet_pico_rw_224", num_classes=10, image_size=int(fx["source_size"]))
    sd = {k: v.contiguous() for k, v in golden_torch_state_dict(small).items()}
    path = tmp_path / "pico64.safetensors"
    save_file(sd, str(path))
    big = build_model("coatnet_pico_rw_224", image_size=int(fx["image_size"]), weights=path)
    assert big.num_classes == 10
    table = "stages.2.blocks.0.attn.rel_pos.relative_position_bias_table"
    assert tuple(big.state_dict()[table].shape) != tuple(sd[table].shape)
    with torch.no_grad():
        y = big(torch.from_numpy(fx["input"])).numpy()
    assert np.abs(y - fx["output"]).max() <= 1e-5 * max(1.0, float(np.abs(fx["output"]).max()))


@pytest.mark.parametrize("batch", [1, 3])
def test_tiny_runs_any_batch_and_is_seeded(batch):
    a = build_model("coatnet_tiny", num_classes=7, seed=1)
    b = build_model("coatnet_tiny", num_classes=7, seed=1)
    c = build_model("coatnet_tiny", num_classes=7, seed=2)
    x = torch.randn(batch, 3, 64, 64)
    with torch.no_grad():
        ya, yb, yc = a(x), b(x), c(x)
    assert ya.shape == (batch, 7) and not a.training
    assert torch.equal(ya, yb) and not torch.allclose(ya, yc)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", ["coatnet_tiny", "coatnet_seed"])
def test_exports_with_torchscript_onnx_and_dynamic_batch(tmp_path, name):
    """The exporter's path (torch.onnx.export dynamo=False, opset 17): no fused attention, and a graph
    traced at batch 2 runs at batch 1 and 5 in ONNX Runtime with the model's outputs."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = build_model(name, num_classes=5, image_size=64)
    path = tmp_path / "m.onnx"
    torch.onnx.export(model, torch.randn(2, 3, 64, 64), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"LayerNormalization", "Softmax", "MatMul"} <= ops
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            ref = model(x).numpy()
        out = session.run(None, {"input": x.numpy()})[0]
        assert out.shape == (batch, 5) and np.abs(out - ref).max() < 1e-4
