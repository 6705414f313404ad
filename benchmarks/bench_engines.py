#!/usr/bin/env python
"""What coatnet-deploy buys on this machine, in ONE table a reviewer can rerun.

    .venv/bin/python benchmarks/bench_engines.py                       # coatnet_0_rw_224, threads 2 (long)
    .venv/bin/python benchmarks/bench_engines.py --model coatnet_tiny --image-size 64   # quick check

Rows, all timed round-robin in ONE interleaved run per batch size with the same harness
(coatnet_deploy.bench.time_interleaved), the same inputs and the same thread count:

- PyTorch eager fp32 (the reference);
- "plain ORT": what a user gets without this tool: torch.onnx.export (opset 17, dynamic batch,
  no simplification) run by a default ``ort.InferenceSession(path)`` with only intra_op threads set;
- every coatnet-deploy engine (target x precision) that exports here, made by pipeline.export in a
  temporary directory, each export in its own process (wall time and peak RSS recorded).

Batch 1 is latency mode; batch 8 is throughput mode (OpenVINO THROUGHPUT hint, several requests in flight;
the other runtimes run the requests one after another). Checks printed after the table (all ratios
from the same interleaved run):

- every INT8 engine faster than the same runtime's fp32 engine, and than plain ORT fp32, at b1 and b8;
- onnxruntime INT8 at most 0.95x plain ORT's latency at b1 and at least 1.3x its throughput at b8;
- the best PASSED engine at most 0.75x plain ORT at b1 and at least 1.5x at b8 (the standing targets);
- float engines no slower than plain ORT (the tool's graph passes must not cost speed);
- the fastest engine that passed its gates, per batch size.

"Compute floor": model FLOPs (2 x MACs from coatnet_deploy.models.gmacs) divided by the peak matrix
throughput measured here, probed by this script: a float32 2048^3 numpy matmul (fp32 engines) and an
ONNX Runtime MatMulInteger u8 x s8 (INT8 engines; s8 x s8 printed beside it): the time a perfect
engine would need. Each engine's p50 is shown as a multiple of its own floor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from coatnet_deploy.backends.base import Runner  # noqa: E402
from coatnet_deploy.bench import BenchConfig, time_interleaved  # noqa: E402

TARGET_B1_RATIO = 0.75  # best engine p50 / plain ORT p50 at batch 1, at most
TARGET_B8_GAIN = 1.5  # best engine img/s / plain ORT img/s at batch 8, at least


class PlainOrtRunner(Runner):
    """ONNX Runtime as a user without this tool runs it: default SessionOptions, threads pinned only."""

    name = "plain-ort"
    framework = "onnxruntime"

    def __init__(self, path: str, threads: int) -> None:
        super().__init__()
        self.path, self.threads = path, threads

    def _activate(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        self.session = ort.InferenceSession(self.path, sess_options=so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def _infer(self, batch):
        return self.session.run(None, {self.input_name: batch})[0]

    def settings(self):
        import onnxruntime as ort

        return {"framework": "onnxruntime", "version": ort.__version__, "threads": self.threads,
                "session_options": "defaults + intra_op_num_threads", "graph": "torch.onnx.export opset 17, not simplified"}


# -- machine and floor ---------------------------------------------------------------------------

def machine(threads: int) -> dict:
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = " ".join(f for f in line.split(":", 1)[1].split() if f.startswith(("avx512", "avx2", "amx", "fma", "avx_vnni")))
    except OSError:
        pass
    versions = {"python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    try:
        import openvino

        versions["openvino"] = openvino.get_version()
    except ImportError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": threads, "isa": flags, "load": os.getloadavg(), "versions": versions}


_PEAK_F32 = """
import time, numpy as np
n = 2048
a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32); b = a.T.copy()
a @ b
best = float("inf")
for _ in range(7):
    t0 = time.perf_counter(); a @ b; best = min(best, time.perf_counter() - t0)
