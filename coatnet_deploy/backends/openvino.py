"""OpenVINO: the IR writer and the runner (inference precision pinned, effective one recorded).

openvino is imported inside functions so that importing this module stays cheap.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from coatnet_deploy.backends.base import Runner
from coatnet_deploy.errors import TargetUnavailable, UserError

MODES = {"latency": "LATENCY", "throughput": "THROUGHPUT"}
PRECISIONS = ("f32", "f16", "bf16")
#: longest wait for one request in flight; a batch of the largest CoAtNet takes seconds, not minutes
ASYNC_TIMEOUT_S = 300.0
#: runtime nodes that move or hold data rather than compute; left out of precision counts
_NON_COMPUTE = {"Input", "Parameter", "Output", "Result", "Const", "Constant"}


def _check_path(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"model '{p}' not found", "the path is not a file", "pass a .onnx file or an OpenVINO .xml")
    return p


def ir_from_onnx(onnx_path: str | Path, out_dir: str | Path, compress_to_fp16: bool) -> tuple[Path, Path]:
    """ONNX file -> OpenVINO IR ``model.xml`` + ``model.bin`` in ``out_dir``; returns (xml, bin).

    ``compress_to_fp16`` stores the weights in fp16 (half the .bin); on a CPU without fp16
    compute they are expanded back to f32 at compile time, so it changes size, not arithmetic.
    """
    import openvino as ov

    src = _check_path(onnx_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    xml = out / "model.xml"
    model = ov.convert_model(str(src))
    ov.save_model(model, str(xml), compress_to_fp16=bool(compress_to_fp16))
    return xml, xml.with_suffix(".bin")


def _as_str(value: Any) -> str:
    # rt_info values are OVAny; properties may be ov.Type or enums
    if hasattr(value, "astype"):
        return value.astype(str)
    if hasattr(value, "get_type_name"):
        return value.get_type_name()
    return str(value)


class OpenVINORunner(Runner):
    """OpenVINO compiled model over an .xml IR or an .onnx file.

    ``inference_precision`` is pinned explicitly (default f32) because OpenVINO otherwise picks
    bf16/f16 on CPUs that have it, which changes the numbers parity sees. What the plugin
    actually used is read back from the compiled model (``effective_precision``): on a CPU
    without f16 compute, asking for f16 silently runs f32.
    """

    name = "openvino"
    framework = "openvino"

    def __init__(
        self,
        xml_or_onnx_path: str | Path,
        threads: int | None = None,
        mode: str = "latency",
        inference_precision: str | None = "f32",
        device: str = "CPU",
        num_streams: int | str | None = None,
        static_batch: bool = False,
        async_timeout_s: float = ASYNC_TIMEOUT_S,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise UserError(f"unknown OpenVINO mode '{mode}'", None, f"use one of: {', '.join(MODES)}")
        if inference_precision is not None and inference_precision not in PRECISIONS:
            raise UserError(
                f"unknown OpenVINO inference precision '{inference_precision}'",
                None,
                f"use one of: {', '.join(PRECISIONS)} (or leave it unset to let OpenVINO choose)",
            )
        self.path = Path(xml_or_onnx_path)
        self.threads = threads
        self.mode = mode
        self.inference_precision = inference_precision
        self.device = device
        self.num_streams = num_streams
        # Static batch compiles one model per batch size on first use: OpenVINO CPU kernels for
        # static shapes can be faster, and some graphs refuse a dynamic batch.
        self.static_batch = static_batch
        self.async_timeout_s = async_timeout_s
        self.core = None
        self.model = None
        self.compiled = None  # the dynamic-batch compiled model (None when static_batch)
        self._compiled_by_batch: dict[int, Any] = {}
        self._requests: dict[int, Any] = {}
        self._queues: dict[int, list[Any]] = {}  # batch size -> requests for infer_async_batch
        self._output_index = 0
        self.effective_precision: str | None = None

    # -- compile -----------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """The properties passed to ``compile_model``."""
        cfg: dict[str, Any] = {"PERFORMANCE_HINT": MODES[self.mode]}
        if self.inference_precision is not None:
            cfg["INFERENCE_PRECISION_HINT"] = self.inference_precision
        if self.threads:
            cfg["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.num_streams is not None:
            cfg["NUM_STREAMS"] = self.num_streams
        return cfg

    def _activate(self) -> None:
        import openvino as ov

        _check_path(self.path)
        self.core = ov.Core()
        if self.device.split(".")[0] not in {d.split(".")[0] for d in self.core.available_devices}:
            raise TargetUnavailable(
                f"OpenVINO device '{self.device}' not available here",
                f"this machine has {', '.join(self.core.available_devices)}",
                "use device='CPU'",
            )
        self.model = self.core.read_model(str(self.path))
        if len(self.model.inputs) != 1:
            raise UserError(
                f"{self.path} has {len(self.model.inputs)} inputs",
                "a classifier takes one NCHW image batch",
                "export the model with a single input named 'input'",
            )
        names = [set(o.get_names()) for o in self.model.outputs]
        self._output_index = next((i for i, n in enumerate(names) if "logits" in n), 0)
        if self.static_batch:
            return
        shape = self.model.inputs[0].get_partial_shape()
        if shape.rank.is_static and shape[0].is_static:
            dims = [ov.Dimension(-1)] + [shape[i] for i in range(1, shape.rank.get_length())]
            self.model.reshape({0: ov.PartialShape(dims)})
        self.compiled = self.core.compile_model(self.model, self.device, self.config())
        self._read_effective(self.compiled)

    def _read_effective(self, compiled: Any) -> None:
        self.effective_precision = _as_str(compiled.get_property("INFERENCE_PRECISION_HINT"))

    def _compiled_for(self, batch_size: int, static: bool | None = None) -> Any:
        """The compiled model that runs ``batch_size``: the dynamic one, or one compiled for that size."""
        if not (self.static_batch if static is None else static):
            return self.compiled
        if batch_size not in self._compiled_by_batch:
            import openvino as ov

            model = self.model.clone()
            shape = model.inputs[0].get_partial_shape()
            dims = [ov.Dimension(batch_size)] + [shape[i] for i in range(1, shape.rank.get_length())]
            model.reshape({0: ov.PartialShape(dims)})
            compiled = self.core.compile_model(model, self.device, self.config())
            self._compiled_by_batch[batch_size] = compiled
            self._read_effective(compiled)
        return self._compiled_by_batch[batch_size]

    def _key(self, batch_size: int) -> int:
        return batch_size if self.static_batch else -1

    # -- inference ---------------------------------------------------------------------------
    def _infer(self, batch: np.ndarray) -> np.ndarray:
        key = self._key(batch.shape[0])
        if key not in self._requests:
            self._requests[key] = self._compiled_for(batch.shape[0]).create_infer_request()
        request = self._requests[key]
        request.infer({0: batch})
        return request.get_output_tensor(self._output_index).data.copy()

    def infer_async_batch(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Run equal-size batches with as many requests in flight as the plugin suggests for the
        hint -> their logits, in input order.

        Not ``AsyncInferQueue``: its Python callback takes the GIL on a plugin thread and its waits
        have no timeout, and with a dynamic batch every request specializes the shape on its first
        run, all at once. That combination hangs now and then on small machines (Ultralytics saw
        it on AMD EPYC CI runners and moved to synchronous requests; this project's CI hung in
        the same call). Here the requests run a model compiled for the batch size, each is run
        once on its own before the first fan-out, no Python runs on a plugin thread, and every
        wait has a deadline (``async_timeout_s``) after which the call fails instead of hanging.
        """
        if not self.is_active:
            raise RuntimeError(f"{self.name}: activate() (or 'with runner:') before infer_async_batch()")
        batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        if not batches:
            return []
        if len({b.shape for b in batches}) > 1:
            raise ValueError("infer_async_batch needs batches of one shape")
        requests = self._request_pool(batches[0])
        results: list[np.ndarray | None] = [None] * len(batches)
        in_flight: dict[int, int] = {}  # request -> batch
        for i, b in enumerate(batches):
            j = i % len(requests)
            if j in in_flight:
                results[in_flight.pop(j)] = self._collect(requests, j)
            requests[j].start_async({0: b})
            in_flight[j] = i
        for j, i in in_flight.items():
            results[i] = self._collect(requests, j)
        return [np.asarray(r, dtype=np.float32) for r in results]

    def _request_pool(self, sample: np.ndarray) -> list[Any]:
        size = sample.shape[0]
        if size not in self._queues:
            compiled = self._compiled_for(size, static=True)
            jobs = max(1, int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
            pool = [compiled.create_infer_request() for _ in range(jobs)]
            for request in pool:  # one at a time: no request meets its first run while another does
                request.infer({0: sample})
            self._queues[size] = pool
        return self._queues[size]

    def _collect(self, requests: list[Any], j: int) -> np.ndarray:
        if not requests[j].wait_for(int(self.async_timeout_s * 1000)):
            for request in requests:
                request.cancel()
            raise UserError(
                f"OpenVINO's requests in flight did not finish within {self.async_timeout_s:g} s",
                "the CPU plugin stalled with several requests in flight (a known OpenVINO hang on some machines)",
                "time this engine in latency mode (bench --mode latency), which runs one request at a time",
            )
        return requests[j].get_output_tensor(self._output_index).data.copy()

    def _deactivate(self) -> None:
        self._queues.clear()
        self._requests.clear()
        self._compiled_by_batch.clear()
        self.compiled = None
        self.model = None

    # -- what ran ----------------------------------------------------------------------------
    def _any_compiled(self) -> Any:
        if self.compiled is not None:
            return self.compiled
        return next(iter(self._compiled_by_batch.values()), None)

    def execution_precisions(self) -> dict[str, dict[str, int]]:
        """{layer type: {runtime precision: count}} from the compiled model's runtime graph.

        Shows where INT8 kernels actually run (e.g. Convolution in u8, MatMul in i8) and what
        stayed float. Needs a compiled model (static_batch: after the first inference).
        """
        compiled = self._any_compiled()
        if compiled is None:
            raise RuntimeError(f"{self.name}: no compiled model yet")
        counts: dict[str, Counter] = {}
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            layer = _as_str(info["layerType"]) if "layerType" in info else op.get_type_name()
            if layer in _NON_COMPUTE:
                continue
            if "runtimePrecision" in info:
                precision = _as_str(info["runtimePrecision"])
            elif "outputPrecisions" in info:
                precision = _as_str(info["outputPrecisions"])
            else:
                precision = "unknown"
            counts.setdefault(layer, Counter())[precision or "unknown"] += 1
        return {layer: dict(c) for layer, c in sorted(counts.items())}

    def settings(self) -> dict[str, Any]:
        import openvino as ov

        s: dict[str, Any] = {
            "framework": "openvino",
            "version": ov.get_version(),
            "device": self.device,
            "mode": self.mode,
            "performance_hint": MODES[self.mode],
            "threads": self.threads,
            "num_streams_requested": self.num_streams,
            "inference_precision_requested": self.inference_precision,
            "inference_precision_effective": self.effective_precision,
            "static_batch": self.static_batch,
        }
        if self.core is not None:
            s["device_name"] = self.core.get_property(self.device, "FULL_DEVICE_NAME")
            s["device_capabilities"] = list(self.core.get_property(self.device, "OPTIMIZATION_CAPABILITIES"))
        compiled = self._any_compiled()
        if compiled is not None:
            s["num_streams"] = _as_str(compiled.get_property("NUM_STREAMS"))
            s["inference_num_threads"] = int(compiled.get_property("INFERENCE_NUM_THREADS"))
            s["optimal_infer_requests"] = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            totals: Counter = Counter()
            for per_precision in self.execution_precisions().values():
                totals.update(per_precision)
            s["execution_precision_totals"] = dict(totals)
        if (
            self.inference_precision is not None
            and self.effective_precision is not None
            and self.effective_precision != self.inference_precision
        ):
            s["warnings"] = [
                f"requested inference precision {self.inference_precision}, {self.device} runs "
                f"{self.effective_precision} (no {self.inference_precision} compute on this device)"
            ]
        return s


# -- what runs in int8: read from OpenVINO itself ---------------------------------------------------

#: runtime layer types that do the matmul-like work (their precision says whether int8 kernels run)
COMPUTE_LAYERS = ("Convolution", "GroupConvolution", "MatMul", "FullyConnected", "FullyConnectedQuantizedLegacy",
                  "Deconvolution", "GroupDeconvolution")
_INT8 = ("i8", "u8")


def _is_compute(layer: str) -> bool:
    return layer in COMPUTE_LAYERS or layer.startswith("FullyConnected")


def op_census(runner: "OpenVINORunner") -> dict[str, Any]:
    """A compiled runner's execution graph -> op census (report.op_census): runtime precision per layer type."""
    by_op = []
    for layer, per in runner.execution_precisions().items():
        for precision, n in sorted(per.items()):
            by_op.append({"op": layer, "precision": precision, "count": n, "compute": _is_compute(layer)})
    by_op.sort(key=lambda r: (-r["count"], r["op"]))
    int8 = sum(r["count"] for r in by_op if r["compute"] and r["precision"] in _INT8)
    flt = sum(r["count"] for r in by_op if r["compute"] and r["precision"] not in _INT8)
    return {"runtime": "openvino", "source": "the compiled model's execution graph (runtimePrecision per layer)",
            "by_op": by_op, "int8_compute_nodes": int8, "float_compute_nodes": flt,
            "int8_share": int8 / (int8 + flt) if int8 + flt else 0.0,
            "note": "u8/i8: int8 kernels; f32/bf16/f16: float"}


def profile_by_layer(xml: str | Path, batch: np.ndarray, threads: int | None = None, inference_precision: str | None = "f32",
                     runs: int = 5) -> dict[str, Any]:
    """Per-layer-type time of ``runs`` inferences on ``batch`` (OpenVINO's PERF_COUNT) -> report.profile.

    The kernel name ends in its precision (``brgconv_avx512_amx_i8``): layers are grouped by type and that.
    """
    import openvino as ov

    from collections import defaultdict

    core = ov.Core()
    model = core.read_model(str(xml))
    x = np.ascontiguousarray(batch, dtype=np.float32)
    model.reshape({0: ov.PartialShape(list(x.shape))})
    cfg: dict[str, Any] = {"PERF_COUNT": True, "PERFORMANCE_HINT": "LATENCY"}
    if inference_precision:
        cfg["INFERENCE_PRECISION_HINT"] = inference_precision
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    request = core.compile_model(model, "CPU", cfg).create_infer_request()
    request.infer({0: x})
    ms: dict[tuple[str, str], float] = defaultdict(float)
    count: dict[tuple[str, str], int] = defaultdict(int)
    for _ in range(runs):
        request.infer({0: x})
        for p in request.get_profiling_info():
            if p.status != p.Status.EXECUTED:
                continue
            key = (p.node_type, p.exec_type.rsplit("_", 1)[-1].lower() if "_" in p.exec_type else p.exec_type)
            ms[key] += p.real_time.total_seconds() * 1000.0 / runs
            count[key] += 1
    total = sum(ms.values())
    rows = [{"layer_type": k[0], "precision": k[1], "count": count[k] // runs, "ms": round(t, 4), "share": t / total if total else 0.0,
             "compute": _is_compute(k[0])} for k, t in sorted(ms.items(), key=lambda kv: -kv[1])]
    return {"runtime": "openvino", "batch": int(x.shape[0]), "runs": runs, "total_ms": round(total, 4), "by_layer_type": rows,
            "source": "OpenVINO PERF_COUNT, real time per layer type and kernel precision (mean over runs)"}
