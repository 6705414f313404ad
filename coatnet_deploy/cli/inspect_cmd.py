"""coatnet-deploy inspect: the manifest in brief, checksums verified."""

from __future__ import annotations

import click

from coatnet_deploy.cli import cli
from coatnet_deploy.cli.common import emit_json, json_option


@cli.command("inspect")
@click.argument("bundle", type=str)
@json_option
def inspect_cmd(bundle, as_json):
    """Summarise a bundle's manifest and verify every artifact's size and SHA-256."""
    from coatnet_deploy.bundle import verify_bundle

    m = verify_bundle(bundle)
    summary = {
        "bundle": bundle, "checksums": "ok", "schema_version": m["schema_version"], "status": m.get("status"),
        "model": m["model"].get("name"), "num_classes": m["model"].get("num_classes"), "image_size": m["model"].get("image_size"),
        "weights_sha256": m["model"].get("weights_sha256"), "labels": m["model"].get("labels"),
        "weights_source": {k: m["model"].get(k) for k in ("weights_format", "weights_file", "state_dict", "ema", "config_sha256")},
        "provenance": m["model"].get("provenance"), "target": m["target"], "precision": m["precision"],
        "input": m["input"], "preprocess": m["preprocess"], "engine": {k: v for k, v in m.get("engine", {}).items() if k != "settings"},
        "artifacts": m["artifacts"], "versions": m.get("versions", {}), "created": m.get("created"),
    }
    if as_json:
        emit_json(summary)
        return 0
    click.echo(f"bundle      {bundle}  (schema {m['schema_version']}, created {m.get('created')})")
    click.echo(f"status      {m.get('status')}")
    click.echo(f"model       {summary['model']}  classes {summary['num_classes']}  image {summary['image_size']}  weights {summary['weights_sha256'] or 'random init'}")
    ws = summary["weights_source"]
    if ws.get("weights_format"):
        taken = f"  state dict {ws['state_dict']}" if ws.get("state_dict") else ""
        click.echo(f"weights     {ws['weights_format']}: {ws['weights_file']}{taken}{'  (--ema)' if ws.get('ema') else ''}")
    if summary["labels"]:
        shown = ", ".join(summary["labels"][:5]) + (", ..." if len(summary["labels"]) > 5 else "")
        click.echo(f"labels      {shown}")
    if summary["provenance"]:
        # old bundles have no provenance: nothing to show
        click.echo("from        " + ", ".join(f"{k}: {v}" for k, v in summary["provenance"].items()))
    click.echo(f"target      {m['target']} / {m['precision']}")
    inp = m["input"]
    click.echo(f"input       {inp['name']} {inp['layout']} {inp['dtype']} {inp['shape']}")
    pp = m["preprocess"]
    click.echo(f"preprocess  resize {pp.get('resize')} crop {pp.get('crop')} {pp.get('crop_mode', 'center')} {pp.get('interpolation')} "
               f"crop_pct {pp.get('crop_pct')} mean {pp.get('mean')} std {pp.get('std')}")
    click.echo("artifacts   (all checksums verified)")
    for a in m["artifacts"]:
        click.echo(f"  {a['path']:<20} {a['bytes']:>12,d} B  sha256 {a['sha256'][:16]}")
    click.echo("versions    " + ", ".join(f"{k} {v}" for k, v in sorted(m.get("versions", {}).items())))
    return 0
