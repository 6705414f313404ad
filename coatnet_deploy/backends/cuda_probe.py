"""Probe the NVIDIA driver in a subprocess before anything touches TensorRT.

Why a subprocess: without a working driver, ``tensorrt.Runtime(logger)`` logs "CUDA initialization
failure" yet returns a half-made object and the next call segfaults (see FIELD-NOTES, TensorRT).
A broken driver can also crash ``cuInit`` itself. Running the probe in a child process means the
worst case is a clear reason string here, never a dead parent.

Stdlib only: this module is imported by ``capabilities`` (the ``targets`` command) and by the
torch-free device runtime. ``python -m coatnet_deploy.backends.cuda_probe`` prints the probe as JSON.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

# CUDA driver API enums (cuda.h, CUdevice_attribute).
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75
CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76

# The CUresult codes a user is likely to meet, named the way cuda.h names them; cuGetErrorName is
# asked first, this table is the fallback when it is missing or fails.
_CU_ERRORS = {
    1: "CUDA_ERROR_INVALID_VALUE",
    2: "CUDA_ERROR_OUT_OF_MEMORY",
    3: "CUDA_ERROR_NOT_INITIALIZED",
    4: "CUDA_ERROR_DEINITIALIZED",
    34: "CUDA_ERROR_STUB_LIBRARY",
    35: "CUDA_ERROR_INSUFFICIENT_DRIVER",
    46: "CUDA_ERROR_DEVICES_UNAVAILABLE",
    100: "CUDA_ERROR_NO_DEVICE",
    101: "CUDA_ERROR_INVALID_DEVICE",
    303: "CUDA_ERROR_SHARED_OBJECT_INIT_FAILED",
    304: "CUDA_ERROR_OPERATING_SYSTEM",
    803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
    804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
    999: "CUDA_ERROR_UNKNOWN",
}

TENSORRT_INSTALL_HINT = (
    "TensorRT Python package not installed (pip install tensorrt-cu12 on x86, "
    "or the JetPack python3-libnvinfer package on Jetson)"
)


@dataclass
class CudaProbe:
    """What the driver said. ``ok`` is True only when cuInit succeeded and at least one device exists."""

    ok: bool
    reason: str
    driver_version: str | None = None  # "12.6" from cuDriverGetVersion (12060)
    device_count: int = 0
    devices: list[dict[str, Any]] = field(default_factory=list)  # {name, compute_capability "8.7", total_memory bytes}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def gpu_name(self) -> str | None:
        return self.devices[0]["name"] if self.devices else None

    @property
    def compute_capability(self) -> str | None:
        return self.devices[0]["compute_capability"] if self.devices else None


# --------------------------------------------------------------------------------------------
# Child side: runs in ``python -m coatnet_deploy.backends.cuda_probe``.
# --------------------------------------------------------------------------------------------
def _error_name(lib: Any, code: int) -> str:
    name = _CU_ERRORS.get(code)
    try:
        out = ctypes.c_char_p()
        if lib.cuGetErrorName(ctypes.c_int(code), ctypes.byref(out)) == 0 and out.value:
            name = out.value.decode()
    except (AttributeError, OSError):
        pass
    return f"{name or 'CUDA error'} ({code})"


def _probe_in_this_process() -> dict[str, Any]:
    """Talk to libcuda directly. Only ever called in the child process."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return CudaProbe(False, "libcuda.so.1 not found (no NVIDIA driver)").to_dict()

    rc = lib.cuInit(ctypes.c_uint(0))
    if rc != 0:
        return CudaProbe(False, f"cuInit failed with {_error_name(lib, rc)}").to_dict()

    ver = ctypes.c_int(0)
    driver = None
    if lib.cuDriverGetVersion(ctypes.byref(ver)) == 0:
        driver = f"{ver.value // 1000}.{(ver.value % 1000) // 10}"

    count = ctypes.c_int(0)
    rc = lib.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0:
        return CudaProbe(False, f"cuDeviceGetCount failed with {_error_name(lib, rc)}", driver).to_dict()
    if count.value == 0:
        return CudaProbe(False, "the NVIDIA driver sees no CUDA device", driver).to_dict()

    devices = []
    for i in range(count.value):
        dev = ctypes.c_int(0)
        rc = lib.cuDeviceGet(ctypes.byref(dev), ctypes.c_int(i))
        if rc != 0:
            return CudaProbe(False, f"cuDeviceGet({i}) failed with {_error_name(lib, rc)}", driver, count.value).to_dict()
        name = ctypes.create_string_buffer(256)
        lib.cuDeviceGetName(name, ctypes.c_int(len(name)), dev)
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        lib.cuDeviceGetAttribute(ctypes.byref(major), ctypes.c_int(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR), dev)
        lib.cuDeviceGetAttribute(ctypes.byref(minor), ctypes.c_int(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR), dev)
        mem = ctypes.c_size_t(0)
        # Prefer the _v2 symbol: cuDeviceTotalMem (v1) returns a 32-bit size on old drivers.
        total_mem = getattr(lib, "cuDeviceTotalMem_v2", None) or lib.cuDeviceTotalMem
        total_mem(ctypes.byref(mem), dev)
        devices.append({"name": name.value.decode(errors="replace"),
                        "compute_capability": f"{major.value}.{minor.value}",
                        "total_memory": int(mem.value)})
    first = devices[0]
    reason = f"{first['name']} (compute {first['compute_capability']}), driver CUDA {driver}"
    return CudaProbe(True, reason, driver, count.value, devices).to_dict()


