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
    return 0
