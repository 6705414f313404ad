"""The one image preprocessing of the project: load any image, resize, crop (or pad), normalise.

Golden inputs, INT8 calibration, accuracy evaluation and ``predict`` all call
:func:`preprocess_image`, so what the engine sees on the device is what it was proven on.
NumPy + Pillow only: the device runtime imports this module, so it must never import torch.

The transform is timm's eval transform (``timm/data/transforms_factory.py:
transforms_imagenet_eval``) for a square input of side ``C`` (``crop``) and ``S = resize =
floor(C / crop_pct)``. The image is ``W x H`` after decoding; every resize is one PIL
``Image.resize`` with the manifest's filter (skipped when the size is already right), and
``round()`` below is Python's: halves go to the even neighbour (C++: ``std::nearbyint``).

- ``crop_mode "center"`` (the default, and what a manifest without ``crop_mode`` means): the
  shorter side becomes ``S``, the longer ``int(S * long / short)`` (truncated: torchvision's
  ``Resize(int)``); then a ``C x C`` crop at ``left = round((w - C) / 2)``, ``top = round((h - C) / 2)``
  (torchvision's ``CenterCrop``).
- ``"squash"``: resize to exactly ``S x S`` (aspect ratio not kept), then the same center crop.
- ``"border"``: ``ratio = max(W / S, H / S)`` (in double), resize to ``round(W / ratio) x
  round(H / ratio)`` (timm's ``ResizeKeepRatio(longest=1)``: the longer side becomes ``S``); then
  timm's ``CenterCropOrPad``: a side shorter than ``C`` is padded to ``C`` with
  ``(C - n) // 2`` pixels before and ``(C - n + 1) // 2`` after, filled with the colour
  ``round(255 * mean)`` per channel; a side longer than ``C`` is cropped as above.

Then, per pixel and in float32, in this order: ``x = v / 255``, ``(x - mean) / std``; HWC -> CHW.
``tests/fixtures/preprocess`` holds timm's own output for photographs and odd-sized images in all
three modes; this module reproduces it bit for bit.

Decisions about odd inputs (documented because they change pixel values):

- Transparency (RGBA, LA, PA, P or L with a transparency key) is composited on **white**, the
  way a browser or image viewer shows it. Dropping alpha (``convert("RGB")``, as timm's dataset
  loader does) exposes whatever colour the encoder left under transparent pixels, often black.
- 16-bit and 32-bit integer greyscale (``I;16*``, ``I``) is scaled to 8 bit (``v * 255 / 65535``,
  rounded), not clipped; ``I`` values outside 0..65535 and float (``F``) values outside 0..1 are
  min-max stretched. Float images in 0..1 are scaled by 255.
- CMYK and YCbCr use Pillow's conversion (no ICC colour management).
- Animated GIF / WebP: the first frame.
- Refused with UserError: over ``MAX_IMAGE_PIXELS`` pixels, or an aspect ratio over ``MAX_ASPECT_RATIO``.
- EXIF orientation is applied (``ImageOps.exif_transpose``) before anything else.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import numpy as np
from PIL import Image, ImageOps

from coatnet_deploy.errors import UserError

# Pillow's own decompression-bomb threshold (~89.5 MP, ~270 MB as RGB). Checked on the header,
# before any pixel is decoded, so a tiny file that claims a huge canvas fails fast.
MAX_IMAGE_PIXELS = 89_478_485

# Longer side / shorter side. Beyond this no photograph is meant (panoramas are ~10:1, long
# screenshots ~30:1), and 1-pixel-wide strips with millions of rows cost seconds per Pillow copy.
MAX_ASPECT_RATIO = 100

# Formats the project promises to read. TIFF carries 16-bit scientific images; GIF is common.
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP", "WEBP", "GIF", "TIFF", "PPM")

INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}

# Resizing an extreme strip (e.g. 1 x 5000) "shorter side to 256" would allocate a
# 256 x 1.28M canvas only to crop its center. Beyond this factor we resample just the
# region the crop keeps (PIL's resize(box=...)), which samples the same source pixels.
_MAX_RESIZED_LONG_FACTOR = 8

ImageSource = Union[str, os.PathLike, bytes, bytearray, memoryview, Image.Image]

CROP_MODES = ("center", "squash", "border")
# A resize is a pixel count: the C++ app refuses an implied one at 2^20 too (examples/cpp/src/preprocess.cpp),
# and crop / crop_pct with crop_pct near 0 (5e-324 is a valid JSON number) would otherwise be inf or 10^300.
MAX_RESIZE = 1 << 20


def _implied_resize(crop: int, crop_pct: float, key: str) -> int:
    implied = crop / crop_pct
    if not implied < MAX_RESIZE:
        raise UserError(f"{key} is {crop_pct!r}", f"crop / crop_pct gives a resize of {implied:.3g} pixels",
                        "set resize, or a crop_pct near crop / resize")
    return math.floor(implied)

_CONFIG_KEYS = ("resize", "crop", "mean", "std", "interpolation", "crop_pct", "crop_mode")


def _default_mean() -> tuple[float, float, float]:
    return (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class PreprocessConfig:
    """How an image becomes the model's input.

    resize: the shorter side after resizing (px); crop: the square center crop (px);
    interpolation: 'bicubic' | 'bilinear' | 'nearest'; mean, std: per RGB channel, on 0..1 values;
    crop_pct: crop / resize as timm states it (informational once resize is set);
    crop_mode: 'center' | 'squash' | 'border', timm's eval crop modes (see the module docstring).
    Defaults follow most CoAtNet weights in timm (mean = std = 0.5, bicubic, crop_pct 0.95, center).
    """

    resize: int = 235
    crop: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = field(default_factory=_default_mean)
    std: tuple[float, float, float] = field(default_factory=_default_mean)
    crop_pct: float = 0.95
    crop_mode: str = "center"

    def __post_init__(self) -> None:
        # Normalise sequences (lists from JSON/YAML) to tuples so configs compare and hash.
        object.__setattr__(self, "mean", _triple("mean", self.mean))
        object.__setattr__(self, "std", _triple("std", self.std))
        for name in ("resize", "crop"):
            v = getattr(self, name)
            if not _is_pos_int(v):
                raise UserError(f"preprocess.{name} is {v!r}", "it must be a positive integer (pixels)")
            object.__setattr__(self, name, int(v))
        if self.resize >= MAX_RESIZE:
            raise UserError(f"preprocess.resize is {self.resize}", f"it must be below {MAX_RESIZE} pixels")
        if self.resize < self.crop:
            raise UserError(
                f"preprocess.resize ({self.resize}) is smaller than preprocess.crop ({self.crop})",
                "the center crop must fit inside the resized image",
                "Set resize >= crop, e.g. resize = floor(crop / crop_pct)",
            )
        if self.interpolation not in INTERPOLATIONS:
            raise UserError(
                f"preprocess.interpolation is {self.interpolation!r}",
                "it is not a known interpolation",
                f"Use one of: {', '.join(INTERPOLATIONS)}",
            )
        cp = self.crop_pct
        if not _is_fraction(cp):
            raise UserError(f"preprocess.crop_pct is {cp!r}", "it must be a number in (0, 1]")
        object.__setattr__(self, "crop_pct", float(cp))
        if any(s <= 0 for s in self.std):
            raise UserError(f"preprocess.std is {self.std!r}", "every std must be > 0")
        if self.crop_mode not in CROP_MODES:
            raise UserError(f"preprocess.crop_mode is {self.crop_mode!r}", "it is not one of timm's eval crop modes",
                            f"Use one of: {', '.join(CROP_MODES)}")

    @classmethod
    def for_size(
        cls,
        image_size: int,
        crop_pct: float = 0.95,
        interpolation: str = "bicubic",
        mean: Iterable[float] = (0.5, 0.5, 0.5),
        std: Iterable[float] = (0.5, 0.5, 0.5),
        crop_mode: str = "center",
    ) -> "PreprocessConfig":
        """Config for a square ``image_size`` input, resize = floor(image_size / crop_pct) as timm does."""
        if not _is_pos_int(image_size):
            raise UserError(f"image size is {image_size!r}", "it must be a positive integer (pixels)")
        if not _is_fraction(crop_pct):
            raise UserError(f"crop_pct is {crop_pct!r}", "it must be a number in (0, 1]")
        resize = _implied_resize(image_size, crop_pct, "crop_pct")
        return cls(resize=resize, crop=image_size, interpolation=interpolation,
                   mean=tuple(mean), std=tuple(std), crop_pct=float(crop_pct), crop_mode=crop_mode)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessConfig":
        """Manifest / model-info dict -> config. Needs ``crop``; ``resize`` defaults to floor(crop / crop_pct);
        ``crop_mode`` to "center" (bundles written before crop modes existed).

        Unknown keys are rejected (a typo would otherwise silently change nothing).
        """
        if not isinstance(d, Mapping):
            raise UserError(f"preprocess settings are a {type(d).__name__}", "expected a mapping",
                            f"Give keys: {', '.join(_CONFIG_KEYS)}")
        unknown = sorted(set(d) - set(_CONFIG_KEYS))
        if unknown:
            raise UserError(f"unknown preprocess key(s) {', '.join(map(str, unknown))}",
                            f"valid keys are: {', '.join(_CONFIG_KEYS)}")
        if "crop" not in d:
            raise UserError("preprocess settings have no 'crop'", "the input size is required")
        crop, resize, crop_pct = d["crop"], d.get("resize"), d.get("crop_pct")
        for key, v in (("crop", crop), ("resize", resize)):
            if v is not None and not _is_pos_int(v):
                raise UserError(f"preprocess.{key} is {v!r}", "it must be a positive integer (pixels)")
        if crop_pct is not None and not _is_fraction(crop_pct):
            raise UserError(f"preprocess.crop_pct is {crop_pct!r}", "it must be a number in (0, 1]")
        if crop_pct is None:
            # Older manifests state only resize and crop; crop_pct is then what they imply.
            crop_pct = min(1.0, crop / resize) if resize else 0.95
        if resize is None:
            resize = _implied_resize(crop, crop_pct, "preprocess.crop_pct")
        return cls(
            resize=resize,
            crop=crop,
            interpolation=d.get("interpolation", "bicubic"),
            mean=d.get("mean", (0.5, 0.5, 0.5)),
            std=d.get("std", (0.5, 0.5, 0.5)),
            crop_pct=crop_pct,
            crop_mode=d.get("crop_mode", "center"),
        )

    def to_dict(self) -> dict:
        """Config -> JSON-ready dict (the manifest's ``preprocess``)."""
        return {
            "resize": self.resize,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
        }


def _is_pos_int(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, np.integer)) and v > 0


