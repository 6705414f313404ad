"""Rebuild this folder: real photographs from scikit-image's and matplotlib's bundled sample data.

One-time tool, not part of the package: scikit-image is needed only here.

    .venv/bin/pip install scikit-image     # once
    .venv/bin/python calibration/make_calibration_set.py

Each image is (optionally) cropped to a named region, downscaled so its shorter side is
``SHORT_SIDE`` px (never upscaled), and saved as a JPEG (quality 90) - or PNG where noted.
The output is deterministic for the same Pillow / scikit-image versions. SOURCES.md lists
each file's origin and licence; keep it in step with ``IMAGES`` below.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

SHORT_SIDE = 288
HERE = Path(__file__).resolve().parent

# (output name, package, original name, crop box (left, top, right, bottom) in original pixels or None)
IMAGES = [
    ("astronaut.jpg", "skimage", "astronaut.png", None),
    ("astronaut_crop.jpg", "skimage", "astronaut.png", (128, 0, 384, 256)),
    ("coffee.jpg", "skimage", "coffee.png", None),
    ("coffee_crop.jpg", "skimage", "coffee.png", (100, 0, 500, 300)),
    ("chelsea.jpg", "skimage", "chelsea.png", None),
    ("chelsea_crop.jpg", "skimage", "chelsea.png", (60, 0, 360, 300)),
    ("rocket.jpg", "skimage", "rocket.jpg", None),
    ("rocket_crop.jpg", "skimage", "rocket.jpg", (200, 60, 500, 427)),
    ("hubble_deep_field.jpg", "skimage", "hubble_deep_field.jpg", None),
    ("hubble_deep_field_crop1.jpg", "skimage", "hubble_deep_field.jpg", (0, 0, 400, 400)),
    ("hubble_deep_field_crop2.jpg", "skimage", "hubble_deep_field.jpg", (560, 432, 1000, 872)),
    ("immunohistochemistry.jpg", "skimage", "ihc.png", None),
    ("immunohistochemistry_crop.jpg", "skimage", "ihc.png", (256, 256, 512, 512)),
    ("retina.jpg", "skimage", "retina.jpg", None),
    ("retina_crop.jpg", "skimage", "retina.jpg", (750, 450, 1250, 950)),
    ("camera.jpg", "skimage", "camera.png", None),
    ("coins.jpg", "skimage", "coins.png", None),
    ("brick.jpg", "skimage", "brick.png", None),
    ("grass.jpg", "skimage", "grass.png", None),
    ("gravel.jpg", "skimage", "gravel.png", None),
    ("cell.jpg", "skimage", "cell.png", None),
    ("clock_motion.jpg", "skimage", "clock_motion.png", None),
    ("grace_hopper.jpg", "matplotlib", "grace_hopper.jpg", None),
    ("grace_hopper_crop.jpg", "matplotlib", "grace_hopper.jpg", (150, 60, 450, 360)),
]


def _source_dir(package: str) -> Path:
    if package == "skimage":
        import skimage.data

        return Path(skimage.data.__file__).parent
    if package == "matplotlib":
        import matplotlib

        return Path(matplotlib.get_data_path()) / "sample_data"
    raise ValueError(package)


def _downscaled(img: Image.Image) -> Image.Image:
    w, h = img.size
    scale = SHORT_SIDE / min(w, h)
    if scale >= 1.0:
        return img
    return img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)


def main() -> None:
    for out_name, package, original, box in IMAGES:
        src = _source_dir(package) / original
        with Image.open(src) as im:
            im.load()
            # Keep greyscale photographs greyscale: the loader must handle them too.
            img = im.convert("L") if im.mode in ("L", "I", "I;16") else im.convert("RGB")
        if box is not None:
            img = img.crop(box)
        img = _downscaled(img)
        out = HERE / out_name
        if out.suffix == ".png":
            img.save(out, optimize=True)
        else:
            img.save(out, quality=90, optimize=True)
        print(f"{out_name:36s} {img.mode:3s} {img.size[0]}x{img.size[1]}  {out.stat().st_size / 1024:6.1f} KiB")
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.suffix in (".jpg", ".png"))
    print(f"{len(IMAGES)} images, {total / 1024:.0f} KiB")
    assert len({n for n, *_ in IMAGES}) == len(IMAGES)


if __name__ == "__main__":
    main()
