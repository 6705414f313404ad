"""Tiny ONNX fixtures with CoAtNet's op mix, for the precision tests.

Run directly to write them to a folder: ``python tests/precision/make_models.py OUT_DIR``.
The network is not CoAtNet; it only has the same kinds of nodes that the precision plan must
classify: Conv+BN+SiLU, depthwise conv, squeeze-excite (mean -> conv -> ReLU -> conv -> Sigmoid
-> Mul), LayerNorm, MatMul attention with Softmax and an added relative bias, an Erf GELU MLP and
a Gemm head.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def _tiny_module(num_classes: int = 10, image_size: int = 64, seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)

    class SE(nn.Module):
        def __init__(self, c, r=4):
            super().__init__()
            self.reduce = nn.Conv2d(c, c // r, 1)
            self.act = nn.ReLU()
            self.expand = nn.Conv2d(c // r, c, 1)

        def forward(self, x):
            s = x.mean((2, 3), keepdim=True)
            return x * torch.sigmoid(self.expand(self.act(self.reduce(s))))

    class MBConv(nn.Module):
        def __init__(self, c, e=4):
            super().__init__()
            m = c * e
            self.pw = nn.Sequential(nn.Conv2d(c, m, 1, bias=False), nn.BatchNorm2d(m), nn.SiLU())
            self.dw = nn.Sequential(nn.Conv2d(m, m, 3, padding=1, groups=m, bias=False), nn.BatchNorm2d(m), nn.SiLU())
            self.se = SE(m)
            self.proj = nn.Sequential(nn.Conv2d(m, c, 1, bias=False), nn.BatchNorm2d(c))

        def forward(self, x):
            return x + self.proj(self.se(self.dw(self.pw(x))))

    class Attention(nn.Module):
        def __init__(self, dim, size, head_dim=16):
            super().__init__()
            self.heads = dim // head_dim
            self.hd = head_dim
            self.qkv = nn.Linear(dim, dim * 3)
            self.proj = nn.Linear(dim, dim)
            self.table = nn.Parameter(torch.randn(self.heads, (2 * size - 1) ** 2) * 0.5)
            ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
            coords = torch.stack([ys.flatten(), xs.flatten()])
            rel = coords[:, :, None] - coords[:, None, :] + size - 1
            self.register_buffer("index", rel[0] * (2 * size - 1) + rel[1], persistent=False)

        def forward(self, x):
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.heads, self.hd).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q * self.hd**-0.5) @ k.transpose(-2, -1)
            attn = attn + self.table[:, self.index]
            attn = attn.softmax(-1)
            out = (attn @ v).transpose(1, 2).reshape(b, n, c)
            return self.proj(out)

    class Transformer(nn.Module):
        def __init__(self, dim, size):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = Attention(dim, size)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Linear(dim * 4, dim))

        def forward(self, x):
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.SiLU())
            self.mb = MBConv(16)
            self.down = nn.Conv2d(16, 32, 3, 4, 1)  # 32x32 -> 8x8 tokens
            size = image_size // 8
            self.tf = Transformer(32, size)
            self.norm = nn.LayerNorm(32)
            self.head = nn.Linear(32, num_classes)

        def forward(self, x):
            x = self.down(self.mb(self.stem(x)))
            x = x.flatten(2).transpose(1, 2)
            x = self.tf(x)
            return self.head(self.norm(x.mean(1)))

    model = Tiny().eval()
    # Non-trivial BN statistics, so the folded convs are not identities.
    g = torch.Generator().manual_seed(seed + 1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def export_onnx(model, path: str | Path, image_size: int = 64) -> Path:
    """Export like the pipeline does: TorchScript exporter, opset 17, dynamic batch, onnxsim."""
    import onnx
    import onnxsim
    import torch

    path = Path(path)
    example = torch.randn(2, 3, image_size, image_size)
    torch.onnx.export(
        model, (example,), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
    )
    simplified, ok = onnxsim.simplify(onnx.load(str(path)))
    assert ok, "onnxsim could not validate the simplified model"
    onnx.save(simplified, str(path))
    return path


def make_tiny_onnx(path: str | Path, image_size: int = 64, seed: int = 0) -> Path:
    return export_onnx(_tiny_module(image_size=image_size, seed=seed), path, image_size)


def image_like_arrays(count: int, image_size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Smooth, image-like (1,3,S,S) float32 arrays: a stand-in when calibration/ has no images."""
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:image_size, 0:image_size] / image_size
    for _ in range(count):
        chans = []
        for _c in range(3):
            fx, fy, ph = rng.uniform(0.5, 4, 3)
            base = np.sin(2 * np.pi * (fx * xx + fy * yy) + ph)
            chans.append(base + 0.3 * rng.standard_normal((image_size, image_size)))
        out.append(np.stack(chans)[None].astype(np.float32))
    return out


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    print(make_tiny_onnx(out / "tiny_coatnet_like.onnx"))
