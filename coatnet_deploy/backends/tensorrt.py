"""TensorRT 10/11: plan a build per version, build an engine, run it, write build_engine.sh.

The precision is already in the ONNX (Q/DQ for int8 and fp8, float16 tensors for fp16), so every build is
a strongly typed network and no precision builder flag is ever set on 10.x or 11.x. That is the
only mode TensorRT 11 has, and on 10.x it is what makes an engine compute what the ONNX says.

Nothing here imports tensorrt at module level. ``plan_build`` is pure (tests run it for 10.x and
11.x on a machine without TensorRT). ``build_engine`` and ``TensorRTRunner`` import tensorrt only
after ``cuda_probe.tensorrt_status()`` says the driver is alive: without a driver TensorRT objects
come back half-made and the process segfaults.

Device buffers use cuda-python (``cuda.bindings.runtime``, or ``cuda.cudart`` on older
cuda-python 12.x): one path, torch-free, so the device runtime can use this runner on a Jetson
without PyTorch.

API decisions cite the page they come from; "docs" = docs.nvidia.com/deeplearning/tensorrt.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from coatnet_deploy.backends.base import Runner
from coatnet_deploy.errors import TargetUnavailable, UserError

PRECISIONS = ("fp32", "fp16", "int8", "fp8")
HARDWARE_COMPAT = ("none", "ampere_plus", "same_compute_capability")
# trtexec spelling of each level (sampleOptions.cpp: "none", "ampere+", "sameComputeCapability").
_TRTEXEC_HW = {"ampere_plus": "ampere+", "same_compute_capability": "sameComputeCapability"}
# Python enum member names (tensorrt.HardwareCompatibilityLevel: NONE, AMPERE_PLUS, SAME_COMPUTE_CAPABILITY).
_PY_HW = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
MIN_TRT = (8, 6)  # builder_optimization_level, hardware/version compatibility all arrive in 8.6

TRT_TARGET_NOTE = (
    "TensorRT engines are tied to the GPU model and the TensorRT version that built them. "
    "Without a GPU here, export with --defer-build: the bundle then carries the precision-carrying "
    "model.onnx and build_engine.sh, and the engine is built on the device (see docs/TENSORRT.md)."
)


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------
def parse_batch_range(text: str) -> tuple[int, int, int]:
    """"MIN:OPT:MAX" -> (min, opt, max); UserError when malformed or not min <= opt <= max."""
    fix = "pass --batch MIN:OPT:MAX with whole numbers, e.g. 1:4:8"
    parts = str(text).strip().split(":")
    if len(parts) != 3:
        raise UserError(f"bad --batch '{text}'", "it needs three numbers MIN:OPT:MAX", fix)
    try:
        lo, opt, hi = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"bad --batch '{text}'", "MIN, OPT and MAX must be whole numbers", fix) from None
    if lo < 1:
        raise UserError(f"bad --batch '{text}'", "MIN must be at least 1", fix)
    if not lo <= opt <= hi:
        raise UserError(f"bad --batch '{text}'", "the range must satisfy MIN <= OPT <= MAX", fix)
    return lo, opt, hi


@dataclass(frozen=True)
class BuildSettings:
    """Everything that decides the engine. Paths may be relative (build_engine.sh uses bundle-relative ones)."""

    onnx_path: Path
    engine_path: Path
    input_name: str = "input"
    min_batch: int = 1
    opt_batch: int = 1
    max_batch: int = 8
    image_size: int = 224
    precision: str = "fp32"
    workspace_mb: int = 1024
    opt_level: int = 3  # builder_optimization_level, TensorRT's default
    timing_cache: Path | None = None
    hardware_compat: str = "none"
    version_compatible: bool = False
    channels: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "onnx_path", Path(self.onnx_path))
        object.__setattr__(self, "engine_path", Path(self.engine_path))
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))
        if self.precision not in PRECISIONS:
            raise UserError(f"unknown precision '{self.precision}'", f"valid precisions are {', '.join(PRECISIONS)}", "pass one of them with --precision")
        if self.hardware_compat not in HARDWARE_COMPAT:
            raise UserError(f"unknown tensorrt.hardware_compat '{self.hardware_compat}'",
                            f"valid values are {', '.join(HARDWARE_COMPAT)}", "fix the export config")
        if self.precision == "fp8" and self.hardware_compat == "ampere_plus":
            raise UserError("tensorrt.hardware_compat ampere_plus cannot hold an FP8 engine",
                            "FP8 kernels need compute capability 8.9 or higher, and Ampere (8.0-8.7) has none",
                            "use hardware_compat none or same_compute_capability")
        if not 0 <= int(self.opt_level) <= 5:
            raise UserError(f"tensorrt.opt_level {self.opt_level} is out of range", "builder_optimization_level is 0 to 5 (default 3)", "fix the export config")
        if int(self.workspace_mb) < 1:
            raise UserError(f"tensorrt.workspace_mb {self.workspace_mb} is too small", "the workspace pool needs at least 1 MiB", "fix the export config")
        if int(self.image_size) < 1:
            raise UserError(f"image size {self.image_size} is not positive", None, "pass --image-size S with S > 0")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserError(f"bad batch range {self.min_batch}:{self.opt_batch}:{self.max_batch}",
                            "the range must satisfy 1 <= MIN <= OPT <= MAX", "pass --batch MIN:OPT:MAX, e.g. 1:4:8")

    @classmethod
    def from_batch_string(cls, batch: str, **kwargs: Any) -> "BuildSettings":
        """BuildSettings with min/opt/max batch from a "MIN:OPT:MAX" string (UserError when malformed)."""
        lo, opt, hi = parse_batch_range(batch)
        return cls(min_batch=lo, opt_batch=opt, max_batch=hi, **kwargs)

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        return (int(batch), self.channels, self.image_size, self.image_size)

    def profile_shapes(self) -> dict[str, list[int]]:
        return {"min": list(self.shape(self.min_batch)), "opt": list(self.shape(self.opt_batch)), "max": list(self.shape(self.max_batch))}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


# --------------------------------------------------------------------------------------------
# Per-version plan (pure)
# --------------------------------------------------------------------------------------------
def parse_trt_version(version: str) -> tuple[int, int, int]:
    """"10.3.0" / "10.3.0.30" / "10" / trtexec banner codes "100300", "8601" -> (major, minor, patch)."""
    text = str(version).strip().lstrip("v")
    if re.fullmatch(r"\d{4,6}", text):  # trtexec banner: v100300 = 10.3.0, v8601 = 8.6.1
        code = int(text)
        if len(text) >= 6:
            return code // 10000, (code // 100) % 100, code % 100
        return code // 1000, (code // 100) % 10, code % 100
    m = re.fullmatch(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:\.\d+)*(?:[.+-].*)?", text)
    if not m:
        raise UserError(f"cannot read TensorRT version '{version}'", "expected MAJOR.MINOR.PATCH, e.g. 10.3.0", None)
    return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)


@dataclass
class BuildPlan:
    """What to do for one TensorRT version. Names are TensorRT's own enum member names."""

    trt_version: str
    major: int
    network_flags: list[str]  # NetworkDefinitionCreationFlag members
    builder_flags: list[str]  # BuilderFlag members
    config: dict[str, Any]  # IBuilderConfig attributes: builder_optimization_level, hardware_compatibility_level
    memory_pool_limits: dict[str, int]  # MemoryPoolType member -> bytes
    profile: dict[str, dict[str, list[int]]]  # input name -> {min, opt, max}
    timing_cache: str | None
    trtexec: list[str]  # argv, program name first
    notes: list[str] = field(default_factory=list)

    def trtexec_command(self, program: str | None = None) -> str:
        argv = list(self.trtexec)
        if program:
            argv[0] = program
        return " ".join(shlex.quote(a) for a in argv)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dims(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(d) for d in shape)


