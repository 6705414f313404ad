"""Soak: 20,000 inferences per bundle in the Python runtime and in the C++ app, RSS sampled every 1,000.

    .venv/bin/python tools/reliability/soak.py                    # full run, all six CPU bundles; writes docs/RELIABILITY.md
    .venv/bin/python tools/reliability/soak.py --inferences 3000 --every 500 --warmup 1000 \
        --bundles onnxruntime-fp32,openvino-int8 --no-doc         # CI's short run

Python: a fresh process per bundle loads one Classifier and classifies generated JPEG/PNG files (decode,
preprocess, inference, top-5) one at a time, reading its own VmRSS from /proc/self/status every
``--every`` inferences. C++: ``coatnet-classify bench BUNDLE --warmup 0 --iterations N --rss-every E``
(the app reads its own /proc/self/status; the inferences run on the bundle's golden inputs).

Warm-up: the first ``--warmup`` inferences (2,000 by default) fill caches, arenas and the allocator's
pools. The RSS at the end of the warm-up is the baseline; growth = (the highest sample after it - the
baseline) / the baseline, and must stay under ``--max-growth`` percent (5). Every run has a deadline
(``--timeout``): a hang is a failure. Exit 0 when every run passes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ALL_BUNDLES, CPP_APP, REPO, export_bundles, machine_note, make_images, finish, scratch, vmrss_kb  # noqa: E402

CPP_TARGETS = ("openvino", "onnx", "onnxruntime")  # what coatnet-classify runs (examples/cpp/src/engine.cpp check_target)


def _child(bundle: str, n: int, every: int, images: str) -> None:
    """In a fresh process: n classifications, one JSON line per RSS sample on stdout."""
    from coatnet_deploy.runtime import Classifier

    paths = sorted(Path(images).iterdir())
    with Classifier.load(bundle, threads=1) as c:
        print(json.dumps({"inferences": 0, "vmrss_kb": vmrss_kb()}), flush=True)
        for i in range(n):
            top = c.classify([paths[i % len(paths)]], topk=5)
            assert len(top) == 1 and len(top[0]) == 5
            if (i + 1) % every == 0:
                print(json.dumps({"inferences": i + 1, "vmrss_kb": vmrss_kb()}), flush=True)


def run_python(bundle: Path, n: int, every: int, images: Path, timeout: float) -> list[tuple[int, int]]:
    proc = subprocess.run([sys.executable, __file__, "--child", str(bundle), str(n), str(every), str(images)],
                          capture_output=True, text=True, timeout=timeout, cwd=str(REPO))
    if proc.returncode != 0:
        raise RuntimeError(f"the Python soak of {bundle.name} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    return [(d["inferences"], d["vmrss_kb"]) for d in (json.loads(ln) for ln in proc.stdout.splitlines() if ln.strip())]


def run_cpp(app: Path, bundle: Path, n: int, every: int, timeout: float) -> list[tuple[int, int]]:
    proc = subprocess.run([str(app), "bench", str(bundle), "--warmup", "0", "--iterations", str(n), "--threads", "1",
                           "--rss-every", str(every)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"coatnet-classify bench {bundle.name} exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    json.loads(proc.stdout)  # the bench result itself must still be whole
    samples = []
    for ln in proc.stderr.splitlines():
        if ln.startswith("rss "):
            kv = dict(part.split("=", 1) for part in ln.split()[1:])
            samples.append((int(kv["inferences"]), int(kv["vmrss_kb"])))
    return samples


def growth(samples: list[tuple[int, int]], warmup: int) -> tuple[int, int, float]:
    """-> (baseline kB: the sample at the end of the warm-up, highest kB after it, growth %)."""
    base = [kb for i, kb in samples if i == warmup]
    after = [kb for i, kb in samples if i > warmup]
    if not base or not after:
        raise RuntimeError(f"no RSS sample at {warmup} inferences and after it: {samples}")
    return base[0], max(after), 100.0 * (max(after) - base[0]) / base[0]


def soak_one(kind: str, name: str, fn, warmup: int, max_growth: float, say=print) -> dict:
    t = time.monotonic()
    row = {"runtime": kind, "bundle": name}
    try:
        row["samples"] = fn()
        row["baseline_kb"], row["peak_kb"], row["growth_pct"] = growth(row["samples"], warmup)
        row["passed"] = row["growth_pct"] < max_growth
        row["verdict"] = "pass" if row["passed"] else f"FAIL: grew {row['growth_pct']:.2f}% (limit {max_growth}%)"
    except subprocess.TimeoutExpired as e:
        row.update(passed=False, samples=[], verdict=f"HANG: no end after {e.timeout:.0f} s")
    except RuntimeError as e:
        row.update(passed=False, samples=row.get("samples", []), verdict=f"FAIL: {e}")
    row["seconds"] = time.monotonic() - t
    figs = f"{row.get('baseline_kb', 0) / 1024:.1f} -> {row.get('peak_kb', 0) / 1024:.1f} MiB ({row.get('growth_pct', 0):+.2f}%)"
    say(f"{kind:<7} {name:<18} {figs}  {row['seconds']:.0f} s  {row['verdict']}")
    return row


def markdown(rows: list[dict], n: int, every: int, warmup: int, seconds: float) -> str:
    lines = [f"Last full run: `tools/reliability/soak.py`, {n:,} inferences per bundle and runtime, RSS every {every:,}, "
             f"warm-up {warmup:,} (baseline: the sample at {warmup:,}), {seconds / 60:.1f} min in all on {machine_note()}.", "",
             "| runtime | bundle | RSS at warm-up end, MiB | highest after, MiB | growth | verdict | s |",
             "|---|---|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['runtime']} | {r['bundle']} | {r.get('baseline_kb', 0) / 1024:.1f} | {r.get('peak_kb', 0) / 1024:.1f} | "
                     f"{r.get('growth_pct', 0):+.2f}% | {r['verdict']} | {r['seconds']:.0f} |")
    lines += ["", "Every sample (inferences: RSS in MiB):", ""]
    for r in rows:
        pts = ", ".join(f"{i:,}: {kb / 1024:.1f}" for i, kb in r["samples"])
        lines.append(f"- {r['runtime']} {r['bundle']}: {pts}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1], int(argv[2]), int(argv[3]), argv[4])
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inferences", type=int, default=20000)
    ap.add_argument("--every", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=2000)
    ap.add_argument("--max-growth", type=float, default=5.0, help="percent")
    ap.add_argument("--bundles", default=",".join(ALL_BUNDLES), help="comma-separated target-precision names")
    ap.add_argument("--bundle-dir", type=Path, default=None, help="where the tiny bundles are kept (reused)")
    ap.add_argument("--runtimes", default="python,cpp")
    ap.add_argument("--app", type=Path, default=CPP_APP, help="the C++ app (make cpp-app)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds one soak may take")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/RELIABILITY.md")
    a = ap.parse_args(argv)
    if a.warmup % a.every or a.warmup >= a.inferences:
        ap.error("--warmup must be a multiple of --every and below --inferences")
    t0 = time.monotonic()
    work = scratch("reliability-soak-")
    bundles = export_bundles(a.bundles.split(","), a.bundle_dir or work / "bundles")
    images = work / "images"
    make_images(64, images, seed=1)
    runtimes = a.runtimes.split(",")
    if "cpp" in runtimes and not a.app.is_file():
        print(f"soak: {a.app} not found: run `make cpp-app` first, or pass --runtimes python", file=sys.stderr)
        return 1
    rows = []
    for name, b in bundles.items():
        if "python" in runtimes:
            rows.append(soak_one("python", name, lambda b=b: run_python(b, a.inferences, a.every, images, a.timeout),
                                 a.warmup, a.max_growth))
        if "cpp" in runtimes and name.rsplit("-", 1)[0] in CPP_TARGETS:
            rows.append(soak_one("C++", name, lambda b=b: run_cpp(a.app, b, a.inferences, a.every, a.timeout),
                                 a.warmup, a.max_growth))
    seconds = time.monotonic() - t0
    return finish("soak", markdown(rows, a.inferences, a.every, a.warmup, seconds),
                  [f"{r['runtime']} {r['bundle']}" for r in rows if not r["passed"]], not a.no_doc)


if __name__ == "__main__":
    sys.exit(main())
