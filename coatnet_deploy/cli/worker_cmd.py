"""coatnet-deploy worker: join a Ray cluster as a fleet node (the cluster extra)."""

from __future__ import annotations

import click

from coatnet_deploy.cli import cli


@cli.command("worker")
@click.option("--address", type=str, help="The Ray head to join (HOST:PORT).")
@click.option("--device", "device", type=str, help="Comma-separated device profiles this node offers (default: what host.py says the CPU covers).")
@click.option("--emulate", type=str, help="Offer an emulated CPU instead (cortex-a72, neoverse-n1, Haswell, Nehalem, max): device work runs "
              "under QEMU user-mode, results say 'emulated' and carry no latency.")
@click.option("--build/--no-build", default=None, help="Offer exports (default: where PyTorch is installed and the node does not emulate).")
@click.option("--emulator", is_flag=True, help="Also take --emulate-missing cells for any CPU QEMU can emulate.")
@click.option("--node-ip-address", "node_ip", type=str, help="The address other nodes reach this one at (Ray's own option).")
@click.option("--num-cpus", type=click.IntRange(min=0), help="CPUs Ray may schedule here (default: all).")
@click.option("--head", is_flag=True, help="Start a new cluster's head here instead of joining one (no dashboard).")
@click.option("--port", type=int, help="With --head: the port the head listens on.")
@click.option("--dry-run", is_flag=True, help="Print what the node offers and the ray start line; start nothing.")
def worker_cmd(address, device, emulate, build, emulator, node_ip, num_cpus, head, port, dry_run):
    """Join a Ray cluster as a fleet node that says what it is: its device profiles (asked of host.py),
    a GPU's compute capability and TensorRT where present, whether it builds. `matrix --cluster`
    places each cell's build and device proof by those resources. Runs until Ctrl-C."""
    from coatnet_deploy.fleet.worker import run_worker

    devices = [d.strip() for d in device.split(",") if d.strip()] if device else None
    return run_worker(address, devices, emulate, build, emulator, node_ip, num_cpus, head=head, port=port, dry_run=dry_run,
                      echo=click.echo)
