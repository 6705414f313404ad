"""One test per row of docs/ERRORS.md: exit code, ONE line on stderr saying what/why/fix, no traceback,
nothing written at --output.

Most cases run the CLI in this process (``coatnet_deploy.cli.main``, as the console script does) to keep
the run short; an uncaught exception fails the test with its traceback. Cases whose point is the process
(the exit-3 path, a file-size limit) run in a subprocess.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle_helpers import REPO, cli_in_process, copy_bundle, run_cli, stderr_lines
from timm_fixtures import checkpoint_dict, folder_variant, unpacked
from coatnet_deploy.errors import UserError

PHOTOS = sorted((REPO / "calibration").glob("*.jpg"))
DOC = (REPO / "docs" / "ERRORS.md").read_text(encoding="utf-8")


cli = cli_in_process


def assert_one_error_line(lines: list[str], *needles: str) -> str:
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("error: ") and "Traceback" not in line
    # "what: why. fix." -- the fix itself is checked through the needles
    assert re.search(r"^error: .+?: .+\.$", line), line
    for n in needles:
        assert n.lower() in line.lower(), (n, line)
    return line


def assert_nothing_written(out_dir: Path) -> None:
    assert not out_dir.exists()
    assert not list(out_dir.parent.glob(f".{out_dir.name}.partial-*"))


def export_fails(capsys, tmp_path, *args, code=1, needles=(), model="coatnet_tiny"):
    out_dir = tmp_path / "out"
    rc, stdout, lines = cli(capsys, "export", *(("--model", model) if model else ()), "--bench-iterations", "0",
                            "--json", "--output", out_dir, *args)
    assert rc == code, lines
    assert stdout == ""
    assert_nothing_written(out_dir)
    return assert_one_error_line(lines, *needles)


def test_every_test_is_in_the_catalogue():
    names = [n for n in globals() if n.startswith("test_") and n != "test_every_test_is_in_the_catalogue"]
    missing = [n for n in names if f"`{n}`" not in DOC]
    assert not missing, f"add rows to docs/ERRORS.md for {missing}"


# -- export: choices ------------------------------------------------------------------------------

def test_unknown_model(capsys, tmp_path):
    export_fails(capsys, tmp_path, "--model", "coatnet_nope", needles=("unknown model 'coatnet_nope'", "coatnet_tiny"))


def test_unknown_target(capsys, tmp_path):
    export_fails(capsys, tmp_path, "--target", "tflite", needles=("unknown target 'tflite'", "onnxruntime"))


def test_unknown_precision(capsys, tmp_path):
    export_fails(capsys, tmp_path, "--precision", "fp4", needles=("unknown precision 'fp4'", "int8", "fp8"))


def test_bad_combination(capsys, tmp_path):
    export_fails(capsys, tmp_path, "--target", "openvino", "--defer-build", needles=("--defer-build", "tensorrt"))


def test_tensorrt_without_gpu_names_defer_build(tmp_path):
    from coatnet_deploy.backends.cuda_probe import tensorrt_status

    if tensorrt_status()[0]:
        pytest.skip("TensorRT and a GPU are usable here")
    out_dir = tmp_path / "out"
    proc = run_cli("export", "--model", "coatnet_tiny", "--target", "tensorrt", "--output", out_dir)
    assert proc.returncode == 3
    assert_one_error_line(stderr_lines(proc), "tensorrt", "--defer-build")
    assert_nothing_written(out_dir)


# -- export: weights ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from safetensors.torch import save_file

    from coatnet_deploy.models import build_model

    d = tmp_path_factory.mktemp("weights")
    other = build_model("coatnet_pico_rw_224", num_classes=10, image_size=64)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(d / "pico.safetensors"))
    own = build_model("coatnet_tiny", num_classes=10, image_size=64)
    save_file({k: v.contiguous() for k, v in own.state_dict().items()}, str(d / "tiny.safetensors"))
    return d


def test_weights_for_another_variant(capsys, tmp_path, tiny_weights):
    line = export_fails(capsys, tmp_path, "--weights", tiny_weights / "pico.safetensors",
                        needles=("do not fit coatnet_tiny", "wrongly shaped", "same variant"))
    assert re.search(r"\(\d+(, \d+)*\) vs \(\d+(, \d+)*\)", line), "shapes are listed"


def test_truncated_weights(capsys, tmp_path, tiny_weights):
    data = (tiny_weights / "tiny.safetensors").read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    export_fails(capsys, tmp_path, "--weights", cut, needles=("cut.safetensors", "re-"))


def test_empty_weights(capsys, tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    export_fails(capsys, tmp_path, "--weights", empty, needles=("empty.pth", "empty"))


def test_weights_not_found(capsys, tmp_path):
    export_fails(capsys, tmp_path, "--weights", tmp_path / "nope", needles=("--weights", "nope", "not found", "save_for_hf"))


# -- export: a timm save_for_hf folder or train.py checkpoint ----------------------------------------

def _folder_fails(capsys, tmp_path, edit=None, *args, config_text=None, needles=(), model=None):
    folder = folder_variant(tmp_path, edit, config_text=config_text)
    return export_fails(capsys, tmp_path, "--weights", folder, *args, model=model, needles=needles)


def test_model_contradicts_weights(capsys, tmp_path):
    export_fails(capsys, tmp_path, "--weights", unpacked()["folder"],
                 needles=("--model coatnet_tiny contradicts the weights", "config.json names architecture coatnet_pico_rw_224",
                          "--model coatnet_pico_rw_224"))


def test_unknown_architecture(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c.update(architecture="resnet50"),
                  needles=("names architecture 'resnet50'", "does not build", "coatnet_tiny", "'architecture' in config.json"))


def test_checkpoint_names_unknown_architecture(capsys, tmp_path):
    import torch

    ck = checkpoint_dict()
    ck["args"].model = "vit_base_patch16_224"
    path = tmp_path / "vit.pth.tar"
    torch.save(ck, path)
    export_fails(capsys, tmp_path, "--weights", path, model=None,
                 needles=("vit.pth.tar names architecture 'vit_base_patch16_224'", "does not build", "args.model"))


def test_config_json_not_json(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, config_text='{"architecture": "coatnet_pico_rw_224",',
                  needles=("config.json is not valid JSON", "line 1", "save_for_hf"))


def test_config_json_wrong_type(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c.update(num_classes="three"),
                  needles=("config.json is malformed", "num_classes is 'three'", "positive integer", "save_for_hf"))


def test_config_json_classes_disagree_with_weights(capsys, tmp_path):
    def five(cfg):
        cfg["num_classes"] = cfg["model_args"]["num_classes"] = cfg["pretrained_cfg"]["num_classes"] = 5

    _folder_fails(capsys, tmp_path, five,
                  needles=("config.json says num_classes 5", "model.safetensors has 3 classes", "fix num_classes there to 3"))


def test_config_json_architecture_does_not_fit_weights(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c.update(architecture="coatnet_nano_rw_224"),
                  needles=("do not fit coatnet_nano_rw_224 at 64px", "missing", "'architecture' in config.json says coatnet_nano_rw_224"))


def test_config_json_label_names_count(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c.update(label_names=["a", "b"]),
                  needles=("config.json has 2 label_names", "the model has 3 classes", "--labels"))


def test_config_json_non_square_input(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c["model_args"].update(img_size=[64, 96]),
                  needles=("gives input size 64x96", "square inputs only", "--image-size"))


def test_config_json_input_size_not_multiple_of_32(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c["model_args"].update(img_size=100),
                  needles=("config.json gives input size 100", "multiple of 32", "--image-size"))


def test_config_json_unsupported_crop_mode(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c["pretrained_cfg"].update(crop_mode="letterbox"),
                  needles=("asks for crop_mode 'letterbox'", "center, squash, border", "set crop_mode"))


def test_config_json_unsupported_interpolation(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c["pretrained_cfg"].update(interpolation="lanczos"),
                  needles=("asks for interpolation 'lanczos'", "bicubic, bilinear, nearest"))


def test_config_json_crop_pct_over_one(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c["pretrained_cfg"].update(crop_pct=1.15),
                  needles=("asks for crop_pct 1.15", "at most 1.0"))


def test_config_json_crop_pct_near_zero(capsys, tmp_path):
    # 5e-324 is valid JSON; crop / crop_pct was inf and math.floor raised OverflowError
    _folder_fails(capsys, tmp_path, lambda c: c["pretrained_cfg"].update(crop_pct=5e-324),
                  needles=("crop_pct is 5e-324", "gives a resize of inf pixels", "set resize"))


def test_config_json_unsupported_global_pool(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c["model_args"].update(global_pool="max"),
                  needles=("sets model_args.global_pool = 'max'", "average pooling only"))


def test_config_json_not_rgb(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c["model_args"].update(in_chans=1),
                  needles=("describes a 1-channel input", "3 channels"))


def test_config_json_unsupported_model_arg(capsys, tmp_path):
    _folder_fails(capsys, tmp_path, lambda c: c["model_args"].update(depths=[1, 1, 1, 1]),
                  needles=("sets model_args.depths", "cannot apply it"))


def test_folder_without_config_json(capsys, tmp_path):
    d = tmp_path / "only_weights"
    d.mkdir()
    (d / "model.safetensors").symlink_to(unpacked()["folder"] / "model.safetensors")
    export_fails(capsys, tmp_path, "--weights", d, model=None, needles=("has no config.json", "model.safetensors"))


def test_folder_without_weights_file(capsys, tmp_path):
    d = tmp_path / "only_config"
    d.mkdir()
    (d / "config.json").write_bytes((unpacked()["folder"] / "config.json").read_bytes())
    export_fails(capsys, tmp_path, "--weights", d / "config.json", model=None,
                 needles=("has config.json but no model.safetensors or pytorch_model.bin", "copy the weights"))


@pytest.mark.parametrize("shape", ["state dict", "folder"])
def test_ema_without_ema_weights(capsys, tmp_path, tiny_weights, shape):
    weights = tiny_weights / "tiny.safetensors" if shape == "state dict" else unpacked()["folder"]
    export_fails(capsys, tmp_path, "--weights", weights, "--ema", model=None if shape == "folder" else "coatnet_tiny",
                 needles=("--ema given", "no EMA weights", "drop --ema"))


def test_ema_without_weights(capsys, tmp_path):
    export_fails(capsys, tmp_path, "--ema", needles=("--ema needs --weights", "drop --ema"))


class _OpenPayload:
    """Unpickling this would create a file: planted inside a train.py checkpoint's args."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_checkpoint_payload_inside_args(capsys, tmp_path, tiny_weights):
    import argparse

    import torch
    from safetensors.torch import load_file

    marker = tmp_path / "payload_ran"
    args = argparse.Namespace(model="coatnet_tiny", num_classes=10, img_size=64, hook=_OpenPayload(str(marker)))
    path = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 3, "arch": "coatnet_tiny", "state_dict": load_file(str(tiny_weights / "tiny.safetensors")),
                "optimizer": {}, "version": 2, "args": args, "metric": 1.0}, path)
    assert not marker.exists()
    export_fails(capsys, tmp_path, "--weights", path, model=None,
                 needles=("refusing to load", "model_best.pth.tar", "argparse.Namespace", "safetensors"))
    assert not marker.exists()
    # the same checkpoint without the payload is a timm train.py checkpoint and loads
    args.hook = None
    torch.save({"epoch": 3, "arch": "coatnet_tiny", "state_dict": load_file(str(tiny_weights / "tiny.safetensors")),
                "optimizer": {}, "version": 2, "args": args, "metric": 1.0}, path)
    from coatnet_deploy.models import resolve_model_source

    src = resolve_model_source(weights=str(path))
    assert (src.name, src.num_classes, src.weights_format) == ("coatnet_tiny", 10, "timm train.py checkpoint")


