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

from bundle_helpers import REPO, cli_in_process, copy_bundle, run_cli, stderr_lines, tiny_bundle
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


def export_fails(capsys, tmp_path, *args, code=1, needles=()):
    out_dir = tmp_path / "out"
    rc, stdout, lines = cli(capsys, "export", "--model", "coatnet_tiny", "--bench-iterations", "0", "--json",
                            "--output", out_dir, *args)
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
    export_fails(capsys, tmp_path, "--precision", "fp8", needles=("unknown precision 'fp8'", "int8"))


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