print(2 * n ** 3 / best / 1e9)
"""


def peak_fp32_gflops(threads: int) -> float:
    """Best-of-7 float32 2048^3 numpy matmul, BLAS threads pinned (set before numpy loads, so a subprocess)."""
    env = {**os.environ, **{k: str(threads) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    out = subprocess.run([sys.executable, "-c", _PEAK_F32], capture_output=True, text=True, env=env, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def peak_int8_gops(threads: int, work: Path, a_type: str = "uint8") -> float | None:
    """Best-of-7 ONNX Runtime MatMulInteger (``a_type`` x s8 -> i32), 2048^3; None when it cannot be built."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper

        n = 2048
        g = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "mmi",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8 if a_type == "uint8" else TensorProto.INT8, [n, n]),
                               helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        path = work / f"mmi-{a_type}.onnx"
        onnx.save(m, str(path))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        s = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        a = rng.integers(0, 255, (n, n), dtype=np.uint8) if a_type == "uint8" else rng.integers(-127, 127, (n, n), dtype=np.int8)
        feed = {"a": a, "b": rng.integers(-127, 127, (n, n), dtype=np.int8)}
        s.run(None, feed)
        best = float("inf")
        for _ in range(7):
            t0 = time.perf_counter()
            s.run(None, feed)
            best = min(best, time.perf_counter() - t0)
        return 2 * n ** 3 / best / 1e9
    except Exception as e:  # noqa: BLE001 - the int8 floor is optional
        print(f"(int8 peak not measured: {type(e).__name__}: {e})", file=sys.stderr)
        return None


# -- artifacts -----------------------------------------------------------------------------------

def plain_onnx(model_name: str, image_size: int, seed: int, path: Path) -> None:
    import torch

    from coatnet_deploy.models import build_model

    model = build_model(model_name, image_size=image_size, seed=seed)
    x = torch.randn(1, 3, image_size, image_size)
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter is the plain path on purpose
    torch.onnx.export(model, (x,), str(path), opset_version=17, input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)


def _export_child(spec: str) -> None:
    """Child process: one pipeline.export; prints status, wall time and peak RSS as JSON."""
    import resource

    from coatnet_deploy.config import ExportConfig
    from coatnet_deploy.errors import UserError
    from coatnet_deploy.exporting import export

    values = json.loads(spec)
    t0 = time.perf_counter()
    try:
        res = export(ExportConfig(**values))
        out = {"status": res.status, "bundle": str(res.bundle), "parity": {k: res.report["parity"].get(k) for k in ("cosine_min", "top1_agreement", "failed_gates")}}
    except UserError as e:
        out = {"status": "UNAVAILABLE" if e.exit_code == 3 else "ERROR", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - reported as the row's error
        out = {"status": "ERROR", "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
    out["export_s"] = round(time.perf_counter() - t0, 1)
    # the pipeline resets the kernel's peak-RSS counter per stage (ru_maxrss with it): take the max
    stage_peaks = list(res.report.get("stage_peak_rss_mb", {}).values()) if out["status"] in ("PASSED", "FAILED") else []
    out["peak_rss_mb"] = round(max([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, *stage_peaks]), 1)
    print("@@RESULT " + json.dumps(out))


def export_engine(args, target: str, precision: str, work: Path) -> dict:
    values = {"model": args.model, "image_size": args.image_size, "target": target, "precision": precision, "output": str(work / f"{target}-{precision}"),
              "bench_iterations": 0, "threads": args.threads, "seed": args.seed, "calibration_samples": args.calibration_samples}
    proc = subprocess.run([sys.executable, __file__, "--_export-cell", json.dumps(values)], capture_output=True, text=True, cwd=str(REPO))
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("@@RESULT ")), None)
    if line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "ERROR", "error": f"export process exited {proc.returncode}: {tail}"}
    return json.loads(line[len("@@RESULT "):])


def ov_precisions(runner) -> str:
    """'MatMul i8 12/f32 2; Convolution u8 10; ...' for layers that run anything other than f32."""
    per = runner.execution_precisions()
    totals: dict[str, int] = {}
    for d in per.values():
        for p, n in d.items():
            totals[p] = totals.get(p, 0) + n
    low = [f"{layer} " + "/".join(f"{p} {n}" for p, n in sorted(d.items())) for layer, d in per.items() if any(p not in ("f32", "unknown") for p in d)]
    return "totals " + ", ".join(f"{p} {n}" for p, n in sorted(totals.items())) + ("; " + "; ".join(low) if low else "")


