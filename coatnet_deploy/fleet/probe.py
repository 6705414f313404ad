"""The device side of a cell: parity, predict, the runtime's own INT8 op census and (on real hardware) b1/b8 timing.

    python -m coatnet_deploy.fleet.probe [--bench 1,8] [--threads N] BUNDLE...   # one JSON line per bundle

It runs in its own process on the device (a fleet node, or an emulated CPU under QEMU user-mode:
``emulation.command``), so that a runtime that crashes takes one bundle with it and not the node.
It imports only what a device has: the torch-free runtime, NumPy, Pillow and the bundle's runtime.
A bundle that is refused (UserError, exit 1 or 3) is a result, not a crash; anything else is
reported with its last line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from coatnet_deploy.errors import UserError

#: photos run through Classifier.classify (predict's path), beside the golden set parity reads
N_PHOTOS = 2
#: shorter than `bench`'s defaults (a cell is timed once, on its own node): warm-up, then 10 calls and 1 s
BENCH = {"warmup_iters": 3, "warmup_s": 0.2, "min_iters": 10, "min_time_s": 1.0, "max_time_s": 30.0, "async_batches": 2}


def photos() -> list[Path]:
    from coatnet_deploy.shipped import calibration_dir

    return sorted(calibration_dir().glob("*.jpg"))[:N_PHOTOS]


def census(bundle: Path, manifest: dict) -> dict | None:
    """What this CPU's runtime runs in int8 and in float: its own view (ORT's profiler, OpenVINO's execution graph)."""
    golden = np.load(bundle / "golden_inputs.npy")[:1]
    target = manifest["target"]
    if target == "openvino":
        from coatnet_deploy.backends.openvino import op_census
        from coatnet_deploy.runtime.engines import open_runner

        runner, _ = open_runner(bundle, manifest, any_cpu=True)
        with runner:
            runner.infer(np.ascontiguousarray(golden))
            c = op_census(runner)
            c["effective_precision"] = runner.effective_precision
        return c
    if target in ("onnx", "onnxruntime"):
        from coatnet_deploy.backends.onnxrt import profile_by_op
        from coatnet_deploy.targets.onnxruntime import saved_graph_here

        path, level = (saved_graph_here(bundle, manifest)[:2] if target == "onnxruntime" else (bundle / "model.onnx", "all"))
        p = profile_by_op(path, golden, optimization=level, runs=1)
        rows = [r for r in p["by_layer_type"] if r["compute"]]
        int8 = sum(r["count"] for r in rows if r["precision"] == "int8")
        flt = sum(r["count"] for r in rows if r["precision"] != "int8")
        return {"runtime": "onnxruntime", "source": "ORT's profiler on this CPU", "int8_compute_nodes": int8, "float_compute_nodes": flt,
                "int8_share": int8 / (int8 + flt) if int8 + flt else 0.0,
                "by_op": [{"op": r["layer_type"], "precision": r["precision"], "count": r["count"], "compute": r["compute"]}
                          for r in p["by_layer_type"]]}
    return None


def bench(bundle: Path, manifest: dict, batches: list[int], threads: int | None) -> dict[str, Any]:
    """The bundle's engine alone, timed by the one harness: the first batch in latency mode, the others in
    throughput mode -> {str(batch): LatencyResult dict without samples}."""
    from coatnet_deploy.bench.harness import BenchConfig
    from coatnet_deploy.bench.session import tile, time_interleaved
    from coatnet_deploy.runtime.engines import open_runner

    inputs = np.load(bundle / "golden_inputs.npy")
    out: dict[str, Any] = {}
    for i, b in enumerate(batches):
        mode = "latency" if i == 0 else "throughput"
        runner, _ = open_runner(bundle, manifest, threads=threads, mode=mode)
        runner.name = "engine"
        with runner:
            runner.infer(tile(inputs, b))
            timing = time_interleaved({"engine": runner}, inputs, [b], BenchConfig(**BENCH, mode=mode))[b]
        out[str(b)] = {k: v for k, v in timing.results["engine"].to_dict().items() if k != "samples_ms"}
    return out


def probe(bundle: Path, batches: list[int] | None = None, threads: int | None = None) -> dict:
    """One bundle on this CPU -> its result (status PASSED | FAILED | REFUSED | ERROR | CRASH, parity, predict, census, timing)."""
    from coatnet_deploy.bundle import verify_bundle
    from coatnet_deploy.parity import check_bundle, cpu_here
    from coatnet_deploy.runtime import Classifier

    t0 = time.perf_counter()
    out: dict = {"bundle": bundle.name, "cpu": cpu_here()}
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        try:
            res = check_bundle(bundle, threads=threads)
            out.update({"status": res["status"], "runs": res["runs"], "outputs_sha256": res["outputs_sha256"],
                        "parity": {k: res["parity"].get(k) for k in ("samples", "cosine_min", "cosine_mean", "top1_agreement", "max_abs_err",
                                                                      "failed_gates")}})
            shots = photos()
            with Classifier.load(bundle, threads=threads) as clf:
                preds = clf.classify([str(p) for p in shots], topk=1)
                out["predict"] = [{"image": p.name, "index": r[0].index, "prob": r[0].prob} for p, r in zip(shots, preds)]
            manifest = verify_bundle(bundle)
            if manifest.get("precision") == "int8":
                out["census"] = census(bundle, manifest)
            if batches:
                out["timing"] = bench(bundle, manifest, batches, threads)
        except UserError as e:
            # exit 3: refused on this CPU (the device check expects it for some bundles); exit 1: a bad bundle
            out.update({"status": "REFUSED" if e.exit_code == 3 else "ERROR", "exit_code": e.exit_code, "message": str(e)})
        except Exception as e:  # noqa: BLE001 - a crash is the finding: report it and go on with the next bundle
            out.update({"status": "CRASH", "message": f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}",
                        "traceback": traceback.format_exc().splitlines()[-6:]})
    out["warnings"] = [line[len("warning: "):] for line in said.getvalue().splitlines() if line.startswith("warning: ")]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m coatnet_deploy.fleet.probe", description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default="", help="comma-separated batch sizes to time (first: latency mode; others: throughput)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("bundles", nargs="+")
    a = ap.parse_args(argv)
    batches = [int(b) for b in a.bench.split(",") if b.strip()]
    for arg in a.bundles:
        print(json.dumps(probe(Path(arg), batches, a.threads)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