# --------------------------------------------------------------------------------------------
# Parent side.
# --------------------------------------------------------------------------------------------
_CACHE: dict[str, Any] = {}


def probe_cuda(timeout: float = 20) -> CudaProbe:
    """Probe the NVIDIA driver in a child process (cached for this process) -> CudaProbe.

    Never raises: a crash, hang or garbage output in the child becomes ``ok=False`` with the reason.
    """
    if "probe" in _CACHE:
        return _CACHE["probe"]
    # Run this file by path (stdlib only at top level) so the child needs neither the package on
    # sys.path nor any of its dependencies.
    cmd = [sys.executable, os.path.abspath(__file__)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        result = CudaProbe(False, f"CUDA probe did not answer within {timeout:g} s (driver hung in cuInit?)")
    except OSError as exc:
        result = CudaProbe(False, f"could not start the CUDA probe subprocess: {exc}")
    else:
        result = _parse_child(proc.returncode, proc.stdout, proc.stderr)
    _CACHE["probe"] = result
    return result


def _parse_child(returncode: int, stdout: str, stderr: str) -> CudaProbe:
    if returncode < 0:
        return CudaProbe(False, f"CUDA probe crashed with signal {-returncode} (broken NVIDIA driver?)")
    lines = [ln for ln in stdout.strip().splitlines() if ln.strip()]
    try:
        data = json.loads(lines[-1])
        return CudaProbe(**data)
    except (IndexError, ValueError, TypeError):
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        return CudaProbe(False, f"CUDA probe failed (exit {returncode}): {tail}")


def clear_cache() -> None:
    """Forget the cached probe (tests; a driver that came up after start)."""
    _CACHE.clear()


def tensorrt_status() -> tuple[bool, str]:
    """(can TensorRT run here, why). Probes CUDA first; only then looks for the package, never imports it."""
    probe = probe_cuda()
    if not probe.ok:
        return False, f"no usable NVIDIA GPU: {probe.reason}"
    if importlib.util.find_spec("tensorrt") is None:
        return False, TENSORRT_INSTALL_HINT
    return True, f"TensorRT installed; {probe.reason}"


#: FP8 (E4M3) tensor cores: Ada (8.9), Hopper (9.0), Blackwell (10.0, 12.0) and newer
FP8_MIN_COMPUTE_CAPABILITY = (8, 9)


def _cc_tuple(cc: str | None) -> tuple[int, ...] | None:
    try:
        return tuple(int(x) for x in str(cc).split("."))
    except (TypeError, ValueError):
        return None


def fp8_refusal(probe: CudaProbe) -> str | None:
    """Why this machine's GPU cannot run an FP8 engine (naming the GPU and its compute capability), or None.

    None also when there is no GPU to judge: the caller's CUDA check says that.
    """
    if not probe.ok or not probe.devices:
        return None
    cc = _cc_tuple(probe.compute_capability)
    if cc is not None and cc < FP8_MIN_COMPUTE_CAPABILITY:
        need = ".".join(str(x) for x in FP8_MIN_COMPUTE_CAPABILITY)
        return (f"FP8 needs compute capability {need} or higher (Ada, Hopper, Blackwell); this GPU, {probe.gpu_name}, "
                f"is compute capability {probe.compute_capability}")
    return None


def trt_version() -> str:
    """The installed TensorRT version string ("10.3.0"). Imports tensorrt, so only after the probe passed."""
    ok, reason = tensorrt_status()
    if not ok:
        from coatnet_deploy.errors import TargetUnavailable

        raise TargetUnavailable("TensorRT cannot be used on this machine", reason)
    import tensorrt as trt  # noqa: PLC0415 - only after the probe, by design

    return str(trt.__version__)


def main() -> int:
    print(json.dumps(_probe_in_this_process()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
