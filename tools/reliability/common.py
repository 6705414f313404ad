"""Shared by load.py and soak.py: the test bundles, the generated images, RSS readings and the
generated sections of docs/RELIABILITY.md."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DOC = REPO / "docs" / "RELIABILITY.md"
CPP_APP = REPO / "build" / "cpp" / "coatnet-classify"
# The CPU targets and precisions the full runs cover; "target-precision".
ALL_BUNDLES = [f"{t}-{p}" for t in ("onnx", "onnxruntime", "openvino") for p in ("fp32", "int8")]
# coatnet_tiny at 64 px: small enough that 20,000 inferences take a minute or two on two shared cores.
TINY = {"model": "coatnet_tiny", "num_classes": 10, "image_size": 64, "bench_iterations": 0, "golden_images": 2,
        "golden_random": 2, "seed": 0, "calibration_samples": 16}


def export_bundles(names: list[str], root: Path, say=print) -> dict[str, Path]:
    """Export each "target-precision" tiny bundle under ``root`` (kept: an existing bundle is reused)."""
    from coatnet_deploy.bundle import verify_bundle
    from coatnet_deploy.config import make_config
    from coatnet_deploy.errors import UserError
    from coatnet_deploy.exporting import export

    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        target, precision = name.rsplit("-", 1)
        dst = root / name
        try:
            verify_bundle(dst)
        except UserError:
            say(f"exporting {name} (coatnet_tiny, 64 px) to {dst}")
            cfg_file = root / f"{name}.json"
            cfg_file.write_text(json.dumps({**TINY, "target": target, "precision": precision}), encoding="utf-8")
            export(make_config(str(cfg_file), {"output": str(dst)}))
        out[name] = dst
    return out


def make_images(n: int, out_dir: Path, seed: int = 0) -> list[Path]:
    """``n`` varied images from the shipped calibration photos: random crops and resizes (8 to 300 px a
    side, any aspect the preprocessing accepts), modes RGB / L / RGBA / P / CMYK / LA, saved as JPEG or
    PNG so the full decode path runs. Seeded: the same call writes the same files."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = sorted((REPO / "calibration").glob("*.jpg"))
    sources = [Image.open(p).convert("RGB") for p in photos]
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        im = sources[int(rng.integers(len(sources)))]
        w, h = im.size
        cw, ch = int(rng.integers(8, w + 1)), int(rng.integers(8, h + 1))
        x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        tw = int(rng.integers(8, 301))
        th = int(np.clip(tw * rng.uniform(0.4, 2.5), 8, 300))
        crop = im.crop((x, y, x + cw, y + ch)).resize((tw, th), Image.Resampling.BILINEAR)
        mode = ["RGB", "RGB", "L", "RGBA", "P", "CMYK", "LA"][int(rng.integers(7))]
        fmt = "JPEG" if mode == "CMYK" or (mode in ("RGB", "L") and rng.random() < 0.7) else "PNG"
        img = crop.convert(mode)
        p = out_dir / f"img{i:05d}.{'jpg' if fmt == 'JPEG' else 'png'}"
        img.save(p, format=fmt, **({"quality": int(rng.integers(40, 96))} if fmt == "JPEG" else {}))
        paths.append(p)
    return paths


def vmrss_kb(pid: int | str = "self") -> int:
    """Resident set size of a process in kB, from /proc/PID/status (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def scratch(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def write_section(marker: str, text: str, doc: Path = DOC) -> None:
    """Replace what lies between ``<!-- MARKER:begin -->`` and ``<!-- MARKER:end -->`` in the doc."""
    src = doc.read_text(encoding="utf-8")
    begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
    if begin not in src or end not in src:
        raise SystemExit(f"{doc} has no {begin} ... {end} markers")
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    doc.write_text(pattern.sub(lambda _: f"{begin}\n{text.rstrip()}\n{end}", src), encoding="utf-8")


def finish(marker: str, text: str, failed: list[str], write_doc: bool) -> int:
    """Print the figures, write them into the doc's section, exit status 1 when a promise broke."""
    print(text)
    if write_doc:
        write_section(marker, text)
    if failed:
        print(f"{marker}: FAILED for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def machine_note() -> str:
    import platform

    return f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other work: times are informative only)"
