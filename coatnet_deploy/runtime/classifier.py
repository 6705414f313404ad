"""Classify images with a bundle: verify it, open its runtime, preprocess as the manifest says, top-k.

NumPy + Pillow + the bundle's own runtime only (never torch or onnx): this is what a device runs.

Threads: one ``Classifier`` may be shared by several threads. ONNX Runtime's ``InferenceSession.run``
is thread-safe, so ORT bundles run concurrently; OpenVINO and TensorRT runners hold one infer
request / execution context, so for them inference is serialised with a lock (preprocessing still
runs in parallel). For parallel OpenVINO throughput, load one Classifier per thread.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from coatnet_deploy.bundle import verify_bundle
from coatnet_deploy.errors import UserError
from coatnet_deploy.preprocess import PreprocessConfig, preprocess_image


@dataclass(frozen=True)
class Prediction:
    """One class of a top-k answer: its name, its index in the logits, its softmax probability."""

    label: str
    index: int
    prob: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "index": self.index, "prob": self.prob}


class Classifier:
    """A verified bundle, opened on its runtime. Build with :meth:`load`; use as a context manager."""

    def __init__(self, bundle: Path, manifest: dict[str, Any], runner, runs: str, max_batch: int):
        self.bundle = bundle
        self.manifest = manifest
        self.runs = runs  # what executes, e.g. "onnxruntime on model.ort.onnx"
        self.preprocess_config = PreprocessConfig.from_dict(manifest["preprocess"])
        batch = manifest["input"].get("batch") or {}
        self.min_batch = int(batch.get("min", 1))
        self.max_batch = max_batch
        self.num_classes = int(manifest["model"]["num_classes"])
        labels = manifest["model"].get("labels")
        if labels is not None and (not isinstance(labels, list) or len(labels) != self.num_classes):
            raise UserError(f"bundle '{bundle}': manifest.json has {len(labels) if isinstance(labels, list) else 'invalid'} labels",
                            f"the model has {self.num_classes} classes", "export the bundle again")
        self.labels: list[str] = [str(x) for x in labels] if labels else [f"class_{i}" for i in range(self.num_classes)]
        self.status = manifest.get("status")
        self._runner = runner
        self._lock = None if runner.thread_safe else threading.Lock()

    @classmethod
    def load(cls, bundle_dir: str | os.PathLike, threads: int | None = None, max_batch: int | None = None,
             any_cpu: bool = False) -> "Classifier":
        """Bundle directory -> ready Classifier.

        Verifies the manifest and every artifact's size and SHA-256 first (UserError naming the file
        otherwise). ``threads``: runtime threads (None = the runtime's default). ``max_batch``: images
        per inference call, at most the bundle's batch maximum (default: that maximum). ``any_cpu``: run
        a bundle whose device profile needs what this CPU lacks (TargetUnavailable otherwise).
        """
        from coatnet_deploy.runtime.engines import open_runner

        root = Path(bundle_dir)
        manifest = verify_bundle(root)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise UserError(f"threads is {threads!r}", "it must be a positive integer", "pass e.g. threads=2, or None for the runtime's default")
        bundle_max = int((manifest["input"].get("batch") or {}).get("max", 1))
        if max_batch is None:
            max_batch = bundle_max
        elif isinstance(max_batch, bool) or not isinstance(max_batch, int) or not 1 <= max_batch <= bundle_max:
            raise UserError(f"max_batch is {max_batch!r}", f"this bundle's engine takes batches of 1 to {bundle_max}",
                            f"pass a max_batch from 1 to {bundle_max}")
        runner, runs = open_runner(root, manifest, threads=threads, any_cpu=any_cpu)
        runner.activate()
        try:
            return cls(root, manifest, runner, runs, max_batch)
        except BaseException:
            runner.deactivate()
            raise

    # -- lifecycle ---------------------------------------------------------------------------
    def close(self) -> None:
        """Release the runtime session. Idempotent."""
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- inference ---------------------------------------------------------------------------
    @property
    def input_size(self) -> int:
        return self.preprocess_config.crop

    def preprocess(self, image: Any, name: str | None = None) -> np.ndarray:
        """Path, bytes, PIL image or a preprocessed CHW array -> float32 (3, S, S)."""
        s = self.input_size
        if isinstance(image, np.ndarray):
            if image.shape != (3, s, s):
                raise UserError(f"image {name or '<array>'} has shape {image.shape}",
                                f"arrays must be preprocessed CHW float32 of shape (3, {s}, {s})",
                                "pass a path, bytes or PIL image instead, or preprocess it as manifest['preprocess'] says")
            return np.ascontiguousarray(image, dtype=np.float32)
        return preprocess_image(image, self.preprocess_config, name=name)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """float32 (N, 3, S, S) -> float32 (N, num_classes), run in chunks of at most ``max_batch``."""
        runner = self._runner
        if runner is None:
            raise UserError("the classifier is closed", "close() was called", "load the bundle again")
        s = self.input_size
        batch = np.asarray(batch)
        if batch.ndim != 4 or batch.shape[1:] != (3, s, s):
            raise UserError(f"batch has shape {batch.shape}", f"this bundle takes (N, 3, {s}, {s})", "preprocess images as manifest['preprocess'] says")
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        outs = [self._infer_chunk(runner, batch[i:i + self.max_batch]) for i in range(0, len(batch), self.max_batch)]
        if not outs:
            return np.zeros((0, self.num_classes), dtype=np.float32)
        out = np.concatenate(outs)
        if out.ndim != 2 or out.shape[1] != self.num_classes:
            raise UserError(f"bundle '{self.bundle}': the engine returned shape {out.shape}",
                            f"the manifest says {self.num_classes} classes", "export the bundle again")
        return out

    def _infer_chunk(self, runner, chunk: np.ndarray) -> np.ndarray:
        n = len(chunk)
        if n < self.min_batch:
            # The engine's profile starts above n: pad with copies, drop their outputs.
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], self.min_batch - n, axis=0)])
        if self._lock is None:
            out = runner.infer(chunk)
        else:
            with self._lock:
                out = runner.infer(chunk)
        return out[:n]

    def classify_batch(self, batch: np.ndarray, topk: int = 5) -> list[list[Prediction]]:
        """Preprocessed float32 (N, 3, S, S) -> for each image, the top-k Predictions, most likely first."""
        return self._topk(self.logits(batch), topk)

    def classify(self, images: Sequence[Any], topk: int = 5) -> list[list[Prediction]]:
        """Images (paths, bytes, PIL images or preprocessed CHW arrays) -> top-k Predictions per image.

        Raises UserError naming the image for a file that is not a readable image.
        """
        if isinstance(images, (str, bytes, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 3):
            images = [images]
        self._check_topk(topk)
        arrays = [self.preprocess(im) for im in images]
        if not arrays:
            return []
        return self.classify_batch(np.stack(arrays), topk)

    def _check_topk(self, topk: int) -> int:
        if isinstance(topk, bool) or not isinstance(topk, (int, np.integer)) or topk < 1:
            raise UserError(f"topk is {topk!r}", "it must be a positive integer", "pass e.g. topk=5")
        return min(int(topk), self.num_classes)

    def _topk(self, logits: np.ndarray, topk: int) -> list[list[Prediction]]:
        k = self._check_topk(topk)
        probs = softmax(logits)
        out = []
        for row in probs:
            # Stable sort: equal probabilities keep index order, so results are reproducible.
            idx = np.argsort(-row, kind="stable")[:k]
            out.append([Prediction(self.labels[i], int(i), float(row[i])) for i in idx])
        return out


def softmax(logits: np.ndarray) -> np.ndarray:
    """Logits (N, C) -> probabilities (N, C) in float64 (max-subtracted, so large logits do not overflow)."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
