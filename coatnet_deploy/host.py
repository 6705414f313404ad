"""Facts about the machine an export or a benchmark runs on: CPU flags and the report's environment block."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def cpu_flags() -> set[str]:
    """The CPU feature flags /proc/cpuinfo lists (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_vnni(flags: set[str] | None = None, onednn: bool = False) -> bool:
    """True when the CPU has an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX-INT8).

    Without one, x86 int8 kernels multiply u8 x s8 pairs with ``pmaddubsw``, which adds two
    products in int16 and saturates: full-range int8 weights then lose signal.
    ``onednn``: for runtimes built on oneDNN (OpenVINO's CPU plugin), which honour the
    ``ONEDNN_MAX_CPU_ISA`` cap: capped below VNNI, they run as on a CPU without it.
    """
    flags = cpu_flags() if flags is None else flags
    has = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() if onednn else ""
    if cap and cap != "ALL" and not any(w in cap for w in ("VNNI", "AMX", "BF16", "FP16")):
        return False
    return has


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def int8_isa(flags: set[str] | None = None) -> str:
    """The best int8 matrix instruction set here, as the reports name it."""
    flags = cpu_flags() if flags is None else flags
    if "amx_int8" in flags:
        return "amx-int8"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx2" in flags:
        return "avx2 (no vnni)"
    return "none known"


def environment(versions: dict[str, str], threads: int | None) -> dict[str, Any]:
    """The report's ``environment`` block: python, platform, cpu, threads, library versions, gpu."""
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "int8_isa": int8_isa(), "threads": threads, "versions": {k: v for k, v in versions.items() if k != "python"},
            "gpu": _gpu_name()}


def _gpu_name() -> str | None:
    # Only where torch is already loaded (an export): the device runtime must not import it for this.
    if "torch" not in sys.modules:
        return None
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001 - a broken CUDA install means "no GPU" for the report
        return None
    return None
