"""The C++ device app (examples/cpp): built by `make cpp-app` and `make cpp-app-asan` once per test
session (incremental: build/cpp and build/cpp-asan are reused), and every test here runs against
both builds. The sanitizer build fails a test on any AddressSanitizer, LeakSanitizer or
UndefinedBehaviorSanitizer report.

Independent references: Pillow (through coatnet_deploy.preprocess, and for the timm crop modes a
Pillow implementation written here from timm's transforms), the Python runtime's predictions
(`coatnet-deploy predict`) and the Python self-test (`coatnet-deploy parity`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps, PngImagePlugin

from bundle_helpers import LABELS, REPO, export_tiny, run_cli, tiny_bundle
from coatnet_deploy.preprocess import INTERPOLATIONS, PreprocessConfig, _resized_center_crop, load_image, preprocess_image

CALIBRATION = sorted((REPO / "calibration").glob("*.jpg"))
OLD_BUNDLES = REPO / "tests" / "fixtures" / "old_bundles"
BUILDS = {"release": ("cpp-app", "build/cpp"), "asan": ("cpp-app-asan", "build/cpp-asan")}
# The sanitizer build's exit code for a report (examples/cpp/src/sanitizer_defaults.cpp).
SANITIZER_EXIT = 86


# ----------------------------------------------------------------------------- the app


@dataclass
class App:
    name: str
    path: Path

    def run(self, *args, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run the app (no LD_LIBRARY_PATH: the RPATH must do); fail on any sanitizer report."""
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        proc = subprocess.run([str(self.path), *map(str, args)], capture_output=True, text=True, timeout=timeout,
                              env=env, errors="replace")
        report = [m for m in ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")
                  if m in proc.stderr]
        assert proc.returncode != SANITIZER_EXIT and not report, f"sanitizer report ({self.name}):\n{proc.stderr[-6000:]}"
        return proc


