"""coatnet-deploy targets: the registry's target x precision cells, and whether each runs here."""

from __future__ import annotations

import click

from coatnet_deploy.cli import cli
from coatnet_deploy.cli.common import emit_json, json_option


@cli.command("targets")
@click.option("--defer-build", is_flag=True, help="Also count cells whose engine would be built on the device.")
@click.option("--device", type=str, help="Show a device profile: what its bundles need and what the export chooses for it "
                                         "(`--device list`: every profile).")
@json_option
def targets_cmd(defer_build, device, as_json):
    """Target x precision: whether each can run HERE, and why not."""
    from coatnet_deploy.targets import table_rows

    if device is not None:
        return _device(device, as_json)

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


def _device(name: str, as_json: bool) -> int:
    from coatnet_deploy import devices, host
    from coatnet_deploy import targets as registry

    chosen = [devices.get(n) for n in devices.names()] if name.strip().lower() == "list" else [devices.get(name)]
    if as_json:
        emit_json([{"profile": p.name, "arch": p.arch, "summary": p.summary, "examples": p.examples, "features": list(p.features),
                    "emulated_by": p.qemu, "emulation_gap": p.qemu_gap,
                    "this_cpu_lacks": p.covers(host.features(), host.machine()),
                    "cells": {f"{t.name}/{prec}": {"choices": p.choices(t.name, prec), "needs": p.needs(t.name, prec)}
                              for t in registry.all_targets() if t.cpu for prec in t.cells}} for p in chosen])
        return 0
    for i, p in enumerate(chosen):
        if i:
            click.echo("")
        for line in devices.describe(p):
            click.echo(line)
        for t in registry.all_targets():
            if not t.cpu:
                continue
            for prec in t.cells:
                needs = p.needs(t.name, prec)
                click.echo(f"  {t.name + '/' + prec:<18} needs {', '.join(devices.show_need(n) for n in needs) if needs else 'nothing: runs wherever its runtime runs'}")
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
