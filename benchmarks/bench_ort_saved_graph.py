#!/usr/bin/env python
"""The onnxruntime bundle's saved graph: portable ("basic" level saved, the rest at load) against the
"all"-level file bundles carried before device profiles, on the same host, in one run.

    .venv/bin/python benchmarks/bench_ort_saved_graph.py                 # coatnet_0_rw_224 fp32 + int8, 2 threads
    .venv/bin/python benchmarks/bench_ort_saved_graph.py --model coatnet_tiny --image-size 64

For each precision it exports one onnxruntime bundle (default profile), then from its model.onnx writes
both saved graphs with ONNX Runtime itself:

- ``all``: ORT_ENABLE_ALL saved (NCHWc layouts of this CPU), opened with optimizations disabled: the old bundle;
- ``basic``: ORT_ENABLE_BASIC saved (plain ONNX), opened at ORT_ENABLE_ALL: what bundles carry now.

Load time: session creation, alternating the two files, ``--loads`` times each (median, min, max).
Speed: both sessions timed round-robin in ONE interleaved run (coatnet_deploy.bench.time_interleaved)
at batch 1 and 8, same inputs, same threads. The outputs of the two are compared (max abs difference):
they must be the same graph once loaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner, save_optimized_model  # noqa: E402
from coatnet_deploy.bench import BenchConfig, time_interleaved  # noqa: E402
from coatnet_deploy.bench.tables import Table  # noqa: E402


def export(model: str, size: int | None, precision: str, out: Path) -> Path:
    cmd = [sys.executable, "-m", "coatnet_deploy", "export", "--model", model, "--target", "onnxruntime", "--precision", precision,
           "--bench-iterations", "0", "--output", str(out)]
    if size:
        cmd += ["--image-size", str(size)]
    subprocess.run(cmd, check=True, cwd=REPO, stdout=subprocess.DEVNULL)
    return out


def load_times(files: dict[str, tuple[Path, str]], threads: int, loads: int) -> dict[str, list[float]]:
    import onnxruntime as ort

    from coatnet_deploy.backends.onnxrt import session_options

    times: dict[str, list[float]] = {k: [] for k in files}
    for _ in range(loads):
        for k, (path, level) in files.items():
            t0 = time.perf_counter()
            ort.InferenceSession(str(path), sess_options=session_options(threads, level), providers=["CPUExecutionProvider"])
            times[k].append((time.perf_counter() - t0) * 1000.0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="coatnet_0_rw_224")
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--precisions", default="fp32,int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--loads", type=int, default=7)
    ap.add_argument("--json", type=str, help="also write the figures here")
    a = ap.parse_args()
    from coatnet_deploy import host

    print(f"host: {host.cpu_name()} ({host.int8_isa()}), threads {a.threads}, model {a.model}")
    figures = {}
    table = Table(["precision", "saved graph", "load ms (median, min-max)", "p50 ms b1", "img/s b8", "b1 vs all", "b8 vs all"], left=2)
    with tempfile.TemporaryDirectory(prefix="bench-ort-saved-") as tmp:
        for precision in a.precisions.split(","):
            bundle = export(a.model, a.image_size, precision, Path(tmp) / precision)
            src = bundle / "model.onnx"
            files = {"all": (save_optimized_model(src, Path(tmp) / f"{precision}-all.onnx", "all"), "disable"),
                     "basic": (save_optimized_model(src, Path(tmp) / f"{precision}-basic.onnx", "basic"), "all")}
            loads = load_times(files, a.threads, a.loads)
            x8 = np.ascontiguousarray(np.load(bundle / "golden_inputs.npy")[:8])
            runners = {k: OnnxRuntimeRunner(str(p), threads=a.threads, optimization=lvl) for k, (p, lvl) in files.items()}
            outs = {}
            for k, r in runners.items():
                with r:
                    outs[k] = r.infer(x8)
            diff = float(np.abs(outs["all"] - outs["basic"]).max())
            cfg = BenchConfig(warmup_iters=5, warmup_s=1.0, min_iters=30, min_time_s=10.0, max_time_s=120.0)
            timed = time_interleaved(runners, x8, [1, 8], cfg)
            row = {}
            for k in files:
                b1, b8 = timed[1].results[k], timed[8].results[k]
                row[k] = {"load_ms_median": statistics.median(loads[k]), "load_ms_min": min(loads[k]), "load_ms_max": max(loads[k]),
                          "p50_ms_b1": b1.p50_ms, "ips_b8": b8.throughput_ips, "cv_b1": b1.cv}
            for k in files:
                r = row[k]
                table.rows.append([precision, k, f"{r['load_ms_median']:.0f} ({r['load_ms_min']:.0f}-{r['load_ms_max']:.0f})", f"{r['p50_ms_b1']:.2f}",
                           f"{r['ips_b8']:.1f}", f"{r['p50_ms_b1'] / row['all']['p50_ms_b1']:.3f}x",
                           f"{r['ips_b8'] / row['all']['ips_b8']:.3f}x"])
            figures[precision] = {**row, "max_abs_diff_all_vs_basic": diff}
    print(table.text())
    for p, f in figures.items():
        print(f"{p}: outputs of the two graphs differ by at most {f['max_abs_diff_all_vs_basic']:.3g}; "
              f"load basic/all {f['basic']['load_ms_median'] / f['all']['load_ms_median']:.2f}x; "
              f"b1 p50 basic/all {f['basic']['p50_ms_b1'] / f['all']['p50_ms_b1']:.3f}; "
              f"b8 img/s basic/all {f['basic']['ips_b8'] / f['all']['ips_b8']:.3f}")
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
