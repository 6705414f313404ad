"""Variant table: names, preprocessing, image sizes, parameter counts against timm, GMACs."""

from __future__ import annotations

import json

import pytest

from coatnet_deploy.errors import UserError
from coatnet_deploy.models import build_model, count_params, gmacs, list_models, model_info

from _golden import FIXTURES

TIMM = json.loads((FIXTURES / "timm_param_counts.json").read_text())["params"]


def test_every_timm_variant_is_listed():
    names = list_models()
    assert set(TIMM) <= set(names)
    assert {"coatnet_seed", "coatnet_tiny"} <= set(names)


@pytest.mark.parametrize("name", sorted(TIMM))
def test_param_counts_match_timm(name):
    ours = count_params(name)
    assert abs(ours - TIMM[name]) <= 0.02 * TIMM[name]


@pytest.mark.parametrize("name", ["coatnet_0_224", "coatnet_4_224", "coatnet_bn_0_rw_224", "coatnet_seed"])
def test_config_count_equals_built_model(name):
    """The table's count comes from the config; a meta-device build must agree exactly."""
    from coatnet_deploy.models import _construct

    for size in (64, 224):
        model = _construct(name, 1000, size, 0, device="meta")
        assert count_params(model) == count_params(name, image_size=size)


@pytest.mark.parametrize("name,size", [("coatnet_tiny", 64), ("coatnet_pico_rw_224", 96), ("coatnet_seed", 64),
                                       ("coatnet_0_224", 224)])
def test_gmacs_formula_equals_hook_count(name, size):
    from coatnet_deploy.models import _gmacs_traced

    assert gmacs(name, size) == pytest.approx(_gmacs_traced(name, size), rel=1e-12)


def test_known_costs():
    # FIELD-NOTES: the seed is 1.45 GFLOP at 224 (= 0.72 GMACs); timm lists coatnet_0_rw_224 at 4.43
    assert gmacs("coatnet_seed") == pytest.approx(0.725, abs=0.01)
    assert gmacs("coatnet_0_rw_224") == pytest.approx(4.43, rel=0.03)
    assert gmacs("coatnet_0_224", 448) > 3.9 * gmacs("coatnet_0_224")


def test_tiny_is_tiny():
    info = model_info("coatnet_tiny")
    assert info.default_image_size == 64 and info.timm_name is None
    assert count_params("coatnet_tiny") < 200_000
    assert count_params(build_model("coatnet_tiny", num_classes=10)) < 100_000


def test_preprocess_like_timm():
    nano = model_info("coatnet_nano_rw_224").preprocess
    assert nano == {"resize": 248, "crop": 224, "crop_pct": 0.9, "interpolation": "bicubic",
                    "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
    assert model_info("coatnet_0_rw_224").preprocess["resize"] == 235
    assert model_info("coatnet_bn_0_rw_224").preprocess["mean"] == [0.485, 0.456, 0.406]
    seed = model_info("coatnet_seed")
    assert seed.preprocess["resize"] == 256 and seed.num_classes == 1000 and seed.timm_name is None


def test_unknown_variant_lists_valid_names():
    with pytest.raises(UserError) as e:
        model_info("coatnet_9_224")
    assert "coatnet_0_rw_224" in str(e.value) and "coatnet_tiny" in str(e.value)
    with pytest.raises(UserError, match="coatnet_seed"):
        build_model("resnet50")


@pytest.mark.parametrize("size", [48, 0, 100, 65, 224.0, "224", True])
def test_bad_image_size(size):
    with pytest.raises(UserError, match="multiple of 32 from 64"):
        build_model("coatnet_tiny", image_size=size)
    with pytest.raises(UserError, match="multiple of 32"):
        gmacs("coatnet_tiny", size)


def test_other_image_sizes_build():
    for size in (96, 160):
        model = build_model("coatnet_tiny", image_size=size, num_classes=3)
        import torch

        with torch.no_grad():
            assert model(torch.zeros(1, 3, size, size)).shape == (1, 3)
