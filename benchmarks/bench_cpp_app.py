#!/usr/bin/env python
"""The C++ device app's per-image inference time next to the Python runtime's, in ONE run.

    .venv/bin/python benchmarks/bench_cpp_app.py                                   # coatnet_0_rw_224 (exports it)
    .venv/bin/python benchmarks/bench_cpp_app.py --model coatnet_tiny --image-size 64   # quick check
    .venv/bin/python benchmarks/bench_cpp_app.py --bundle bundles/coatnet_0_rw_224-openvino-fp32

Both sides run the same openvino bundle on the same OpenVINO (the C++ app links the wheel's
libraries) with the same settings: LATENCY hint, the manifest's inference precision (f32),
`--threads` inference threads, batch 1, the bundle's golden inputs in turn.

- C++: `build/cpp/coatnet-classify bench BUNDLE` (built by `make cpp-app`), a fresh process per
  round; it times each `InferRequest::infer` call with its input and output copies.
- Python: `coatnet_deploy.runtime.Classifier.logits(x)` on a batch of one, loaded once; each call
  timed with time.perf_counter.

Rounds alternate which side goes first, with a pause between sides (a runtime's spinning thread
pool slows whatever runs right after it). Reported: per-round medians, the median over all
iterations per side, and the C++ / Python ratio per round and its median. Figures from a shared
machine are not results: rerun on a quiet one.
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


from coatnet_deploy.host import cpu_name  # noqa: E402


def export_bundle(model: str, image_size: int | None, out: Path) -> Path:
    cmd = [sys.executable, "-m", "coatnet_deploy", "export", "--model", model, "--target", "openvino",
           "--precision", "fp32", "--bench-iterations", "0", "--output", str(out)]
    if image_size:
        cmd += ["--image-size", str(image_size)]
    print(f"exporting {model} (openvino fp32) ...", file=sys.stderr)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        sys.exit(f"export failed:\n{proc.stderr[-3000:]}")
    return out


def golden_inputs(bundle: Path) -> np.ndarray:
    npy = bundle / "golden_inputs.npy"
    if npy.is_file():
        return np.load(npy)
    with np.load(bundle / "golden.npz") as z:
        return z["inputs"]


def cpp_round(app: Path, bundle: Path, threads: int, iterations: int, warmup: int) -> list[float]:
    proc = subprocess.run([str(app), "bench", str(bundle), "--threads", str(threads), "--iterations", str(iterations),
                           "--warmup", str(warmup)], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"coatnet-classify bench failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout)["samples_ms"]


def python_round(clf, x: np.ndarray, iterations: int, warmup: int) -> list[float]:
    times = []
    for i in range(warmup + iterations):
        batch = x[i % len(x)][None]
        t0 = time.perf_counter()
        clf.logits(batch)
        dt = (time.perf_counter() - t0) * 1000.0
        if i >= warmup:
            times.append(dt)
    return times


def cv(samples: list[float]) -> float:
    return statistics.pstdev(samples) / statistics.mean(samples) if len(samples) > 1 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path, help="an openvino bundle (default: export --model into a temporary folder)")
    ap.add_argument("--model", default="coatnet_0_rw_224")
    ap.add_argument("--image-size", type=int)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--iterations", type=int, default=50, help="timed inferences per side per round")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--pause", type=float, default=0.5, help="seconds between sides")
    ap.add_argument("--app", type=Path, default=REPO / "build" / "cpp" / "coatnet-classify")
    ap.add_argument("--no-build", action="store_true", help="do not run `make cpp-app` first")
    ap.add_argument("--json", action="store_true", help="print the result as JSON only")
    args = ap.parse_args()

    if not args.no_build:
        proc = subprocess.run(["make", "cpp-app", f"VENV={sys.prefix}"], cwd=REPO, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"make cpp-app failed:\n{proc.stderr[-3000:]}")
    with tempfile.TemporaryDirectory(prefix="bench-cpp-") as tmp:
        bundle = args.bundle or export_bundle(args.model, args.image_size, Path(tmp) / "bundle")
        manifest = json.loads((bundle / "manifest.json").read_text())
        if manifest["target"] != "openvino":
            sys.exit(f"{bundle} has target {manifest['target']}: pass an openvino bundle")
        from coatnet_deploy.runtime import Classifier

        x = golden_inputs(bundle).astype(np.float32)
        rounds = []
        with Classifier.load(bundle, threads=args.threads, max_batch=1) as clf:
            for r in range(args.rounds):
                sides = ["cpp", "python"] if r % 2 == 0 else ["python", "cpp"]
                got = {}
                for side in sides:
                    if side == "cpp":
                        got["cpp"] = cpp_round(args.app, bundle, args.threads, args.iterations, args.warmup)
                    else:
                        got["python"] = python_round(clf, x, args.iterations, args.warmup)
                    time.sleep(args.pause)
                rounds.append(got)
        cpp_all = [t for r in rounds for t in r["cpp"]]
        py_all = [t for r in rounds for t in r["python"]]
        ratios = [statistics.median(r["cpp"]) / statistics.median(r["python"]) for r in rounds]
        result = {
            "bundle": str(bundle), "model": manifest["model"]["name"], "input": manifest["input"]["shape"][1:],
            "threads": args.threads, "rounds": args.rounds, "iterations": args.iterations, "warmup": args.warmup,
            "cpu": cpu_name(), "openvino": manifest.get("versions", {}).get("openvino"),
            "cpp_p50_ms": statistics.median(cpp_all), "python_p50_ms": statistics.median(py_all),
            "cpp_cv": cv(cpp_all), "python_cv": cv(py_all),
            "ratio_cpp_over_python_median": statistics.median(ratios), "ratio_per_round": ratios,
            "per_round": [{"first": "cpp" if i % 2 == 0 else "python", "cpp_p50_ms": statistics.median(r["cpp"]),
                           "python_p50_ms": statistics.median(r["python"])} for i, r in enumerate(rounds)],
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['model']} {result['input']}  openvino fp32, batch 1, {args.threads} threads, {result['cpu']}")
    print(f"{args.rounds} rounds x {args.iterations} timed inferences per side (after {args.warmup} warm-up), sides alternating\n")
    print("| round | first | C++ p50 ms | Python p50 ms | C++ / Python |")
    print("|---|---|---|---|---|")
    for i, (r, ratio) in enumerate(zip(result["per_round"], ratios)):
        print(f"| {i + 1} | {r['first']} | {r['cpp_p50_ms']:.3f} | {r['python_p50_ms']:.3f} | {ratio:.3f} |")
    print(f"| all | | **{result['cpp_p50_ms']:.3f}** (cv {result['cpp_cv']:.2f}) | **{result['python_p50_ms']:.3f}** "
          f"(cv {result['python_cv']:.2f}) | **{result['ratio_cpp_over_python_median']:.3f}** (median of rounds) |")
    noisy = max(result["cpp_cv"], result["python_cv"]) > 0.1
    print("\nnoisy machine (cv > 0.1): rerun on a quiet one before quoting these" if noisy else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