def plan_build(settings: BuildSettings, trt_version: str) -> BuildPlan:
    """Decide flags, config and the trtexec line for ``trt_version`` -> BuildPlan. Pure: no tensorrt import."""
    major, minor, patch = parse_trt_version(trt_version)
    if (major, minor) < MIN_TRT:
        raise UserError(f"TensorRT {trt_version} is too old for this exporter",
                        "builder optimization levels, timing-cache reuse and compatibility levels need TensorRT 8.6 or newer",
                        "use TensorRT 10.x (JetPack 6) or 11.x")
    notes: list[str] = []
    network_flags: list[str] = []
    builder_flags: list[str] = []
    if settings.precision == "fp8":
        if major < 10:
            # FP8 Q/DQ needs a strongly typed network, which 8.x does not have
            raise UserError(f"TensorRT {trt_version} cannot build this FP8 engine",
                            "FP8 Q/DQ needs a strongly typed network (TensorRT 10 or newer)", "use TensorRT 10.x or 11.x")
        notes.append("FP8 Q/DQ (E4M3): needs a GPU of compute capability 8.9 or higher (Ada, Hopper, Blackwell)")

    if major >= 11:
        # docs 11.0 Python API, Core/Builder: STRONGLY_TYPED is "[DEPRECATED] ... Strongly typed mode is
        # always enabled ... retained for API compatibility but is ignored"; EXPLICIT_BATCH is gone.
        # docs 11.x migration (Removed C++ APIs): BuilderFlag::kFP16/kINT8/kBF16 removed -> never set.
        notes.append("TensorRT 11: networks are always strongly typed; precision comes from the ONNX")
    elif major == 10:
        # docs 10.x Python API, Core/Builder: EXPLICIT_BATCH is "[DEPRECATED] Ignored because networks are
        # always explicit batch in TensorRT 10.0"; STRONGLY_TYPED makes tensor types follow the ONNX.
        # Used for every precision so 10.x builds the same numerics 11.x does (fp32 included).
        network_flags.append("STRONGLY_TYPED")
        # trtexec README, Example 6: with --stronglyTyped "use of specific builder precision flags such as
        # --int8 or --best ... is not allowed"; Builder docs: "Setting layer precision ... is not allowed".
    else:
        # 8.6 / 9.x: no strongly typed mode on 8.x; explicit batch must be requested (docs 8.x Core/Builder)
        # and the weakly typed builder only runs Q/DQ in int8 / float16 tensors in fp16 with the flags.
        network_flags.append("EXPLICIT_BATCH")
        if settings.precision == "fp16":
            builder_flags.append("FP16")
        elif settings.precision == "int8":
            builder_flags.append("INT8")
        notes.append(f"TensorRT {major}.x is weakly typed: {builder_flags or 'no'} precision flags; prefer 10.x or 11.x")

    if settings.version_compatible:
        # docs "Version Compatibility": builder_config.set_flag(tensorrt.BuilderFlag.VERSION_COMPATIBLE);
        # BuilderFlag::kVERSION_COMPATIBLE is still in the 11.x enum.
        builder_flags.append("VERSION_COMPATIBLE")
        notes.append("version-compatible engines run on newer TensorRT of the same major version, and can be slower")

    config: dict[str, Any] = {"builder_optimization_level": int(settings.opt_level)}
    if settings.hardware_compat != "none":
        config["hardware_compatibility_level"] = _PY_HW[settings.hardware_compat]
        # docs "Hardware Compatibility": Ampere and later only; not supported on JetPack / DRIVE OS.
        notes.append("hardware compatibility needs an Ampere+ build GPU and is not supported on Jetson (JetPack)")
        if settings.hardware_compat == "same_compute_capability" and (major, minor) < (10, 9):
            notes.append("sameComputeCapability is not known to this TensorRT before 10.9; trtexec will reject it")

    profile = {settings.input_name: settings.profile_shapes()}
    name = settings.input_name
    argv = [
        "trtexec",
        f"--onnx={settings.onnx_path}",
        f"--saveEngine={settings.engine_path}",
        f"--minShapes={name}:{_dims(settings.shape(settings.min_batch))}",
        f"--optShapes={name}:{_dims(settings.shape(settings.opt_batch))}",
        f"--maxShapes={name}:{_dims(settings.shape(settings.max_batch))}",
        # sampleOptions.cpp: "If none of suffixes is appended, the default unit is in MiB" (8.6 to 11).
        f"--memPoolSize=workspace:{int(settings.workspace_mb)}",
        f"--builderOptimizationLevel={int(settings.opt_level)}",
    ]
    if settings.timing_cache is not None:
        argv.append(f"--timingCacheFile={settings.timing_cache}")
    if major == 10:
        argv.append("--stronglyTyped")
    elif major < 10:
        argv += [f"--{p.lower()}" for p in builder_flags if p in ("FP16", "INT8")]
    # 11.x: --fp16/--int8/--bf16/--fp8/--int4/--best removed and --stronglyTyped "no longer needed"
    # (docs 11.x "Migrating trtexec Usage from TensorRT 10.x to 11.x"): nothing to add.
    if settings.hardware_compat != "none":
        argv.append(f"--hardwareCompatibilityLevel={_TRTEXEC_HW[settings.hardware_compat]}")
    if settings.version_compatible:
        argv.append("--versionCompatible")
    argv.append("--skipInference")  # build only; parity and latency are checked afterwards

    return BuildPlan(
        trt_version=str(trt_version), major=major, network_flags=network_flags, builder_flags=builder_flags,
        config=config, memory_pool_limits={"WORKSPACE": int(settings.workspace_mb) << 20}, profile=profile,
        timing_cache=str(settings.timing_cache) if settings.timing_cache is not None else None,
        trtexec=argv, notes=notes,
    )


