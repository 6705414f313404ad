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


#: /proc/cpuinfo flags that NumPy's CPU dispatcher does not probe, by the name ``features`` gives them
_CPUINFO_ONLY = {"avx_vnni": "AVX_VNNI", "amx_int8": "AMX_INT8", "amx_bf16": "AMX_BF16", "amx_fp16": "AMX_FP16",
                 "avx_vnni_int8": "AVX_VNNI_INT8"}
#: names ``features`` gives -> the /proc/cpuinfo flags of the same instructions (cpu_has_vnni, int8_isa)
_AS_FLAGS = {"AVX512VNNI": "avx512_vnni", "AVX512F": "avx512f", "AVX512BF16": "avx512_bf16", "AVX512FP16": "avx512_fp16",
             "AVX2": "avx2", "SSE41": "sse4_1", **{v: k for k, v in _CPUINFO_ONLY.items()}}


def machine() -> str:
    """``x86_64`` or ``aarch64`` (the names device profiles use)."""
    m = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(m, m)


def features() -> frozenset[str]:
    """The instruction-set features of the CPU this process runs on, in NumPy's names (AVX2, AVX512F,
    AVX512VNNI, ASIMDDP, ...) plus AVX_VNNI / AMX_INT8 / AMX_BF16 / AMX_FP16 from /proc/cpuinfo.

    NumPy asks the CPU itself (CPUID on x86, HWCAP on ARM). /proc/cpuinfo is the kernel's view of the
    real machine: under an emulator (qemu-user, which passes the host's file through) it describes the
    wrong CPU, so its extra flags count only where it agrees with what the CPU answered.
    """
    global _features
    if _features is None:
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as found  # NumPy 2
        except ImportError:  # pragma: no cover - NumPy 1.x
            from numpy.core._multiarray_umath import __cpu_features__ as found
        have = {k for k, v in found.items() if v}
        flags = cpu_flags()
        agrees = ("AVX2" in have) == ("avx2" in flags) and ("AVX512F" in have) == ("avx512f" in flags)
        if machine() == "x86_64" and flags and agrees:
            have |= {name for flag, name in _CPUINFO_ONLY.items() if flag in flags}
        _features = frozenset(have)
    return _features


_features: frozenset[str] | None = None


def _flags_here() -> set[str]:
    # cpuinfo-style flags for this CPU, from ``features`` (right under an emulator too)
    return {flag for name, flag in _AS_FLAGS.items() if name in features()}


def cpu_has_vnni(flags: set[str] | None = None, onednn: bool = False) -> bool:
    """True when the CPU has an int8 dot-product instruction (AVX-512 VNNI, AVX-VNNI or AMX-INT8).

    Without one, x86 int8 kernels multiply u8 x s8 pairs with ``pmaddubsw``, which adds two
    products in int16 and saturates: full-range int8 weights then lose signal.
    ``onednn``: for runtimes built on oneDNN (OpenVINO's CPU plugin), which honour the
    ``ONEDNN_MAX_CPU_ISA`` cap: capped below VNNI, they run as on a CPU without it.
    """
    flags = _flags_here() if flags is None else flags
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
    if flags is None and machine() == "aarch64":
        f = features()
        return "neon i8mm" if "I8MM" in f else "neon dotprod" if "ASIMDDP" in f else "neon (no dotprod)"
    flags = _flags_here() if flags is None else flags
    if "amx_int8" in flags:
        return "amx-int8"
    if "avx512_vnni" in flags:
        return "avx512-vnni"
    if "avx_vnni" in flags:
        return "avx-vnni"
    if "avx2" in flags:
        return "avx2 (no vnni)"
    if "sse4_1" in flags:
        return "sse4.1 (no vnni)"
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
