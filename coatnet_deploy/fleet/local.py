"""A multi-node Ray cluster on this one machine (``ray.cluster_utils.Cluster``, as Ray tests itself):
a head, and one Ray node per ``NodeSpec``, each advertising what ``worker`` would. Loopback only, no
dashboard. The device check (tools/devices/check.py), the cluster tests and benchmarks/bench_fleet.py
start their fleets through it; ``worker`` is how real machines join.
"""

from __future__ import annotations

import os
from typing import Any

from coatnet_deploy.fleet.nodes import NodeSpec

#: 150 MiB object store per node (Ray's own test default): bundles of the tiny test models are a few MB
OBJECT_STORE_BYTES = 150 * 1024 * 1024


class LocalCluster:
    """``with LocalCluster([builder, device, emulated]) as c: RayScheduler(c.address)``; ``c.kill(i)`` stops node i."""

    def __init__(self, specs: list[NodeSpec], node_cpus: int = 1) -> None:
        from ray.cluster_utils import Cluster

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False,
            "object_store_memory": OBJECT_STORE_BYTES})
        self.specs = list(specs)
        self.nodes: list[Any] = []
        for spec in self.specs:
            self.add(spec, node_cpus)

    def add(self, spec: NodeSpec, num_cpus: int = 1) -> Any:
        env = {"COATNET_DEPLOY_EMULATE": spec.emulate} if spec.emulate else None
        node = self.cluster.add_node(num_cpus=num_cpus, resources=spec.resources(), labels=spec.labels(),
                                     node_ip_address="127.0.0.1", object_store_memory=OBJECT_STORE_BYTES, env_vars=env)
        self.nodes.append(node)
        return node

    @property
    def address(self) -> str:
        return self.cluster.address

    def kill(self, index: int) -> None:
        """Take node ``index`` out as a failure would (its raylet and workers killed, no clean drain)."""
        self.cluster.remove_node(self.nodes[index], allow_graceful=False)

    def shutdown(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        self.cluster.shutdown()

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