def test_image_size_not_multiple_of_32(capsys, tmp_path):
    export_fails(capsys, tmp_path, "--image-size", "70", needles=("image size 70", "multiple of 32"))


# -- export: INT8 calibration ---------------------------------------------------------------------

def test_calibration_empty(capsys, tmp_path):
    empty = tmp_path / "calib"
    empty.mkdir()
    (empty / "README.txt").write_text("no images here")
    export_fails(capsys, tmp_path, "--precision", "int8", "--calibration", empty, "--no-simplify",
                 needles=("calibration folder", "no image files"))


def _calibration_set(folder: Path):
    from coatnet_deploy.calibration import CalibrationSet
    from coatnet_deploy.preprocess import PreprocessConfig

    return CalibrationSet(folder, PreprocessConfig.for_size(64)).select(None, seed=0)


def _library_error_line(exc: UserError) -> str:
    assert exc.exit_code == 1
    return assert_one_error_line([f"error: {exc}"])


def test_calibration_unreadable(tmp_path):
    for i in range(10):
        (tmp_path / f"broken{i}.jpg").write_bytes(b"\xff\xd8\xff junk" * (i + 1))
    with pytest.raises(UserError) as ei:
        _calibration_set(tmp_path)
    line = _library_error_line(ei.value)
    assert "0 readable images" in line and "broken" in line


