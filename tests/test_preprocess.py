"""preprocess.py: timm parity (golden fixture), image modes, EXIF, and clear errors for bad files."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from coatnet_deploy import preprocess as pp
from coatnet_deploy.errors import UserError
from coatnet_deploy.preprocess import PreprocessConfig, load_image, preprocess_batch, preprocess_image

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "preprocess"

# mean 0, std 1: the output is the 0..1 pixel value, so modes can be checked in plain units.
RAW = PreprocessConfig(resize=16, crop=16, interpolation="nearest", mean=(0, 0, 0), std=(1, 1, 1), crop_pct=1.0)


def _png_bytes(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kw)
    return buf.getvalue()


# ------------------------------------------------------------------ timm parity


def _golden_cases():
    meta = json.loads((FIXTURES / "golden.json").read_text())
    return [(k, v) for k, v in meta.items() if not k.startswith("_")]


@pytest.mark.parametrize("name,case", _golden_cases(), ids=[k for k, _ in _golden_cases()])
def test_matches_timm_eval_transform(name, case):
    # timm's transform resizes with the same PIL call and normalises in float32 in the same
    # order, so the match is exact, not merely close.
    golden = np.load(FIXTURES / "golden.npz")[name]
    cfg = PreprocessConfig.for_size(case["image_size"], case["crop_pct"], case["interpolation"],
                                    case["mean"], case["std"], case.get("crop_mode", "center"))
    out = preprocess_image(ROOT / case.get("dir", "calibration") / case["image"], cfg)
    assert out.dtype == np.float32 and out.shape == golden.shape
    np.testing.assert_array_equal(out, golden)


def test_golden_covers_every_crop_mode():
    modes = {case.get("crop_mode", "center") for _, case in _golden_cases()}
    assert modes == set(pp.CROP_MODES)


def test_border_pads_with_the_mean_colour():
    # a wide image in border mode: top and bottom rows are padding, filled with round(255 * mean)
    src = np.full((10, 40, 3), 200, dtype=np.uint8)
    cfg = PreprocessConfig(resize=16, crop=16, interpolation="nearest", mean=(0.485, 0.456, 0.406),
                           std=(0.229, 0.224, 0.225), crop_pct=1.0, crop_mode="border")
    out = preprocess_image(Image.fromarray(src), cfg)
    fill = np.array([124, 116, 104], dtype=np.float32) / np.float32(255.0)  # round(255 * mean)
    expect_pad = (fill - np.array(cfg.mean, dtype=np.float32)) / np.array(cfg.std, dtype=np.float32)
    # 40x10 -> 16x4 (longest side to 16): 6 rows of padding above, 6 below
    np.testing.assert_array_equal(out[:, 0, 0], expect_pad)
    np.testing.assert_array_equal(out[:, 15, 15], expect_pad)
    inner = (np.float32(200 / 255.0) - np.array(cfg.mean, dtype=np.float32)) / np.array(cfg.std, dtype=np.float32)
    np.testing.assert_allclose(out[:, 6:10, :], np.broadcast_to(inner[:, None, None], (3, 4, 16)), atol=1e-6)
    assert not np.allclose(out[:, 5], out[:, 6])


def test_unknown_crop_mode_is_user_error():
    with pytest.raises(UserError, match="crop_mode"):
        PreprocessConfig.from_dict({"crop": 64, "crop_mode": "letterbox"})


def test_numpy_reimplementation_nearest_crop():
    # Independent of PIL resampling: with resize == source size nothing is resampled, so the
    # output is the source's central crop, scaled and normalised.
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
    cfg = PreprocessConfig(resize=30, crop=20, interpolation="bilinear",
                           mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_pct=20 / 30)
    out = preprocess_image(Image.fromarray(src), cfg)
    top, left = 5, 10
    ref = src[top:top + 20, left:left + 20].astype(np.float64) / 255.0
    ref = (ref - np.array(cfg.mean)) / np.array(cfg.std)
    np.testing.assert_allclose(out, ref.transpose(2, 0, 1), atol=1e-6)


# ------------------------------------------------------------------ config


@pytest.mark.parametrize("size,pct,resize", [(224, 0.95, 235), (224, 0.9, 248), (224, 0.875, 256),
                                             (64, 0.95, 67), (288, 1.0, 288)])
def test_for_size_follows_timm_floor(size, pct, resize):
    cfg = PreprocessConfig.for_size(size, pct)
    assert (cfg.resize, cfg.crop, cfg.crop_pct) == (resize, size, pct)


def test_dict_round_trip_and_manifest_keys():
    cfg = PreprocessConfig.for_size(96, 0.9, "bilinear", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    d = cfg.to_dict()
    assert set(d) == {"resize", "crop", "mean", "std", "interpolation", "crop_pct", "crop_mode"}
    assert d["crop_mode"] == "center"
    assert json.loads(json.dumps(d)) == d
    assert PreprocessConfig.from_dict(d) == cfg
    # bundles written before crop modes existed have no crop_mode: center, as timm's default
    assert PreprocessConfig.from_dict({k: v for k, v in d.items() if k != "crop_mode"}) == cfg
    # resize may be left out: derived as timm does.
    assert PreprocessConfig.from_dict({"crop": 224, "crop_pct": 0.95}).resize == 235
    assert PreprocessConfig.from_dict({"crop": 224, "resize": 256}).crop_pct == 0.875


@pytest.mark.parametrize("bad", [
    {"crop": 224, "interpolaton": "bicubic"},        # typo -> unknown key
    {"crop": 224, "interpolation": "lanczos"},
    {"crop": 224, "resize": 200},
    {"crop": 0},
    {"crop": 224, "std": (0.5, 0.0, 0.5)},
    {"crop": 224, "mean": (0.5, 0.5)},
    {"crop": 224, "crop_pct": 1.5},
    {"resize": 256},
    {"crop": "224", "resize": 256},
    {"crop": 224, "resize": True},
    {"crop": 224, "crop_pct": "0.9"},
    ["crop", 224],
])
def test_bad_config_is_user_error(bad):
    with pytest.raises(UserError):
        PreprocessConfig.from_dict(bad)


def test_bad_for_size_is_user_error():
    with pytest.raises(UserError):
        PreprocessConfig.for_size("224")
    with pytest.raises(UserError):
        PreprocessConfig.for_size(224, crop_pct=0)


# ------------------------------------------------------------------ modes


def test_grayscale_gives_equal_channels():
    img = Image.fromarray(np.tile(np.arange(16, dtype=np.uint8) * 16, (16, 1)), mode="L")
    out = preprocess_image(img, RAW)
    assert out.shape == (3, 16, 16)
    np.testing.assert_array_equal(out[0], out[1])
    np.testing.assert_array_equal(out[0], out[2])
    np.testing.assert_allclose(out[0, 0], np.arange(16) * 16 / 255.0, atol=1e-7)


def test_rgba_composites_on_white(tmp_path):
    a = np.zeros((16, 16, 4), dtype=np.uint8)
    a[..., 0] = 255                 # red everywhere ...
    a[:, :8, 3] = 0                 # ... transparent on the left
    a[:, 8:, 3] = 255               # opaque on the right
    p = tmp_path / "rgba.png"
    Image.fromarray(a, "RGBA").save(p)
    out = preprocess_image(p, RAW)
    np.testing.assert_allclose(out[:, :, :8], 1.0)                       # white, not black
    np.testing.assert_allclose(out[:, :, 8:], np.array([1, 0, 0])[:, None, None] * np.ones((3, 16, 8)))


def test_half_alpha_blends():
    a = np.zeros((16, 16, 4), dtype=np.uint8)
    a[..., 3] = 128                 # black at ~50 % over white -> ~mid grey
    out = preprocess_image(Image.fromarray(a, "RGBA"), RAW)
    assert np.allclose(out, 127 / 255.0, atol=1.5 / 255)


def test_la_and_palette_with_transparency(tmp_path):
    la = Image.new("LA", (16, 16), (0, 0))                    # transparent black
    assert np.allclose(preprocess_image(la, RAW), 1.0)
    p = Image.new("P", (16, 16), 1)
    p.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)            # index 1 = blue
    path = tmp_path / "pal.png"
    p.save(path, transparency=1)                              # ... and index 1 is transparent
    reloaded = Image.open(path)
    assert reloaded.mode == "P" and "transparency" in reloaded.info
    assert np.allclose(preprocess_image(path, RAW), 1.0)
    p.save(tmp_path / "opaque.png")
    blue = preprocess_image(tmp_path / "opaque.png", RAW)
    assert np.allclose(blue[2], 1.0) and np.allclose(blue[:2], 0.0)


def test_16bit_scaled_not_clipped(tmp_path):
    a = np.zeros((16, 16), dtype=np.uint16)
    a[:, :4] = 65535
    a[:, 4:8] = 32768
    a[:, 8:12] = 1000               # clipping to 8 bit would make this 255 (white)
    p = tmp_path / "g16.png"
    Image.fromarray(a).save(p)  # uint16 -> mode I;16
    img = Image.open(p)
    assert img.mode in ("I;16", "I")
    out = preprocess_image(p, RAW)
    np.testing.assert_allclose(out[:, :, 0], 1.0)
    np.testing.assert_allclose(out[:, :, 5], 128 / 255.0, atol=1e-7)
    np.testing.assert_allclose(out[:, :, 9], 4 / 255.0, atol=1e-7)
    np.testing.assert_allclose(out[:, :, 13], 0.0)


def test_32bit_int_and_float_images():
    i32 = Image.fromarray(np.full((16, 16), 65535, dtype=np.int32))
    assert np.allclose(preprocess_image(i32, RAW), 1.0)
    f = Image.fromarray(np.full((16, 16), 0.5, dtype=np.float32))
    assert np.allclose(preprocess_image(f, RAW), 128 / 255.0)


def test_cmyk_jpeg(tmp_path):
    p = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95)   # pure red in CMYK
    assert Image.open(p).mode == "CMYK"
    out = preprocess_image(p, RAW)
    assert out[0].mean() > 0.9 and out[1].mean() < 0.1 and out[2].mean() < 0.1


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_6_rotates(tmp_path, fmt):
    # Stored 40x20: red left half, blue right half. Orientation 6 = display rotated 90 deg
    # clockwise, so the viewer sees a 20x40 image, red on top, blue below.
    a = np.zeros((20, 40, 3), dtype=np.uint8)
    a[:, :20, 0] = 255
    a[:, 20:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    p = tmp_path / f"rot.{fmt.lower()}"
    Image.fromarray(a).save(p, format=fmt, exif=exif.tobytes())
    img = load_image(p)
    assert img.size == (20, 40)
    px = np.asarray(img).astype(int)
    assert px[5, 10, 0] > 200 and px[5, 10, 2] < 60
    assert px[35, 10, 2] > 200 and px[35, 10, 0] < 60


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF"])
def test_formats_from_path_and_bytes(tmp_path, fmt):
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8))
    p = tmp_path / f"x.{fmt.lower()}"
    img.save(p, format=fmt)
    a = preprocess_image(p, RAW)
    b = preprocess_image(p.read_bytes(), RAW)
    assert a.shape == (3, 16, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)


def test_extreme_aspect_ratio_stays_small_and_close():
    # A 2 x 190 strip would be resized to 16 x 1520 first; the box path samples the same
    # source region without building that canvas.
    rng = np.random.default_rng(2)
    src = Image.fromarray(rng.integers(0, 256, (190, 2, 3), dtype=np.uint8))
    cfg = PreprocessConfig(resize=16, crop=16, interpolation="bilinear", mean=(0,) * 3, std=(1,) * 3, crop_pct=1)
    out = preprocess_image(src, cfg)
    full = src.resize((16, 1520), Image.Resampling.BILINEAR).crop((0, 752, 16, 768))
    ref = np.asarray(full).astype(np.float32).transpose(2, 0, 1) / 255
    assert out.shape == (3, 16, 16)
    assert np.abs(out - ref).max() <= 2 / 255


def test_extreme_aspect_ratio_is_refused(tmp_path):
    p = tmp_path / "strip.png"
    Image.new("RGB", (1, pp.MAX_ASPECT_RATIO + 1)).save(p)
    with pytest.raises(UserError, match="aspect ratio"):
        load_image(p)


def test_batch_shapes():
    imgs = [Image.new("RGB", (20 + i, 18), (i * 10, 0, 0)) for i in range(3)]
    b = preprocess_batch(imgs, RAW)
    assert b.shape == (3, 3, 16, 16) and b.dtype == np.float32
    assert preprocess_batch([], RAW).shape == (0, 3, 16, 16)


# ------------------------------------------------------------------ errors


def _png_header_only(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


@pytest.mark.parametrize("w,h", [(100_000, 100_000), (12_000, 8_000)])
def test_decompression_bomb_is_user_error_and_fast(tmp_path, w, h):
    # 10 G pixels (Pillow's own hard error) and 96 M pixels (Pillow only warns): both refused
    # from the header, before decoding.
    p = tmp_path / "bomb.png"
    p.write_bytes(_png_header_only(w, h))
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="image too large") as e:
        load_image(p)
    assert time.perf_counter() - t0 < 2.0
    assert "bomb.png" in str(e.value)


def test_pixel_limit_is_ours(tmp_path, monkeypatch):
    monkeypatch.setattr(pp, "MAX_IMAGE_PIXELS", 100)
    p = tmp_path / "small.png"
    Image.new("RGB", (11, 10)).save(p)
    with pytest.raises(UserError, match="image too large"):
        load_image(p)


def test_bad_files_are_user_errors_naming_the_file(tmp_path):
    good = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good, "JPEG")
    cases = {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (good.getvalue()[: len(good.getvalue()) // 2], "truncated"),
        "notes.jpg": (b"these are not the pixels you are looking for\n" * 3, "not a recognised image"),
        "truncated.png": (_png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))[:60], ""),
    }
    for fname, (data, why) in cases.items():
        p = tmp_path / fname
        p.write_bytes(data)
        with pytest.raises(UserError) as e:
            preprocess_image(p, RAW)
        assert fname in str(e.value) and why in str(e.value)
    with pytest.raises(UserError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="directory"):
        load_image(tmp_path)
    with pytest.raises(UserError, match="empty"):
        load_image(b"")


def test_module_is_torch_free():
    code = ("import sys, coatnet_deploy.preprocess, coatnet_deploy.calibration; "
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'openvino') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50)
    assert Image.open(p).n_frames == 2
    out = preprocess_image(p, RAW)
    assert out[0].mean() > 0.9 and out[2].mean() < 0.1