def _is_fraction(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and 0.0 < float(v) <= 1.0


def _triple(name: str, v: Any) -> tuple[float, float, float]:
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        raise UserError(f"preprocess.{name} is {v!r}", "it must be 3 numbers (R, G, B)") from None
    if len(vals) == 1:
        vals = vals * 3
    if len(vals) != 3 or not all(math.isfinite(x) for x in vals):
        raise UserError(f"preprocess.{name} is {v!r}", "it must be 3 finite numbers (R, G, B)")
    return vals  # type: ignore[return-value]


# ----------------------------------------------------------------------------- loading


def _describe(source: Any, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return "<image>"


def load_image(source: ImageSource, name: str | None = None) -> Image.Image:
    """Path, bytes or PIL image -> decoded RGB ``PIL.Image`` (EXIF orientation applied).

    Raises UserError naming the file (or ``name``) and the reason for: a missing file, a
    directory, an empty or truncated file, an unsupported or undecodable format, and images
    over ``MAX_IMAGE_PIXELS`` ("image too large").
    """
    label = _describe(source, name)
    if isinstance(source, Image.Image):
        return _to_rgb(_oriented(source, label), label)

    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise UserError(f"cannot read image {label}", "it is empty (0 bytes)")
        fp: Any = io.BytesIO(data)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise UserError(f"cannot read image {label}", "no such file", "Check the path")
        if path.is_dir():
            raise UserError(f"cannot read image {label}", "it is a directory, not an image file")
        try:
            if path.stat().st_size == 0:
                raise UserError(f"cannot read image {label}", "the file is empty (0 bytes)")
            fp = open(path, "rb")
        except OSError as exc:
            raise UserError(f"cannot read image {label}", exc.strerror or str(exc)) from exc
    else:
        raise UserError(f"cannot read image {label}",
                        f"expected a path, bytes or PIL image, got {type(source).__name__}")

    with fp:
        img = _decode(fp, label)
    return _to_rgb(_oriented(img, label), label)


def _decode(fp: Any, label: str) -> Image.Image:
    fmts = ", ".join(f.lower() for f in SUPPORTED_FORMATS)
    try:
        with warnings.catch_warnings():
            # Pillow narrates damaged metadata ("Corrupt EXIF data") as UserWarnings; the CLI
            # promises one line per problem, and a decodable image is fine to use.
            warnings.simplefilter("ignore", UserWarning)
            # Pillow only *warns* between 1x and 2x its limit; we want one hard limit.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(fp, formats=SUPPORTED_FORMATS)
            _check_size(img, label)
            img.load()
            return img
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"cannot read image {label}", f"image too large ({exc})",
                        f"Images over {MAX_IMAGE_PIXELS} pixels are refused; downscale it first") from exc
    except Image.UnidentifiedImageError as exc:
        raise UserError(f"cannot read image {label}", "not a recognised image file",
                        f"Supported formats: {fmts}") from exc
    except Exception as exc:  # noqa: BLE001
        # Pillow's decoders are parsers of untrusted bytes and fail with whatever they hit
        # (OSError "truncated", SyntaxError, ValueError, struct.error, EOFError, ...). For the
        # caller each means the same thing: this file is not a usable image.
        raise UserError(f"cannot read image {label}",
                        f"it is corrupt or truncated ({type(exc).__name__}: {exc})") from exc


def _check_size(img: Image.Image, label: str) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise UserError(f"cannot read image {label}", f"it has no pixels ({w}x{h})")
    if w * h > MAX_IMAGE_PIXELS:
        raise UserError(f"cannot read image {label}", f"image too large ({w}x{h} = {w * h} pixels)",
                        f"Images over {MAX_IMAGE_PIXELS} pixels are refused; downscale it first")
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h):
        raise UserError(f"cannot read image {label}", f"its aspect ratio is extreme ({w}x{h})",
                        f"Longer side / shorter side may be at most {MAX_ASPECT_RATIO}; crop it first")


