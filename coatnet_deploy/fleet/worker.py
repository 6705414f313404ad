"""``coatnet-deploy worker``: this machine joins a Ray cluster as a fleet node, saying what it is.

The node's resources and labels come from ``nodes.node_spec`` (``host.py`` by default; ``--device`` or
``--emulate`` override it). Ray's own ``ray start`` does the joining, in the foreground (``--block``),
so Ctrl-C or SIGTERM takes the node out of the cluster; its tasks are retried elsewhere by the driver.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from coatnet_deploy.errors import UserError
from coatnet_deploy.fleet import nodes


def ray_start_command(address: str, spec: nodes.NodeSpec, node_ip: str | None = None, num_cpus: int | None = None,
                      head: bool = False, port: int | None = None) -> list[str]:
    """The ``ray start`` line (run by this interpreter) that joins ``address`` (or starts a head) with ``spec``'s resources."""
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--block", "--disable-usage-stats",
           f"--resources={json.dumps(spec.resources(), sort_keys=True)}",
           f"--labels={json.dumps(spec.labels(), sort_keys=True)}"]
    if head:
        cmd += ["--head", "--include-dashboard=false"] + ([f"--port={port}"] if port else [])
    else:
        cmd += [f"--address={address}"]
    if node_ip:
        cmd.append(f"--node-ip-address={node_ip}")
    if num_cpus is not None:
        cmd.append(f"--num-cpus={num_cpus}")
    return cmd


def run_worker(address: str | None, device: list[str] | None, emulate: str | None, build: bool | None, emulator: bool,
               node_ip: str | None, num_cpus: int | None, head: bool = False, port: int | None = None, dry_run: bool = False,
               echo=print) -> int:
    """Join (or, with ``head``, start) a cluster as this node; blocks until the node stops -> ray's exit status."""
    import importlib.util

    # --dry-run needs no Ray: it says what a node would offer (KubeRay's rayStartParams are written from it)
    if not dry_run and importlib.util.find_spec("ray") is None:
        raise UserError("`coatnet-deploy worker` needs Ray", "the `cluster` extra is not installed", "pip install 'coatnet-deploy[cluster]'")
    if not head and not address:
        raise UserError("no cluster address", "a worker joins an existing Ray head", "pass --address HOST:PORT (or --head to start one)")
    spec = nodes.node_spec(device=device, emulate=emulate, build=build, emulator=emulator)
    cmd = ray_start_command(address or "", spec, node_ip, num_cpus, head, port)
    what = ", ".join(sorted(spec.resources())) or "nothing"
    echo(f"node offers: {what}" + (f" (device side emulated as {spec.emulate})" if spec.emulate else ""))
    if dry_run:
        echo(" ".join(cmd))
        return 0
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    if spec.emulate:
        env["COATNET_DEPLOY_EMULATE"] = spec.emulate
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 130
