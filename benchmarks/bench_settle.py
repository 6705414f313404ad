#!/usr/bin/env python
"""Which pause between interleaved runners keeps timings honest, and what it costs. Rerun on a quiet machine:

    .venv/bin/python benchmarks/bench_settle.py                         # coatnet_tiny at 64 px (what the tiny matrix times)
    .venv/bin/python benchmarks/bench_settle.py --model coatnet_0_rw_224 --image-size 224 --iterations 20

Why: runtimes keep their worker threads spinning for a while after a call returns. On a 2-core machine
the next runner of an interleaved run then shares the cores with that spin and looks slower than it is.
The harness used to sleep 50 ms before every timed call; across 11 runners and hundreds of rounds that
is most of a matrix run. This script times the same runners under each pause policy:

- ``none``: no pause;
- ``fixed-50ms``: the old pause;
- ``scaled``: a pause as long as the previous call (capped at 50 ms);
- ``idle``: wait until this process's threads stop burning CPU, probed every 0.5 ms, capped at 50 ms
  (``coatnet_deploy.bench.harness.wait_idle``);
- ``ort-stop-spin`` / ``ort-no-spin``: no pause, and the ONNX Runtime sessions made with
  ``session.force_spinning_stop=1`` / ``session.intra_op.allow_spinning=0``.

Runners, all on one ONNX graph (torch.onnx.export of the model, opset 17), threads pinned: two identical
ONNX Runtime sessions (``ort-a``, ``ort-b``: their ratio should be 1.00), OpenVINO (LATENCY hint) and the
PyTorch model. For each policy: the interleaved medians, the same runners timed alone (back to back, no
other runner in between: what a steady stream of requests sees), their ratios, and the wall time of the
interleaved part. First it prints how long each runtime's threads stay busy after a call.

Policies run in turn, ``--repeats`` times (A B C ... A B C ...): each cell is the median over repeats,
with the spread (max/min) of the key ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner, session_options  # noqa: E402
from coatnet_deploy.bench.harness import BenchConfig, run_interleaved, wait_idle  # noqa: E402
from coatnet_deploy.bench.tables import Table  # noqa: E402

CAP_S = 0.05


class OrtWithEntries(OnnxRuntimeRunner):
    """The project's ORT runner with extra session config entries (spin settings)."""

    def __init__(self, path: str, threads: int, entries: dict[str, str]) -> None:
        super().__init__(path, threads=threads)
        self.entries = entries

    def _activate(self) -> None:
        import onnxruntime as ort

        opts = session_options(self.threads, self.optimization)
        for k, v in self.entries.items():
            opts.add_session_config_entry(k, v)
        self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=self.providers)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def settings(self):
        return {**super().settings(), "session_config": dict(self.entries)}


def _sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


POLICIES = {
    "none": (lambda last: 0.0, {}),
    "fixed-50ms": (lambda last: _sleep_for(CAP_S), {}),
    "scaled": (lambda last: _sleep_for(min(CAP_S, last)), {}),
    "idle": (lambda last: wait_idle(CAP_S), {}),
    "ort-stop-spin": (lambda last: 0.0, {"session.force_spinning_stop": "1"}),
    "ort-no-spin": (lambda last: 0.0, {"session.intra_op.allow_spinning": "0"}),
}


