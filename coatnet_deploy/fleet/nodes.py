"""What a fleet node is, said as Ray custom resources and labels; what a cell asks for.

A node advertises (``node_resources``):

- ``coatnet/build``: it can export (PyTorch and the exporters are installed);
- ``coatnet/device/<profile>``: every device profile its CPU covers (``host.py``), or the one
  ``--device`` names, or the profile an emulated CPU stands for;
- ``coatnet/cpu/<name>``: the emulated CPU (``--emulate``), so a check can ask for exactly that one;
- ``coatnet/emulator``: it can emulate any CPU QEMU offers (``--emulate-missing`` sends cells there);
- ``coatnet/gpu``, ``coatnet/gpu/cc<X.Y>`` and ``coatnet/tensorrt/<major>``: a CUDA GPU of that compute
  capability with that TensorRT (CUDA probed in a child process; TensorRT's version read from its package
  metadata: nothing touches TensorRT here).

One unit each, and one ``coatnet/slot`` that every device proof also asks for: a node proves one cell
at a time, so a timing never shares the node with another proof.
Its labels (``node_labels``) say how device work runs there: natively, or emulated and as which CPU.
A cell asks for one resource (``Placement``); placement by name of a host never happens.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from coatnet_deploy.errors import UserError

PREFIX = "coatnet"
BUILD = f"{PREFIX}/build"
EMULATOR = f"{PREFIX}/emulator"
GPU = f"{PREFIX}/gpu"
#: one per node: a node proves one cell at a time, so a timing never shares it with another proof
SLOT = f"{PREFIX}/slot"
#: node labels (Ray label keys): how device work runs on the node
LABEL_EMULATE = "coatnet-emulate"
LABEL_PROFILE = "coatnet-profile"
LABEL_TENSORRT = "coatnet-tensorrt"


def device_resource(profile: str) -> str:
    return f"{PREFIX}/device/{profile}"


def cpu_resource(cpu: str) -> str:
    return f"{PREFIX}/cpu/{cpu}"


def gpu_resource(device: str) -> str:
    """``gpu`` -> any TensorRT GPU; ``gpu-cc8.7`` -> a GPU of compute capability 8.7."""
    return GPU if device == "gpu" else f"{GPU}/cc{device[len('gpu-cc'):]}"


def is_gpu_device(device: str) -> bool:
    return device == "gpu" or device.startswith("gpu-cc")


def check_device_name(device: str) -> str:
    """A cell's device: a CPU profile (``coatnet-deploy targets --device``) or ``gpu`` / ``gpu-ccX.Y``; UserError otherwise."""
    from coatnet_deploy import devices

    name = str(device).strip().lower()
    if is_gpu_device(name):
        cc = name[len("gpu-cc"):]
        if name != "gpu" and not (cc.count(".") == 1 and all(p.isdigit() for p in cc.split("."))):
            raise UserError(f"unknown GPU device '{device}'", "GPU devices are 'gpu' (any) or 'gpu-ccX.Y' (a compute capability)",
                            "for example gpu-cc8.7 (Jetson Orin) or gpu-cc8.9 (L4, RTX 40)")
        return name
    if name == devices.HOST:
        raise UserError("device 'host' names no fleet node", "a fleet cell runs on whichever node advertises its profile",
                        f"name a profile: {', '.join(devices.PROFILES)}")
    devices.get(name)  # UserError listing the profiles
    return name


def host_profiles() -> list[str]:
    """The device profiles this machine's CPU covers (every feature of the class present)."""
    from coatnet_deploy import devices, host

    return [p.name for p in devices.PROFILES.values() if not p.covers(host.features(), host.machine())]


def gpu_facts() -> dict[str, Any] | None:
    """{compute_capability, name, tensorrt} of this machine's GPU where CUDA works and TensorRT is installed, else None."""
    from coatnet_deploy.backends.cuda_probe import probe_cuda

    probe = probe_cuda()
    if not probe.ok or not probe.devices or importlib.util.find_spec("tensorrt") is None:
        return None
    from importlib.metadata import PackageNotFoundError, version

    try:
        trt = version("tensorrt")
    except PackageNotFoundError:  # JetPack's python3-libnvinfer: a module without pip metadata
        trt = "installed"
    return {"compute_capability": probe.compute_capability, "name": probe.gpu_name, "tensorrt": trt}


