"""coatnet-deploy parity: re-check a bundle's engine against its stored reference outputs (no PyTorch)."""

from __future__ import annotations

import click

from coatnet_deploy.cli import cli
from coatnet_deploy.cli.common import emit_json, json_option
from coatnet_deploy.errors import EXIT_GATE_FAILED, EXIT_OK


@cli.command("parity")
@click.argument("bundle", type=str)
@click.option("--images", type=str, help="Also run these images through the engine and through model.onnx (ONNX Runtime) and compare.")
@click.option("--threads", type=int, help="Runtime threads.")
@click.option("--any-cpu", is_flag=True, help="Run a bundle whose device profile needs what this CPU lacks (refused otherwise, exit 3).")
@json_option
def parity_cmd(bundle, images, threads, any_cpu, as_json):
    """Re-run the bundle's engine on its golden inputs against the stored reference logits.

    This is the self-test a device runs after copying (or building) the engine. Exit 2 when a gate fails.
    """
    from coatnet_deploy.parity import check_bundle

    res = check_bundle(bundle, images=images, threads=threads, any_cpu=any_cpu)
    if as_json:
        emit_json(res)
    else:
        p = res["parity"]
        click.echo(f"{res['status']}: {bundle} ({res['runs']})")
        click.echo(f"  golden   {p['samples']} samples  cos_min {p['cosine_min']:.6f}  max_abs {p['max_abs_err']:.3g}  top1 {p['top1_agreement']:.3f}  top5 {p['top5_agreement']:.3f}")
        if res.get("images"):
            q = res["images"]
            click.echo(f"  images   {q['samples']} vs model.onnx on ONNX Runtime  cos_min {q['cosine_min']:.6f}  max_abs {q['max_abs_err']:.3g}  top1 {q['top1_agreement']:.3f}")
        if not p["passed"]:
            click.echo(f"  failed gates: {', '.join(p.get('failed_gates', []))}; smallest passing tolerance: {p.get('min_passing')}")
    return EXIT_OK if res["status"] == "PASSED" else EXIT_GATE_FAILED
