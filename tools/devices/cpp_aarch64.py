"""Run the aarch64 build of the C++ device app (``make cpp-app-aarch64`` -> build/cpp-aarch64/coatnet-classify)
under QEMU user-mode on an emulated ARM CPU, from this x86-64 machine.

    .venv/bin/python tools/devices/cpp_aarch64.py BUNDLE [IMAGE...] [--cpu cortex-a72] [--topk K]

prints one JSON object: the app's ``selftest BUNDLE --json`` and ``classify BUNDLE IMAGE... --json``
(IMAGE defaults to four of the shipped photos in calibration/), each with its exit code; exit 0 when
both exited 0. From Python (tests/test_cpp_aarch64.py, tools/devices/check.py)::

    import cpp_aarch64                       # tools/devices on sys.path
    cpp_aarch64.missing()                    # [] or what is lacking (qemu, cross compiler, sysroot, the build)
    proc = cpp_aarch64.run(["selftest", str(bundle), "--json"], cpu="cortex-a72")   # CompletedProcess (text)

How it runs: ``qemu-aarch64-static -cpu CPU -L ROOT APP ARGS...`` (binfmt_misc is not needed). ROOT is
an overlay of the sysroot that tools/devices/aarch64-sysroot.sh unpacks (build/aarch64/sysroot): its
``etc``, ``lib`` and ``usr`` are symlinks to the sysroot's, and its ``proc/cpuinfo`` describes the CPU
that ``-cpu`` emulates (qemu-user 7.2 passes the x86 host's /proc/cpuinfo through; with -L it serves
ROOT/proc/cpuinfo instead, which OpenVINO's ARM CPU plugin reads). The overlay is per CPU, in
build/cpp-aarch64/qemu-root/CPU, so the shared sysroot is never written and runs on different CPUs
cannot race. A CPU not in ``CPUINFO`` runs on the sysroot itself, with whatever cpuinfo it holds.

OpenVINO's libraries are found through the binary's RUNPATH, the absolute path of
build/aarch64/site/openvino/libs (the aarch64 wheel's libs/: libopenvino, TBB, and
libopenvino_arm_cpu_plugin.so, which libopenvino loads from its own folder): qemu looks an absolute
path up under -L first and then as it is, so no LD_LIBRARY_PATH is set (the host's is removed: it
names x86 libraries). glibc, libstdc++, libjpeg, libpng and libcrypto come from the sysroot.

Expected on stderr, and harmless: one line from oneDNN's xbyak_aarch64, ``Can't open MIDR_EL1 sysfs
entry`` (qemu-user has no /sys/devices/system/cpu/cpu*/regs; the plugin then goes by the hwcaps, which
qemu sets for the emulated CPU).

Standard library only (numpy is not needed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AARCH64_ROOT = REPO / "build" / "aarch64"  # tools/devices/aarch64-sysroot.sh's default folder
SYSROOT = AARCH64_ROOT / "sysroot"
OPENVINO_LIBS = AARCH64_ROOT / "site" / "openvino" / "libs"
BUILD = REPO / "build" / "cpp-aarch64"  # `make cpp-app-aarch64`
APP = BUILD / "coatnet-classify"
QEMU = "qemu-aarch64-static"
CROSS_CXX = "aarch64-linux-gnu-g++"
DEFAULT_CPU = "cortex-a72"

#: -cpu name -> (MIDR part, revision, /proc/cpuinfo Features line) of the CPU it stands for.
#: cortex-a72 / neoverse-n1 / max as tools/devices/check.py describes them (Raspberry Pi 4: no crypto
#: extensions; Jetson Orin's class; everything QEMU 7.2 offers).
CPUINFO = {
    "cortex-a53": ("0xd03", 4, "fp asimd evtstrm crc32 cpuid"),  # Raspberry Pi 3
    "cortex-a72": ("0xd08", 3, "fp asimd evtstrm crc32 cpuid"),  # Raspberry Pi 4
    "cortex-a76": ("0xd0b", 1, "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop "
                   "asimddp"),  # Raspberry Pi 5
    "neoverse-n1": ("0xd0c", 1, "fp asimd evtstrm crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"),
    "max": ("0xd0c", 1, "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
            "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm sb paca pacg dcpodp sve2 sveaes svepmull "
            "svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh bti sme"),
}


def missing(app: Path | None = APP) -> list[str]:
    """What this machine lacks to run the aarch64 app, one reason each ([] when nothing). ``app=None``:
    only what building it needs (tests/test_cpp_aarch64.py builds it)."""
    out = []
    if shutil.which(QEMU) is None:
        out.append(f"{QEMU} is not installed (Debian: apt-get install qemu-user-static)")
    if shutil.which(CROSS_CXX) is None:
        out.append(f"{CROSS_CXX} is not installed (Debian: apt-get install g++-aarch64-linux-gnu)")
    if not (SYSROOT / ".debs-done").is_file() or not (OPENVINO_LIBS.parent / "cmake" / "OpenVINOConfig.cmake").is_file():
        out.append(f"no aarch64 sysroot with the openvino wheel in {AARCH64_ROOT.relative_to(REPO)} "
                   "(run tools/devices/aarch64-sysroot.sh; it needs `dpkg --add-architecture arm64 && apt-get update`)")
    if app is not None and not app.is_file():
        out.append(f"{app} is not built (make cpp-app-aarch64)")
    return out


def built(app: Path = APP) -> bool:
    """True when the app and everything it runs on are here (tools/devices/check.py asks before running it)."""
    return not missing(app)


def cpuinfo_text(cpu: str, cores: int | None = None) -> str:
    """/proc/cpuinfo as an aarch64 Linux kernel writes it for ``cores`` cores of ``cpu``."""
    part, revision, features = CPUINFO[cpu]
    cores = cores or len(os.sched_getaffinity(0))  # qemu-user passes the host's affinity mask through
    block = (f"processor\t: {{i}}\nBogoMIPS\t: 50.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
             f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n")
    return "".join(block.format(i=i) for i in range(cores))


def qemu_root(cpu: str, sysroot: Path = SYSROOT) -> Path:
    """The -L folder for ``cpu``: the sysroot's etc/lib/usr linked, and this CPU's proc/cpuinfo."""
    if cpu not in CPUINFO:
        return sysroot
    root = BUILD / "qemu-root" / cpu
    (root / "proc").mkdir(parents=True, exist_ok=True)
    for name in ("etc", "lib", "usr"):
        link, target = root / name, (sysroot / name).resolve()
        if not (link.is_symlink() and Path(os.readlink(link)) == target):
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target, target_is_directory=True)
    info = root / "proc" / "cpuinfo"
    text = cpuinfo_text(cpu)
    if not info.is_file() or info.read_text() != text:
        tmp = info.with_name(f"cpuinfo.{os.getpid()}")
        tmp.write_text(text)
        tmp.replace(info)
    return root


def command(args: list[str], cpu: str = DEFAULT_CPU, app: Path = APP) -> list[str]:
    """The command line that runs ``app ARGS`` on an emulated ``cpu``."""
    return [shutil.which(QEMU) or QEMU, "-cpu", cpu, "-L", str(qemu_root(cpu)), str(app), *map(str, args)]


def environment() -> dict[str, str]:
    """The host's environment without what would reach the aarch64 loader or re-configure qemu."""
    return {k: v for k, v in os.environ.items()
            if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD") and not k.startswith("QEMU_")}


def run(args: list, cpu: str = DEFAULT_CPU, timeout: float = 600, app: Path = APP, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``coatnet-classify ARGS`` (aarch64) under qemu-aarch64-static -cpu CPU; stdout / stderr captured as text."""
    return subprocess.run(command([str(a) for a in args], cpu, app), capture_output=True, text=True, errors="replace",
                          timeout=timeout, env=environment(), cwd=str(cwd or REPO))


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="selftest + classify with the aarch64 coatnet-classify under QEMU user-mode")
    ap.add_argument("bundle", type=Path)
    ap.add_argument("images", nargs="*", type=Path, help="JPEG/PNG images (default: four of calibration/*.jpg)")
    ap.add_argument("--cpu", default=DEFAULT_CPU, help=f"qemu -cpu model (default {DEFAULT_CPU}; known: {', '.join(CPUINFO)})")
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--app", type=Path, default=APP, help=f"the aarch64 binary (default {APP.relative_to(REPO)})")
    ns = ap.parse_args(argv)
    lacking = missing(ns.app)
    if lacking:
        print(f"error: cannot run the aarch64 app: {'; '.join(lacking)}", file=sys.stderr)
        return 1
    images = ns.images or sorted((REPO / "calibration").glob("*.jpg"))[:4]
    out: dict = {"cpu": ns.cpu, "app": str(ns.app), "command": command(["..."], ns.cpu, ns.app)[:-1]}
    code = 0
    for name, args in (("selftest", ["selftest", ns.bundle, "--json"]),
                       ("classify", ["classify", ns.bundle, *images, "--json", "--topk", ns.topk])):
        proc = run(args, ns.cpu, app=ns.app)
        out[name] = {"exit_code": proc.returncode, "result": _json_or_none(proc.stdout),
                     "stderr": [ln for ln in proc.stderr.splitlines() if ln.strip()][-5:]}
        code = code or proc.returncode
    print(json.dumps(out, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