@dataclass(frozen=True)
class NodeSpec:
    """What a node offers. ``emulate``: the emulated CPU's name (its device side runs under QEMU)."""

    build: bool
    profiles: tuple[str, ...]
    emulate: str | None = None
    emulator: bool = False
    gpu: dict[str, Any] | None = None

    def resources(self) -> dict[str, float]:
        res = {device_resource(p): 1.0 for p in self.profiles}
        if self.profiles or self.emulate or self.emulator or self.gpu:
            res[SLOT] = 1.0
        if self.build:
            res[BUILD] = 1.0
        if self.emulate:
            res[cpu_resource(self.emulate)] = 1.0
        if self.emulator:
            res[EMULATOR] = 1.0
        if self.gpu:
            res[GPU] = 1.0
            res[gpu_resource(f"gpu-cc{self.gpu['compute_capability']}")] = 1.0
            major = str(self.gpu.get("tensorrt") or "").split(".")[0]
            if major.isdigit():
                res[f"{PREFIX}/tensorrt/{major}"] = 1.0
        return res

    def labels(self) -> dict[str, str]:
        out = {LABEL_PROFILE: ",".join(self.profiles) or "none"}
        if self.emulate:
            out[LABEL_EMULATE] = self.emulate
        if self.gpu and self.gpu.get("tensorrt"):
            out[LABEL_TENSORRT] = str(self.gpu["tensorrt"])
        return out


def node_spec(device: list[str] | None = None, emulate: str | None = None, build: bool | None = None,
              emulator: bool = False) -> NodeSpec:
    """This machine as a node: asked of ``host.py`` (profiles, GPU), or as ``device`` / ``emulate`` say.

    ``build`` None: a node builds when PyTorch is installed and it does not emulate.
    """
    from coatnet_deploy.fleet import emulation

    if emulate:
        cpu = emulation.get(emulate)
        emulation.check_ready(cpu)
        profiles = tuple(device or ([cpu.profile] if cpu.profile else []))
        gpu = None
        name: str | None = cpu.name
    else:
        profiles = tuple(device) if device else tuple(host_profiles())
        gpu = gpu_facts()
        name = None
    for p in profiles:
        check_device_name(p)
    if emulator:
        missing = [why for c in emulation.CPUS.values() if (why := emulation.missing(c))]
        if missing:
            raise UserError("this node cannot be an emulator", missing[0], "install it, or join without --emulator")
    if build is None:
        build = not emulate and importlib.util.find_spec("torch") is not None
    return NodeSpec(build=build, profiles=profiles, emulate=name, emulator=emulator, gpu=gpu)


@dataclass(frozen=True)
class Placement:
    """Where a cell's device side runs: the resource it asks for, and how (native, or emulating a CPU)."""

    resource: str
    emulate: str | None = None  # --emulate-missing: run under QEMU as this CPU on an emulator node

    def to_dict(self) -> dict[str, Any]:
        return {"resource": self.resource, "emulate": self.emulate}


def placement_for(device: str, offered: set[str], emulate_missing: bool) -> tuple[Placement | None, str | None]:
    """(placement, None) when some node offers the cell's device (or an emulator may stand in), else (None, why)."""
    from coatnet_deploy.fleet import emulation

    want = gpu_resource(device) if is_gpu_device(device) else device_resource(device)
    if want in offered:
        return Placement(want), None
    if emulate_missing and not is_gpu_device(device):
        cpu = emulation.for_profile(device)
        if cpu is None:
            return None, f"no node offers {want}, and QEMU cannot emulate {device} (docs/DEVICES.md)"
        if EMULATOR in offered:
            return Placement(EMULATOR, emulate=cpu.name), None
        return None, f"no node offers {want} or {EMULATOR} (join one with `coatnet-deploy worker --emulator`)"
    hint = " (or pass --emulate-missing)" if not is_gpu_device(device) else ""
    return None, f"no node offers {want}{hint}"