def export_onnx(model, image_size: int, out: Path) -> Path:
    import torch

    path = out / "model.onnx"
    torch.onnx.export(model, torch.randn(1, 3, image_size, image_size), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def make_runners(onnx: Path, model, threads: int, entries: dict[str, str]) -> dict:
    from coatnet_deploy.backends.openvino import OpenVINORunner
    from coatnet_deploy.backends.torch_ref import TorchRunner

    return {"ort-a": OrtWithEntries(str(onnx), threads, entries), "ort-b": OrtWithEntries(str(onnx), threads, entries),
            "openvino": OpenVINORunner(str(onnx), threads=threads), "torch": TorchRunner(model, threads=threads)}


def spin_profile(runners: dict, x: np.ndarray) -> list[list[str]]:
    """Cores this process keeps busy while its caller sleeps d ms after one call, per runtime (median of 5)."""
    waits = (0.5, 1, 2, 5, 10, 20, 50)
    rows = []
    for name, r in runners.items():
        for _ in range(10):
            r.infer(x)
        cells = [name]
        for d in waits:
            vals = []
            for _ in range(5):
                r.infer(x)
                c0, w0 = time.process_time(), time.perf_counter()
                time.sleep(d / 1000)
                vals.append((time.process_time() - c0) / (time.perf_counter() - w0))
            cells.append(f"{np.median(vals):.2f}")
        rows.append(cells)
    return [["runner"] + [f"{d:g} ms" for d in waits], rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="coatnet_tiny")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iterations", type=int, default=200, help="measured rounds per policy (all runners)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--policies", default=",".join(POLICIES))
    args = ap.parse_args()

    import torch

    from coatnet_deploy.models import build_model

    torch.manual_seed(0)
    model = build_model(args.model, num_classes=10, image_size=args.image_size)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.image_size, args.image_size)).astype(np.float32)
    policies = [p for p in args.policies.split(",") if p]
    load = os.getloadavg()
    print(f"{args.model} at {args.image_size} px, batch {args.batch}, threads {args.threads}, {args.iterations} rounds x "
          f"{args.repeats} repeats; {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(model, args.image_size, Path(tmp))

        probe = {}
        for label, entries in (("onnxruntime", {}), ("onnxruntime stop-spin", POLICIES["ort-stop-spin"][1]),
                               ("onnxruntime no-spin", POLICIES["ort-no-spin"][1])):
            probe[label] = OrtWithEntries(str(onnx), args.threads, entries).activate()
        rest = make_runners(onnx, model, args.threads, {})
        probe["openvino"], probe["torch"] = rest["openvino"].activate(), rest["torch"].activate()
        header, rows = spin_profile(probe, x)
        for r in probe.values():
            r.deactivate()
        print("\ncores busy while the caller sleeps, after one call (1.00 = one core spinning):")
        print(Table(header, rows).text())

        cfg_i = BenchConfig(warmup_iters=5, warmup_s=0.0, min_iters=args.iterations, min_time_s=0.0, max_time_s=600.0)
        cfg_a = BenchConfig(warmup_iters=5, warmup_s=0.0, min_iters=args.iterations, min_time_s=0.0, max_time_s=600.0)
        out: dict[str, list[dict]] = {p: [] for p in policies}
        for rep in range(args.repeats):
            for p in policies:
                settle, entries = POLICIES[p]
                runners = make_runners(onnx, model, args.threads, entries)
                for r in runners.values():
                    r.activate()
                try:
                    t0 = time.perf_counter()
                    inter, stats = run_interleaved(runners, x, cfg_i, settle=settle)
                    wall = time.perf_counter() - t0
                    alone = {n: run_interleaved({n: r}, x, cfg_a)[0][n] for n, r in runners.items()}
                finally:
                    for r in runners.values():
                        r.deactivate()
                out[p].append({"wall": wall, "settle": stats.settle_s, "inter": {n: v.p50_ms for n, v in inter.items()},
                               "alone": {n: v.p50_ms for n, v in alone.items()}})
                print(f"  repeat {rep + 1} {p}: {wall:.1f} s", file=sys.stderr, flush=True)

    names = ["ort-a", "ort-b", "openvino", "torch"]

    def med(p, f):
        return float(np.median([f(d) for d in out[p]]))

    def spread(p, f):
        v = [f(d) for d in out[p]]
        return max(v) / min(v) if min(v) > 0 else float("inf")

    header = ["policy", "wall s", "settle s"] + [f"{n} p50" for n in names] + ["b/a", "spread", "ov/ort", "ov/ort alone", "spread"]
    rows = []
    for p in policies:
        rows.append([p, f"{med(p, lambda d: d['wall']):.1f}", f"{med(p, lambda d: d['settle']):.1f}"]
                    + [f"{med(p, lambda d, n=n: d['inter'][n]):.3f}" for n in names]
                    + [f"{med(p, lambda d: d['inter']['ort-b'] / d['inter']['ort-a']):.3f}", f"{spread(p, lambda d: d['inter']['ort-b'] / d['inter']['ort-a']):.2f}",
                       f"{med(p, lambda d: d['inter']['openvino'] / d['inter']['ort-a']):.3f}",
                       f"{med(p, lambda d: d['alone']['openvino'] / d['alone']['ort-a']):.3f}",
                       f"{spread(p, lambda d: d['inter']['openvino'] / d['inter']['ort-a']):.2f}"])
    print(f"\ninterleaved, {args.iterations} rounds (p50 in ms; ratios are same-run medians; spread = max/min over repeats):")
    print(Table(header, rows).text())

    header = ["policy"] + [f"{n} alone p50" for n in names] + [f"{n} inter/alone" for n in names]
    rows = [[p] + [f"{med(p, lambda d, n=n: d['alone'][n]):.3f}" for n in names]
            + [f"{med(p, lambda d, n=n: d['inter'][n] / d['alone'][n]):.2f}" for n in names] for p in policies]
    print("\nthe same runners timed alone (back to back) right after, and interleaved / alone:")
    print(Table(header, rows).text())
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}. Read: b/a far from 1.00 or a large "
          "inter/alone means the pause lets one runner slow the next; an ort-* policy that changes 'ort alone' "
          "changes the engine users deploy.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
