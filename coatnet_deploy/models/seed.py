"""``coatnet_seed``: the network of the seed chapter ("Conv, Attention & CoAtNet"), exactly as written.

Module names, shapes and outputs match the chapter's code, so a state dict saved from it loads strictly
and gives the same logits. It is kept for continuity, NOT as a CoAtNet: for the real architecture use
the paper variants ``coatnet_0_224`` ... ``coatnet_4_224`` (or timm's trained ``*_rw_224`` families).

Known quirks of the seed network, kept on purpose (this is the one place they are documented):

* Stem is a 7x7 stride-2 conv + BN + ReLU + 3x3 max-pool, not the paper's two 3x3 convs.
* MBConv is post-norm with ReLU6, and its shortcut condition ``stride == 1 and in != out`` never fires
  for the chapter's configs (every stride-1 block has in == out), so no block has a residual.
* The "transformer" stage is one LayerNorm + ``nn.MultiheadAttention`` (8 heads, no relative
  position bias) with no residual and no FFN, followed by global average pooling.
* The attention here is written out as matmul + softmax with ``nn.MultiheadAttention``'s parameter
  names (``in_proj_weight``, ``in_proj_bias``, ``out_proj``): in eval mode ``nn.MultiheadAttention``
  takes a fused fast path that the TorchScript ONNX exporter cannot export. Dropout (0.1) only acts
  in training, so eval outputs are the chapter's.
* ``image_size`` is accepted for interface symmetry; the global pool makes the network size-agnostic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from coatnet_deploy.models._registry import IMAGENET_MEAN, IMAGENET_STD, VariantCfg, register_model


class SqueezeExcite(nn.Module):
    def __init__(self, in_ch: int, reduction: int = 4):
        super().__init__()
        reduced_ch = in_ch // reduction
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(in_ch, reduced_ch, 1),
            nn.ReLU(),
            nn.Conv2d(reduced_ch, in_ch, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.se(x)


class MBConvBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, stride: int = 1, expand_ratio: int = 4,
                 reduction: int = 4):
        super().__init__()
        mid_ch = in_ch * expand_ratio
        self.stride = stride
        self.expand = in_ch != out_ch
        self.expand_conv = nn.Conv2d(in_ch, mid_ch, 1, bias=False)
        self.bn0 = nn.BatchNorm2d(mid_ch)
        self.dw_conv = nn.Conv2d(mid_ch, mid_ch, kernel_size, stride, padding=(kernel_size - 1) // 2,
                                 groups=mid_ch, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_ch)
        self.se = SqueezeExcite(mid_ch, reduction)
        self.project_conv = nn.Conv2d(mid_ch, out_ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        x = F.relu6(self.bn0(self.expand_conv(x)))
        x = F.relu6(self.bn1(self.dw_conv(x)))
        x = self.se(x)
        x = self.bn2(self.project_conv(x))
        if self.stride == 1 and self.expand:  # the seed's condition: never true for its configs
            x = x + identity
        return x


class MultiheadSelfAttention(nn.Module):
    """Self-attention with ``nn.MultiheadAttention``'s parameters, as explicit matmul + softmax.

    Input and output are (seq, batch, dim), as ``nn.MultiheadAttention`` without ``batch_first``.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[0]
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)

        def heads(t):  # (L, B, E) -> (B, heads, L, head_dim)
            return t.reshape(L, -1, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

        q, k, v = heads(q), heads(k), heads(v)
        attn = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
        attn = F.dropout(attn.softmax(dim=-1), p=self.dropout, training=self.training)
        out = (attn @ v).permute(2, 0, 1, 3).reshape(L, -1, self.embed_dim)
        return self.out_proj(out)


class AttentionBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float = 0.1):
        super().__init__()
        self.mhsa = MultiheadSelfAttention(dim, num_heads, dropout=dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, c, h, w = x.shape
        x = x.flatten(2).permute(2, 0, 1)  # (seq_len, batch, dim)
        x = self.mhsa(self.norm(x))
        return x.permute(1, 2, 0).reshape(-1, c, h, w)


class CoAtNetSeed(nn.Module):
    """The seed chapter's ``CoAtNet`` class (8.88M params at 1000 classes)."""

    def __init__(self, image_size: int = 224, in_channels: int = 3, num_classes: int = 1000):
        super().__init__()
        self.img_size = image_size
        self.num_classes = num_classes
        self.s1 = nn.Sequential(
            nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.s2 = nn.Sequential(MBConvBlock(64, 128, stride=2), MBConvBlock(128, 128, stride=1))
        self.s3 = nn.Sequential(MBConvBlock(128, 256, stride=2), MBConvBlock(256, 256, stride=1))
        self.s4 = nn.Sequential(MBConvBlock(256, 512, stride=2), MBConvBlock(512, 512, stride=1))
        self.s5 = nn.Sequential(AttentionBlock(512, num_heads=8), nn.AdaptiveAvgPool2d((1, 1)))
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.s5(self.s4(self.s3(self.s2(self.s1(x)))))
        return self.fc(x.flatten(1))


# The chapter trained with torchvision's ImageNet recipe: resize 256, center crop 224, ImageNet mean/std.
default_cfgs = {
    "coatnet_seed": VariantCfg(arch="coatnet_seed", timm_name=None, crop_pct=0.875, mean=IMAGENET_MEAN,
                               std=IMAGENET_STD, description="the seed chapter's network (not CoAtNet; see models/seed.py)"),
}


def variant_params(name: str, image_size: int, num_classes: int = 1000) -> int:
    """-> parameter count of the seed network (the image size does not change it)."""
    return count_params(num_classes)


def variant_macs(name: str, image_size: int, num_classes: int = 1000) -> int:
    """-> multiply-accumulates of the seed network for one image at ``image_size``."""
    return count_macs(image_size, num_classes)


@register_model
def coatnet_seed(img_size: int = 224, num_classes: int = 1000) -> CoAtNetSeed:
    return CoAtNetSeed(image_size=img_size, num_classes=num_classes)


def count_macs(img_size: int, num_classes: int = 1000) -> int:
    """Image size -> multiply-accumulates of the seed network for one image (convs, linears, attention)."""
    s = (img_size - 1) // 2 + 1
    macs = s * s * 3 * 49 * 64
    f = (s - 1) // 2 + 1  # max-pool
    for cin, cout, stride in [(64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
                              (512, 512, 1)]:
        mid = cin * 4
        fo = (f - 1) // stride + 1
        macs += f * f * cin * mid + fo * fo * mid * 9 + 2 * mid * (mid // 4) + fo * fo * mid * cout
        f = fo
    n, e = f * f, 512
    macs += n * 3 * e * e + 2 * n * n * e + n * e * e + e * num_classes
    return macs


def count_params(num_classes: int = 1000) -> int:
    """-> number of parameters of the seed network (independent of the image size)."""
    p = 3 * 49 * 64 + 64 + 2 * 64
    for cin, cout in [(64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]:
        mid, rd = cin * 4, cin
        p += cin * mid + 2 * mid + mid * 9 + 2 * mid + mid * rd + rd + rd * mid + mid + mid * cout + 2 * cout
    e = 512
    return p + 2 * e + 3 * e * e + 3 * e + e * e + e + e * num_classes + num_classes
