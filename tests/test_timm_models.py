"""A model as timm saves it: a save_for_hf folder and a train.py checkpoint, against timm's own outputs.

Fixtures: tests/fixtures/timm_models (written by timm; see its README.md). timm itself is not needed
here: its transformed inputs and logits are stored beside the files.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from bundle_helpers import cli_in_process
from coatnet_deploy.models import build_model, resolve_model_source
from coatnet_deploy.preprocess import preprocess_batch
from timm_fixtures import EXPECTED, META, PHOTOS, checkpoint_dict, folder_variant, unpacked

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _logits(model, x) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(x))).numpy()


# -- the save_for_hf folder -----------------------------------------------------------------------

@pytest.mark.parametrize("form", ["folder", "config.json"])
def test_folder_gives_what_config_json_says(form):
    folder = unpacked()["folder"]
    src = resolve_model_source(weights=str(folder if form == "folder" else folder / "config.json"))
    assert (src.name, src.num_classes, src.image_size) == ("coatnet_pico_rw_224", 3, 64)
    assert src.labels == META["labels"]
    pp = src.preprocess
    assert (pp.mean, pp.std, pp.crop_pct, pp.interpolation, pp.crop_mode) == (IMAGENET_MEAN, IMAGENET_STD, 0.875,
                                                                              "bicubic", "center")
    assert pp.resize == 73 and pp.crop == 64  # floor(64 / 0.875), as timm's transform says
    assert set(src.provenance.values()) == {"config.json"}
    assert src.weights_format == "timm save_for_hf folder" and src.weights_file.endswith("model.safetensors")
    assert src.weights_sha256 == META["sha256"]["hf_folder/model.safetensors"]
    assert src.state_dict_key is None and src.ema is False


def test_folder_matches_timm_on_real_photos():
    """Our preprocessing of the photos is timm's create_transform output bit for bit; logits within 1e-5."""
    src = resolve_model_source(weights=str(unpacked()["folder"]))
    x = preprocess_batch(PHOTOS, src.preprocess)
    np.testing.assert_array_equal(x, EXPECTED["hf_inputs"])
    y = _logits(src.build(), x)
    assert np.abs(y - EXPECTED["hf_logits"]).max() <= 1e-5


def test_border_crop_mode_from_config_json_matches_timm():
    src = resolve_model_source(weights=str(unpacked()["border_folder"]))
    assert src.preprocess.crop_mode == "border" and src.provenance["crop_mode"] == "config.json"
    x = preprocess_batch(PHOTOS, src.preprocess)
    np.testing.assert_array_equal(x, EXPECTED["hf_border_inputs"])
    assert np.abs(_logits(src.build(), x) - EXPECTED["hf_border_logits"]).max() <= 1e-5


def test_pytorch_model_bin_folder(tmp_path):
    """save_for_hf(safe_serialization=False) writes pytorch_model.bin: the same weights, read weights_only."""
    from safetensors.torch import load_file

    src = unpacked()["folder"]
    d = tmp_path / "bin"
    d.mkdir()
    shutil.copyfile(src / "config.json", d / "config.json")
    torch.save(load_file(str(src / "model.safetensors")), d / "pytorch_model.bin")
    model = build_model(None, weights=str(d))
    assert np.abs(_logits(model, EXPECTED["hf_inputs"]) - EXPECTED["hf_logits"]).max() <= 1e-5