def test_calibration_too_small(tmp_path):
    for p in PHOTOS[:3]:
        shutil.copy(p, tmp_path)
    with pytest.raises(UserError) as ei:
        _calibration_set(tmp_path)
    assert "only 3 readable images, need at least 8" in _library_error_line(ei.value)


def _odd_images(folder: Path, n: int) -> list[Path]:
    out = []
    for i, p in enumerate(PHOTOS[:n]):
        img = Image.open(p).convert("RGB").resize((96, 72))
        kind = i % 3
        if kind == 0:
            dst = folder / f"gray{i}.png"
            img.convert("L").save(dst)
        elif kind == 1:
            dst = folder / f"rgba{i}.png"
            img.convert("RGBA").save(dst)
        else:
            dst = folder / f"deep{i}.png"
            Image.fromarray(np.asarray(img.convert("L"), dtype=np.uint16) * 257).save(dst)
            assert Image.open(dst).mode.startswith("I")
        out.append(dst)
    return out


def test_calibration_odd_modes_work(tmp_path):
    _odd_images(tmp_path, 9)
    calib = _calibration_set(tmp_path)
    assert len(calib) == 9 and not calib.skipped
    arrays = np.concatenate(list(calib.batches(4)))
    assert arrays.shape == (9, 3, 64, 64) and np.isfinite(arrays).all()


