"""Property tests: whatever bytes or image arrive, load_image / preprocess_image either return a
correct array or raise UserError; never another exception, never a hang."""

from __future__ import annotations

import io
import os
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from coatnet_deploy import preprocess as pp
from coatnet_deploy.errors import UserError
from coatnet_deploy.preprocess import MAX_ASPECT_RATIO, PreprocessConfig, load_image, preprocess_image

CFG = PreprocessConfig(resize=18, crop=16, interpolation="bicubic", mean=(0.5, 0.5, 0.5),
                       std=(0.25, 0.5, 1.0), crop_pct=16 / 18)
LO = (0.0 - np.array(CFG.mean)) / np.array(CFG.std)
HI = (1.0 - np.array(CFG.mean)) / np.array(CFG.std)

# A generous per-example deadline: 2 shared cores; a hang still fails it. For a long hunt:
#   FUZZ_EXAMPLES=3000 .venv/bin/python -m pytest -q tests/test_fuzz_images.py   (random seeds)
_LONG = int(os.environ.get("FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=_LONG or 60, deadline=3000, derandomize=not _LONG,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

MODES = ["1", "L", "P", "RGB", "RGBA", "CMYK", "LA", "PA", "I", "I;16", "F", "YCbCr"]
FORMATS = ["PNG", "JPEG", "BMP", "WEBP", "GIF", "TIFF"]


def _check_output(x: np.ndarray) -> None:
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape == (3, 16, 16)
    assert np.isfinite(x).all()
    # Every value is a normalised 0..1 pixel (bicubic overshoot is clipped to 0..255 by PIL).
    assert (x >= LO[:, None, None] - 1e-6).all() and (x <= HI[:, None, None] + 1e-6).all()


def _outcome(source) -> np.ndarray | None:
    # A corrupted header can legitimately claim up to MAX_IMAGE_PIXELS (~89 MP), which takes
    # seconds to decode here; a lower cap keeps each example fast and still exercises the refusal.
    try:
        with mock.patch.object(pp, "MAX_IMAGE_PIXELS", 4_000_000):
            x = preprocess_image(source, CFG)
    except UserError as e:
        assert str(e).startswith("cannot read image")
        return None
    _check_output(x)
    return x


@st.composite
def images(draw) -> Image.Image:
    mode = draw(st.sampled_from(MODES))
    w = draw(st.integers(1, 40))
    h = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if mode in ("I", "I;16", "F"):
        hi = {"I": 2**31 - 1, "I;16": 65535}.get(mode)
        if mode == "F":
            a = rng.standard_normal((h, w)).astype(np.float32) * draw(st.sampled_from([1.0, 1e3]))
        else:
            a = rng.integers(0, hi, (h, w), dtype=np.int64).astype(np.int32 if mode == "I" else np.uint16)
        img = Image.fromarray(a)
        assert img.mode == mode
        return img
    rgba = Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA")
    img = rgba.convert(mode) if mode not in ("PA",) else rgba.convert("RGBA").convert("PA")
    if mode == "P" and draw(st.booleans()):
        img.info["transparency"] = int(rng.integers(0, 256))
    return img


def _encode(img: Image.Image, fmt: str) -> bytes | None:
    buf = io.BytesIO()
    try:
        img.save(buf, format=fmt)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # this format cannot store this mode; not what we test
    return buf.getvalue()


@FUZZ
@given(st.binary(min_size=0, max_size=2048))
def test_random_bytes(data):
    _outcome(data)


@FUZZ
@given(images())
def test_pil_images_of_any_mode(img):
    assert _outcome(img) is not None


@FUZZ
@given(images(), st.sampled_from(FORMATS))
def test_encoded_images_round_trip(img, fmt):
    data = _encode(img, fmt)
    assume(data is not None)
    assert _outcome(data) is not None


@FUZZ
@given(images(), st.sampled_from(FORMATS), st.floats(0.0, 1.0))
def test_truncated_images(img, fmt, frac):
    data = _encode(img, fmt)
    assume(data is not None)
    _outcome(data[: int(len(data) * frac)])


@FUZZ
@given(images(), st.sampled_from(FORMATS), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                                                      min_size=1, max_size=8))
def test_corrupted_bytes(img, fmt, edits):
    data = _encode(img, fmt)
    assume(data is not None)
    buf = bytearray(data)
    for pos, val in edits:
        buf[pos % len(buf)] = val
    _outcome(bytes(buf))


@FUZZ
@given(st.integers(1, 400), st.integers(1, 3), st.booleans())
def test_extreme_aspect_ratios(long_side, short_side, tall):
    size = (short_side, long_side) if tall else (long_side, short_side)
    x = _outcome(Image.new("RGB", size, (10, 200, 30)))
    if long_side > MAX_ASPECT_RATIO * short_side:
        assert x is None
    else:
        assert x is not None
        np.testing.assert_allclose(x[1], (200 / 255 - 0.5) / 0.5, atol=1e-5)


@pytest.mark.parametrize("source", [None, 3, 4.5, object(), ["a.png"]])
def test_wrong_source_types_are_user_errors(source):
    with pytest.raises(UserError):
        load_image(source)
