"""Small named steps of the export chain. Each takes files/arrays and returns files/arrays + facts."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from coatnet_deploy.errors import UserError

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTER = "torch.onnx.export(dynamo=False)"


def onnx_from_model(model, out_path: Path, image_size: int, opset: int = 17, metadata: dict[str, str] | None = None) -> dict[str, Any]:
    """Trace ``model`` to a single-file ONNX with dynamic batch and static H/W; returns facts for the manifest.

    The TorchScript exporter is used: it gives a dynamic batch through ``dynamic_axes`` at opset 17,
    which TensorRT 10.x on JetPack 6 parses. The example batch is 2 because a batch-1 example lets the
    tracer freeze the batch dimension to 1 without telling.
    """
    import onnx
    import torch

    example = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(out_path),
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    m = onnx.load(str(out_path))
    if metadata:
        set_metadata(m, metadata)
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(out_path))
    return {"exporter": EXPORTER, "opset": opset, "torch": torch.__version__, "nodes": len(m.graph.node)}


def set_metadata(m, metadata: dict[str, str]) -> None:
    """Replace the model's metadata_props with ``metadata`` (sorted, so the file is deterministic)."""
    del m.metadata_props[:]
    for k in sorted(metadata):
        entry = m.metadata_props.add()
        entry.key, entry.value = k, str(metadata[k])


def node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


def check_batch_range(runner, image_size: int, batch_range: tuple[int, int, int]) -> dict[str, Any]:
    """Run an open runner at the bottom and the top of the batch range; the batch must follow the input."""
    checked = []
    rng = np.random.default_rng(1)
    for b in sorted({batch_range[0], batch_range[2]}):
        x = rng.standard_normal((b, 3, image_size, image_size)).astype(np.float32)
        y = runner.infer(x)
        if y.shape[0] != b:
            raise RuntimeError(f"batch {b} gave output shape {tuple(y.shape)}: the exported batch dimension is frozen")
        checked.append(b)
    return {"batches_checked": checked}


def simplified_onnx(src: Path, dst: Path) -> dict[str, Any]:
    """onnxsim the graph into ``dst``; returns facts (ok, nodes before/after, error).

    On failure the plain graph is copied to ``dst`` and the reason recorded, so the export goes on
    with a graph that is known good. The caller checks the simplified graph's outputs against the
    plain graph's (onnxsim's own check is not trusted alone).
    """
    import onnx

    before = node_count(src)
    info: dict[str, Any] = {"tool": "onnxsim", "nodes_before": before}
    try:
        import onnxsim

        info["version"] = getattr(onnxsim, "__version__", "unknown")
        simplified, ok = onnxsim.simplify(onnx.load(str(src)))
        if not ok:
            raise RuntimeError("onnxsim's own check failed")
        onnx.save(simplified, str(dst))
        info.update({"ok": True, "nodes_after": len(simplified.graph.node)})
    except Exception as e:  # noqa: BLE001 - any simplifier failure means: keep the plain graph, and say so
        keep_plain(src, dst, info, f"{type(e).__name__}: {e}")
    return info


def keep_plain(src: Path, dst: Path, info: dict[str, Any], reason: str) -> None:
    import shutil

    shutil.copyfile(src, dst)
    info.update({"ok": False, "error": reason.splitlines()[0] if reason else "unknown", "nodes_after": info.get("nodes_before")})


def golden_inputs(preprocess_cfg, image_size: int, images_dir: str | None, n_images: int, n_random: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Preprocessed real images (sorted, first ``n_images``) plus seeded random tensors, and their names."""
    from coatnet_deploy.preprocess import load_image, preprocess_image

    arrays, names = [], []
    if n_images > 0:
        folder = Path(images_dir) if images_dir else None
        if folder is None:
            from coatnet_deploy.calibration import default_calibration_dir

            folder = Path(default_calibration_dir())
        if not folder.is_dir():
            raise UserError(f"golden image folder '{folder}' not found", "it is not a directory", "pass --images DIR with a few photographs")
        exts = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in exts and p.is_file())
        for p in files:
            if len(arrays) >= n_images:
                break
            try:
                arrays.append(preprocess_image(load_image(p), preprocess_cfg))
            except UserError:
                continue
            names.append(f"image:{p.name}")
        if not arrays:
            raise UserError(f"no readable images in '{folder}'", "golden inputs need real photographs", "pass --images DIR with JPEG/PNG files, or set golden_images: 0")
    rng = np.random.default_rng(seed)
    for i in range(n_random):
        arrays.append(rng.standard_normal((3, image_size, image_size)).astype(np.float32))
        names.append(f"random:{seed}:{i}")
    if not arrays:
        raise UserError("no golden inputs", "golden_images and golden_random are both 0", "set at least one of them above 0")
    return np.stack(arrays).astype(np.float32), names


def run_batched(runner, x: np.ndarray, max_batch: int, min_batch: int = 1) -> np.ndarray:
    """Run ``x`` through a runner in chunks no larger than the engine's top batch; a last chunk below its
    smallest batch is filled up with copies of its first sample, whose outputs are dropped."""
    outs = []
    for i in range(0, len(x), max_batch):
        chunk = x[i:i + max_batch]
        filled = chunk if len(chunk) >= min_batch else np.concatenate([chunk, np.repeat(chunk[:1], min_batch - len(chunk), axis=0)])
        outs.append(runner.infer(filled)[:len(chunk)])
    return np.concatenate(outs, axis=0)
