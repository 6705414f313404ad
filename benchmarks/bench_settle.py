#!/usr/bin/env python
"""Which pause between interleaved runners keeps timings honest, and what it costs. Rerun on a quiet machine:

    .venv/bin/python benchmarks/bench_settle.py                         # coatnet_tiny at 64 px (what the tiny matrix times)
    .venv/bin/python benchmarks/bench_settle.py --model coatnet_0_rw_224 --image-size 224 --rounds 60

Why: runtimes keep their worker threads spinning for a while after a call returns. On a 2-core machine
the next runner of an interleaved run then shares the cores with that spin and looks slower than it is.
The harness used to sleep 50 ms before every timed call; across 11 runners and hundreds of rounds that
was most of a matrix run. Policies compared:

- ``none``: no pause;
- ``fixed-50ms``: the old pause;
- ``scaled``: a pause as long as the previous call, at most 50 ms;
- ``idle``: wait until no other thread of this process is running or runnable (/proc thread states),
  probed every 0.5 ms, at most 50 ms (``coatnet_deploy.bench.harness.wait_idle``, what the harness does);
- ``idle-cputime``: the same wait, but "idle" read from the process's CPU time (under 0.25 cores over a
  probe), which misses a spinning thread that another process pushed off its core;
- ``ort-stop-spin`` / ``ort-no-spin``: no pause, but the ONNX Runtime sessions made with
  ``session.force_spinning_stop=1`` / ``session.intra_op.allow_spinning=0``;
- ``idle+stop-spin``: the ``idle`` wait with the ``force_spinning_stop`` sessions;
- ``alone``: the reference: each runner after ``idle``, 3 untimed calls, then the timed one (back to
  back: what a steady stream of requests sees); ``alone-stop-spin`` / ``alone-no-spin`` the same for
  the other ORT sessions (does the ORT setting change the engine's own steady-state speed?).

Runners, all on one ONNX graph (torch.onnx.export of the model, opset 17), threads pinned: two identical
ONNX Runtime sessions (``ort-a``, ``ort-b``: their ratio should be 1.00), OpenVINO (LATENCY hint) and the
PyTorch model. The policies take turns ROUND BY ROUND (round 1 none, round 2 fixed-50ms, ...), so each
one sees the same machine state and drift on a shared machine cancels out. Medians over all rounds of
a policy; the spread is the range of the ratio over 5 consecutive chunks of rounds. First the script
prints how long each runtime's threads stay busy after a call.
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
from coatnet_deploy.bench.harness import wait_idle  # noqa: E402
from coatnet_deploy.bench.tables import Table  # noqa: E402

CAP_S = 0.05
NAMES = ("ort-a", "ort-b", "openvino", "torch")
SPIN_SETTINGS = {"": {}, "stop-spin": {"session.force_spinning_stop": "1"}, "no-spin": {"session.intra_op.allow_spinning": "0"}}


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


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


#: policy -> (pause before each call given the previous call's seconds, which ORT sessions, back to back?)
POLICIES = {
    "none": (lambda last: 0.0, "", False),
    "fixed-50ms": (lambda last: _sleep(CAP_S), "", False),
    "scaled": (lambda last: _sleep(min(CAP_S, last)), "", False),
    "idle": (lambda last: wait_idle(CAP_S), "", False),
    "idle-cputime": (lambda last: wait_idle(CAP_S, runnable=lambda: None), "", False),
    "idle+stop-spin": (lambda last: wait_idle(CAP_S), "stop-spin", False),
    "ort-stop-spin": (lambda last: 0.0, "stop-spin", False),
    "ort-no-spin": (lambda last: 0.0, "no-spin", False),
    "alone": (lambda last: wait_idle(CAP_S), "", True),
    "alone-stop-spin": (lambda last: wait_idle(CAP_S), "stop-spin", True),
    "alone-no-spin": (lambda last: wait_idle(CAP_S), "no-spin", True),
}


def export_onnx(model, image_size: int, out: Path) -> Path:
    import torch

    path = out / "model.onnx"
    torch.onnx.export(model, torch.randn(1, 3, image_size, image_size), str(path), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def spin_profile(runners: dict, x: np.ndarray) -> Table:
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
    return Table(["runner"] + [f"{d:g} ms" for d in waits], rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="coatnet_tiny")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=150, help="rounds per policy (policies take turns round by round)")
    ap.add_argument("--policies", default=",".join(POLICIES))
    args = ap.parse_args()

    import torch

    from coatnet_deploy.backends.openvino import OpenVINORunner
    from coatnet_deploy.backends.torch_ref import TorchRunner
    from coatnet_deploy.models import build_model

    torch.manual_seed(0)
    model = build_model(args.model, num_classes=10, image_size=args.image_size)
    x = np.random.default_rng(0).standard_normal((args.batch, 3, args.image_size, args.image_size)).astype(np.float32)
    policies = [p for p in args.policies.split(",") if p]
    load = os.getloadavg()
    print(f"{args.model} at {args.image_size} px, batch {args.batch}, threads {args.threads}, {args.rounds} rounds per policy; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        onnx = export_onnx(model, args.image_size, Path(tmp))
        ort = {(n, s): OrtWithEntries(str(onnx), args.threads, e).activate() for s, e in SPIN_SETTINGS.items() for n in ("ort-a", "ort-b")}
        ov = OpenVINORunner(str(onnx), threads=args.threads).activate()
        ref = TorchRunner(model, threads=args.threads).activate()
        try:
            print("\ncores busy while the caller sleeps, after one call (1.00 = one core spinning):")
            print(spin_profile({"onnxruntime": ort[("ort-a", "")], "onnxruntime stop-spin": ort[("ort-a", "stop-spin")],
                                "onnxruntime no-spin": ort[("ort-a", "no-spin")], "openvino": ov, "torch": ref}, x).text())
            for r in [*ort.values(), ov, ref]:
                for _ in range(5):
                    r.infer(x)
            samples = {p: {n: [] for n in NAMES} for p in policies}
            cost = {p: 0.0 for p in policies}  # wall seconds the policy's rounds took, pauses included
            last = 0.0
            for i in range(args.rounds * len(policies)):
                p = policies[i % len(policies)]
                pause, spin, back_to_back = POLICIES[p]
                runners = {"ort-a": ort[("ort-a", spin)], "ort-b": ort[("ort-b", spin)], "openvino": ov, "torch": ref}
                t_round = time.perf_counter()
                for n, r in runners.items():
                    pause(last)
                    if back_to_back:
                        for _ in range(3):
                            r.infer(x)
                    t0 = time.perf_counter()
                    r.infer(x)
                    last = time.perf_counter() - t0
                    samples[p][n].append(last * 1000)
                cost[p] += time.perf_counter() - t_round
                if i % 100 == 0:
                    print(f"  round {i // len(policies) + 1}/{args.rounds}", file=sys.stderr, flush=True)
        finally:
            for r in [*ort.values(), ov, ref]:
                r.deactivate()

    def ratio_stats(p: str, num: str, den: str) -> tuple[float, float, float]:
        a, b = np.array(samples[p][num]), np.array(samples[p][den])
        chunks = [np.median(ca) / np.median(cb) for ca, cb in zip(np.array_split(a, 5), np.array_split(b, 5))]
        return float(np.median(a) / np.median(b)), float(min(chunks)), float(max(chunks))

    alone = {n: float(np.median(samples["alone"][n])) for n in NAMES} if "alone" in samples else None
    header = ["policy", "s/round"] + [f"{n} p50" for n in NAMES] + ["b/a", "b/a range", "ov/ort-a", "ov/ort-a range"]
    if alone:
        header += [f"{n} / alone" for n in NAMES]
    rows = []
    for p in policies:
        med = {n: float(np.median(samples[p][n])) for n in NAMES}
        ba, ov_ = ratio_stats(p, "ort-b", "ort-a"), ratio_stats(p, "openvino", "ort-a")
        row = [p, f"{cost[p] / args.rounds:.3f}"] + [f"{med[n]:.3f}" for n in NAMES]
        row += [f"{ba[0]:.3f}", f"{ba[1]:.2f}-{ba[2]:.2f}", f"{ov_[0]:.3f}", f"{ov_[1]:.2f}-{ov_[2]:.2f}"]
        if alone:
            row += [f"{med[n] / alone[n]:.2f}" for n in NAMES]
        rows.append(row)
    print(f"\np50 in ms over {args.rounds} rounds per policy; ratios are same-run medians; range = over 5 chunks of rounds; "
          "s/round = wall seconds per round of 4 runners, pauses included:")
    print(Table(header, rows).text())
    load = os.getloadavg()
    print(f"\nload average at end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}. Read: b/a away from 1.00 means one ORT session's "
          "spin slowed the next; '/ alone' above 1 is what interleaving adds over back-to-back calls; an ORT setting whose "
          "alone-* p50 differs from alone's changes the engine users deploy.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