# -- predict: images ------------------------------------------------------------------------------

def predict_fails(capsys, bundle, image, *needles):
    rc, stdout, lines = cli(capsys, "predict", bundle, image)
    assert rc == 1 and stdout == ""
    return assert_one_error_line(lines, str(image), *needles)


def test_predict_non_image(capsys, tmp_path, bundle):
    f = tmp_path / "notes.png"
    f.write_text("hello, I am text")
    predict_fails(capsys, bundle, f, "not a recognised image")


def test_predict_empty_image(capsys, tmp_path, bundle):
    f = tmp_path / "empty.jpg"
    f.write_bytes(b"")
    predict_fails(capsys, bundle, f, "0 bytes")


def test_predict_decompression_bomb(capsys, tmp_path, bundle):
    f = tmp_path / "bomb.png"
    Image.new("1", (12000, 12000)).save(f)  # a few KB on disk, 144 MP when decoded
    assert f.stat().st_size < 100_000
    predict_fails(capsys, bundle, f, "too large")


def test_predict_odd_modes_work(capsys, tmp_path, bundle):
    files = _odd_images(tmp_path, 3)
    rc, stdout, lines = cli(capsys, "predict", bundle, *files, "--json")
    assert rc == 0, lines
    assert [p["image"] for p in json.loads(stdout)["predictions"]] == [str(f) for f in files]


# -- export: output path --------------------------------------------------------------------------