def _oriented(img: Image.Image, label: str) -> Image.Image:
    _check_size(img, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            out = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001
        # A malformed EXIF block must not cost the whole image: use it as stored.
        return img
    return img if out is None else out


def _to_rgb(img: Image.Image, label: str) -> Image.Image:
    """Any Pillow mode -> RGB, with the decisions in the module docstring."""
    try:
        mode = img.mode
        if mode == "RGB":
            return img
        if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F") or mode.startswith("I;"):
            return Image.fromarray(_wide_to_u8(img)).convert("RGB")
        has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        if has_alpha:
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return img.convert("RGB")
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot read image {label}",
                        f"its pixel mode {img.mode!r} cannot be converted to RGB ({exc})") from exc


def _wide_to_u8(img: Image.Image) -> np.ndarray:
    a = np.asarray(img)
    if a.dtype.kind == "f":
        with np.errstate(all="ignore"):  # NaN / inf pixels are zeroed just below
            a = np.nan_to_num(a.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            lo, hi = float(a.min()), float(a.max())
            if lo < 0.0 or hi > 1.0:
                a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
            return np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)
    a = a.astype(np.int64)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 65535:
        # Not 16-bit data after all (32-bit integer image): stretch what is there.
        a = (a - lo) * 255.0 / (hi - lo) if hi > lo else np.zeros(a.shape)
        return np.rint(a).astype(np.uint8)
    # 16-bit range: 65535 -> 255, 0 -> 0, proportional in between.
    return ((a * 255 + 32767) // 65535).astype(np.uint8)


# ----------------------------------------------------------------------------- transform


def _resized_center_crop(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    w, h = img.size
    resample = INTERPOLATIONS[cfg.interpolation]
    # torchvision.transforms.Resize(int): shorter side -> size, longer side truncated (int()).
    if w <= h:
        nw, nh = cfg.resize, int(cfg.resize * h / w)
    else:
        nw, nh = int(cfg.resize * w / h), cfg.resize
    left, top = _center_offset(nw, cfg.crop), _center_offset(nh, cfg.crop)
    if max(nw, nh) <= _MAX_RESIZED_LONG_FACTOR * cfg.resize:
        if (nw, nh) != (w, h):
            img = img.resize((nw, nh), resample)
        return img.crop((left, top, left + cfg.crop, top + cfg.crop))
    # Extreme aspect ratio: resample only the kept region (same pixel-centre mapping).
    sx, sy = w / nw, h / nh
    box = (left * sx, top * sy, (left + cfg.crop) * sx, (top + cfg.crop) * sy)
    return img.resize((cfg.crop, cfg.crop), resample, box=box)


def _center_offset(size: int, crop: int) -> int:
    # torchvision CenterCrop: int(round((size - crop) / 2.0)), Python's round (halves to even)
    return int(round((size - crop) / 2.0))


def _squashed_center_crop(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    # timm crop_mode "squash": transforms.Resize((S, S)) then CenterCrop(C)
    if img.size != (cfg.resize, cfg.resize):
        img = img.resize((cfg.resize, cfg.resize), INTERPOLATIONS[cfg.interpolation])
    off = _center_offset(cfg.resize, cfg.crop)
    return img.crop((off, off, off + cfg.crop, off + cfg.crop))


def _bordered(img: Image.Image, cfg: PreprocessConfig) -> Image.Image:
    # timm crop_mode "border": ResizeKeepRatio(S, longest=1.0) then CenterCropOrPad(C, fill=round(255 * mean))
    w, h = img.size
    ratio = max(h / cfg.resize, w / cfg.resize)
    # max(1, ...): where timm would ask PIL for a 0-pixel side (and fail), keep one pixel
    nw, nh = max(1, round(w / ratio)), max(1, round(h / ratio))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), INTERPOLATIONS[cfg.interpolation])
    c = cfg.crop
    if nw < c or nh < c:
        fill = tuple(round(255 * m) for m in cfg.mean)
        padded = Image.new("RGB", (max(nw, c), max(nh, c)), fill)
        padded.paste(img, ((c - nw) // 2 if nw < c else 0, (c - nh) // 2 if nh < c else 0))
        img, (nw, nh) = padded, padded.size
        if (nw, nh) == (c, c):
            return img
    left, top = _center_offset(nw, c), _center_offset(nh, c)
    return img.crop((left, top, left + c, top + c))


_CROPS = {"center": _resized_center_crop, "squash": _squashed_center_crop, "border": _bordered}


def preprocess_image(source: ImageSource, cfg: PreprocessConfig, name: str | None = None) -> np.ndarray:
    """Path, bytes or PIL image -> float32 array (3, crop, crop), normalised with cfg's mean/std.

    Raises UserError (see :func:`load_image`) for anything that is not a readable image.
    """
    img = load_image(source, name=name)
    img = _CROPS[cfg.crop_mode](img, cfg)
    # Same float32 operation order as torchvision ToTensor + Normalize, so results match exactly.
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(2, 0, 1))


preprocess = preprocess_image


def preprocess_batch(sources: Iterable[ImageSource], cfg: PreprocessConfig) -> np.ndarray:
    """Paths / bytes / PIL images -> float32 array (N, 3, crop, crop); N may be 0."""
    arrays = [preprocess_image(s, cfg) for s in sources]
    if not arrays:
        return np.zeros((0, 3, cfg.crop, cfg.crop), dtype=np.float32)
    return np.stack(arrays).astype(np.float32, copy=False)


def image_files(folder: Union[str, os.PathLike]) -> list[Path]:
    """Folder -> image files under it (recursive, hidden entries skipped), in sorted, stable order.

    Selected by extension only; whether each decodes is for the caller to find out.
    """
    root = Path(folder)
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if not fn.startswith(".") and Path(fn).suffix.lower() in IMAGE_EXTENSIONS:
                out.append(Path(dirpath) / fn)
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pnm"}
)
