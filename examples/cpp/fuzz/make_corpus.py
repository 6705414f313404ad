"""Writes the seed corpora of the fuzz targets (examples/cpp/fuzz/corpus/<target>/), from
independent writers: Pillow for the images, NumPy for the .npy files, and the manifests of bundles
that coatnet-deploy exported (tests/fixtures), re-pointed at the fuzz harness's fixed artifacts.

    .venv/bin/python examples/cpp/fuzz/make_corpus.py

Deterministic; rerun after changing a harness's input format. Seeds stay small (a few KiB each):
libFuzzer mutates faster on small inputs and takes its -max_len from the largest seed.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, PngImagePlugin

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
OUT = HERE / "corpus"

# fuzz_manifest.cpp writes these files beside the fuzzed manifest (LLVMFuzzerInitialize).
HARNESS_ARTIFACTS = {
    "model.xml": b'<net name="fuzz"/>\n',
    "model.bin": b"\0" * 16,
    "golden/inputs.npy": b"not really npy",
}


def _photo(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    # A smooth gradient with noise: JPEG blocks and PNG filters of every kind occur.
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(1, w - 1), y * 255 // max(1, h - 1), (x + y) * 127 // max(1, w + h - 2)], -1)
    noise = rng.integers(0, 40, size=(h, w, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def images() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = _photo(rng, 24, 16)
    seeds: dict[str, bytes] = {}
    for orientation in (1, 3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        seeds[f"exif_orientation_{orientation}.jpg"] = _save(rgb, "JPEG", quality=80, exif=exif.tobytes())
    seeds["progressive.jpg"] = _save(rgb, "JPEG", quality=70, progressive=True)
    seeds["gray.jpg"] = _save(rgb.convert("L"), "JPEG", quality=80)
    seeds["cmyk.jpg"] = _save(rgb.convert("CMYK"), "JPEG", quality=80)
    seeds["subsampling_444.jpg"] = _save(rgb, "JPEG", quality=90, subsampling=0)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    seeds["xmp_orientation.jpg"] = _save(rgb, "JPEG", quality=80, xmp=xmp)
    seeds["rgb.png"] = _save(rgb, "PNG")
    seeds["rgba.png"] = _save(rgb.convert("RGBA"), "PNG")
    seeds["gray_alpha.png"] = _save(rgb.convert("LA"), "PNG")
    seeds["palette.png"] = _save(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG")
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    seeds["palette_trns.png"] = _save(pal, "PNG", transparency=0)
    seeds["gray16.png"] = _save(Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257), "PNG")
    seeds["bilevel.png"] = _save(rgb.convert("1"), "PNG")
    seeds["interlaced.png"] = _save(rgb, "PNG", interlace=1)
    exif = Image.Exif()
    exif[0x0112] = 5
    seeds["exif_orientation_5.png"] = _save(rgb, "PNG", exif=exif.tobytes())
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", xmp.decode())
    seeds["xmp_orientation.png"] = _save(rgb, "PNG", pnginfo=info)
    seeds["one_pixel.png"] = _save(Image.new("RGB", (1, 1), (9, 99, 199)), "PNG")
    seeds["wide_100x1.png"] = _save(Image.new("L", (100, 1), 77), "PNG")
    # A few of the shipped calibration photos, as a camera delivers them (the smallest ones).
    for name in ("clock_motion.jpg", "cell.jpg"):
        seeds[f"shipped_{name}"] = (REPO / "calibration" / name).read_bytes()
    return seeds


def npys() -> dict[str, bytes]:
    rng = np.random.default_rng(1)
    seeds: dict[str, bytes] = {}
    arrays = {
        "golden_inputs": rng.standard_normal((2, 3, 4, 4)).astype(np.float32),
        "golden_logits": rng.standard_normal((12, 10)).astype(np.float32),
        "scalar": np.array(1.5, np.float32),
        "empty": np.zeros((0, 10), np.float32),
        "vector": np.arange(7, dtype=np.float32),
    }
    for name, a in arrays.items():
        buf = io.BytesIO()
        np.save(buf, a)
        seeds[f"{name}.npy"] = buf.getvalue()
    # Format versions 2.0 and 3.0 (4-byte header length), as NumPy writes them when asked.
    for version in ((2, 0), (3, 0)):
        buf = io.BytesIO()
        np.lib.format.write_array(buf, arrays["golden_logits"], version=version)
        seeds[f"golden_logits_v{version[0]}.npy"] = buf.getvalue()
    # A real bundle's golden logits, as coatnet-deploy wrote them.
    seeds["bundle_golden_logits.npy"] = (REPO / "tests/fixtures/other_cpu_bundles/onnxruntime-fp32-avx2/golden_logits.npy").read_bytes()
    return seeds


def manifests() -> dict[str, bytes]:
    entries = [{"path": p, "bytes": len(b), "sha256": hashlib.sha256(b).hexdigest()} for p, b in HARNESS_ARTIFACTS.items()]
    seeds: dict[str, bytes] = {}
    for src in sorted((REPO / "tests/fixtures").glob("*/*/manifest.json")):
        m = json.loads(src.read_text())
        m["artifacts"] = entries + [{"path": "report.json"}]
        text = json.dumps(m, indent=2).encode()
        name = src.parent.name
        seeds[f"{name}.sha_ok"] = b"\x01" + text  # manifest.sha256 right: the fields are reached
        seeds[f"{name}.no_sha"] = b"\x00" + text  # schema 2 without manifest.sha256 / schema 1
        digest = hashlib.sha256(text).hexdigest().encode()
        seeds[f"{name}.sha_text"] = b"\x03" + digest + b" *manifest.json\n" + text
    return seeds


def resample() -> dict[str, bytes]:
    rng = np.random.default_rng(2)
    return {f"random_{i}.bin": rng.integers(0, 256, size=n, dtype=np.uint8).tobytes() for i, n in enumerate((16, 64, 256, 1024))}


def main() -> None:
    for target, seeds in (("image", images()), ("npy", npys()), ("manifest", manifests()), ("resample", resample())):
        d = OUT / target
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        for name, data in seeds.items():
            (d / name).write_bytes(data)
        print(f"{target}: {len(seeds)} seeds, {sum(map(len, seeds.values()))} bytes")


if __name__ == "__main__":
    main()
