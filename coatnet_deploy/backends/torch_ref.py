"""The PyTorch reference runner: the slow, plain one every engine is compared with."""

from __future__ import annotations

from typing import Any

import numpy as np

from coatnet_deploy.backends.base import Runner
from coatnet_deploy.errors import TargetUnavailable, UserError

DEVICES = ("auto", "cpu", "cuda")
DTYPES = ("fp32", "fp16")


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def resolve_reference_device(requested: str = "auto") -> str:
    """'auto' | 'cpu' | 'cuda' -> 'cpu' or 'cuda' ('auto' is cuda when torch sees a GPU)."""
    if requested not in DEVICES:
        raise UserError(f"unknown reference device '{requested}'", None, f"use one of: {', '.join(DEVICES)}")
    if requested == "auto":
        return "cuda" if _cuda_available() else "cpu"
    if requested == "cuda" and not _cuda_available():
        raise TargetUnavailable(
            "--reference cuda needs a CUDA GPU",
            "torch sees no CUDA device here (CPU build of torch, or no driver)",
            "use --reference cpu (or auto), or run on a machine with an NVIDIA GPU and a CUDA build of torch",
        )
    return requested


class TorchRunner(Runner):
    """An ``nn.Module`` in eval mode under ``torch.inference_mode``; fp16 means CUDA autocast."""

    name = "torch"
    framework = "torch"

    def __init__(self, model: Any, device: str = "cpu", dtype: str = "fp32", threads: int | None = None) -> None:
        super().__init__()
        if dtype not in DTYPES:
            raise UserError(f"unknown reference dtype '{dtype}'", None, f"use one of: {', '.join(DTYPES)}")
        self.device = resolve_reference_device(device)
        if dtype == "fp16" and self.device != "cuda":
            # CPU fp16 autocast exists but is slow and not what any deployment target computes.
            raise UserError(
                "an fp16 PyTorch reference needs CUDA",
                f"the reference runs on {self.device}",
                "use dtype fp32 on CPU",
            )
        self.model = model
        self.dtype = dtype
        self.threads = threads
        self._saved_threads: int | None = None

    def _activate(self) -> None:
        import torch

        if self.threads:
            self._saved_threads = torch.get_num_threads()
            torch.set_num_threads(int(self.threads))
        self.model = self.model.eval().to(self.device)

    def _deactivate(self) -> None:
        import torch

        if self._saved_threads is not None:
            torch.set_num_threads(self._saved_threads)
            self._saved_threads = None

    def _forward(self, x: Any) -> Any:
        import torch

        with torch.inference_mode():
            if self.dtype == "fp16":
                with torch.autocast("cuda", dtype=torch.float16):
                    out = self.model(x)
            else:
                out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(batch).to(self.device)
        # .cpu() synchronises with the GPU, so wall-clock timing of infer() is complete
        return self._forward(x).float().cpu().numpy()

    def time_cuda(self, batch: np.ndarray, iters: int = 50, warmup: int = 5) -> list[float]:
        """GPU time per forward in ms (CUDA events, no host copies): batch, iterations -> list."""
        import torch

        if self.device != "cuda":
            raise RuntimeError("time_cuda needs device='cuda'")
        if not self.is_active:
            raise RuntimeError(f"{self.name}: activate() before time_cuda()")
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        for _ in range(warmup):
            self._forward(x)
        torch.cuda.synchronize()
        times = []
        for _ in range(iters):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            self._forward(x)
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
        return times

    def settings(self) -> dict[str, Any]:
        import torch

        s: dict[str, Any] = {
            "framework": "torch",
            "version": torch.__version__,
            "device": self.device,
            "dtype": self.dtype,
            "autocast": self.dtype == "fp16",
            "threads": int(self.threads) if self.threads else torch.get_num_threads(),
        }
        if self.device == "cuda":
            s["cuda_device_name"] = torch.cuda.get_device_name()
            s["cuda_version"] = torch.version.cuda
        return s
