#!/usr/bin/env python3
"""Time the stages of an export and measure its memory, in fresh processes.

    .venv/bin/python benchmarks/bench_export.py                       # coatnet_0_rw_224: openvino fp32, then INT8 with 500 calibration images
    .venv/bin/python benchmarks/bench_export.py --model coatnet_tiny --calibration-images 64

Each export runs as its own `coatnet-deploy export` process (what a user runs); the wall time and
the peak RSS of the whole process come from wait4(), the per-stage times and per-stage peak RSS
from the report the export writes (the pipeline resets the kernel's peak-RSS counter per stage).
Targets (issue 3 / issue 7): fp32 export of coatnet_0_rw_224 under 60 s and 3 GB; INT8 export with
500 calibration images under 4 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def augmented_calibration(src: Path, dst: Path, n: int, seed: int = 0) -> Path:
    """n distinct images made from the shipped photographs by seeded crops, flips and rotations."""
    import numpy as np
    from PIL import Image, ImageOps

    files = sorted(p for p in src.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rng = np.random.default_rng(seed)
    dst.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        img = ImageOps.exif_transpose(Image.open(files[i % len(files)])).convert("RGB")
        w, h = img.size
        s = rng.uniform(0.6, 1.0)
        cw, ch = int(w * s), int(h * s)
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x0, y0, x0 + cw, y0 + ch)).rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR)
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        img.save(dst / f"aug_{i:04d}.jpg", quality=90)
    return dst


def run_export(args: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "coatnet_deploy", "export", *args, "--output", str(out), "--json"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.stdout.read()
    stderr = proc.stderr.read().decode()
    rc = os.waitstatus_to_exitcode(status)
    if rc not in (0, 2):
        raise SystemExit(f"export failed ({rc}): {' '.join(cmd)}\n{stderr[-2000:]}")
    report = json.loads((out / "report.json").read_text())
    # The pipeline resets the kernel's peak-RSS counter per stage (which also resets ru_maxrss), so the
    # process peak is the largest of the per-stage peaks and what wait4 saw after the last reset.
    stage_peaks = list(report.get("stage_peak_rss_mb", {}).values())
    peak = max([rusage.ru_maxrss / 1024, *stage_peaks])
    return {"wall_s": wall, "peak_rss_mb": peak, "status": report["status"], "report": report}


def print_stages(title: str, res: dict) -> None:
    rep = res["report"]
    print(f"\n{title}: {res['status']}, wall {res['wall_s']:.1f} s, peak RSS {res['peak_rss_mb']:.0f} MB (whole process, max over stages)")
    print(f"  {'stage':<22} {'wall s':>8} {'peak RSS MB':>12}")
    for stage, t in rep["stage_times_s"].items():
        print(f"  {stage:<22} {t:>8.2f} {rep.get('stage_peak_rss_mb', {}).get(stage, float('nan')):>12.0f}")
    print(f"  {'(sum of stages)':<22} {sum(rep['stage_times_s'].values()):>8.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="coatnet_0_rw_224")
    ap.add_argument("--calibration-images", type=int, default=500)
    ap.add_argument("--skip-int8", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    extra = ["--threads", str(a.threads)] if a.threads else []
    with open("/proc/cpuinfo") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "unknown")
    print(f"machine: {cpu}, {os.cpu_count()} cores; python {sys.version.split()[0]}; load avg {os.getloadavg()[0]:.2f}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        tmp = Path(tmp)
        fp32 = run_export(["--model", a.model, "--target", "openvino", "--precision", "fp32", *extra], tmp / "fp32")
        print_stages(f"{a.model} -> openvino fp32", fp32)
        rows.append(("openvino fp32", fp32, 60.0, 3072.0))
        if not a.skip_int8:
            calib = augmented_calibration(ROOT / "calibration", tmp / "calib", a.calibration_images)
            int8 = run_export(["--model", a.model, "--target", "onnxruntime", "--precision", "int8", "--calibration", str(calib),
                               "--calibration-samples", str(a.calibration_images), *extra], tmp / "int8")
            print_stages(f"{a.model} -> onnxruntime int8 ({a.calibration_images} calibration images)", int8)
            rows.append((f"onnxruntime int8, {a.calibration_images} calib", int8, None, 4096.0))
    print("\nsummary")
    print(f"  {'export':<34} {'wall s':>8} {'target s':>9} {'peak MB':>8} {'target MB':>10} {'status':>7}")
    for name, res, t_target, m_target in rows:
        tt = f"{t_target:.0f}" if t_target else "-"
        ok = (t_target is None or res["wall_s"] <= t_target) and res["peak_rss_mb"] <= m_target
        print(f"  {name:<34} {res['wall_s']:>8.1f} {tt:>9} {res['peak_rss_mb']:>8.0f} {m_target:>10.0f} {res['status']:>7}  {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
