"""The one runner interface that parity, the benchmark, predict and the device runtime use."""

from __future__ import annotations

import time
from typing import Any

import numpy as np


class Runner:
    """Runs one artifact. Use as a context manager::

        with OnnxRuntimeRunner("model.onnx", threads=2) as r:
            logits = r.infer(batch)          # float32 NCHW in, float32 (N, classes) out

    Subclasses implement ``_activate`` (load/compile; may be slow), ``_infer`` and optionally
    ``_deactivate`` and ``settings``. ``load_time_s`` is measured here, apart from inference.
    """

    name: str = "runner"
    #: the runtime's name as it appears in reports ("onnxruntime", "openvino", "tensorrt", "torch")
    framework: str = ""
    #: True when ``infer`` may be called from several threads at once on one runner
    thread_safe: bool = False

    def __init__(self) -> None:
        self.is_active = False
        self.load_time_s: float | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def activate(self) -> "Runner":
        if not self.is_active:
            t0 = time.perf_counter()
            self._activate()
            self.load_time_s = time.perf_counter() - t0
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> "Runner":
        return self.activate()

    def __exit__(self, *exc: Any) -> None:
        self.deactivate()

    # -- inference ---------------------------------------------------------------------------
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Logits for a float32 NCHW batch, as a float32 array of shape (N, num_classes)."""
        if not self.is_active:
            raise RuntimeError(f"{self.name}: activate() (or 'with runner:') before infer()")
        out = self._infer(np.ascontiguousarray(batch, dtype=np.float32))
        return np.asarray(out, dtype=np.float32)

    def infer_async_batch(self, batches: list[np.ndarray]) -> list[np.ndarray]:
        """Run several batches; runners with an async queue (OpenVINO THROUGHPUT) override this."""
        return [self.infer(b) for b in batches]

    def settings(self) -> dict[str, Any]:
        """Every setting that changes speed or numerics, recorded in reports."""
        return {}

    # -- to implement ------------------------------------------------------------------------
    def _activate(self) -> None:
        raise NotImplementedError

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _deactivate(self) -> None:
        pass
