"""Emulated CPUs (QEMU user-mode): the one runner that starts a device-side python on another CPU.

x86 CPUs run this installation's own python under ``qemu-x86_64-static -cpu MODEL``. aarch64 CPUs run
Debian's arm64 python with the aarch64 wheels that ``tools/devices/aarch64-sysroot.sh`` lays out
(``build/aarch64`` in a checkout, or ``COATNET_DEPLOY_AARCH64_ROOT``) under ``qemu-aarch64-static -cpu
MODEL -L SYSROOT``, with an ARM /proc/cpuinfo for that CPU in the sysroot (ORT's cpuinfo crashes on the
x86 host's file, which qemu-user passes through). The device check and every ``worker --emulate`` node
start their probes through ``command`` here. Standard library only: the device runtime imports it.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from coatnet_deploy.errors import UserError

#: the directory that holds the coatnet_deploy package (a checkout's root, or site-packages)
PACKAGE_PARENT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Cpu:
    name: str  # as tables and `worker --emulate` name it
    arch: str
    qemu: str  # the -cpu argument
    profile: str | None  # the device profile whose floor it stands for (None: no profile of its own)
    part: str = ""  # aarch64: the MIDR part number ORT's cpuinfo reads from /proc/cpuinfo
    features: str = ""  # aarch64: the /proc/cpuinfo Features line
    stands_for: str = ""


CPUS = {c.name: c for c in (
    Cpu("haswell", "x86_64", "Haswell", "x86-64-v3", stands_for="x86-64-v3: AVX2, FMA (no AVX-512, no VNNI)"),
    Cpu("nehalem", "x86_64", "Nehalem", "x86-64-v2", stands_for="x86-64-v2: SSE4.2 (no AVX)"),
    Cpu("cortex-a72", "aarch64", "cortex-a72", "aarch64-v8.0", "0xd08", "fp asimd evtstrm crc32 cpuid", "ARMv8.0: Raspberry Pi 4"),
    Cpu("neoverse-n1", "aarch64", "neoverse-n1", "aarch64-v8.2-dotprod", "0xd0c",
        "fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp", "ARMv8.2 + dotprod: Jetson Orin's CPU class"),
    Cpu("max", "aarch64", "max", None, "0xd0c", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma "
        "lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm sb paca pacg dcpodp sve2 sveaes svepmull "
        "svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh bti sme", "the newest QEMU 7.2 offers: ARMv9 with SVE2 and SME"),
)}


def get(name: str) -> Cpu:
    """An emulated CPU by its name or QEMU model (``cortex-a72``, ``Haswell``); UserError listing them otherwise."""
    key = str(name).strip().lower()
    for c in CPUS.values():
        if key in (c.name, c.qemu.lower()):
            return c
    raise UserError(f"unknown emulated CPU '{name}'", f"the emulated CPUs are {', '.join(CPUS)}",
                    "pick one of them (tools/devices and docs/DEVICES.md say what each stands for)")


def for_profile(profile: str) -> Cpu | None:
    """The emulated CPU that stands for a device profile's floor, or None where QEMU has none."""
    return next((c for c in CPUS.values() if c.profile == profile), None)


def sysroot_dir() -> Path:
    """Where the aarch64 sysroot and wheels are: ``COATNET_DEPLOY_AARCH64_ROOT``, else build/aarch64 of the checkout."""
    env = os.environ.get("COATNET_DEPLOY_AARCH64_ROOT")
    return Path(env) if env else PACKAGE_PARENT / "build" / "aarch64"


def _qemu(arch: str) -> str | None:
    return shutil.which(f"qemu-{arch}-static")


def missing(cpu: Cpu) -> str | None:
    """Why this machine cannot emulate ``cpu`` (one line), or None when it can."""
    if _qemu(cpu.arch) is None:
        return f"qemu-{cpu.arch}-static is not installed (apt-get install qemu-user-static)"
    if cpu.arch == "aarch64":
        root = sysroot_dir()
        if not (root / "site" / ".wheels-done").is_file() or not (root / "sysroot" / "usr/bin/python3.11").is_file():
            return (f"no aarch64 sysroot in {root} (run `make install` with the arm64 architecture, or "
                    "tools/devices/aarch64-sysroot.sh DIR and set COATNET_DEPLOY_AARCH64_ROOT=DIR)")
    return None


def check_ready(cpu: Cpu) -> None:
    """UserError (one line) when this machine cannot emulate ``cpu``."""
    why = missing(cpu)
    if why:
        raise UserError(f"cannot emulate {cpu.name}", why, "install it, or join this node without --emulate")


def command(cpu: Cpu, args: list[str], python: str | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``python ARGS`` on ``cpu`` under QEMU user-mode.

    x86: ``python`` (default: this interpreter) under ``qemu-x86_64-static``; aarch64: the sysroot's
    python with the aarch64 wheels and this package on its path.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ONEDNN_MAX_CPU_ISA")}
    env["PYTHONUNBUFFERED"] = "1"
    if cpu.arch == "x86_64":
        return [_qemu("x86_64") or "qemu-x86_64-static", "-cpu", cpu.qemu, python or sys.executable, *args], env
    root = sysroot_dir()
    sysroot = cpu_sysroot(root, cpu)
    env["PYTHONPATH"] = f"{root / 'site'}:{PACKAGE_PARENT}"
    return [_qemu("aarch64") or "qemu-aarch64-static", "-cpu", cpu.qemu, "-L", str(sysroot), str(sysroot / "usr/bin/python3.11"), *args], env


def cpu_sysroot(root: Path, cpu: Cpu) -> Path:
    """``root/cpus/<cpu>``: the shared sysroot seen through links, with this CPU's own /proc/cpuinfo.

    qemu-user passes the x86 host's /proc/cpuinfo through (ORT's cpuinfo crashes on it); with -L it
    serves the prefix's file instead. One prefix per CPU, so that emulated nodes of different CPUs
    running at once never see each other's file.
    """
    shared = root / "sysroot"
    mine = root / "cpus" / cpu.name
    (mine / "proc").mkdir(parents=True, exist_ok=True)
    for entry in shared.iterdir():
        link = mine / entry.name
        if entry.name != "proc" and not link.is_symlink():
            try:
                link.symlink_to(entry)
            except FileExistsError:  # another node made it first
                pass
    write_cpuinfo(mine, cpu)
    return mine


def write_cpuinfo(sysroot: Path, cpu: Cpu, cores: int = 2) -> None:
    """An ARM /proc/cpuinfo (one block per core, with the CPU ID fields ORT's cpuinfo reads) under ``sysroot``."""
    block = ("processor\t: {i}\nBogoMIPS\t: 50.00\nFeatures\t: {f}\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
             "CPU variant\t: 0x0\nCPU part\t: {p}\nCPU revision\t: 1\n\n")
    text = "".join(block.format(i=i, f=cpu.features, p=cpu.part) for i in range(cores))
    path = sysroot / "proc" / "cpuinfo"
    path.parent.mkdir(exist_ok=True)
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(f"cpuinfo.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
