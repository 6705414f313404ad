"""Target ``onnxruntime``: ONNX Runtime's CPU execution provider, with its optimized graph saved.

The bundle carries the portable ``model.onnx`` and ``model.ort.onnx``, the graph after ORT's
optimizations that hold on every CPU (the device profile's choice): by default the "basic" level, plain
ONNX, with the layout passes (NCHWc, whose block is the CPU's vector width) applied at load on the
device. Under ``--device host`` it is the fully optimized graph of this CPU, and a device whose NCHWc
block differs runs ``model.onnx`` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from coatnet_deploy.targets import register
from coatnet_deploy.targets.base import EngineBuild, EngineJob, Target

OPTIMIZED = "model.ort.onnx"
#: ONNX opset domain of ORT's NCHWc layout ops: a saved graph holding it is tied to one vector width
_NCHWC_DOMAIN = b"com.microsoft.nchwc"


@register
class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    order = 20
    default = True  # runs on any CPU with only a pip install, and has every precision
    summary = "ONNX Runtime, CPU execution provider (optimized graph saved)"
    cpu = True
    module = "onnxruntime"
    install_hint = "pip install onnxruntime"
    cells = {
        "fp32": ("model.onnx + model.ort.onnx", "ORT graph optimizations, optimized model saved"),
        "fp16": ("model.onnx + model.ort.onnx", "float16 graph run by ORT"),
        "int8": ("model.onnx + model.ort.onnx", "Q/DQ graph run by ORT"),
    }

    def recipe(self, precision: str, cfg):
        from coatnet_deploy.precision import recipes

        if precision == "int8":
            # ORT's own QDQ placement (U8S8, outputs quantized): the TensorRT-rule file gives its CPU
            # provider nothing to fuse. The attention MatMuls (activation x activation) stay float.
            # Without VNNI, x86 int8 kernels add pairs of u8*s8 products in int16 and saturate with
            # full-range weights; 7-bit weights avoid that. The device profile decides, not this host.
            # The head stays float: with outputs quantized, its Q/DQ would round the logits themselves.
            profile = cfg.device_profile()
            return recipes.ort_cpu_qdq_recipe(reduce_range=profile.choices()["int8_reduce_range"], device=profile.name,
                                              keep_attention_matmuls_float=True, keep_head_float=True)
        return recipes.default_recipe(precision)

    def build(self, job: EngineJob) -> EngineBuild:
        from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner, save_optimized_model

        profile = job.cfg.device_profile()
        saved = profile.choices(self.name)["onnxruntime_saved_graph"]
        opt = job.bundle_dir / OPTIMIZED
        save_optimized_model(str(job.bundle_dir / "model.onnx"), str(opt), optimization=saved)
        load = _LOAD_LEVEL[saved]
        engine: dict[str, Any] = {"runtime": "onnxruntime", "files": [OPTIMIZED], "saved_optimization": saved, "load_optimization": load}
        if saved == "all":
            engine.update({"graph_optimization": "all (pre-applied, saved)", "nchwc_block": getattr(profile, "nchwc_block", None),
                           "note": f"{OPTIMIZED} holds this CPU's fused ops and NCHWc layouts; other CPUs run model.onnx"})
        else:
            engine.update({"graph_optimization": f"{saved} (saved), all at load",
                           "note": f"{OPTIMIZED} is plain ONNX after ORT's {saved} passes: it runs on every CPU; the "
                                   "CPU-specific passes (fusions, NCHWc layouts) run when the device loads it"})
        threads = job.cfg.threads
        return EngineBuild(engine=engine, runner=lambda: OnnxRuntimeRunner(str(opt), threads=threads, optimization=load))

    def op_census(self, bundle_dir: Path, engine: dict[str, Any], runner):
        import tempfile

        from coatnet_deploy.backends.onnxrt import op_census, save_optimized_model

        if engine.get("load_optimization", "disable") == "disable":
            return op_census(bundle_dir / OPTIMIZED)
        # What ORT runs is the graph it makes at load: have it write that graph, and count it.
        with tempfile.TemporaryDirectory(prefix="ort-census-") as tmp:
            graph = save_optimized_model(bundle_dir / OPTIMIZED, Path(tmp) / "loaded.onnx", optimization=engine["load_optimization"])
            census = op_census(graph)
        census["source"] = f"{OPTIMIZED} as ORT optimizes it at load on this CPU ({engine['load_optimization']} level)"
        return census

    def profile(self, bundle_dir: Path, engine: dict[str, Any], batch, threads):
        from coatnet_deploy.backends.onnxrt import profile_by_op

        return profile_by_op(bundle_dir / OPTIMIZED, batch, threads=threads, optimization=engine.get("load_optimization", "disable"))

    def float_runner(self, float_graph: Path, threads: int | None):
        from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(str(float_graph), threads=threads)

    def open_runner(self, bundle: Path, manifest: dict[str, Any], threads: int | None = None, mode: str = "latency"):
        self.need_module()
        from coatnet_deploy.backends.onnxrt import OnnxRuntimeRunner

        path, optimization, note = saved_graph_here(Path(bundle), manifest)
        return OnnxRuntimeRunner(str(path), threads=threads, optimization=optimization), note


#: the level a saved graph is opened with: the passes it does not hold yet
_LOAD_LEVEL = {"disable": "all", "basic": "all", "extended": "all", "all": "disable"}


def saved_graph_here(bundle: Path, manifest: dict[str, Any]) -> tuple[Path, str, str]:
    """The graph this CPU should open, at which ORT level, and a note on what runs.

    A saved graph of the "all" level (``--device host``, and every bundle written before profiles) may
    hold NCHWc layouts of the build CPU's vector width: on a CPU of another width it fails or, where the
    channel counts happen to fit both, it could compute garbage. Such a graph runs only where the
    manifest records the same NCHWc block as this CPU's; elsewhere the portable ``model.onnx`` runs,
    with every pass applied at load (the same graph, built here), and a warning says so.
    """
    from coatnet_deploy import devices, host

    engine = manifest.get("engine") or {}
    opt = bundle / OPTIMIZED
    saved = engine.get("saved_optimization", "all")  # bundles before profiles saved the "all" level
    if saved != "all":
        return opt, _LOAD_LEVEL.get(saved, "all"), f"onnxruntime on {OPTIMIZED} ({saved} passes saved, the rest at load)"
    if not _holds_nchwc(opt):
        return opt, "disable", f"onnxruntime on {OPTIMIZED}"
    here = devices.nchwc_block(host.features(), host.machine())
    built = engine.get("nchwc_block")
    if built is not None and built == here:
        return opt, "disable", f"onnxruntime on {OPTIMIZED}"
    why = (f"NCHWc block {built}, this CPU's is {here or 'none'}" if built is not None
           else "NCHWc layouts of the CPU that built it (a bundle from before device profiles)")
    devices.warn(f"{bundle}: {OPTIMIZED} holds {why}: running the portable model.onnx, optimized at load")
    return bundle / "model.onnx", "all", f"onnxruntime on model.onnx, optimized at load ({OPTIMIZED} is for another CPU)"


def _holds_nchwc(path: Path) -> bool:
    import mmap

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            # ORT lists the domain among the opset imports of every graph it saves; a node of it names it again
            first = m.find(_NCHWC_DOMAIN)
            return first >= 0 and m.find(_NCHWC_DOMAIN, first + 1) >= 0
    except (OSError, ValueError):
        return False  # missing or empty: verify_bundle and ORT say so in their own words