# -- main ----------------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="coatnet_0_rw_224")
    ap.add_argument("--image-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,8", help="two sizes: latency batch, throughput batch")
    ap.add_argument("--targets", default="onnx,onnxruntime,openvino,tensorrt")
    ap.add_argument("--precisions", default="fp32,fp16,int8")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--min-time", type=float, default=2.0)
    ap.add_argument("--calibration-samples", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--_export-cell", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._export_cell:
        _export_child(args._export_cell)
        return 0

    import torch

    from coatnet_deploy import targets
    from coatnet_deploy.backends.torch_ref import TorchRunner
    from coatnet_deploy.bundle import read_manifest
    from coatnet_deploy.bench.reference import golden_inputs, reference_model
    from coatnet_deploy.bench.tables import Table
    from coatnet_deploy.models import gmacs, model_info
    from coatnet_deploy.runtime.engines import open_runner

    torch.set_num_threads(args.threads)
    args.image_size = args.image_size or model_info(args.model).default_image_size
    b_lat, b_thr = [int(b) for b in args.batches.split(",")][:2]
    mach = machine(args.threads)
    print(f"machine: {mach['cpu']}, {mach['cores']} cores ({mach['isa']}), threads {args.threads}, load {mach['load'][0]:.2f}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in mach["versions"].items()))
    if mach["load"][0] > 1.5:
        print(f"warning: load average {mach['load'][0]:.2f}: other work is running; timings will be noisy")

    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        work = Path(tmp)
        peak32 = peak_fp32_gflops(args.threads)
        peak8 = peak_int8_gops(args.threads, work)
        peak8s = peak_int8_gops(args.threads, work, "int8")
        flops = 2 * gmacs(args.model, args.image_size) * 1e9
        print(f"model {args.model} at {args.image_size}px: {flops / 1e9:.3f} GFLOP/image; peak fp32 matmul {peak32:.1f} GFLOP/s"
              + (f", int8 MatMulInteger u8s8 {peak8:.1f} GOP/s" if peak8 else "") + (f", s8s8 {peak8s:.1f} GOP/s" if peak8s else ""))

        engines: dict[str, dict] = {}
        for cell in targets.cells(args.targets.split(","), args.precisions.split(",")):
            t, p = cell.target, cell.precision
            if True:
                key = f"{t}-{p}"
                avail = targets.get(t).availability(p)
                if not avail.ok:
                    engines[key] = {"status": "UNAVAILABLE", "error": avail.reason}
                else:
                    print(f"exporting {key} ...", file=sys.stderr, flush=True)
                    engines[key] = export_engine(args, t, p, work)
                e = engines[key]
                print(f"  {key}: {e['status']}" + (f" ({e.get('error')})" if e.get("error") else f" export {e['export_s']} s, peak RSS {e['peak_rss_mb']} MB"),
                      file=sys.stderr, flush=True)
        built = {k: e for k, e in engines.items() if e.get("bundle")}
        plain = work / "plain.onnx"
        plain_onnx(args.model, args.image_size, args.seed, plain)
        if built:
            first = next(iter(built.values()))["bundle"]
            model, _ = reference_model(read_manifest(first), None)
            inputs = golden_inputs(first)
        else:
            from coatnet_deploy.models import build_model

            model = build_model(args.model, image_size=args.image_size, seed=args.seed)
            inputs = np.random.default_rng(args.seed).standard_normal((4, 3, args.image_size, args.image_size)).astype(np.float32)

        results: dict[int, dict] = {}
        ov_notes: dict[str, str] = {}
        for batch, mode in ((b_lat, "latency"), (b_thr, "throughput")):
            runners = {"pytorch": TorchRunner(model, device="cpu", threads=args.threads), "plain-ort": PlainOrtRunner(str(plain), args.threads)}
            for key, e in built.items():
                r, _ = open_runner(e["bundle"], read_manifest(e["bundle"]), threads=args.threads, mode=mode)
                r.name = key
                runners[key] = r
            cfg = BenchConfig(warmup_iters=3, warmup_s=0.5, min_iters=args.iterations, min_time_s=args.min_time, max_time_s=max(120.0, args.min_time), mode=mode,
                              async_batches=2)
            print(f"timing batch {batch} ({mode}), {len(runners)} runners interleaved ...", file=sys.stderr, flush=True)
            for r in runners.values():
                r.activate()
            try:
                results[batch] = time_interleaved(runners, inputs, [batch], cfg)[batch].results
                for key, r in runners.items():
                    if hasattr(r, "execution_precisions") and key not in ov_notes:
                        ov_notes[key] = ov_precisions(r)
            finally:
                for r in runners.values():
                    r.deactivate()

    lat, thr = results[b_lat], results[b_thr]
    ort1, ort8 = lat["plain-ort"], thr["plain-ort"]

    def floor_ms(batch: int, int8: bool) -> float:
        peak = peak8 if int8 and peak8 else peak32
        return flops * batch / (peak * 1e9) * 1e3

    def own_fp32(name: str) -> str | None:
        t = name.rsplit("-", 1)[0]
        return f"{t}-fp32" if name.endswith("-int8") and f"{t}-fp32" in lat else None

    header = ["engine", "status", "export s", "RSS MB", f"p50 ms b{b_lat}", f"cv b{b_lat}", f"x plain-ORT b{b_lat}", f"img/s b{b_thr}",
              f"x plain-ORT b{b_thr}", f"x own fp32 b{b_lat}", f"x own fp32 b{b_thr}", f"x PyTorch b{b_lat}", f"x floor b{b_lat}",
              f"x floor b{b_thr}"]
    rows = []
    names = ["pytorch", "plain-ort"] + list(engines)
    for name in names:
        e = engines.get(name, {"status": "baseline" if name != "pytorch" else "reference"})
        r1, r8 = lat.get(name), thr.get(name)
        int8 = name.endswith("int8")
        own = own_fp32(name)
        rows.append([name, e["status"] if not e.get("error") else f"{e['status']}: {e['error'][:40]}",
                     str(e.get("export_s", "-")), str(e.get("peak_rss_mb", "-")),
                     f"{r1.p50_ms:.2f}" if r1 else "-", f"{r1.cv:.2f}" if r1 else "-",
                     f"{r1.p50_ms / ort1.p50_ms:.2f}x" if r1 else "-", f"{r8.throughput_ips:.1f}" if r8 else "-",
                     f"{r8.throughput_ips / ort8.throughput_ips:.2f}x" if r8 else "-",
                     f"{r1.p50_ms / lat[own].p50_ms:.2f}x" if r1 and own else "-",
                     f"{r8.throughput_ips / thr[own].throughput_ips:.2f}x" if r8 and own else "-",
                     f"{lat['pytorch'].p50_ms / r1.p50_ms:.2f}x" if r1 else "-",
                     (f"{r1.p50_ms / floor_ms(b_lat, int8):.1f}x" + (" i8" if int8 and peak8 else "")) if r1 else "-",
                     (f"{r8.p50_ms / floor_ms(b_thr, int8):.1f}x" + (" i8" if int8 and peak8 else "")) if r8 else "-"])
    print()
    print(Table(header, rows, left=2).text())
    print()
    print(f"floor: {flops / 1e9:.3f} GFLOP/image / peak -> b{b_lat} {floor_ms(b_lat, False):.3f} ms fp32"
          + (f", {floor_ms(b_lat, True):.3f} ms int8 (u8s8 MatMulInteger peak)" if peak8 else "")
          + f"; b{b_thr} {floor_ms(b_thr, False):.3f} ms fp32" + (f", {floor_ms(b_thr, True):.3f} ms int8" if peak8 else ""))
    print(f"x plain-ORT / x own fp32 b{b_lat}: p50 ratio (lower is better); b{b_thr}: images/s ratio (higher is better); "
          f"b{b_thr} is throughput mode (OpenVINO THROUGHPUT hint + async queue); x floor: p50 / the engine's compute floor")
    for key, note in ov_notes.items():
        print(f"OpenVINO execution precisions {key}: {note}")
    passed = [k for k, e in engines.items() if e["status"] == "PASSED" and k in lat]
    verdict = {}

    def check(name: str, ok: bool, text: str) -> None:
        verdict.setdefault("checks", {})[name] = bool(ok)
        print(f"check {name}: {text}: {'MET' if ok else 'NOT MET'}")

    for k in [k for k in lat if k.endswith("-int8")]:
        own = own_fp32(k)
        r1, g8 = lat[k].p50_ms / ort1.p50_ms, thr[k].throughput_ips / ort8.throughput_ips
        if own:
            o1, o8 = lat[k].p50_ms / lat[own].p50_ms, thr[k].throughput_ips / thr[own].throughput_ips
            check(f"{k} vs {own}", o1 < 1 and o8 > 1, f"{o1:.2f}x its latency b{b_lat}, {o8:.2f}x its throughput b{b_thr} (faster at both)")
        check(f"{k} vs plain-ORT", r1 < 1 and g8 > 1, f"{r1:.2f}x latency b{b_lat}, {g8:.2f}x throughput b{b_thr} (faster at both)")
    if "onnxruntime-int8" in lat:
        r1 = lat["onnxruntime-int8"].p50_ms / ort1.p50_ms
        g8 = thr["onnxruntime-int8"].throughput_ips / ort8.throughput_ips
        check("onnxruntime-int8 targets", r1 <= 0.95 and g8 >= 1.3, f"{r1:.2f}x plain ORT latency (<= 0.95x), {g8:.2f}x throughput (>= 1.3x)")
    for k in [k for k in lat if k.endswith("-fp32") and k.split("-")[0] != "tensorrt"]:
        r1 = lat[k].p50_ms / ort1.p50_ms
        g8 = thr[k].throughput_ips / ort8.throughput_ips
        check(f"{k} no slower than plain-ORT", r1 <= 1.05 and g8 >= 0.95, f"{r1:.2f}x latency, {g8:.2f}x throughput (within 5%)")
    if passed:
        best1 = min(passed, key=lambda k: lat[k].p50_ms)
        best8 = max(passed, key=lambda k: thr[k].throughput_ips)
        r1 = lat[best1].p50_ms / ort1.p50_ms
        g8 = thr[best8].throughput_ips / ort8.throughput_ips
        verdict = {"best_b1": best1, "b1_ratio": r1, "b1_met": r1 <= TARGET_B1_RATIO, "best_b8": best8, "b8_gain": g8, "b8_met": g8 >= TARGET_B8_GAIN}
        print(f"fastest engine that passed its gates: b{b_lat} {best1} ({lat[best1].p50_ms:.2f} ms), "
              f"b{b_thr} {best8} ({thr[best8].throughput_ips:.1f} img/s)")
        print(f"target b{b_lat}: best PASSED engine {best1} at {r1:.2f}x plain ORT latency (target <= {TARGET_B1_RATIO}x): {'MET' if verdict['b1_met'] else 'NOT MET'}")
        print(f"target b{b_thr}: best PASSED engine {best8} at {g8:.2f}x plain ORT throughput (target >= {TARGET_B8_GAIN}x): {'MET' if verdict['b8_met'] else 'NOT MET'}")
    else:
        print("targets: no engine PASSED its parity gates; nothing to compare")
    noisy = [f"{n} b{r.batch} ({r.cv:.2f})" for res in (lat, thr) for n, r in res.items() if r.noisy]
    if noisy:
        print(f"warning: noisy timings (cv > 0.1): {', '.join(noisy)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": mach, "model": args.model, "image_size": args.image_size, "gflop_per_image": flops / 1e9,
                                               "peak_fp32_gflops": peak32, "peak_int8_gops": peak8, "peak_int8_s8s8_gops": peak8s,
                                               "engines": engines, "verdict": verdict,
                                               "openvino_execution_precisions": ov_notes,
                                               "results": {str(b): {n: {k: v for k, v in r.to_dict().items() if k != "samples_ms"} for n, r in res.items()}
                                                           for b, res in results.items()}}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
