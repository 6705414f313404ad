"""coatnet-deploy targets: the registry's target x precision cells, and whether each runs here."""

from __future__ import annotations

import click

from coatnet_deploy.cli import cli
from coatnet_deploy.cli.common import emit_json, json_option


@cli.command("targets")
@click.option("--defer-build", is_flag=True, help="Also count cells whose engine would be built on the device.")
@json_option
def targets_cmd(defer_build, as_json):
    """Target x precision: whether each can run HERE, and why not."""
    from coatnet_deploy.targets import table_rows

    rows = table_rows(defer_build=defer_build)
    if as_json:
        emit_json(rows)
        return 0
    click.echo(f"{'target':<12} {'precision':<9} {'here':<5} {'artifacts':<30} reason")
    for r in rows:
        click.echo(f"{r['target']:<12} {r['precision']:<9} {'yes' if r['available'] else 'no':<5} {r['artifacts']:<30} {r['reason']}")
    click.echo("")
    for name, summary in dict((r["target"], r["summary"]) for r in rows).items():
        click.echo(f"{name:<12} {summary}")
    click.echo(_shipped_summary())
    return 0


def _shipped_summary() -> str:
    """Where the shipped configs and calibration photos are, and the names `--config` takes."""
    from coatnet_deploy.shipped import shipped_configs, shipped_dir

    configs, calibration = shipped_dir("export_configs"), shipped_dir("calibration")
    return "\n".join([
        f"\nshipped configs (export --config NAME): {', '.join(shipped_configs('export')) or 'none'}",
        f"  matrix --config NAME: {', '.join(shipped_configs('matrix')) or 'none'}",
        f"  in {configs or 'nowhere: the package data is missing'}",
        f"default calibration photos: {calibration or 'none (pass --calibration DIR)'}",
    ])