# --------------------------------------------------------------------------------------------
# Availability
# --------------------------------------------------------------------------------------------
def unavailable_message(probe: Any = None) -> str:
    """One line for exit 3: what is missing here and that --defer-build finishes on the device."""
    from coatnet_deploy.backends.cuda_probe import TENSORRT_INSTALL_HINT, probe_cuda

    probe = probe if probe is not None else probe_cuda()
    if not probe.ok:
        missing = f"no usable NVIDIA GPU ({probe.reason})"
    else:
        missing = TENSORRT_INSTALL_HINT
    return (f"TensorRT cannot build or run here: {missing}. Export with --defer-build to write model.onnx and "
            "build_engine.sh, then run build_engine.sh on the device (docs/TENSORRT.md)")


def _require_tensorrt() -> Any:
    from coatnet_deploy.backends.cuda_probe import tensorrt_status

    ok, reason = tensorrt_status()
    if not ok:
        raise TargetUnavailable("target tensorrt cannot run on this machine", f"{reason}; {TRT_TARGET_NOTE}")
    import tensorrt as trt  # only after the CUDA probe passed

    return trt


# --------------------------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------------------------
def _parser_errors(parser: Any) -> list[str]:
    # ParserError in 10.x has node(), node_name(), node_operator(), code(), desc() (python/src/parsers/pyOnnx.cpp);
    # 8.6 only has node(), code(), desc(), hence getattr.
    lines = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        node = err.node()
        name = getattr(err, "node_name", lambda: "")() or ""
        op = getattr(err, "node_operator", lambda: "")() or ""
        where = f"node {node}" + (f" '{name}'" if name else "") + (f" ({op})" if op else "")
        lines.append(f"{where}: {err.code()}: {err.desc()}")
    return lines


