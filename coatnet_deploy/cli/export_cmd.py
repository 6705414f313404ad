"""coatnet-deploy export: build -> ONNX -> simplify -> precision -> engine -> parity -> bundle."""

from __future__ import annotations

import click

from coatnet_deploy import targets
from coatnet_deploy.cli import cli
from coatnet_deploy.cli.common import emit_json, json_option, progress_printer
from coatnet_deploy.errors import EXIT_GATE_FAILED, EXIT_OK


@cli.command("export")
@click.option("--config", "config_file", type=str,
              help="YAML file, or a shipped config's name (e.g. openvino-int8; `coatnet-deploy targets` lists them); flags override it.")
@click.option("--model", type=str, help="Variant from `coatnet-deploy models` (default: the one --weights names, else coatnet_0_rw_224).")
@click.option("--weights", type=str, help=".safetensors, torch state dict or timm train.py checkpoint (read with weights_only=True), "
                                          "or a timm save_for_hf folder (or its config.json).")
@click.option("--ema", is_flag=True, default=None, help="Take the checkpoint's EMA weights (default: the trained weights).")
@click.option("--num-classes", type=int, help="Head size (inferred from --weights).")
@click.option("--labels", type=str, help="Text file, one class name per line.")
@click.option("--image-size", type=int, help="Square input size, multiple of 32 from 64.")
@click.option("--target", type=str, help=f"{' | '.join(targets.names())} (default {targets.default_name()}).")
@click.option("--precision", type=str, help="fp32 | fp16 | int8 | fp8 (fp8: tensorrt; default fp32).")
@click.option("--device", type=str, help="CPU targets: the device profile the bundle is made for (default x86-64-v3: every AVX2 "
                                         "CPU; `targets --device NAME` shows the profiles and what each chooses).")
@click.option("--calibration", type=str, help="INT8 calibration: image folder or .npz (default: the shipped photos, see `targets`).")
@click.option("--calibration-samples", type=int, help="Images drawn from the calibration set (default 300).")
@click.option("--images", type=str, help="Folder of images used as golden inputs (default: the calibration folder).")
@click.option("--batch", type=str, help="Dynamic batch range MIN:OPT:MAX (default 1:1:8).")
@click.option("--reference", type=str, help="auto | cpu | cuda: where the PyTorch reference runs.")
@click.option("--defer-build", is_flag=True, default=None,
              help=f"{', '.join(t.name for t in targets.all_targets() if t.can_defer)}: bundle the ONNX + build script, build on the device.")
@click.option("--output", type=str, help="Bundle directory (replaced only when the new bundle is complete).")
@click.option("--opset", type=int, help="ONNX opset (default 17).")
@click.option("--simplify/--no-simplify", default=None, help="Run onnxsim (default on).")
@click.option("--seed", type=int, help="Seed for random init, golden tensors, calibration shuffle.")
@click.option("--threads", type=int, help="Runtime threads for parity and latency.")
@click.option("--bench-iterations", type=int, help="Latency iterations in the report (0 = skip).")
@click.option("--eval-images", type=str, help="ImageFolder tree: adds dataset accuracy to the report.")
@click.option("--sensitivity", is_flag=True, default=None, help="INT8: per-node SQNR ranking in the report.")
@click.option("--max-drop", type=float, help="INT8 accuracy budget: move the worst layers to float until it holds.")
@click.option("--int8-method", type=str, help="OpenVINO INT8: auto | qdq | nncf.")
@click.option("--calibrate-method", type=str, help="minmax | entropy | percentile.")
@json_option
def export_cmd(config_file, as_json, **flags):
    """Export a CoAtNet variant to a checked, self-describing bundle.

    Exit 0 when every parity gate passed, 2 when a gate failed (the bundle says FAILED),
    1 for bad input, 3 when the target cannot run here.
    """
    from coatnet_deploy.api import export

    if flags["model"] is not None:
        from coatnet_deploy.models import model_info

        model_info(flags["model"])  # --model names a variant only (the API also takes a path there)
    # The same call a training script makes (README "Python API"); the flags are its options.
    result = export(flags.pop("model"), config=config_file, progress=progress_printer(not as_json) or False, **flags)
    rep = result.report
    target, precision = rep["target"], rep["precision"]
    if as_json:
        emit_json({"bundle": str(result.bundle), "status": result.status, "target": target, "precision": precision,
                   "parity": {k: v for k, v in rep["parity"].items() if k != "per_sample"},
                   "latency": {k: v for k, v in (rep.get("latency") or {}).items() if k != "samples_ms"} or None,
                   "stages": [{k: v for k, v in s.items()} for s in rep["stages"]]})
    else:
        p = rep["parity"]
        click.echo(f"{result.status}: {result.manifest['model']['name']} -> {target}/{precision}  bundle {result.bundle}")
        click.echo(f"  parity   cos_min {p['cosine_min']:.6f}  max_abs {p['max_abs_err']:.3g}  top1 {p['top1_agreement']:.3f}  top5 {p['top5_agreement']:.3f}")
        lat = rep.get("latency")
        if lat:
            ref = rep.get("reference_latency") or {}
            click.echo(f"  latency  p50 {lat['p50_ms']:.2f} ms at batch {lat['batch']} (PyTorch {ref.get('p50_ms', float('nan')):.2f} ms, x{rep.get('speedup_vs_reference') or float('nan'):.2f})")
        elif rep.get("latency_note"):
            click.echo(f"  latency  not measured: {rep['latency_note']}")
        if not result.passed:
            click.echo(f"  failed gates: {', '.join(p.get('failed_gates', []))}; smallest passing tolerance: {p.get('min_passing')}")
    return EXIT_OK if result.passed else EXIT_GATE_FAILED
