"""Run on the (emulated) device: parity, predict and the runtime's own op census of each bundle.

    python tools/devices/probe.py BUNDLE...      # one JSON line per bundle on stdout, as each finishes

tools/devices/check.py starts it under qemu-user with the device's python; it imports only what a
device has (the torch-free runtime, NumPy, Pillow, the bundle's runtime). A bundle that is refused
(UserError, exit 1 or 3) is a result, not a crash; anything else is reported with its last line.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from coatnet_deploy.errors import UserError  # noqa: E402

#: photos run through Classifier.classify (predict's path), beside the golden set parity reads
PHOTOS = sorted((REPO / "calibration").glob("*.jpg"))[:2]


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


def probe(bundle: Path) -> dict:
    from coatnet_deploy.bundle import verify_bundle
    from coatnet_deploy.parity import check_bundle, cpu_here
    from coatnet_deploy.runtime import Classifier

    t0 = time.perf_counter()
    out: dict = {"bundle": bundle.name, "cpu": cpu_here()}
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        try:
            res = check_bundle(bundle)
            out.update({"status": res["status"], "runs": res["runs"],
                        "parity": {k: res["parity"].get(k) for k in ("samples", "cosine_min", "cosine_mean", "top1_agreement", "max_abs_err",
                                                                      "failed_gates")}})
            with Classifier.load(bundle) as clf:
                preds = clf.classify([str(p) for p in PHOTOS], topk=1)
                out["predict"] = [{"image": p.name, "index": r[0].index, "prob": r[0].prob} for p, r in zip(PHOTOS, preds)]
            manifest = verify_bundle(bundle)
            if manifest.get("precision") == "int8":
                out["census"] = census(bundle, manifest)
        except UserError as e:
            # exit 3: refused on this CPU (the device check expects it for some bundles); exit 1: a bad bundle
            out.update({"status": "REFUSED" if e.exit_code == 3 else "ERROR", "exit_code": e.exit_code, "message": str(e)})
        except Exception as e:  # noqa: BLE001 - a crash is the finding: report it and go on with the next bundle
            out.update({"status": "CRASH", "message": f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}",
                        "traceback": traceback.format_exc().splitlines()[-6:]})
    out["warnings"] = [line[len("warning: "):] for line in said.getvalue().splitlines() if line.startswith("warning: ")]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str]) -> int:
    for arg in argv:
        print(json.dumps(probe(Path(arg))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
