"""Weight files: formats, wrappers, refusal of pickled code, and clear errors for files that don't fit."""

from __future__ import annotations

import os

import pytest
import torch

from coatnet_deploy.errors import UserError
from coatnet_deploy.models import build_model
from coatnet_deploy.models.weights import load_state_dict, weights_sha256

NAME = "coatnet_tiny"


@pytest.fixture(scope="module")
def tiny_sd():
    model = build_model(NAME, num_classes=6, seed=3)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _out(model):
    with torch.no_grad():
        return model(torch.ones(2, 3, 64, 64))


@pytest.fixture(scope="module")
def tiny_out(tiny_sd):
    return _out(build_model(NAME, num_classes=6, seed=3))


@pytest.mark.parametrize("wrap", [None, "state_dict", "model", "state_dict_ema", "model_ema", "module."])
def test_wrappers_and_prefix_load(tmp_path, tiny_sd, tiny_out, wrap):
    if wrap is None:
        obj = tiny_sd
    elif wrap == "module.":
        obj = {f"module.{k}": v for k, v in tiny_sd.items()}
    else:
        obj = {wrap: tiny_sd, "epoch": 3}
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    model = build_model(NAME, weights=path, seed=99)  # seed must not matter once weights load
    assert model.num_classes == 6  # inferred from head.fc.weight
    assert torch.allclose(_out(model), tiny_out, atol=0, rtol=0)


def test_safetensors_and_sha(tmp_path, tiny_sd, tiny_out):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_sd.items()}, str(path))
    assert torch.equal(_out(build_model(NAME, weights=path)), tiny_out)
    digest = weights_sha256(path)
    assert len(digest) == 64 and digest == weights_sha256(str(path))


class _Payload:
    """Unpickling this would create a file: proves the loader never runs pickled code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused_and_not_run(tmp_path, tiny_sd):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": tiny_sd, "extra": _Payload(str(marker))}, path)
    assert not marker.exists()
    with pytest.raises(UserError, match="pickled code") as e:
        build_model(NAME, weights=path)
    assert "safetensors" in str(e.value) and "state_dict" in str(e.value)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04trunc"], ids=["empty", "garbage"])
def test_empty_or_garbage_file(tmp_path, content):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(UserError, match="empty|cannot read"):
        load_state_dict(path)


def test_truncated_files(tmp_path, tiny_sd):
    from safetensors.torch import save_file

    for suffix in (".pth", ".safetensors"):
        full = tmp_path / f"full{suffix}"
        if suffix == ".pth":
            torch.save(tiny_sd, full)
        else:
            save_file({k: v.contiguous() for k, v in tiny_sd.items()}, str(full))
        cut = tmp_path / f"cut{suffix}"
        cut.write_bytes(full.read_bytes()[: os.path.getsize(full) // 2])
        with pytest.raises(UserError, match="cannot read"):
            load_state_dict(cut)


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_state_dict(tmp_path / "nope.safetensors")


def test_wrong_weights_list_keys_and_shapes(tmp_path, tiny_sd):
    sd = dict(tiny_sd)
    sd.pop("stem.conv1.weight")
    sd["extra.weight"] = torch.zeros(3)
    sd["stages.0.blocks.0.conv1_1x1.weight"] = torch.zeros(5, 5, 1, 1)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    with pytest.raises(UserError) as e:
        build_model(NAME, weights=path)
    msg = str(e.value)
    assert "1 missing (stem.conv1.weight)" in msg
    assert "1 unexpected (extra.weight)" in msg
    assert "stages.0.blocks.0.conv1_1x1.weight (5, 5, 1, 1) vs" in msg


def test_other_variant_weights_refused(tmp_path, tiny_sd):
    path = tmp_path / "w.pth"
    torch.save(tiny_sd, path)
    with pytest.raises(UserError, match="do not fit coatnet_seed"):
        build_model("coatnet_seed", weights=path)


def test_num_classes_conflict(tmp_path, tiny_sd):
    path = tmp_path / "w.pth"
    torch.save(tiny_sd, path)
    with pytest.raises(UserError, match="6 classes"):
        build_model(NAME, num_classes=10, weights=path)


def test_old_checkpoint_with_index_buffers_loads(tmp_path, tiny_sd, tiny_out):
    """Older timm saved relative_position_index; it is derived, so it is dropped on load."""
    sd = dict(tiny_sd)
    sd["stages.2.blocks.0.attn.rel_pos.relative_position_index"] = torch.zeros(4, dtype=torch.long)
    path = tmp_path / "w.pth"
    torch.save(sd, path)
    assert torch.equal(_out(build_model(NAME, weights=path)), tiny_out)


def test_resized_tables_on_load(tmp_path, tiny_sd):
    path = tmp_path / "w.pth"
    torch.save(tiny_sd, path)
    model = build_model(NAME, image_size=128, weights=path)
    key = "stages.3.blocks.0.attn.rel_pos.relative_position_bias_table"
    assert tiny_sd[key].shape[0] == 9 and model.state_dict()[key].shape[0] == 49
    with torch.no_grad():
        assert model(torch.ones(1, 3, 128, 128)).shape == (1, 6)
