"""examples/kuberay/raycluster.yaml: every worker group advertises exactly what `coatnet-deploy worker`
computes for that kind of node (fleet.nodes.NodeSpec), so a cell's placement finds it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from coatnet_deploy.fleet import nodes

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "kuberay" / "raycluster.yaml"

#: what each group stands for, as a NodeSpec
GROUPS = {
    "builders": nodes.NodeSpec(build=True, profiles=()),
    "edge-x86-64-v3": nodes.NodeSpec(build=False, profiles=("x86-64-v3",)),
    "xeon-amx": nodes.NodeSpec(build=False, profiles=("x86-64-v4-amx",)),
    "jetson-orin": nodes.NodeSpec(build=False, profiles=("aarch64-v8.2-dotprod",), gpu={"compute_capability": "8.7", "tensorrt": "10.3.0"}),
    "emulated-cortex-a72": nodes.NodeSpec(build=False, profiles=("aarch64-v8.0",), emulate="cortex-a72"),
}


def _param(value: str) -> dict:
    # KubeRay puts the value into the shell line `ray start --resources=...` as written: a double-quoted
    # JSON string with its inner quotes escaped, which the shell unescapes
    assert value.startswith('"') and value.endswith('"')
    return json.loads(value[1:-1].replace('\\"', '"'))


def test_groups_advertise_what_the_worker_would():
    doc = yaml.safe_load(EXAMPLE.read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    assert doc["spec"]["rayVersion"] == "2.60.0"
    groups = {g["groupName"]: g for g in doc["spec"]["workerGroupSpecs"]}
    assert sorted(groups) == sorted(GROUPS)
    for name, spec in GROUPS.items():
        params = groups[name]["rayStartParams"]
        assert _param(params["resources"]) == spec.resources(), name
        assert _param(params["labels"]) == spec.labels(), name
    head = doc["spec"]["headGroupSpec"]["rayStartParams"]
    assert head["num-cpus"] == "0" and head["include-dashboard"] == "false"


def test_every_device_kind_of_the_example_matrix_has_a_group():
    offered = set()
    for spec in GROUPS.values():
        offered |= set(spec.resources())
    for device in ("x86-64-v3", "x86-64-v4-amx", "aarch64-v8.2-dotprod", "gpu-cc8.7", "aarch64-v8.0"):
        placement, why = nodes.placement_for(device, offered, False)
        assert placement is not None, why