def test_output_is_a_file(capsys, tmp_path):
    f = tmp_path / "bundle"
    f.write_text("I am a file")
    rc, stdout, lines = cli(capsys, "export", "--model", "coatnet_tiny", "--json", "--output", f)
    assert rc == 1 and stdout == "" and f.read_text() == "I am a file"
    assert_one_error_line(lines, "is a file", "directory")


def test_output_not_writable(capsys, tmp_path):
    # Root may write anywhere permissions are concerned; /sys refuses new directories to everyone.
    target = Path("/sys/coatnet-deploy-test-bundle")
    rc, stdout, lines = cli(capsys, "export", "--model", "coatnet_tiny", "--json", "--output", target)
    assert rc == 1 and stdout == "" and not target.exists()
    assert_one_error_line(lines, "not writable", "choose another --output")


def test_disk_full_keeps_old_bundle(tmp_path):
    from coatnet_deploy.bundle import verify_bundle

    out_dir = copy_bundle(tmp_path / "out")
    before = verify_bundle(out_dir)["created"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({"model": "coatnet_tiny", "num_classes": 10, "bench_iterations": 0, "golden_images": 1,
                               "golden_random": 1, "output": str(out_dir)}))
    # 300 KiB: smaller than model.onnx, so some write hits EFBIG (what a full disk looks like to a writer).
    import subprocess
    import sys

    proc = subprocess.run(["bash", "-c", f"ulimit -f 300; exec {sys.executable} -m coatnet_deploy export --json --config {cfg}"],
                          capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert proc.returncode == 1, proc.stderr
    assert_one_error_line(stderr_lines(proc), "File too large", "previous bundle is untouched")
    assert proc.stdout == ""
    assert verify_bundle(out_dir)["created"] == before
    assert not list(tmp_path.glob(".out.partial-*"))


# -- export: config file --------------------------------------------------------------------------

def test_config_unknown_key(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: coatnet_tiny\nimagesize: 64\n")
    export_fails(capsys, tmp_path, "--config", cfg, needles=("unknown key 'imagesize'", "image_size"))


def test_config_wrong_type(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: coatnet_tiny\nopset: seventeen\n")
    export_fails(capsys, tmp_path, "--config", cfg, needles=("'opset'", "integer", "seventeen"))


def test_config_not_a_file_nor_a_shipped_name(capsys, tmp_path):
    export_fails(capsys, tmp_path, "--config", "openvino-int9",
                 needles=("config file 'openvino-int9' not found", "openvino-int8", str(REPO / "export_configs")))


# -- bundles --------------------------------------------------------------------------------------

def _refused_by_everyone(capsys, b: Path, *needles):
    """predict, parity and inspect exit 1 with one line naming the bundle problem; so does the runtime."""
    from coatnet_deploy.runtime import Classifier

    for cmd in (["predict", b, PHOTOS[0]], ["parity", b], ["inspect", b]):
        rc, stdout, lines = cli(capsys, *cmd)
        assert rc == 1 and stdout == "", (cmd, lines)
        assert_one_error_line(lines, *needles)
    with pytest.raises(UserError) as ei:
        Classifier.load(b)
    assert all(n.lower() in str(ei.value).lower() for n in needles)


def test_bundle_missing_file(capsys, tmp_path):
    b = copy_bundle(tmp_path / "b")
    (b / "golden.npz").unlink()
    _refused_by_everyone(capsys, b, "'golden.npz' is missing", "copy the whole bundle")


def test_bundle_tampered_file(capsys, tmp_path):
    b = copy_bundle(tmp_path / "b")
    data = bytearray((b / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit flipped
    (b / "model.onnx").write_bytes(bytes(data))
    _refused_by_everyone(capsys, b, "'model.onnx'", "SHA-256")


def test_bundle_newer_schema(capsys, tmp_path):
    b = copy_bundle(tmp_path / "b")
    m = json.loads((b / "manifest.json").read_text())
    m["schema_version"] = 99
    (b / "manifest.json").write_text(json.dumps(m))
    _refused_by_everyone(capsys, b, "schema version 99", "upgrade")
