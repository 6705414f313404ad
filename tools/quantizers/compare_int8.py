"""ModelOpt vs the project's TensorRT rules (INT8), and ModelOpt FP8: the figures of docs/INT8.md.

Needs the modelopt extra (pip install -e '.[modelopt]'). For each recipe it exports TensorRT-bound
bundles (--defer-build: the Q/DQ model.onnx is what a GPU builds from) of

- the timm-trained digits model (tests/fixtures/digits): held-out top-1 drop and agreement on 540
  images, run on ONNX Runtime's CPU provider, and the mean cosine on the 8 golden digit photos;
- coatnet_0_rw_224 (seeded random weights) calibrated on the shipped photos: the mean cosine on
  its golden photos;

and counts the Q/DQ placement and what the TensorRT rules checker (precision/qdq.check_qdq_rules)
finds in each graph. Prints a Markdown table. Usage: python tools/quantizers/compare_int8.py [--no-coatnet0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "digits"))

RECIPES = [("ModelOpt INT8 (max)", "int8", "modelopt", "minmax"), ("ModelOpt INT8 (entropy)", "int8", "modelopt", "entropy"),
           ("rules INT8 (minmax)", "int8", "rules", "minmax"), ("ModelOpt FP8 (max)", "fp8", "modelopt", "minmax")]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-coatnet0", action="store_true", help="skip the coatnet_0_rw_224 exports (minutes)")
    args = ap.parse_args()
    import onnx

    from coatnet_deploy import targets
    from coatnet_deploy.calibration import EvalSet
    from coatnet_deploy.config import make_config
    from coatnet_deploy.exporting import export
    from coatnet_deploy.precision import modelopt_ptq
    from coatnet_deploy.preprocess import PreprocessConfig
    from coatnet_deploy.stages import run_batched
    from digits_data import write_digits_folders

    def logits(bundle, x):
        m = json.loads((Path(bundle) / "manifest.json").read_text())
        runner, _ = targets.get(m["target"]).open_runner(Path(bundle), m)
        with runner:
            return run_batched(runner, x, 8)

    def placement(bundle):
        g = Path(bundle) / "model.onnx"
        return modelopt_ptq.dq_consumers(onnx.load(str(g))), modelopt_ptq.rules_findings(g)

    tmp = Path(tempfile.mkdtemp(prefix="compare-int8-"))
    calib, eval_dir = write_digits_folders(tmp / "digits", calibration_images=200)
    fx = REPO / "tests" / "fixtures" / "digits"
    digits = dict(model="coatnet_tiny", weights=str(fx / "coatnet_tiny_digits.safetensors"), labels=str(fx / "labels.txt"),
                  image_size=64, calibration=str(calib), calibration_samples=200, images=str(eval_dir), golden_images=8,
                  golden_random=2, bench_iterations=0, seed=0)
    ref = export(make_config(None, {**digits, "target": "onnx", "precision": "fp32", "output": str(tmp / "fp32")}))
    ev = EvalSet(eval_dir, PreprocessConfig.from_dict(ref.manifest["preprocess"]), labels=[str(d) for d in range(10)])
    xs, ys = zip(*ev.batches(64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    ref_out = logits(ref.bundle, x)
    ref_top1 = float(np.mean(ref_out.argmax(1) == y) * 100)
    rows = []
    for name, precision, quantizer, method in RECIPES:
        kw = {"target": "tensorrt", "precision": precision, "defer_build": True, "calibrate_method": method,
              "output": str(tmp / f"d-{precision}-{quantizer}-{method}")}
        if precision == "int8":
            kw["tensorrt"] = {"quantizer": quantizer}
        t0 = time.perf_counter()
        res = export(make_config(None, {**digits, **kw}))
        secs = res.report.get("timings_s", {}).get("precision") if isinstance(res.report.get("timings_s"), dict) else None
        out = logits(res.bundle, x)
        top1 = float(np.mean(out.argmax(1) == y) * 100)
        where, findings = placement(res.bundle)
        row = {"recipe": name, "status": res.status, "heldout_top1": round(top1, 2), "drop_pt": round(ref_top1 - top1, 2),
               "agreement": round(float(np.mean(out.argmax(1) == ref_out.argmax(1))), 4),
               "digits_golden_cosine_mean": round(res.report["parity"]["cosine_mean"], 5), "placement": where,
               "rules_findings": findings, "export_s": round(time.perf_counter() - t0, 1), "precision_s": secs}
        if not args.no_coatnet0:
            res0 = export(make_config(None, {"model": "coatnet_0_rw_224", "target": "tensorrt", "precision": precision,
                                              "defer_build": True, "calibrate_method": method, "bench_iterations": 0, "seed": 0,
                                              "output": str(tmp / f"c0-{precision}-{quantizer}-{method}"),
                                              **({"tensorrt": {"quantizer": quantizer}} if precision == "int8" else {})}))
            row["coatnet0_status"] = res0.status
            row["coatnet0_golden_cosine_mean"] = round(res0.report["parity"]["cosine_mean"], 5)
            row["coatnet0_placement"], row["coatnet0_rules_findings"] = placement(res0.bundle)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\nreference (float, ONNX Runtime): held-out top-1 {ref_top1:.2f} % on {len(y)} images\n")
    print("| recipe | digits held-out top-1 (drop) | top-1 agreement | digits golden cosine mean | coatnet_0 golden cosine mean |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['recipe']} | {r['heldout_top1']:.2f} % ({r['drop_pt']:+.2f} pt) | {r['agreement']:.4f} | "
              f"{r['digits_golden_cosine_mean']:.5f} | {r.get('coatnet0_golden_cosine_mean', '-')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