@pytest.fixture(scope="session", params=list(BUILDS))
def app(request) -> App:
    target, folder = BUILDS[request.param]
    # VENV: CMake asks this interpreter's environment for the openvino wheel.
    proc = subprocess.run(["make", target, f"VENV={sys.prefix}"], cwd=REPO, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"`make {target}` failed (Debian packages: see README 'C++ device app'):\n"
                    f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return App(request.param, REPO / folder / "coatnet-classify")


def one_error_line(proc: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 1 with exactly one stderr line, naming each of `words`."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------- bundles


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cpp-bundles")


@pytest.fixture(scope="module")
def ov_fp32(bundles) -> Path:
    return export_tiny(bundles / "ov-fp32", target="openvino")


@pytest.fixture(scope="module")
def ov_int8(bundles) -> Path:
    return export_tiny(bundles / "ov-int8", target="openvino", precision="int8")


def redo_checksums(bundle: Path, schema: int | None = None) -> None:
    """Rewrite manifest.artifacts for the files as they are now (and manifest.sha256 for schema >= 2)."""
    mpath = bundle / "manifest.json"
    manifest = json.loads(mpath.read_text())
    for e in manifest["artifacts"]:
        data = (bundle / e["path"]).read_bytes()
        e["sha256"], e["bytes"] = hashlib.sha256(data).hexdigest(), len(data)
    if schema is not None:
        manifest["schema_version"] = schema
    mpath.write_text(json.dumps(manifest, indent=2))
    if manifest["schema_version"] >= 2 or (bundle / "manifest.sha256").exists():
        write_manifest_sha(bundle)


def write_manifest(bundle: Path, manifest: dict) -> None:
    """An edited manifest, with its manifest.sha256 redone where the bundle has one."""
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if (bundle / "manifest.sha256").exists():
        write_manifest_sha(bundle)


def write_manifest_sha(bundle: Path) -> None:
    digest = hashlib.sha256((bundle / "manifest.json").read_bytes()).hexdigest()
    (bundle / "manifest.sha256").write_text(f"{digest}  manifest.json\n")


def copy_of(bundle: Path, dst: Path) -> Path:
    return Path(shutil.copytree(bundle, dst))


# ----------------------------------------------------------------------------- calibration photos


def python_cli_json(*args) -> tuple[int, dict]:
    proc = run_cli(*args, "--json")
    assert proc.returncode in (0, 2), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture(scope="module")
def python_parity_fp32(ov_fp32) -> tuple[int, dict]:
    return python_cli_json("parity", ov_fp32)


@pytest.fixture(scope="module")
def python_parity_int8(ov_int8) -> tuple[int, dict]:
    return python_cli_json("parity", ov_int8)


@pytest.fixture(scope="module")
def python_predictions_onnx() -> dict:
    return python_cli_json("predict", tiny_bundle(), *CALIBRATION[:6], "--topk", "3")[1]


@pytest.fixture(scope="module")
def python_predictions(ov_fp32) -> dict:
    proc = run_cli("predict", ov_fp32, *CALIBRATION, "--topk", "10", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


_calib_runs: dict[str, tuple[subprocess.CompletedProcess, np.ndarray]] = {}


@pytest.fixture
def calib_run(app, ov_fp32, tmp_path):
    """classify on the 24 photos with --json --dump-tensor, run once per build."""
    if app.name not in _calib_runs:
        dump = tmp_path / "inputs.npy"
        proc = app.run("classify", ov_fp32, *CALIBRATION, "--topk", "10", "--json", "--dump-tensor", dump)
        assert proc.returncode == 0, proc.stderr
        _calib_runs[app.name] = (proc, np.load(dump))
    return _calib_runs[app.name]


def test_preprocessed_tensor_equals_python_on_calibration_photos(calib_run, ov_fp32):
    _, tensor = calib_run
    cfg = PreprocessConfig.from_dict(json.loads((ov_fp32 / "manifest.json").read_text())["preprocess"])
    # One N x 3 x H x W array for N images, in command-line order.
    assert tensor.shape == (len(CALIBRATION), 3, cfg.crop, cfg.crop) and tensor.dtype == np.float32
    for i, path in enumerate(CALIBRATION):
        err = float(np.abs(tensor[i] - preprocess_image(path, cfg)).max())
        assert err <= 1e-5, (path.name, err)


def test_top1_and_probabilities_equal_predict_on_calibration_photos(calib_run, python_predictions):
    proc, _ = calib_run
    results = json.loads(proc.stdout)  # stdout is the JSON array and nothing else
    assert isinstance(results, list) and len(results) == len(CALIBRATION)
    for ours, theirs in zip(results, python_predictions["predictions"]):
        assert set(ours) == {"image", "topk"} and ours["image"] == theirs["image"]
        assert all(set(t) == {"index", "label", "prob"} for t in ours["topk"])
        assert ours["topk"][0]["index"] == theirs["topk"][0]["index"], ours["image"]
        for a, b in zip(ours["topk"], theirs["topk"]):
            assert a["label"] == b["label"] == LABELS[a["index"]]
            assert abs(a["prob"] - b["prob"]) <= 1e-4, (ours["image"], a, b)


def test_classify_text_output(app, ov_fp32):
    proc = app.run("classify", ov_fp32, CALIBRATION[0], "--topk", "3")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == str(CALIBRATION[0]) and len(lines) == 4
    prob, index, label = lines[1].split()
    assert 0 < float(prob) <= 1 and label == LABELS[int(index)]


# ----------------------------------------------------------------------------- preprocessing vs Pillow


def _texture(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """Gradients plus noise: resampling errors show, and no two pixels ask the same question."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 7 % 256], -1)
    return np.clip(base + rng.integers(-40, 40, base.shape), 0, 255).astype(np.uint8)[..., :channels]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _raw_png(path: Path, width: int, height: int, color_type: int, depth: int, rows: list[bytes], extra: bytes = b"") -> Path:
    """A PNG written chunk by chunk, for layouts Pillow does not write (16-bit RGB, 2-bit with tRNS...)."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    idat = zlib.compress(b"".join(b"\x00" + r for r in rows))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


def make_pillow_images(folder: Path) -> list[Path]:
    """Images that exercise every conversion and resize path of preprocess.py; written with Pillow."""
    rng = np.random.default_rng(7)
    out: list[Path] = []

    def save(name: str, im: Image.Image, **kw) -> None:
        im.save(folder / name, **kw)
        out.append(folder / name)

    base = Image.fromarray(_texture(45, 70))
    save("rgb_odd.png", Image.fromarray(_texture(97, 131)))                       # odd sizes
    save("downscale.jpg", Image.fromarray(_texture(1200, 1601, seed=1)), quality=90)  # strong downscaling
    save("upscale.png", Image.fromarray(_texture(17, 23, seed=2)))                # upscaling
    save("tall.png", Image.fromarray(_texture(400, 130, seed=3)))                 # Pillow 13: vertical pass first
    save("strip_wide.png", Image.fromarray(_texture(9, 95, seed=4)))              # > 8x: resize with a box
    save("strip_tall.png", Image.fromarray(_texture(1000, 12, seed=5)))
    save("gray.png", Image.fromarray(_texture(80, 61)[..., 0], "L"))
    save("gray.jpg", Image.fromarray(_texture(80, 61)[..., 0], "L"))
    save("rgba.png", Image.fromarray(np.concatenate([_texture(70, 90), rng.integers(0, 256, (70, 90, 1)).astype(np.uint8)], -1), "RGBA"))
    save("la.png", Image.fromarray(np.stack([_texture(50, 77)[..., 0], rng.integers(0, 256, (50, 77)).astype(np.uint8)], -1), "LA"))
    pal = Image.fromarray(_texture(66, 88)).quantize(64)
    save("palette.png", pal)
    save("palette_alpha.png", pal, transparency=bytes(rng.integers(0, 256, 40).astype(np.uint8).tolist()))
    save("palette_key.png", pal, transparency=3)
    save("palette_4bit.png", Image.fromarray(_texture(30, 41)).quantize(16), bits=4)
    save("gray16.png", Image.fromarray(rng.integers(0, 65536, (60, 75)).astype(np.uint16)))
    gray = Image.fromarray(_texture(40, 50)[..., 0], "L")
    save("gray_key.png", gray, transparency=int(np.asarray(gray)[5, 5]))
    rgb = Image.fromarray(_texture(40, 50, seed=6))
    save("rgb_key.png", rgb, transparency=tuple(int(v) for v in np.asarray(rgb)[3, 3]))  # ignored, as in preprocess.py
    save("one_bit.png", Image.fromarray(_texture(33, 47)[..., 0] > 128))
    save("progressive.jpg", Image.fromarray(_texture(99, 120)), progressive=True, quality=80)
    save("subsampling_444.jpg", Image.fromarray(_texture(99, 120)), subsampling=0, quality=80)
    save("subsampling_422.jpg", Image.fromarray(_texture(99, 120)), subsampling=1, quality=80)
    save("interlaced.png", Image.fromarray(_texture(50, 61)), interlace=1)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        save(f"exif{orientation}.jpg", base, exif=exif.tobytes(), quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6
    save("exif6.png", base, exif=exif.tobytes())
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", '<x:xmpmeta><rdf:Description tiff:Orientation="8"/></x:xmpmeta>')
    save("xmp8.png", base, pnginfo=info)
    exif = Image.Exif()
    exif[0x0112] = 3
    raw = exif.tobytes()
    info = PngImagePlugin.PngInfo()
    info.add_text("Raw profile type exif", f"\nexif\n{len(raw):8d}\n{raw.hex()}\n", zip=True)
    save("raw_profile_exif3.png", base, pnginfo=info)
    save("xmp5.jpg", base, xmp=b"<x:xmpmeta><tiff:Orientation>5</tiff:Orientation></x:xmpmeta>")
    h, w = 37, 53
    out.append(_raw_png(folder / "rgb16.png", w, h, 2, 16, [r.tobytes() for r in rng.integers(0, 65536, (h, w * 3)).astype(">u2")]))
    out.append(_raw_png(folder / "rgba16.png", w, h, 6, 16, [r.tobytes() for r in rng.integers(0, 65536, (h, w * 4)).astype(">u2")]))
    out.append(_raw_png(folder / "la16.png", w, h, 4, 16, [r.tobytes() for r in rng.integers(0, 65536, (h, w * 2)).astype(">u2")]))
    two_bit = rng.integers(0, 4, (h, w)).astype(np.uint8)
    rows = [np.packbits(np.unpackbits(r[:, None], axis=1)[:, 6:].reshape(-1)).tobytes() for r in two_bit]
    out.append(_raw_png(folder / "gray2_key0.png", w, h, 0, 2, rows, _png_chunk(b"tRNS", struct.pack(">H", 0))))
    out.append(_raw_png(folder / "gray2_key3.png", w, h, 0, 2, rows, _png_chunk(b"tRNS", struct.pack(">H", 3))))
    out.append(_raw_png(folder / "gray1_key1.png", w, h, 0, 1, [np.packbits(r > 1).tobytes() for r in two_bit],
                        _png_chunk(b"tRNS", struct.pack(">H", 1))))
    out.append(_raw_png(folder / "palette_short.png", w, h, 3, 8, [r.tobytes() for r in rng.integers(0, 8, (h, w)).astype(np.uint8)],
                        _png_chunk(b"PLTE", bytes(range(12)))))  # indices past the 4 palette entries
    return out


@pytest.fixture(scope="module")
def pillow_images(tmp_path_factory) -> list[Path]:
    images = make_pillow_images(tmp_path_factory.mktemp("pillow-images"))
    # The cases are real: Python rotates the EXIF-tagged images and sees 16-bit gray as 16-bit.
    assert load_image(images[0].parent / "exif6.jpg").size == (45, 70)
    assert load_image(images[0].parent / "xmp8.png").size == (45, 70)
    assert Image.open(images[0].parent / "gray16.png").mode == "I;16"
    return images


IMAGENET = dict(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
HALF = dict(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
CONFIGS = {
    "bicubic-73-64": dict(resize=73, crop=64, interpolation="bicubic", **IMAGENET),
    "bilinear-75-64": dict(resize=75, crop=64, interpolation="bilinear", **HALF),
    "nearest-101-96": dict(resize=101, crop=96, interpolation="nearest", **HALF),
    "bicubic-235-224": dict(resize=235, crop=224, interpolation="bicubic", **HALF),
    "bilinear-64-63": dict(resize=64, crop=63, interpolation="bilinear", **HALF),
}


def _offsets_round_half_to_even(images: list[Path], configs: dict) -> bool:
    """Some image/config pair puts the crop offset at x.5 where round-half-even and half-up differ."""
    for c in configs.values():
        cfg = PreprocessConfig.from_dict(c)
        for p in images:
            w, h = load_image(p).size
            long_side = int(cfg.resize * max(w, h) / min(w, h))
            for size in (cfg.resize, long_side):
                half = (size - cfg.crop) / 2.0
                if half % 1 == 0.5 and round(half) != int(half + 0.5):
                    return True
    return False


@pytest.mark.parametrize("config", list(CONFIGS))
def test_preprocessing_matches_pillow_to_the_pixel(app, pillow_images, config, tmp_path):
    cfg_file = tmp_path / "preprocess.json"
    cfg_file.write_text(json.dumps(CONFIGS[config]))
    proc = app.run("preprocess", cfg_file, *pillow_images, "--dump-pixels", tmp_path / "px.npy", "--dump-tensor", tmp_path / "x.npy")
    assert proc.returncode == 0, proc.stderr
    pixels, tensor = np.load(tmp_path / "px.npy"), np.load(tmp_path / "x.npy")
    cfg = PreprocessConfig.from_dict(CONFIGS[config])
    for i, path in enumerate(pillow_images):
        expected = np.asarray(_resized_center_crop(load_image(path), cfg))
        diff = np.abs(expected.astype(int) - pixels[i])
        assert diff.max() == 0, f"{path.name}: {int((diff > 0).sum())} values differ, by up to {diff.max()}"
        assert float(np.abs(tensor[i] - preprocess_image(path, cfg)).max()) <= 1e-5, path.name


def test_the_crop_offsets_exercise_round_half_to_even(pillow_images):
    assert _offsets_round_half_to_even(pillow_images, CONFIGS)


TIMM_FIXTURES = REPO / "tests" / "fixtures" / "preprocess"


def test_preprocessing_matches_timm_output(app, tmp_path):
    """timm's own eval transform (all three crop modes), as stored by tests/fixtures/preprocess/make_fixtures.py."""
    meta = json.loads((TIMM_FIXTURES / "golden.json").read_text())
    golden = np.load(TIMM_FIXTURES / "golden.npz")
    cases = {k: v for k, v in meta.items() if not k.startswith("_")}
    assert {c.get("crop_mode", "center") for c in cases.values()} == {"center", "squash", "border"}
    for name, case in cases.items():
        cfg = PreprocessConfig.for_size(case["image_size"], case["crop_pct"], case["interpolation"], case["mean"], case["std"],
                                        case.get("crop_mode", "center"))
        (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
        image = REPO / case.get("dir", "calibration") / case["image"]
        proc = app.run("preprocess", tmp_path / "c.json", image, "--dump-tensor", tmp_path / "x.npy")
        assert proc.returncode == 0, proc.stderr
        err = float(np.abs(np.load(tmp_path / "x.npy")[0] - golden[name]).max())
        assert err <= 1e-5, (name, err)


def timm_crop_reference(img: Image.Image, c: dict) -> np.ndarray:
    """timm's eval transform for crop_mode squash / border (transforms_imagenet_eval), on PIL.

    squash: Resize((s, s)) then CenterCrop. border: ResizeKeepRatio(longest=1.0) (each side
    round(side / ratio)) then CenterCropOrPad with fill = round(255 * mean) per channel.
    """
    s, crop, resample = c["resize"], c["crop"], INTERPOLATIONS[c["interpolation"]]
    if c["crop_mode"] == "squash":
        img = img.resize((s, s), resample)
    else:
        w, h = img.size
        ratio = max(h / s, w / s) * 1.0 + min(h / s, w / s) * 0.0
        nw, nh = round(w / ratio), round(h / ratio)
        img = img.resize((nw, nh), resample)
        if crop > nw or crop > nh:
            pad = ((crop - nw) // 2 if crop > nw else 0, (crop - nh) // 2 if crop > nh else 0,
                   (crop - nw + 1) // 2 if crop > nw else 0, (crop - nh + 1) // 2 if crop > nh else 0)
            img = ImageOps.expand(img, border=pad, fill=tuple(round(255 * v) for v in c["mean"]))
            if img.size == (crop, crop):
                return np.asarray(img)
    w, h = img.size
    top, left = int(round((h - crop) / 2.0)), int(round((w - crop) / 2.0))
    return np.asarray(img.crop((left, top, left + crop, top + crop)))


@pytest.mark.parametrize("mode", ["squash", "border"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear", "nearest"])
def test_timm_crop_modes_match_pillow(app, pillow_images, mode, interpolation, tmp_path):
    c = dict(resize=70, crop=64, interpolation=interpolation, crop_mode=mode, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    (tmp_path / "c.json").write_text(json.dumps(c))
    proc = app.run("preprocess", tmp_path / "c.json", *pillow_images, "--dump-pixels", tmp_path / "px.npy")
    assert proc.returncode == 0, proc.stderr
    pixels = np.load(tmp_path / "px.npy")
    for i, path in enumerate(pillow_images):
        assert np.array_equal(timm_crop_reference(load_image(path), c), pixels[i]), path.name


@pytest.mark.parametrize("mode", ["squash", "border"])
def test_timm_crop_modes_match_python_preprocess(app, pillow_images, mode, tmp_path):
    try:
        cfg = PreprocessConfig.from_dict(dict(resize=70, crop=64, crop_mode=mode, **IMAGENET))
    except Exception:  # noqa: BLE001 - the Python side does not know crop_mode yet
        pytest.skip("coatnet_deploy.preprocess has no crop_mode yet (issue 13)")
    (tmp_path / "c.json").write_text(json.dumps(dict(resize=70, crop=64, crop_mode=mode, **IMAGENET)))
    proc = app.run("preprocess", tmp_path / "c.json", *pillow_images, "--dump-tensor", tmp_path / "x.npy")
    assert proc.returncode == 0, proc.stderr
    tensor = np.load(tmp_path / "x.npy")
    for i, path in enumerate(pillow_images):
        assert float(np.abs(tensor[i] - preprocess_image(path, cfg)).max()) <= 1e-5, path.name


# ----------------------------------------------------------------------------- selftest


def selftest_json(app: App, bundle: Path) -> tuple[int, dict]:
    proc = app.run("selftest", bundle, "--json")
    assert proc.returncode in (0, 2), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_selftest_passes_on_fp32_and_agrees_with_parity(app, ov_fp32, python_parity_fp32):
    proc = app.run("selftest", ov_fp32)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("PASSED: ") and len(proc.stdout.splitlines()) == 1, proc.stdout
    rc, ours = selftest_json(app, ov_fp32)
    python_rc, python = python_parity_fp32
    theirs = python["parity"]
    assert rc == python_rc == 0
    # The same engine on the same inputs: equal up to the runtime's own rounding noise.
    for key in ("samples", "cosine_min", "max_abs_err", "mean_abs_err", "top1_agreement", "top5_agreement"):
        assert ours["parity"][key] == pytest.approx(theirs[key], rel=1e-3, abs=1e-6), key


def test_selftest_passes_on_int8_as_parity_does(app, ov_int8, python_parity_int8):
    rc, ours = selftest_json(app, ov_int8)
    python_rc, python = python_parity_int8
    assert rc == python_rc == 0, (ours["parity"], python["parity"])
    for key in ("samples", "cosine_min", "max_abs_err", "mean_abs_err", "top1_agreement", "top5_agreement"):
        assert ours["parity"][key] == pytest.approx(python["parity"][key], rel=1e-3, abs=1e-6), key


@pytest.fixture(scope="module")
def python_predictions_int8(ov_int8) -> dict:
    return python_cli_json("predict", ov_int8, *CALIBRATION[:10], "--topk", "3")[1]


def test_int8_classify_equals_predict_across_batch_sizes(app, ov_int8, python_predictions_int8):
    # 10 images in batches of at most 8: an 8 and a 2. INT8 engines compile one model per batch size
    # (engine.static_batch), as the Python runner does.
    proc = app.run("classify", ov_int8, *CALIBRATION[:10], "--json", "--topk", "3")
    assert proc.returncode == 0, proc.stderr
    for a, b in zip(json.loads(proc.stdout), python_predictions_int8["predictions"]):
        assert a["topk"][0]["index"] == b["topk"][0]["index"], a["image"]
        assert abs(a["topk"][0]["prob"] - b["topk"][0]["prob"]) <= 1e-4, (a, b)
    rc, result = selftest_json(app, ov_int8)
    assert "compiled per batch size" in result["runs"]


def test_selftest_fails_with_exit_2_on_altered_reference_logits(app, ov_fp32, tmp_path):
    bundle = copy_of(ov_fp32, tmp_path / "b")
    logits = np.load(bundle / "golden_logits.npy")
    logits[0, 3] += 0.5
    np.save(bundle / "golden_logits.npy", logits)
    redo_checksums(bundle, schema=2)
    proc = app.run("selftest", bundle)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.startswith("FAILED: ") and "max_abs_err" in proc.stdout


def test_gate_samples_images_gates_only_photos(app, ov_fp32, tmp_path):
    # A random-tensor sample that fails alone must not fail the gate when only photos are gated.
    bundle = copy_of(ov_fp32, tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    names = manifest["golden"]["names"]
    random_row = next(i for i, n in enumerate(names) if n.startswith("random:"))
    logits = np.load(bundle / "golden_logits.npy")
    logits[random_row] += 1.0
    np.save(bundle / "golden_logits.npy", logits)
    redo_checksums(bundle)
    assert app.run("selftest", bundle).returncode == 2
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["gate_samples"] = "images"
    write_manifest(bundle, manifest)
    rc, result = selftest_json(app, bundle)
    assert rc == 0 and result["parity"]["samples"] == sum(n.startswith("image:") for n in names)
    assert result["parity"]["all_samples"]["max_abs_err"] == pytest.approx(1.0, abs=1e-3)


def test_selftest_refuses_a_bundle_without_golden_npy(app):
    one_error_line(app.run("selftest", OLD_BUNDLES / "openvino-fp32"), "golden", "npy", "xport")


def test_old_schema_1_bundle_still_classifies(app):
    proc = app.run("classify", OLD_BUNDLES / "openvino-fp32", CALIBRATION[0], "--json")
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 1


def test_onnx_bundle_runs_through_the_onnx_reader_and_says_so(app, python_predictions_onnx):
    bundle = tiny_bundle()  # target onnxruntime
    proc = app.run("classify", bundle, *CALIBRATION[:6], "--json", "--topk", "3")
    assert proc.returncode == 0, proc.stderr
    assert "ONNX reader" in proc.stderr
    ours = json.loads(proc.stdout)
    theirs = python_predictions_onnx["predictions"]
    for a, b in zip(ours, theirs):  # OpenVINO vs ONNX Runtime on the same fp32 graph
        assert a["topk"][0]["index"] == b["topk"][0]["index"]
        assert abs(a["topk"][0]["prob"] - b["topk"][0]["prob"]) <= 1e-4
    assert app.run("selftest", bundle).returncode == 0


def test_bench_prints_every_inference_time(app, ov_fp32):
    proc = app.run("bench", ov_fp32, "--iterations", "5", "--warmup", "1", "--threads", "1")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["samples_ms"]) == 5 and all(t > 0 for t in result["samples_ms"])
    assert result["batch"] == 1 and result["threads"] == 1 and result["p50_ms"] > 0


# ----------------------------------------------------------------------------- refusals


def test_tampered_model_bin_is_refused_naming_it(app, ov_fp32, tmp_path):
    bundle = copy_of(ov_fp32, tmp_path / "b")
    data = bytearray((bundle / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bundle / "model.bin").write_bytes(bytes(data))
    one_error_line(app.run("classify", bundle, CALIBRATION[0]), "model.bin", "SHA-256")
    (bundle / "model.bin").write_bytes(bytes(data[:-10]))
    one_error_line(app.run("selftest", bundle), "model.bin", "bytes")


@pytest.mark.parametrize("name", ["model.xml", "model.bin", "golden_logits.npy"])
def test_missing_file_is_refused_naming_it(app, ov_fp32, tmp_path, name):
    bundle = copy_of(ov_fp32, tmp_path / "b")
    (bundle / name).unlink()
    one_error_line(app.run("selftest", bundle), name, "missing")


def test_schema_2_manifest_checksum(app, ov_fp32, tmp_path):
    bundle = copy_of(ov_fp32, tmp_path / "b")
    redo_checksums(bundle, schema=2)
    assert app.run("selftest", bundle).returncode == 0
    # Edited after manifest.sha256 was written: refused, naming the manifest.
    text = (bundle / "manifest.json").read_text().replace('"label-03"', '"label-33"')
    (bundle / "manifest.json").write_text(text)
    one_error_line(app.run("classify", bundle, CALIBRATION[0]), "manifest.json", "manifest.sha256")
    write_manifest_sha(bundle)
    assert app.run("classify", bundle, CALIBRATION[0]).returncode == 0
    (bundle / "manifest.sha256").write_text("not a checksum\n")
    one_error_line(app.run("selftest", bundle), "manifest.sha256")
    (bundle / "manifest.sha256").unlink()
    one_error_line(app.run("selftest", bundle), "manifest.sha256", "missing")


def test_a_model_openvino_cannot_read_is_refused(app, ov_fp32, tmp_path):
    bundle = copy_of(ov_fp32, tmp_path / "b")
    (bundle / "model.xml").write_text("<net>broken")
    redo_checksums(bundle)
    one_error_line(app.run("selftest", bundle), "model.xml", "OpenVINO")


def _edit(manifest: dict, path: str, value) -> None:
    *parents, last = path.split(".")
    node = manifest
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value


_DELETE = object()
MANIFEST_EDITS = {
    "no-target": ("target", _DELETE, "target"),
    "num-classes-text": ("model.num_classes", "ten", "num_classes"),
    "labels-short": ("model.labels", ["a", "b"], "labels"),
    "preprocess-unknown-key": ("preprocess.zoom", 2, "zoom"),
    "interpolation": ("preprocess.interpolation", "lanczos", "lanczos"),
    "crop-mode": ("preprocess.crop_mode", "zoom", "crop_mode"),
    "resize-below-crop": ("preprocess.resize", 10, "resize"),
    "std-zero": ("preprocess.std", [0.5, 0, 0.5], "std"),
    "crop-text": ("preprocess.crop", "64", "crop"),
    "unknown-gate": ("gates.cosine_maxi", 0.9, "cosine_maxi"),
    "gate-text": ("gates.cosine_min", "high", "cosine_min"),
    "gate-samples": ("gate_samples", "some", "gate_samples"),
    "schema-future": ("schema_version", 99, "schema version 99"),
    "artifact-outside": ("artifacts", [{"path": "../../etc/passwd", "sha256": "0" * 64, "bytes": 1}], "outside"),
    "artifacts-not-list": ("artifacts", {"path": "x"}, "artifacts"),
    "batch-max-zero": ("input.batch.max", 0, "batch.max"),
    "precision-hint": ("engine.inference_precision_hint", "int4", "inference_precision_hint"),
}


@pytest.mark.parametrize("edit", list(MANIFEST_EDITS))
def test_bad_manifest_is_refused_in_one_line(app, ov_fp32, tmp_path, edit):
    path, value, word = MANIFEST_EDITS[edit]
    bundle = copy_of(ov_fp32, tmp_path / "b")
    manifest = json.loads((bundle / "manifest.json").read_text())
    _edit(manifest, path, value)
    write_manifest(bundle, manifest)
    one_error_line(app.run("selftest", bundle), word)


def test_manifest_that_is_not_json_is_refused(app, ov_fp32, tmp_path):
    bundle = copy_of(ov_fp32, tmp_path / "b")
    (bundle / "manifest.json").write_text('{"schema_version": 1, ')
    write_manifest_sha(bundle)
    one_error_line(app.run("classify", bundle, CALIBRATION[0]), "manifest.json", "JSON")
    shutil.rmtree(bundle)
    one_error_line(app.run("classify", bundle, CALIBRATION[0]), str(bundle))


def test_wrong_target_is_refused_naming_the_runnable_ones(app):
    one_error_line(app.run("classify", OLD_BUNDLES / "tensorrt-int8-deferred", CALIBRATION[0]), "tensorrt", "openvino", "onnx")


def _bad_images(folder: Path) -> dict[str, tuple[Path, str]]:
    jpeg = CALIBRATION[0].read_bytes()
    png = io.BytesIO()
    Image.fromarray(_texture(20, 30)).save(png, format="PNG")
    cases = {
        "garbage": (b"\x00\x01garbage" * 50, "not a recognised image"),
        "truncated-jpeg": (jpeg[: len(jpeg) // 2], "truncated"),
        "truncated-png": (png.getvalue()[:-40], "truncated"),
        "empty": (b"", "empty"),
        "gif": (b"GIF89a" + b"\x00" * 40, "GIF"),
        "huge-header": (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)), "too large"),
        "extreme-aspect": (None, "aspect ratio"),
    }
    out = {}
    for name, (data, word) in cases.items():
        p = folder / f"{name}.img"
        if data is None:
            Image.fromarray(_texture(1, 150)).save(p, format="PNG")
        else:
            p.write_bytes(data)
        out[name] = (p, word)
    out["missing"] = (folder / "nope.jpg", "no such file")
    out["directory"] = (folder, "directory")
    return out


def test_bad_images_are_refused_naming_the_file(app, ov_fp32, tmp_path):
    for name, (path, word) in _bad_images(tmp_path).items():
        proc = app.run("classify", ov_fp32, CALIBRATION[0], path)
        line = one_error_line(proc, str(path), word)
        assert proc.stdout == "", (name, line)


def test_png_checksums_are_checked_where_pillow_checks_them(app, tmp_path):
    good = io.BytesIO()
    Image.fromarray(_texture(20, 30)).save(good, format="PNG")
    data = good.getvalue()
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(dict(resize=20, crop=20)))
    idat = data.find(b"IDAT")
    bad_idat = bytearray(data)
    bad_idat[idat + 4 + struct.unpack(">I", data[idat - 4:idat])[0]] ^= 0xFF  # Pillow never reads it
    (tmp_path / "idat.png").write_bytes(bytes(bad_idat))
    proc = app.run("preprocess", cfg, tmp_path / "idat.png", "--dump-tensor", tmp_path / "x.npy")
    assert proc.returncode == 0, proc.stderr
    expected = preprocess_image(tmp_path / "idat.png", PreprocessConfig.from_dict(dict(resize=20, crop=20)))
    assert np.array_equal(np.load(tmp_path / "x.npy")[0], expected)
    bad_ihdr = bytearray(data)
    bad_ihdr[29] ^= 0xFF  # IHDR's CRC: Pillow refuses the file
    (tmp_path / "ihdr.png").write_bytes(bytes(bad_ihdr))
    with pytest.raises(Exception):
        load_image(tmp_path / "ihdr.png")
    one_error_line(app.run("preprocess", cfg, tmp_path / "ihdr.png", "--dump-tensor", tmp_path / "x.npy"), "ihdr.png")


def test_damaged_images_never_crash(app, pillow_images, tmp_path):
    """Seeded corruptions of real files: exit 0 or 1 with one line, never a crash or sanitizer report."""
    rng = np.random.default_rng(11)
    sources = [p for p in pillow_images if p.suffix in (".png", ".jpg")]
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIGS["bicubic-73-64"]))
    outcomes = set()
    for i in range(40):
        data = bytearray(sources[i % len(sources)].read_bytes())
        kind = i % 4
        if kind == 0:
            data = data[: int(rng.integers(1, len(data)))]
        elif kind == 1:
            for _ in range(int(rng.integers(1, 10))):
                data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        elif kind == 2:
            at = int(rng.integers(0, len(data)))
            data[at:at + 32] = rng.integers(0, 256, 32).astype(np.uint8).tobytes()
        else:
            at = int(rng.integers(8, min(200, len(data))))
            data[at:at + 4] = b"\xff\xff\xff\xff"
        path = tmp_path / f"damaged{i}{sources[i % len(sources)].suffix}"
        path.write_bytes(bytes(data))
        proc = app.run("preprocess", cfg, path, "--dump-tensor", tmp_path / "x.npy")
        assert proc.returncode in (0, 1), proc.stderr
        if proc.returncode == 1:
            one_error_line(proc, str(path))
        outcomes.add(proc.returncode)
    assert outcomes == {0, 1}


@pytest.mark.parametrize("args,word", [
    (["classify", "{b}", "{img}", "--bogus"], "--bogus"),
    (["classify", "{b}", "{img}", "--topk", "0"], "--topk"),
    (["classify", "{b}", "{img}", "--topk", "many"], "many"),
    (["classify", "{b}", "{img}", "--topk"], "--topk"),
    (["classify", "{b}", "{img}", "--json=yes"], "--json"),
    (["classify", "{b}"], "usage"),
    (["selftest", "{b}", "--threads", "-2"], "--threads"),
    (["selftest"], "usage"),
    (["frobnicate", "{b}"], "frobnicate"),
    (["bench", "{b}", "--batch", "99"], "--batch"),
])
def test_bad_command_lines_are_refused_in_one_line(app, ov_fp32, args, word):
    args = [a.format(b=ov_fp32, img=CALIBRATION[0]) for a in args]
    one_error_line(app.run(*args), word)


def test_help(app):
    proc = app.run("--help")
    assert proc.returncode == 0 and "selftest BUNDLE" in proc.stdout


# ----------------------------------------------------------------------------- on a device


def test_device_copy_runs_with_the_listed_libraries_only(app, ov_fp32, tmp_path):
    """`cmake --install` lays out what examples/README.md says to copy; the installed binary's
    RPATH is only $ORIGIN/lib, so this proves those libraries are enough."""
    if app.name != "release":
        pytest.skip("the device copy is the release build")
    proc = subprocess.run(["cmake", "--install", str(REPO / "build/cpp"), "--prefix", str(tmp_path / "device")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    libs = sorted(p.name.split(".so")[0] for p in (tmp_path / "device" / "lib").iterdir())
    assert libs == ["libhwloc", "libopenvino", "libopenvino_intel_cpu_plugin", "libopenvino_ir_frontend",
                    "libopenvino_onnx_frontend", "libtbb", "libtbbbind_2_5", "libtbbmalloc"], libs
    device = App("device", tmp_path / "device" / "coatnet-classify")
    assert "$ORIGIN/lib" in subprocess.run(["readelf", "-d", str(device.path)], capture_output=True, text=True).stdout
    assert device.run("selftest", ov_fp32).returncode == 0
    assert device.run("selftest", tiny_bundle()).returncode == 0
