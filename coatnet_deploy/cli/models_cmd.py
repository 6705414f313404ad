"""`coatnet-deploy models`: every variant with params, GMACs at its default size and the timm name."""

from __future__ import annotations

import click

from coatnet_deploy.cli import cli
from coatnet_deploy.cli.common import emit_json, json_option


@cli.command("models")
@json_option
def models_command(as_json: bool) -> int:
    """List the model variants: name, params (M), GMACs at the default image size, timm name."""
    from coatnet_deploy.models import count_params, gmacs, list_models, model_info

    rows = []
    for name in list_models():
        info = model_info(name)
        rows.append({
            "name": name,
            "params_m": round(count_params(name) / 1e6, 3),
            "gmacs": round(gmacs(name), 3),
            "image_size": info.default_image_size,
            "timm_name": info.timm_name,
            "num_classes": info.num_classes,
            "preprocess": info.preprocess,
            "description": info.description,
        })
    if as_json:
        emit_json({"models": rows})
        return 0
    header = ("name", "params (M)", "GMACs", "size", "timm name", "notes")
    table = [header] + [(r["name"], f"{r['params_m']:.2f}", f"{r['gmacs']:.2f}", str(r["image_size"]),
                         r["timm_name"] or "-", r["description"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        click.echo("  ".join(c.ljust(w) if i == 0 or i >= 4 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(row[:-1], widths))) + "  " + row[-1])
    click.echo("GMACs: convolutions, linear layers and attention matmuls for one image at the default size.")
    return 0
