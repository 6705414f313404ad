"""Device profiles: the CPUs a bundle is made for, and every export choice that depends on the CPU.

A bundle is built on one machine and run on others. Whatever the export decides from the CPU (how
ONNX Runtime's graph is saved, full- or reduced-range int8 weights, which OpenVINO INT8 candidate is
kept, what stays float) is decided here from the *device's* profile, never from the build host's
flags, except under the ``host`` profile, which is exactly this machine. The manifest records the
profile (``device``); the runtime checks it before it opens an engine (``check_runs_here``).

Feature names are NumPy's (``host.features``), which the CPU itself answers, so an emulated CPU
(qemu-user) is judged as what it emulates. Standard library only at the top: the device runtime reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coatnet_deploy.errors import TargetUnavailable, UserError

DEFAULT = "x86-64-v3"
HOST = "host"
#: x86 int8 dot-product instructions: with one, u8 x s8 products are summed in int32; without, x86 int8
#: kernels (pmaddubsw) add pairs of them in int16 and saturate unless the weights are 7-bit
X86_INT8_DOT = ("AVX512VNNI", "AVX_VNNI", "AMX_INT8")

_V2 = ("SSE3", "SSSE3", "SSE41", "SSE42", "POPCNT", "CX16", "LAHF")
_V3 = _V2 + ("AVX", "AVX2", "FMA3", "F16C", "BMI", "BMI2", "LZCNT", "MOVBE")
_V4 = _V3 + ("AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL")


@dataclass(frozen=True)
class Profile:
    """A class of CPUs: what every member has, and the emulated CPU that stands for its floor."""

    name: str
    arch: str  # "x86_64" | "aarch64"
    summary: str
    examples: str
    features: tuple[str, ...]
    #: an int8 dot product on every member (x86: VNNI/AMX; aarch64: widening NEON, no int16 saturation)
    int8_dot: bool
    #: ``qemu-<arch>-static -cpu`` model that emulates the class's floor (None: QEMU cannot: see docs/DEVICES.md)
    qemu: str | None
    qemu_gap: str | None = None

    # -- the choices -------------------------------------------------------------------------------
    def choices(self, target: str | None = None, precision: str | None = None) -> dict[str, Any]:
        """Every CPU-dependent choice, with why; ``target``/``precision`` keep only those that apply."""
        c: dict[str, Any] = {
            "onnxruntime_saved_graph": "basic",
            "int8_reduce_range": not self.int8_dot and self.arch == "x86_64",
            "openvino_int8_candidate": self.int8_candidate_rule(),
            "openvino_int8_head": "float" if self.arch == "aarch64" else "int8",
            "openvino_inference_precision": {"fp32": "f32", "fp16": "f16", "int8": "f32"},
        }
        return _select(c, target, precision)

    def speed_counts_here(self) -> bool:
        """Whether this host's INT8 timings say something about the device: the host is in the profile and
        runs the same int8 kernel family (with or without an int8 dot product)."""
        from coatnet_deploy import host

        here_dot = host.machine() == "aarch64" or host.cpu_has_vnni(onednn=True)
        return not self.covers(host.features(), host.machine()) and here_dot == self.int8_dot

    def int8_candidate_rule(self) -> str:
        if self.speed_counts_here():
            return "gates, then speed at batch 1 (this host is in the profile and runs the same int8 kernels)"
        return "gates, then accuracy (this host's speed says nothing about the device's)"

    def reasons(self) -> dict[str, str]:
        return {
            "onnxruntime_saved_graph": "ORT's 'basic' passes write plain ONNX; layout passes (NCHWc, of the build CPU's vector "
                                       "width) run at load on the device",
            "int8_reduce_range": ("7-bit weights: x86 CPUs without VNNI add u8 x s8 pairs in int16 and saturate on full-range "
                                  "weights" if not self.int8_dot and self.arch == "x86_64" else
                                  "full-range weights: every CPU of the profile sums int8 products in int32"),
            "openvino_int8_head": ("kept float: OpenVINO's ARM plugin runs only the FullyConnected head in int8 (ACL), and that "
                                   "kernel runs wrong under SME" if self.arch == "aarch64" else "int8 like the other layers"),
        }

    def to_manifest(self, target: str, precision: str) -> dict[str, Any]:
        from coatnet_deploy import host

        return {"profile": self.name, "arch": self.arch, "summary": self.summary, "features": list(self.features),
                "needs": self.needs(target, precision), "choices": self.choices(target, precision),
                "built_on": {"cpu": host.cpu_name(), "arch": host.machine(), "int8_isa": host.int8_isa(),
                             "features": sorted(host.features())}}

    def needs(self, target: str, precision: str) -> list[str]:
        """What a bundle of this profile cannot run right without (checked at load; exit 3 when missing)."""
        full_range = precision == "int8" and not self.choices()["int8_reduce_range"]
        if full_range and (target == "onnxruntime" or (target == "openvino" and self.arch == "x86_64")):
            # Full-range weights saturate on an x86 CPU without an int8 dot product (seen: ORT cosine_mean 0.9745 on
            # Haswell for a coatnet_0 bundle, 0.985 for coatnet_tiny of an aarch64 profile). On ARM they are right.
            return ["x86: " + "|".join(X86_INT8_DOT)]
        return []

    def covers(self, feats: frozenset[str] | set[str], arch: str) -> list[str]:
        """The profile's features this CPU lacks (empty: the CPU is in the class); the arch counts as one."""
        if arch != self.arch:
            return [self.arch]
        missing = [f for f in self.features if f not in feats]
        if self.int8_dot and self.arch == "x86_64" and not any(f in feats for f in X86_INT8_DOT):
            missing.append("|".join(X86_INT8_DOT))
        return missing