def test_flags_override_the_folder(tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    src = resolve_model_source(model="coatnet_pico_rw_224", weights=str(unpacked()["folder"]), image_size=96,
                               labels=str(labels), num_classes=3)
    assert src.image_size == 96 and src.preprocess.resize == 109 and src.preprocess.mean == IMAGENET_MEAN
    assert src.labels == ["a", "b", "c"]
    assert {k: src.provenance[k] for k in ("name", "num_classes", "labels", "image_size", "mean")} == {
        "name": "flag", "num_classes": "flag", "labels": "flag", "image_size": "flag", "mean": "config.json"}
    with torch.no_grad():  # the relative-position tables were resized to 96 px
        assert src.build()(torch.zeros(1, 3, 96, 96)).shape == (1, 3)


def test_missing_preprocessing_keys_fall_back_to_the_variant(tmp_path):
    def drop(cfg):
        for k in ("mean", "std", "crop_pct", "crop_mode", "interpolation"):
            cfg["pretrained_cfg"].pop(k)

    src = resolve_model_source(weights=str(folder_variant(tmp_path, drop)))
    assert (src.preprocess.mean, src.preprocess.crop_pct) == ((0.5, 0.5, 0.5), 0.95)  # pico's timm defaults
    assert src.provenance["mean"] == "variant default" and src.provenance["name"] == "config.json"


def test_label_names_as_index_map(tmp_path):
    def as_map(cfg):
        cfg["label_names"] = {"0": "zero", "2": "two"}

    src = resolve_model_source(weights=str(folder_variant(tmp_path, as_map)))
    assert src.labels == ["zero", "class_1", "two"]


# -- the train.py checkpoint ----------------------------------------------------------------------

@pytest.mark.parametrize("ema", [False, True], ids=["plain", "ema"])
def test_checkpoint_matches_timm_load_checkpoint(ema):
    """timm's load_checkpoint(model, path, use_ema=...) outputs, from the architecture its args name."""
    src = resolve_model_source(weights=str(unpacked()["checkpoint"]), ema=ema)
    assert (src.name, src.num_classes, src.image_size) == ("coatnet_pico_rw_224", 3, 64)
    assert src.state_dict_key == ("state_dict_ema" if ema else "state_dict") and src.ema is ema
    assert src.weights_format == "timm train.py checkpoint"
    assert {src.provenance[k] for k in ("name", "num_classes", "image_size")} == {"checkpoint"}
    # args left mean/std/crop at train.py's defaults: the variant's (timm's resolve_data_config does the same)
    assert src.provenance["mean"] == "variant default" and src.preprocess.mean == (0.5, 0.5, 0.5)
    y = _logits(src.build(), EXPECTED["checkpoint_inputs"])
    want = EXPECTED["checkpoint_logits_ema" if ema else "checkpoint_logits_plain"]
    other = EXPECTED["checkpoint_logits_plain" if ema else "checkpoint_logits_ema"]
    assert np.abs(y - want).max() <= 1e-5
    assert np.abs(y - other).max() > 1e-2  # the two state dicts really differ


def test_checkpoint_args_preprocessing_is_taken(tmp_path):
    """args set on train.py's command line (--mean/--std/--crop-pct/--interpolation) drove its validation."""
    import argparse

    ck = checkpoint_dict()
    ck["args"] = argparse.Namespace(**{**vars(ck["args"]), "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                       "crop_pct": 0.9, "interpolation": "bilinear", "input_size": [3, 96, 96]})
    path = tmp_path / "ck.pth.tar"
    torch.save(ck, path)
    src = resolve_model_source(weights=str(path))
    pp = src.preprocess
    assert (pp.mean, pp.crop_pct, pp.interpolation, src.image_size) == (IMAGENET_MEAN, 0.9, "bilinear", 96)
    assert src.provenance["interpolation"] == "checkpoint" and src.provenance["image_size"] == "checkpoint"


# -- end to end: export, inspect, predict -----------------------------------------------------------

@pytest.fixture(scope="module")
def folder_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("timm") / "bundle"
    from coatnet_deploy.config import make_config
    from coatnet_deploy.exporting import export

    cfg = make_config(None, {"weights": str(unpacked()["folder"]), "target": "onnxruntime", "output": str(out),
                             "bench_iterations": 0, "golden_images": 2, "golden_random": 1})
    res = export(cfg)
    assert res.passed
    return out


def test_export_from_folder_carries_its_preprocessing_and_labels(folder_bundle):
    m = json.loads((folder_bundle / "manifest.json").read_text())
    assert m["model"]["name"] == "coatnet_pico_rw_224" and m["model"]["labels"] == META["labels"]
    assert m["model"]["num_classes"] == 3 and m["model"]["image_size"] == 64
    assert m["preprocess"] == {"resize": 73, "crop": 64, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                               "interpolation": "bicubic", "crop_pct": 0.875, "crop_mode": "center"}
    assert m["model"]["provenance"]["mean"] == "config.json"
    assert m["model"]["weights_sha256"] == META["sha256"]["hf_folder/model.safetensors"]
    assert m["model"]["config_sha256"] == META["sha256"]["hf_folder/config.json"]
    assert m["config"]["model"] is None  # no model flag was given


def test_bundle_logits_on_a_photo_match_timm(folder_bundle):
    """The device path (manifest preprocessing + the ORT engine) vs timm's transform + model: within 1e-4."""
    from coatnet_deploy.runtime import Classifier

    with Classifier.load(folder_bundle) as clf:
        x = np.stack([clf.preprocess(p) for p in PHOTOS])
        y = clf.logits(x)
    assert np.abs(y - EXPECTED["hf_logits"]).max() <= 1e-4


def test_predict_and_inspect_show_the_folder(capsys, folder_bundle):
    rc, out, _ = cli_in_process(capsys, "predict", folder_bundle, PHOTOS[0], "--topk", "3")
    assert rc == 0
    assert all(name in out for name in META["labels"])
    rc, out, _ = cli_in_process(capsys, "inspect", folder_bundle)
    assert rc == 0
    assert "timm save_for_hf folder: model.safetensors" in out and "mean: config.json" in out
    assert "crop_mode: config.json" in out and "tabby cat" in out
    rc, out, _ = cli_in_process(capsys, "inspect", folder_bundle, "--json")
    assert json.loads(out)["provenance"]["labels"] == "config.json"


def test_export_from_checkpoint_with_ema(tmp_path):
    """--ema: the bundle's reference (and engine) are timm's EMA outputs; the manifest says which was taken."""
    from coatnet_deploy.config import make_config
    from coatnet_deploy.exporting import export
    from coatnet_deploy.runtime import Classifier

    out = tmp_path / "bundle"
    cfg = make_config(None, {"weights": str(unpacked()["checkpoint"]), "ema": True, "output": str(out),
                             "bench_iterations": 0, "golden_images": 1, "golden_random": 1, "simplify": False})
    assert export(cfg).passed
    m = json.loads((out / "manifest.json").read_text())
    assert (m["model"]["state_dict"], m["model"]["ema"]) == ("state_dict_ema", True)
    assert m["model"]["weights_format"] == "timm train.py checkpoint"
    with Classifier.load(out) as clf:
        y = clf.logits(EXPECTED["checkpoint_inputs"])
    assert np.abs(y - EXPECTED["checkpoint_logits_ema"]).max() <= 1e-4
    # bench --reference takes the same state dict again, from the manifest's record
    from coatnet_deploy.bench.reference import reference_model

    model, note = reference_model(m, str(unpacked()["checkpoint"]))
    assert "state_dict_ema" in note
    assert np.abs(_logits(model, EXPECTED["checkpoint_inputs"]) - EXPECTED["checkpoint_logits_ema"]).max() <= 1e-5


def test_bench_reference_rebuilds_a_folder_model(folder_bundle):
    """bench --reference rebuilds the PyTorch model from the manifest and the same folder."""
    from coatnet_deploy.bench.reference import reference_model
    from coatnet_deploy.parity import load_golden

    m = json.loads((folder_bundle / "manifest.json").read_text())
    model, note = reference_model(m, str(unpacked()["folder"]))
    g = load_golden(folder_bundle)
    assert np.abs(_logits(model, g["inputs"]) - g["reference_logits"]).max() <= 1e-5
    assert "sha256" in note