def build_engine(settings: BuildSettings) -> dict[str, Any]:
    """Build ``settings.engine_path`` from ``settings.onnx_path`` with the TensorRT here -> engine metadata.

    The metadata (TensorRT version, driver, GPU, compute capability, profile, compat flags, build time)
    goes into the manifest so a runner can refuse a mismatched engine before deserializing it.
    """
    trt = _require_tensorrt()
    from coatnet_deploy.backends.cuda_probe import probe_cuda

    probe = probe_cuda()
    if settings.precision == "fp8":
        from coatnet_deploy.backends.cuda_probe import fp8_refusal

        refusal = fp8_refusal(probe)
        if refusal is not None:
            raise TargetUnavailable("this GPU cannot build an FP8 engine", refusal, "build on an FP8 GPU (or export --precision int8)")
    plan = plan_build(settings, trt.__version__)
    if not settings.onnx_path.is_file():
        raise UserError(f"ONNX model not found: {settings.onnx_path}", None, "export the ONNX first")

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(settings.onnx_path)):
        errors = _parser_errors(parser)
        raise UserError(f"TensorRT {trt.__version__} could not parse {settings.onnx_path.name}",
                        "; ".join(errors) or "no parser error reported",
                        "check the opset (17 is safest for TensorRT 10 on JetPack 6) and the ops named above")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.memory_pool_limits["WORKSPACE"])
    config.builder_optimization_level = plan.config["builder_optimization_level"]
    if "hardware_compatibility_level" in plan.config:
        level = getattr(trt.HardwareCompatibilityLevel, plan.config["hardware_compatibility_level"], None)
        if level is None:
            raise UserError(f"TensorRT {trt.__version__} has no hardware compatibility level {plan.config['hardware_compatibility_level']}",
                            f"valid here: {', '.join(n for n in _PY_HW.values() if hasattr(trt.HardwareCompatibilityLevel, n))}",
                            "change tensorrt.hardware_compat")
        config.hardware_compatibility_level = level
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))

    profile = builder.create_optimization_profile()
    shapes = plan.profile[settings.input_name]
    try:
        network_inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    except AttributeError:
        network_inputs = [settings.input_name]
    if settings.input_name not in network_inputs:
        raise UserError(f"the ONNX has no input named '{settings.input_name}'", f"its inputs are {', '.join(network_inputs)}", "fix input_name")
    profile.set_shape(settings.input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)

    # Timing cache: reuse across builds (docs "Optimizing Builder Performance": create_timing_cache from
    # the serialized bytes, or b"" for a new one; set_timing_cache(cache, ignore_mismatch=False); serialize after).
    cache = None
    if settings.timing_cache is not None:
        blob = settings.timing_cache.read_bytes() if settings.timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        config.set_timing_cache(cache, False)

    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    build_s = time.perf_counter() - t0
    if serialized is None:
        raise UserError(f"TensorRT {trt.__version__} failed to build an engine from {settings.onnx_path.name}",
                        "build_serialized_network returned None (see the TensorRT log above)",
                        "try a larger tensorrt.workspace_mb or a lower opt_level")
    settings.engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = settings.engine_path.with_suffix(settings.engine_path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        f.write(memoryview(serialized))
    os.replace(tmp, settings.engine_path)
    if cache is not None:
        settings.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        settings.timing_cache.write_bytes(memoryview(config.get_timing_cache().serialize()))

    return engine_metadata(settings, plan, probe, trt.__version__, build_s)


def engine_metadata(settings: BuildSettings, plan: BuildPlan, probe: Any, trt_version: str, build_s: float | None) -> dict[str, Any]:
    """The manifest's ``tensorrt`` block for an engine built with ``plan`` on the machine ``probe`` describes."""
    return {
        "tensorrt_version": str(trt_version),
        "cuda_driver_version": getattr(probe, "driver_version", None),
        "gpu_name": getattr(probe, "gpu_name", None),
        "compute_capability": getattr(probe, "compute_capability", None),
        "input_name": settings.input_name,
        "profile": plan.profile[settings.input_name],
        "precision": settings.precision,
        "strongly_typed": plan.major >= 10,
        "network_flags": plan.network_flags,
        "builder_flags": plan.builder_flags,
        "builder_optimization_level": plan.config["builder_optimization_level"],
        "hardware_compat": settings.hardware_compat,
        "version_compatible": settings.version_compatible,
        "workspace_mb": settings.workspace_mb,
        "build_time_s": None if build_s is None else round(build_s, 3),
    }


# --------------------------------------------------------------------------------------------
# Compatibility check before deserialize
# --------------------------------------------------------------------------------------------
def check_engine_compat(engine_meta: dict[str, Any], probe: Any, trt_version: str) -> None:
    """Raise UserError naming which of TensorRT version, GPU name, compute capability differ from here.

    Honors the engine's portability: version_compatible relaxes the version check to "same major,
    runtime not older"; hardware_compat 'ampere_plus' relaxes the GPU check to compute >= 8.0 and
    'same_compute_capability' to the same compute capability.
    """
    diffs = []
    built_v = engine_meta.get("tensorrt_version")
    if built_v:
        b, r = parse_trt_version(built_v), parse_trt_version(trt_version)
        if engine_meta.get("version_compatible"):
            if b[0] != r[0] or r < b:
                diffs.append(f"TensorRT version: engine built with {built_v} (version compatible within {b[0]}.x, newer runtime), here {trt_version}")
        elif b != r:
            diffs.append(f"TensorRT version: engine built with {built_v}, here {trt_version}")
    hw = engine_meta.get("hardware_compat", "none")
    built_cc, here_cc = engine_meta.get("compute_capability"), getattr(probe, "compute_capability", None)
    built_gpu, here_gpu = engine_meta.get("gpu_name"), getattr(probe, "gpu_name", None)
    if hw == "ampere_plus":
        if here_cc and tuple(int(x) for x in here_cc.split(".")) < (8, 0):
            diffs.append(f"compute capability: engine is Ampere+ (>= 8.0), here {here_cc}")
    else:
        if built_cc and here_cc and built_cc != here_cc:
            diffs.append(f"compute capability: engine built for {built_cc}, here {here_cc}")
        if hw == "none" and built_gpu and here_gpu and built_gpu != here_gpu:
            diffs.append(f"GPU name: engine built on '{built_gpu}', here '{here_gpu}'")
    if diffs:
        raise UserError("the TensorRT engine does not match this machine", "; ".join(diffs),
                        "rebuild it here with build_engine.sh next to the engine (engines are tied to the GPU and the TensorRT version)")


# --------------------------------------------------------------------------------------------
# Runner
# --------------------------------------------------------------------------------------------
def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python 12.x
        except ImportError:
            raise TargetUnavailable("the TensorRT runner needs cuda-python for device buffers",
                                    "neither cuda.bindings.runtime nor cuda.cudart could be imported",
                                    "pip install cuda-python (or coatnet-deploy[tensorrt])") from None
    return cudart


def _check(result: Any, what: str) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"{what} failed: {err}")
    return rest[0] if len(rest) == 1 else (tuple(rest) if rest else None)