@dataclass(frozen=True)
class HostProfile(Profile):
    """Exactly this machine: every choice from its own CPU, ORT's fully optimized graph saved as is."""

    nchwc_block: int | None = None

    def choices(self, target: str | None = None, precision: str | None = None) -> dict[str, Any]:
        c = super().choices()
        c.update({"onnxruntime_saved_graph": "all", "openvino_int8_candidate": "gates, then speed at batch 1 on this host"})
        return _select(c, target, precision)

    def speed_counts_here(self) -> bool:
        return True

    def reasons(self) -> dict[str, str]:
        r = super().reasons()
        r["onnxruntime_saved_graph"] = (f"ORT's 'all' level, NCHWc block {self.nchwc_block} of this CPU: on another CPU the "
                                        "runtime falls back to model.onnx")
        return r

    def to_manifest(self, target: str, precision: str) -> dict[str, Any]:
        m = super().to_manifest(target, precision)
        m["nchwc_block"] = self.nchwc_block
        return m


def _select(c: dict[str, Any], target: str | None, precision: str | None) -> dict[str, Any]:
    if precision is not None:
        c["openvino_inference_precision"] = c["openvino_inference_precision"][precision]
        if precision != "int8":
            for k in ("int8_reduce_range", "openvino_int8_candidate", "openvino_int8_head"):
                c.pop(k)
    if target is not None:
        keep = {"onnxruntime": ("onnxruntime_", "int8_"), "openvino": ("openvino_", "int8_")}.get(target, ())
        c = {k: v for k, v in c.items() if k.startswith(keep)}
    return c


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("x86-64-v2", "x86_64", "x86-64-v2: SSE4.2, POPCNT", "Atom / Celeron / Pentium J-class edge boxes, Nehalem and later",
            _V2, False, "Nehalem"),
    Profile("x86-64-v3", "x86_64", "x86-64-v3: AVX2, FMA, F16C (the default)", "Intel Haswell and later, AMD Zen 1 and later",
            _V3, False, "Haswell"),
    Profile("x86-64-v4", "x86_64", "x86-64-v4: AVX-512 F/CD/BW/DQ/VL", "Intel Skylake-SP and later Xeons, Ice/Tiger Lake, AMD Zen 4/5",
            _V4, False, "Skylake-Server", "QEMU 7.2's TCG has no AVX-512: -cpu Skylake-Server runs as AVX2"),
    Profile("x86-64-v3-vnni", "x86_64", "x86-64-v3 + AVX-VNNI (int8 dot product)", "Intel Alder Lake and later client CPUs, Sierra Forest",
            _V3 + ("AVX_VNNI",), True, None, "QEMU 7.2's TCG has no AVX-VNNI"),
    Profile("x86-64-v4-vnni", "x86_64", "x86-64-v4 + AVX512-VNNI (int8 dot product)", "Intel Cascade Lake / Ice Lake Xeons and later, AMD Zen 4/5",
            _V4 + ("AVX512VNNI",), True, None, "QEMU 7.2's TCG has no AVX-512"),
    Profile("x86-64-v4-amx", "x86_64", "x86-64-v4 + AMX-INT8", "Intel Sapphire Rapids Xeons and later",
            _V4 + ("AVX512VNNI", "AMX_INT8"), True, None, "QEMU 7.2's TCG has no AVX-512 or AMX"),
    Profile("aarch64-v8.0", "aarch64", "ARMv8.0-A: NEON (ASIMD)", "Cortex-A72 / A53 / A55: Raspberry Pi 4, i.MX 8M",
            ("ASIMD",), True, "cortex-a72"),
    Profile("aarch64-v8.2-dotprod", "aarch64", "ARMv8.2-A with fp16 and dot product", "Neoverse-N1, Cortex-A76 / A78AE: "
            "Jetson Orin's CPU, Raspberry Pi 5, AWS Graviton2", ("ASIMD", "ASIMDHP", "ASIMDDP"), True, "neoverse-n1"),
)}


def host_profile() -> HostProfile:
    """This machine as a profile: its features, its int8 dot product, its ORT NCHWc block."""
    from coatnet_deploy import host

    arch = host.machine()
    feats = host.features()
    dot = arch == "aarch64" or host.cpu_has_vnni(onednn=True)
    return HostProfile(HOST, arch, f"this machine only: {host.cpu_name()}", "the build host", tuple(sorted(feats)), dot, None,
                       None, nchwc_block=nchwc_block(feats, arch))