class TensorRTRunner(Runner):
    """Runs model.engine with TensorRT's named-tensor API and cuda-python device buffers.

    ``meta`` is the manifest's ``tensorrt`` block (from ``build_engine``); when given, the engine is
    checked against this machine before deserialization. ``cuda_graph=True`` captures one CUDA graph
    per batch size after its first run and replays it.
    """

    name = "tensorrt"
    framework = "tensorrt"

    def __init__(self, engine_path: str | Path, meta: dict[str, Any] | None = None, cuda_graph: bool = False):
        super().__init__()
        self.engine_path = Path(engine_path)
        self.meta = dict(meta or {})
        self.cuda_graph = cuda_graph
        self._trt = self._cudart = self._engine = self._context = self._stream = None
        self._input = ""
        self._outputs: list[str] = []
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device ptr, bytes)
        self._graphs: dict[int, Any] = {}
        self._trt_version = ""

    def _activate(self) -> None:
        trt = _require_tensorrt()
        from coatnet_deploy.backends.cuda_probe import probe_cuda

        if not self.engine_path.is_file():
            raise UserError(f"TensorRT engine not found: {self.engine_path}", None, "run build_engine.sh in the bundle first")
        if self.meta:
            check_engine_compat(self.meta, probe_cuda(), trt.__version__)
        self._trt, self._cudart, self._trt_version = trt, _cudart(), trt.__version__
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise UserError(f"TensorRT {trt.__version__} could not deserialize {self.engine_path.name}",
                            "it was probably built by another TensorRT version or for another GPU",
                            "rebuild it here with build_engine.sh")
        self._context = self._engine.create_execution_context()
        inputs, outputs = [], []
        for i in range(self._engine.num_io_tensors):
            n = self._engine.get_tensor_name(i)
            (inputs if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT else outputs).append(n)
        if len(inputs) != 1:
            raise UserError(f"the engine has {len(inputs)} inputs ({', '.join(inputs)})", "a classifier engine has exactly one", None)
        self._input, self._outputs = inputs[0], outputs
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")

    def _alloc(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_check(self._cudart.cudaMalloc(nbytes), "cudaMalloc"))
            self._buffers[name] = (ptr, nbytes)
            self._graphs.clear()  # graphs captured the old addresses
        return ptr

    def _prepare(self, batch: np.ndarray) -> list[tuple[str, np.ndarray]]:
        trt, ctx = self._trt, self._context
        in_dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(self._input)))
        host_in = np.ascontiguousarray(batch, dtype=in_dtype)
        if not ctx.set_input_shape(self._input, tuple(host_in.shape)):
            prof = self.meta.get("profile") or {}
            raise UserError(f"input shape {tuple(host_in.shape)} is outside the engine's profile",
                            f"profile min {prof.get('min')} max {prof.get('max')}", "use a batch inside the --batch range it was built with")
        ctx.set_tensor_address(self._input, self._alloc(self._input, host_in.nbytes))
        outs = []
        for name in self._outputs:
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            host = np.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtype)
            ctx.set_tensor_address(name, self._alloc(name, host.nbytes))
            outs.append((name, host))
        self._host_in = host_in
        return outs

    def _enqueue(self, batch_size: int) -> None:
        cudart, stream = self._cudart, self._stream
        if self.cuda_graph and batch_size in self._graphs:
            _check(cudart.cudaGraphLaunch(self._graphs[batch_size], stream), "cudaGraphLaunch")
            return
        if not self._context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        if self.cuda_graph:
            # Capture after one normal run: TensorRT may allocate/reshape on the first enqueue of a shape.
            _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
            _check(cudart.cudaStreamBeginCapture(stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture")
            self._context.execute_async_v3(int(stream))
            graph = _check(cudart.cudaStreamEndCapture(stream), "cudaStreamEndCapture")
            self._graphs[batch_size] = _check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
            cudart.cudaGraphDestroy(graph)  # the instantiated exec graph is independent of it

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        cudart, stream = self._cudart, self._stream
        outs = self._prepare(batch)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(self._buffers[self._input][0], self._host_in.ctypes.data, self._host_in.nbytes, h2d, stream), "cudaMemcpyAsync H2D")
        self._enqueue(self._host_in.shape[0])
        for name, host in outs:
            _check(cudart.cudaMemcpyAsync(host.ctypes.data, self._buffers[name][0], host.nbytes, d2h, stream), "cudaMemcpyAsync D2H")
        _check(cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return outs[0][1].astype(np.float32)

    def time_gpu(self, batch: int, iterations: int = 100, warmup: int = 10) -> list[float]:
        """GPU time per enqueue in ms for ``batch`` random inputs, measured with CUDA events (no copies)."""
        cudart, stream = self._cudart, self._stream
        shape = (batch, *tuple(self._engine.get_tensor_shape(self._input))[1:])
        self.infer(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
        for _ in range(warmup):
            self._enqueue(batch)
        start = _check(cudart.cudaEventCreate(), "cudaEventCreate")
        end = _check(cudart.cudaEventCreate(), "cudaEventCreate")
        times = []
        try:
            for _ in range(iterations):
                _check(cudart.cudaEventRecord(start, stream), "cudaEventRecord")
                self._enqueue(batch)
                _check(cudart.cudaEventRecord(end, stream), "cudaEventRecord")
                _check(cudart.cudaEventSynchronize(end), "cudaEventSynchronize")
                times.append(float(_check(cudart.cudaEventElapsedTime(start, end), "cudaEventElapsedTime")))
        finally:
            cudart.cudaEventDestroy(start)
            cudart.cudaEventDestroy(end)
        return times

    def _deactivate(self) -> None:
        cudart = self._cudart
        if cudart is not None:
            for exec_graph in self._graphs.values():
                cudart.cudaGraphExecDestroy(exec_graph)
            for ptr, _ in self._buffers.values():
                cudart.cudaFree(ptr)
            if self._stream is not None:
                cudart.cudaStreamDestroy(self._stream)
        self._graphs.clear()
        self._buffers.clear()
        self._context = self._engine = self._stream = None

    def settings(self) -> dict[str, Any]:
        return {
            "engine": str(self.engine_path),
            "tensorrt_version": self._trt_version or self.meta.get("tensorrt_version"),
            "profile": self.meta.get("profile"),
            "cuda_graph": self.cuda_graph,
            "device_buffers": "cuda-python",
            "gpu_name": self.meta.get("gpu_name"),
            "precision": self.meta.get("precision"),
        }


# --------------------------------------------------------------------------------------------
# build_engine.sh
# --------------------------------------------------------------------------------------------
# An FP8 bundle refuses a GPU below compute capability 8.9 in one line, before trtexec (nvidia-smi's
# compute_cap field arrived in driver 510; without it the check is left to TensorRT).
_FP8_CHECK = r"""
if command -v nvidia-smi >/dev/null 2>&1; then
    gpu=$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -n 1 || true)
    cc=${gpu##*, }
    case "$cc" in
        [0-9]*.[0-9]*)
            if [ "${cc%%.*}" -lt 8 ] || { [ "${cc%%.*}" -eq 8 ] && [ "${cc#*.}" -lt 9 ]; }; then
                die "FP8 needs compute capability 8.9 or higher (Ada, Hopper, Blackwell); this GPU, ${gpu%, *}, is compute capability $cc"
            fi ;;
    esac
fi
"""

_SCRIPT = r"""#!/usr/bin/env bash
# Build model.engine from model.onnx with this device's TensorRT, then check parity.
# Written by coatnet-deploy; engines are tied to the GPU model and TensorRT version, so build here.
# Usage: ./build_engine.sh            (TRTEXEC=/path/to/trtexec or TRT_VERSION=10.3.0 to override)
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"

die() { echo "build_engine.sh: $*" >&2; exit 1; }

[ -f model.onnx ] || die "model.onnx not found next to this script ($HERE)"

TRTEXEC=${TRTEXEC:-}
if [ -z "$TRTEXEC" ]; then
    if command -v trtexec >/dev/null 2>&1; then
        TRTEXEC=$(command -v trtexec)
    elif [ -x /usr/src/tensorrt/bin/trtexec ]; then
        TRTEXEC=/usr/src/tensorrt/bin/trtexec   # JetPack installs it here, off PATH
    else
        die "trtexec not found: install TensorRT (JetPack: sudo apt install tensorrt) or set TRTEXEC=/path/to/trtexec"
    fi
fi

# TensorRT version: TRT_VERSION, else the Python package, else trtexec's banner
# ("&&&& RUNNING TensorRT.trtexec [TensorRT v100300]"), else the nvinfer Debian package.
version=${TRT_VERSION:-}
if [ -z "$version" ]; then
    version=$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)
fi
if [ -z "$version" ]; then
    version=$("$TRTEXEC" --help 2>&1 | sed -n 's/.*\[TensorRT v\([0-9][0-9.]*\)\].*/\1/p' | head -n 1 || true)
fi
if [ -z "$version" ] && command -v dpkg-query >/dev/null 2>&1; then
    # shellcheck disable=SC2016  # ${Version} is dpkg-query's format field, not a shell variable
    version=$(dpkg-query -W -f='${Version}\n' libnvinfer10 libnvinfer11 libnvinfer8 2>/dev/null | sed -n 's/^\([0-9][0-9.]*\).*/\1/p' | head -n 1 || true)
fi
[ -n "$version" ] || die "cannot tell the TensorRT version; set TRT_VERSION=10.3.0 (for example) and rerun"

case "$version" in
    *.*) major=${version%%.*} ;;
    ??????*) major=$((version / 10000)) ;;   # banner code 100300 = 10.3.0
    *) major=$((version / 1000)) ;;          # banner code 8601 = 8.6.1
esac

echo "TensorRT $version (major $major), trtexec: $TRTEXEC"
@FP8_CHECK@
rm -f model.engine  # never leave a stale engine that looks like this build's
case "$major" in
@CASES@
    *) die "TensorRT $version is not supported by this bundle (it has build lines for @SUPPORTED@)" ;;
esac

[ -f model.engine ] || die "trtexec finished but model.engine was not written"
echo "built $HERE/model.engine (latency: $TRTEXEC --loadEngine=model.engine --shapes=@SHAPE@ --useCudaGraph --noDataTransfers)"

if command -v coatnet-deploy >/dev/null 2>&1; then
    coatnet-deploy parity "$HERE"
else
    echo "coatnet-deploy is not on PATH; check parity with:"
    echo "    coatnet-deploy parity $HERE"
    echo "or  python3 -m coatnet_deploy parity $HERE"
fi
"""


def write_build_script(bundle_dir: str | Path, settings: BuildSettings, trt_versions: tuple[str, ...] = ("10", "11")) -> Path:
    """Write ``bundle_dir/build_engine.sh`` (POSIX bash, set -eu) with one trtexec line per major version -> its path.

    Paths inside are bundle-relative (model.onnx, model.engine, timing.cache): the script cds to its own folder.
    """
    bundle_dir = Path(bundle_dir)
    local = replace(settings, onnx_path=Path("model.onnx"), engine_path=Path("model.engine"), timing_cache=Path("timing.cache"))
    cases, majors = [], []
    for v in trt_versions:
        plan = plan_build(local, v)
        if str(plan.major) in majors:
            continue
        majors.append(str(plan.major))
        line = plan.trtexec_command(program="@TRTEXEC@").replace("'@TRTEXEC@'", '"$TRTEXEC"').replace("@TRTEXEC@", '"$TRTEXEC"')
        pattern = f"{plan.major}" if plan.major < 11 else f"{plan.major}|1[2-9]"  # newer majors: try the 11.x line
        comment = "\n".join(f"        # {n}" for n in plan.notes)
        cases.append(f"    {pattern})\n{comment + chr(10) if comment else ''}        {line}\n        ;;")
    text = _SCRIPT.replace("@SHAPE@", f"{local.input_name}:{_dims(local.shape(local.opt_batch))}")
    text = text.replace("@FP8_CHECK@\n", _FP8_CHECK.lstrip("\n") if settings.precision == "fp8" else "")
    text = text.replace("@CASES@", "\n".join(cases)).replace("@SUPPORTED@", ", ".join(f"{m}.x" for m in majors))
    bundle_dir.mkdir(parents=True, exist_ok=True)
    path = bundle_dir / "build_engine.sh"
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def build_plans(settings: BuildSettings, trt_versions: tuple[str, ...] = ("10", "11")) -> dict[str, dict[str, Any]]:
    """{version: BuildPlan.to_dict()} with bundle-relative paths: what build_engine.sh will do, for the manifest."""
    local = replace(settings, onnx_path=Path("model.onnx"), engine_path=Path("model.engine"), timing_cache=Path("timing.cache"))
    return {v: plan_build(local, v).to_dict() for v in trt_versions}