def names() -> list[str]:
    return [*PROFILES, HOST]


def get(name: str | None) -> Profile:
    """A profile by name (None: the default); UserError naming the valid ones otherwise."""
    if name is None:
        name = DEFAULT
    key = str(name).strip().lower()
    if key == HOST:
        return host_profile()
    if key not in PROFILES:
        raise UserError(f"unknown device '{name}'", f"device profiles are {', '.join(names())}",
                        "pick one with --device (`coatnet-deploy targets --device NAME` shows what it chooses)")
    return PROFILES[key]


def nchwc_block(feats: frozenset[str] | set[str], arch: str) -> int | None:
    """The channel block ORT's NCHWc layout pass uses on a CPU (MLAS: 16 with AVX-512F, 8 on other x86; none on ARM)."""
    if arch != "x86_64":
        return None
    return 16 if "AVX512F" in feats else 8


# -- the device side ---------------------------------------------------------------------------------

def check_runs_here(bundle: Any, manifest: dict[str, Any], any_cpu: bool = False) -> list[str]:
    """Before an engine opens: refuse (exit 3) a bundle that needs what this CPU lacks; -> warnings.

    A CPU outside the bundle's profile that lacks none of its needs runs it, with a warning saying the
    bundle was not made for it. Bundles without a ``device`` block (written before profiles) pass.
    """
    from coatnet_deploy import host

    device = manifest.get("device")
    if not isinstance(device, dict):
        return []
    name = device.get("profile", "?")
    feats, arch = host.features(), host.machine()
    unmet = [n for n in device.get("needs") or [] if not _need_met(n, feats, arch)]
    if unmet and not any_cpu:
        raise TargetUnavailable(f"bundle '{bundle}' is made for device {name} and needs {', '.join(show_need(n) for n in unmet)}",
                                f"this CPU ({host.cpu_name()}, {arch}) lacks it, and without it the engine computes wrong numbers",
                                "run it on such a CPU, or export it again with --device for this one (--device x86-64-v3 runs on "
                                "every AVX2 CPU; --any-cpu runs it anyway)")
    warnings = []
    if unmet:
        warnings.append(f"{bundle}: made for device {name}, runs on a CPU without {', '.join(show_need(n) for n in unmet)} (--any-cpu): "
                        "its numbers may be wrong")
    missing = _missing(device, feats, arch)
    if missing and not unmet:
        warnings.append(f"{bundle}: this CPU is outside the bundle's device profile {name} (lacks {', '.join(missing)}): "
                        f"the bundle was not made or proven for it")
    return warnings


_warned: set[str] = set()


def warn(message: str) -> None:
    """One line on stderr, once per process: the device runtime's warnings (a CLI, an app, a notebook)."""
    import sys

    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


def _missing(device: dict[str, Any], feats: frozenset[str], arch: str) -> list[str]:
    if device.get("arch") and device["arch"] != arch:
        return [str(device["arch"])]
    if device.get("profile") == HOST:
        return []  # the host profile lists every feature the build host had: only the needs count
    return [f for f in device.get("features") or [] if f not in feats]


def show_need(need: str) -> str:
    """'x86: AVX512VNNI|AVX_VNNI|AMX_INT8' -> 'an x86 int8 dot product (AVX512VNNI, AVX_VNNI or AMX_INT8)'."""
    scope, _, what = str(need).partition(": ")
    options = what.split("|") if what else [scope]
    if tuple(options) == X86_INT8_DOT:
        return f"an x86 int8 dot product ({', '.join(options[:-1])} or {options[-1]})"
    return " or ".join(options)


def _need_met(need: str, feats: frozenset[str], arch: str) -> bool:
    scope, _, what = str(need).partition(": ")
    if scope in ("x86", "aarch64") and {"x86": "x86_64"}.get(scope, scope) != arch:
        return True  # a need of x86 kernels says nothing about another architecture's
    options = (what or scope).split("|")
    return any(o.strip() in feats for o in options)


def describe(profile: Profile) -> list[str]:
    """Lines for `targets --device NAME`: the profile, the CPU here against it, each choice and why."""
    from coatnet_deploy import host

    lines = [f"device {profile.name}: {profile.summary}", f"  for: {profile.examples}", f"  has: {', '.join(profile.features)}"]
    missing = profile.covers(host.features(), host.machine())
    lines.append(f"  this CPU ({host.cpu_name()}): " + ("in the profile" if not missing else f"outside it (lacks {', '.join(missing)})"))
    reasons = profile.reasons()
    for k, v in profile.choices().items():
        shown = ", ".join(f"{p} {h}" for p, h in v.items()) if isinstance(v, dict) else v
        why = reasons.get(k)
        lines.append(f"  {k}: {shown}" + (f"  ({why})" if why else ""))
    if profile.name == HOST:
        emu = "the host itself"
    elif profile.qemu:
        emu = f"qemu -cpu {profile.qemu}" + (f" ({profile.qemu_gap})" if profile.qemu_gap else "")
    else:
        emu = f"none ({profile.qemu_gap})"
    lines.append(f"  emulated by: {emu}")
    return lines
