"""CoAtNet (Dai et al. 2021, arXiv 2106.04803) written for export, mirroring timm's ``maxxvit.py``.

Module names and parameter shapes are those of timm's ``MaxxVit`` for the CoAtNet configs, so a timm
state dict loads with ``strict=True`` and gives timm's outputs. Differences from timm are export-only:

* attention is always the explicit ``softmax(q k^T * scale + bias) v`` (no fused SDPA), and the
  relative-position index is built for the feature-map size of the chosen image size;
* global average pooling is ``mean((2, 3))`` and LayerNorm2d is permute + ``F.layer_norm`` + permute;
* only the pieces CoAtNet uses (MBConv 'C' and 2-D transformer 'T' blocks, rel-pos 'bias') are here.

Order of this file, as in timm: config dataclasses, layers/blocks, stage, model, named architecture configs
(``model_cfgs``), each variant's preprocessing facts (``default_cfgs``), registered builders.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from coatnet_deploy.models._registry import IMAGENET_MEAN, IMAGENET_STD, VariantCfg, register_model

# --------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvCfg:
    """MBConv block config (timm ``MaxxVitConvCfg``, MBConv fields only)."""

    expand_ratio: float = 4.0
    expand_output: bool = True  # mid channels from output (paper) or input (timm _rw) channels
    kernel_size: int = 3
    pre_norm_act: bool = False  # activation after the pre-norm (timm _rw coat configs)
    output_bias: bool = True  # bias of the shortcut conv and the final 1x1 conv
    stride_mode: str = "dw"  # where the stride happens: 'pool' (avg pool before 1x1), '1x1', 'dw'
    pool_type: str = "avg2"
    attn_early: bool = False  # SE between conv2 and norm2 instead of after norm2
    attn_act_layer: str = "silu"
    attn_ratio: float = 0.25
    act_layer: str = "gelu"
    norm_eps: float = 1e-5


@dataclass(frozen=True)
class TransformerCfg:
    """Transformer block config (timm ``MaxxVitTransformerCfg``, 2-D CoAtNet fields only)."""

    dim_head: int = 32
    expand_ratio: float = 4.0
    expand_first: bool = True  # attention width = output width (paper) or input width (timm _rw)
    shortcut_bias: bool = True
    attn_bias: bool = True
    pool_type: str = "avg2"
    init_values: Optional[float] = None  # LayerScale when set
    act_layer: str = "gelu"
    norm_layer: str = "layernorm2d"  # or 'batchnorm2d' (coatnet_bn_0_rw)
    norm_eps: float = 1e-6


@dataclass(frozen=True)
class CoAtNetCfg:
    """Whole-network config: stage widths/depths, block types per stage, stem, head."""

    embed_dim: Tuple[int, ...] = (96, 192, 384, 768)
    depths: Tuple[int, ...] = (2, 3, 5, 2)
    block_type: Tuple[str, ...] = ("C", "C", "T", "T")
    stem_width: Tuple[int, int] = (64, 64)
    stem_bias: bool = False
    conv_cfg: ConvCfg = field(default_factory=ConvCfg)
    transformer_cfg: TransformerCfg = field(default_factory=TransformerCfg)
    head_hidden_size: Optional[int] = None  # paper variants: norm -> fc(hidden) -> tanh -> fc


# --------------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------------


def _act(name: str) -> nn.Module:
    return {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh}[name]()


def make_divisible(v: float, divisor: int = 8, min_value: Optional[int] = None, round_limit: float = 0.9) -> int:
    """Round a channel count to a multiple of ``divisor`` as timm does (never down by more than 10%)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


class BatchNormAct2d(nn.BatchNorm2d):
    """BatchNorm2d followed by an activation; same state-dict keys as a plain BatchNorm2d."""

    def __init__(self, num_features: int, eps: float = 1e-5, act_layer: str = "gelu", apply_act: bool = True):
        super().__init__(num_features, eps=eps)
        self.act = _act(act_layer) if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (exports as one LayerNormalization)."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__(num_channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _norm2d(kind: str, dim: int, eps: float) -> nn.Module:
    if kind == "layernorm2d":
        return LayerNorm2d(dim, eps=eps)
    if kind == "batchnorm2d":
        return nn.BatchNorm2d(dim, eps=eps)
    raise ValueError(f"unknown norm layer {kind!r}")


def _pool2(pool_type: str) -> nn.Module:
    if pool_type == "avg2":
        return nn.AvgPool2d(kernel_size=2, stride=2)
    if pool_type == "max2":
        return nn.MaxPool2d(kernel_size=2, stride=2)
    raise ValueError(f"unsupported pool type {pool_type!r} (avg2, max2)")


class Downsample2d(nn.Module):
    """2x2 pooling, then a 1x1 conv when the width changes (the paper's Proj(Pool(x)) shortcut)."""

    def __init__(self, dim: int, dim_out: int, pool_type: str = "avg2", bias: bool = True):
        super().__init__()
        self.pool = _pool2(pool_type)
        self.expand = nn.Conv2d(dim, dim_out, 1, bias=bias) if dim != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.pool(x))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation with timm's ``SEModule`` names (fc1, act, fc2, sigmoid gate)."""

    def __init__(self, channels: int, rd_channels: int, act_layer: str = "silu"):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act = _act(act_layer)
        self.fc2 = nn.Conv2d(rd_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = self.fc2(self.act(self.fc1(s)))
        return x * torch.sigmoid(s)


def gen_relative_position_index(size: Tuple[int, int]) -> torch.Tensor:
    """(H*W, H*W) index into a ((2H-1)*(2W-1), heads) table: pair (i, j) -> slot of offset i - j."""
    h, w = size
    coords = torch.stack(torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rel[:, :, 0] += h - 1
    rel[:, :, 1] += w - 1
    rel[:, :, 0] *= 2 * w - 1
    return rel.sum(-1)


class RelPosBias(nn.Module):
    """2-D relative position bias ``w[i - j]``, one table of (2H-1)(2W-1) entries per head.

    The gather index is a non-persistent buffer built for one feature-map size, so the input size is
    fixed per build (as in timm); checkpoints made at another size are resized on load
    (``resize_rel_pos_bias_table``).
    """

    def __init__(self, window_size: Tuple[int, int], num_heads: int):
        super().__init__()
        self.window_size = tuple(window_size)
        self.window_area = window_size[0] * window_size[1]
        self.num_heads = num_heads
        num_rel = (2 * window_size[0] - 1) * (2 * window_size[1] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(num_rel, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        index = gen_relative_position_index(self.window_size).view(-1)
        self.register_buffer("relative_position_index", index.to(self.relative_position_bias_table.device),
                             persistent=False)

    def get_bias(self) -> torch.Tensor:
        bias = self.relative_position_bias_table[self.relative_position_index]
        bias = bias.view(self.window_area, self.window_area, self.num_heads).permute(2, 0, 1)
        return bias.unsqueeze(0)

    def forward(self, attn: torch.Tensor) -> torch.Tensor:
        return attn + self.get_bias()


class Attention2d(nn.Module):
    """Multi-head self-attention on NCHW maps, written as matmul + softmax (exports everywhere)."""

    def __init__(self, dim: int, dim_out: int, dim_head: int = 32, bias: bool = True,
                 expand_first: bool = True, window_size: Optional[Tuple[int, int]] = None):
        super().__init__()
        dim_attn = dim_out if expand_first else dim
        self.num_heads = dim_attn // dim_head
        self.dim_head = dim_head
        self.scale = dim_head ** -0.5
        self.qkv = nn.Conv2d(dim, dim_attn * 3, 1, bias=bias)
        self.rel_pos = RelPosBias(window_size, self.num_heads) if window_size else None
        self.proj = nn.Conv2d(dim_attn, dim_out, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, H, W = x.shape
        # timm's 'head_first' channel order: [head0: q k v][head1: q k v]...; -1 keeps the batch free
        q, k, v = self.qkv(x).reshape(-1, self.num_heads, self.dim_head * 3, H * W).chunk(3, dim=2)
        attn = (q * self.scale).transpose(-2, -1) @ k
        if self.rel_pos is not None:
            attn = self.rel_pos(attn)
        attn = attn.softmax(dim=-1)
        x = (v @ attn.transpose(-2, -1)).reshape(-1, self.num_heads * self.dim_head, H, W)
        return self.proj(x)


class LayerScale2d(nn.Module):
    def __init__(self, dim: int, init_values: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma.view(1, -1, 1, 1)


class ConvMlp(nn.Module):
    """1x1 conv -> act -> 1x1 conv (the transformer FFN on NCHW maps)."""

    def __init__(self, dim: int, hidden: int, act_layer: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden, 1)
        self.act = _act(act_layer)
        self.fc2 = nn.Conv2d(hidden, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------


class MbConvBlock(nn.Module):
    """Pre-norm MBConv: norm -> 1x1 expand -> kxk depthwise -> SE -> 1x1 project, plus shortcut.

    Downsampling blocks (stride 2) use the Proj(Pool(x)) shortcut.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, cfg: ConvCfg = ConvCfg()):
        super().__init__()
        mid_chs = make_divisible((out_chs if cfg.expand_output else in_chs) * cfg.expand_ratio)
        if stride == 2:
            self.shortcut = Downsample2d(in_chs, out_chs, pool_type=cfg.pool_type, bias=cfg.output_bias)
        else:
            self.shortcut = nn.Identity()
        if cfg.stride_mode not in ("pool", "1x1", "dw"):
            raise ValueError(f"unknown stride_mode {cfg.stride_mode!r}")
        stride_pool = stride if cfg.stride_mode == "pool" else 1
        stride_1 = stride if cfg.stride_mode == "1x1" else 1
        stride_2 = stride if cfg.stride_mode == "dw" else 1
        k = cfg.kernel_size

        self.pre_norm = BatchNormAct2d(in_chs, cfg.norm_eps, cfg.act_layer, apply_act=cfg.pre_norm_act)
        self.down = Downsample2d(in_chs, in_chs, pool_type=cfg.pool_type) if stride_pool > 1 else nn.Identity()
        self.conv1_1x1 = nn.Conv2d(in_chs, mid_chs, 1, stride=stride_1, bias=False)
        self.norm1 = BatchNormAct2d(mid_chs, cfg.norm_eps, cfg.act_layer)
        # timm's static 'same-ish' padding: ((stride - 1) + (k - 1)) // 2
        self.conv2_kxk = nn.Conv2d(mid_chs, mid_chs, k, stride=stride_2, padding=((stride_2 - 1) + (k - 1)) // 2,
                                   groups=mid_chs, bias=False)
        rd = int(cfg.attn_ratio * (out_chs if cfg.expand_output else mid_chs))
        if cfg.attn_early:
            self.se_early = SqueezeExcite(mid_chs, rd, cfg.attn_act_layer)
            self.norm2 = BatchNormAct2d(mid_chs, cfg.norm_eps, cfg.act_layer)
            self.se = None
        else:
            self.se_early = None
            self.norm2 = BatchNormAct2d(mid_chs, cfg.norm_eps, cfg.act_layer)
            self.se = SqueezeExcite(mid_chs, rd, cfg.attn_act_layer)
        self.conv3_1x1 = nn.Conv2d(mid_chs, out_chs, 1, bias=cfg.output_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.shortcut(x)
        x = self.down(self.pre_norm(x))
        x = self.norm1(self.conv1_1x1(x))
        x = self.conv2_kxk(x)
        if self.se_early is not None:
            x = self.se_early(x)
        x = self.norm2(x)
        if self.se is not None:
            x = self.se(x)
        return self.conv3_1x1(x) + shortcut


class TransformerBlock2d(nn.Module):
    """Pre-norm transformer block on NCHW maps: x + Attn(Norm(x)), then x + MLP(Norm(x)).

    Downsampling blocks pool after the norm, and the shortcut is Proj(Pool(x)).
    """

    def __init__(self, dim: int, dim_out: int, stride: int = 1, feat_size: Tuple[int, int] = (7, 7),
                 cfg: TransformerCfg = TransformerCfg()):
        super().__init__()
        if stride == 2:
            self.shortcut = Downsample2d(dim, dim_out, pool_type=cfg.pool_type, bias=cfg.shortcut_bias)
            self.norm1 = nn.Sequential(OrderedDict([
                ("norm", _norm2d(cfg.norm_layer, dim, cfg.norm_eps)),
                ("down", Downsample2d(dim, dim, pool_type=cfg.pool_type)),
            ]))
        else:
            assert dim == dim_out
            self.shortcut = nn.Identity()
            self.norm1 = _norm2d(cfg.norm_layer, dim, cfg.norm_eps)
        self.attn = Attention2d(dim, dim_out, dim_head=cfg.dim_head, bias=cfg.attn_bias,
                                expand_first=cfg.expand_first, window_size=feat_size)
        self.ls1 = LayerScale2d(dim_out, cfg.init_values) if cfg.init_values else nn.Identity()
        self.norm2 = _norm2d(cfg.norm_layer, dim_out, cfg.norm_eps)
        self.mlp = ConvMlp(dim_out, int(dim_out * cfg.expand_ratio), cfg.act_layer)
        self.ls2 = LayerScale2d(dim_out, cfg.init_values) if cfg.init_values else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.shortcut(x) + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


# --------------------------------------------------------------------------------------------------
# Stage, stem, head
# --------------------------------------------------------------------------------------------------


class CoAtNetStage(nn.Module):
    """One stage: ``depth`` blocks of one type; the first block downsamples by 2."""

    def __init__(self, in_chs: int, out_chs: int, depth: int, block_type: str, feat_size: Tuple[int, int],
                 conv_cfg: ConvCfg, transformer_cfg: TransformerCfg):
        super().__init__()
        blocks = []
        for i in range(depth):
            stride = 2 if i == 0 else 1
            if block_type == "C":
                blocks.append(MbConvBlock(in_chs, out_chs, stride=stride, cfg=conv_cfg))
            elif block_type == "T":
                blocks.append(TransformerBlock2d(in_chs, out_chs, stride=stride, feat_size=feat_size,
                                                 cfg=transformer_cfg))
            else:
                raise ValueError(f"unknown block type {block_type!r} (C, T)")
            in_chs = out_chs
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Stem(nn.Module):
    """S0 of the paper: 3x3 conv stride 2 -> BN + act -> 3x3 conv."""

    def __init__(self, in_chs: int, out_chs: Tuple[int, int], bias: bool, act_layer: str, norm_eps: float):
        super().__init__()
        self.out_chs = out_chs[-1]
        self.stride = 2
        self.conv1 = nn.Conv2d(in_chs, out_chs[0], 3, stride=2, padding=1, bias=bias)
        self.norm1 = BatchNormAct2d(out_chs[0], norm_eps, act_layer)
        self.conv2 = nn.Conv2d(out_chs[0], out_chs[1], 3, stride=1, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x)))


class ClassifierHead(nn.Module):
    """Global average pool -> fc (timm ``ClassifierHead`` names)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean((2, 3)))


class NormMlpClassifierHead(nn.Module):
    """Pool -> norm -> fc(hidden) -> tanh -> fc (timm ``NormMlpClassifierHead`` names)."""

    def __init__(self, in_features: int, num_classes: int, hidden_size: int, norm_layer: str, norm_eps: float):
        super().__init__()
        self.norm = _norm2d(norm_layer, in_features, norm_eps)
        self.pre_logits = nn.Sequential(OrderedDict([
            ("fc", nn.Linear(in_features, hidden_size)),
            ("act", nn.Tanh()),
        ]))
        self.fc = nn.Linear(hidden_size, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.mean((2, 3), keepdim=True)).flatten(1)
        return self.fc(self.pre_logits(x))


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------


def feature_sizes(img_size: int, num_stages: int = 4) -> list:
    """Feature-map side after the stem and after each stage (stride 2 each), as timm computes it."""
    size = img_size // 2
    out = []
    for _ in range(num_stages):
        size = (size - 1) // 2 + 1
        out.append(size)
    return out


class CoAtNet(nn.Module):
    """CoAtNet: stem, four stages (C-C-T-T), final norm, classifier head. Input NCHW at ``img_size``."""

    def __init__(self, cfg: CoAtNetCfg, img_size: int = 224, in_chans: int = 3, num_classes: int = 1000):
        super().__init__()
        self.cfg = cfg
        self.img_size = img_size
        self.num_classes = num_classes
        self.num_features = cfg.embed_dim[-1]
        tcfg = cfg.transformer_cfg
        self.stem = Stem(in_chans, cfg.stem_width, cfg.stem_bias, cfg.conv_cfg.act_layer, cfg.conv_cfg.norm_eps)
        in_chs = self.stem.out_chs
        stages = []
        for i, feat in enumerate(feature_sizes(img_size, len(cfg.embed_dim))):
            stages.append(CoAtNetStage(in_chs, cfg.embed_dim[i], cfg.depths[i], cfg.block_type[i], (feat, feat),
                                       cfg.conv_cfg, tcfg))
            in_chs = cfg.embed_dim[i]
        self.stages = nn.Sequential(*stages)
        if cfg.head_hidden_size:
            self.norm = nn.Identity()
            self.head = NormMlpClassifierHead(self.num_features, num_classes, cfg.head_hidden_size,
                                              tcfg.norm_layer, tcfg.norm_eps)
        else:
            self.norm = _norm2d(tcfg.norm_layer, self.num_features, tcfg.norm_eps)
            self.head = ClassifierHead(self.num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))


# --------------------------------------------------------------------------------------------------
# Named configs (timm's model_cfgs for CoAtNet)
# --------------------------------------------------------------------------------------------------


def _rw_coat_cfg(stride_mode="pool", conv_attn_early=False, conv_attn_act_layer="relu",
                 transformer_shortcut_bias=True, transformer_norm_layer="layernorm2d", init_values=None) -> dict:
    """timm's first CoAtNet configs: SiLU MBConv with input-width expansion and act after pre-norm,
    no conv output bias, ReLU SE, attention expansion in the output projection."""
    return dict(
        conv_cfg=ConvCfg(stride_mode=stride_mode, pre_norm_act=True, expand_output=False, output_bias=False,
                         attn_early=conv_attn_early, attn_act_layer=conv_attn_act_layer, act_layer="silu"),
        transformer_cfg=TransformerCfg(expand_first=False, shortcut_bias=transformer_shortcut_bias,
                                       init_values=init_values, norm_layer=transformer_norm_layer),
    )


def _rw_max_cfg(stride_mode="dw", conv_output_bias=False, conv_attn_ratio=1 / 16, dim_head=32) -> dict:
    """timm's later (MaxViT-era) defaults, used by coatnet_pico_rw / coatnet_nano_rw."""
    return dict(
        conv_cfg=ConvCfg(stride_mode=stride_mode, expand_output=False, output_bias=conv_output_bias,
                         attn_ratio=conv_attn_ratio, act_layer="silu"),
        transformer_cfg=TransformerCfg(expand_first=False, dim_head=dim_head),
    )


model_cfgs = dict(
    coatnet_pico_rw=CoAtNetCfg(embed_dim=(64, 128, 256, 512), depths=(2, 3, 5, 2), stem_width=(32, 64),
                               **_rw_max_cfg(conv_output_bias=True, conv_attn_ratio=0.25)),
    coatnet_nano_rw=CoAtNetCfg(embed_dim=(64, 128, 256, 512), depths=(3, 4, 6, 3), stem_width=(32, 64),
                               **_rw_max_cfg(stride_mode="pool", conv_output_bias=True, conv_attn_ratio=0.25)),
    coatnet_0_rw=CoAtNetCfg(embed_dim=(96, 192, 384, 768), depths=(2, 3, 7, 2), stem_width=(32, 64),
                            **_rw_coat_cfg(conv_attn_early=True, transformer_shortcut_bias=False)),
    coatnet_1_rw=CoAtNetCfg(embed_dim=(96, 192, 384, 768), depths=(2, 6, 14, 2), stem_width=(32, 64),
                            **_rw_coat_cfg(stride_mode="dw", conv_attn_early=True, transformer_shortcut_bias=False)),
    coatnet_2_rw=CoAtNetCfg(embed_dim=(128, 256, 512, 1024), depths=(2, 6, 14, 2), stem_width=(64, 128),
                            **_rw_coat_cfg(stride_mode="dw", conv_attn_act_layer="silu")),
    coatnet_bn_0_rw=CoAtNetCfg(embed_dim=(96, 192, 384, 768), depths=(2, 3, 7, 2), stem_width=(32, 64),
                               **_rw_coat_cfg(stride_mode="dw", conv_attn_early=True, transformer_shortcut_bias=False,
                                              transformer_norm_layer="batchnorm2d")),
    # the paper's L / D (timm's coatnet_N configs): GELU MBConv, output-width expansion, pre-logits head
    coatnet_0=CoAtNetCfg(embed_dim=(96, 192, 384, 768), depths=(2, 3, 5, 2), stem_width=(64, 64),
                         head_hidden_size=768),
    coatnet_1=CoAtNetCfg(embed_dim=(96, 192, 384, 768), depths=(2, 6, 14, 2), stem_width=(64, 64),
                         head_hidden_size=768),
    coatnet_2=CoAtNetCfg(embed_dim=(128, 256, 512, 1024), depths=(2, 6, 14, 2), stem_width=(128, 128),
                         head_hidden_size=1024),
    coatnet_3=CoAtNetCfg(embed_dim=(192, 384, 768, 1536), depths=(2, 6, 14, 2), stem_width=(192, 192),
                         head_hidden_size=1536),
    coatnet_4=CoAtNetCfg(embed_dim=(192, 384, 768, 1536), depths=(2, 12, 28, 2), stem_width=(192, 192),
                         head_hidden_size=1536),
    # not in timm: the smallest network on the _rw code path, for tests and smoke runs (~100k params)
    coatnet_tiny=CoAtNetCfg(embed_dim=(24, 32, 48, 64), depths=(1, 1, 1, 1), stem_width=(16, 16),
                            **_rw_max_cfg(conv_output_bias=True, conv_attn_ratio=0.25, dim_head=16)),
)


# --------------------------------------------------------------------------------------------------
# Variant facts (timm's default_cfgs: preprocessing of the pretrained weights, default size)
# --------------------------------------------------------------------------------------------------


def _cfg(arch: str, timm_name: Optional[str], **kw) -> VariantCfg:
    # timm's CoAtNet weights: mean = std = 0.5, bicubic, crop 0.95 unless an entry says otherwise
    return VariantCfg(arch=arch, timm_name=timm_name, **kw)


default_cfgs = {
    "coatnet_pico_rw_224": _cfg("coatnet_pico_rw", "coatnet_pico_rw_224", description="timm rw, untrained in timm"),
    "coatnet_nano_rw_224": _cfg("coatnet_nano_rw", "coatnet_nano_rw_224", crop_pct=0.9,
                                description="timm rw, ImageNet-1k 81.70", trained_in_timm=True),
    "coatnet_0_rw_224": _cfg("coatnet_0_rw", "coatnet_0_rw_224", description="timm rw, ImageNet-1k 82.40",
                             trained_in_timm=True),
    "coatnet_1_rw_224": _cfg("coatnet_1_rw", "coatnet_1_rw_224", description="timm rw, ImageNet-1k 83.62",
                             trained_in_timm=True),
    "coatnet_2_rw_224": _cfg("coatnet_2_rw", "coatnet_2_rw_224", description="timm rw, in12k ft in1k 86.58",
                             trained_in_timm=True),
    "coatnet_bn_0_rw_224": _cfg("coatnet_bn_0_rw", "coatnet_bn_0_rw_224", mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                description="timm rw with BatchNorm transformer blocks, ImageNet-1k",
                                trained_in_timm=True),
    "coatnet_0_224": _cfg("coatnet_0", "coatnet_0_224", description="paper CoAtNet-0 (untrained in timm)"),
    "coatnet_1_224": _cfg("coatnet_1", "coatnet_1_224", description="paper CoAtNet-1 (untrained in timm)"),
    "coatnet_2_224": _cfg("coatnet_2", "coatnet_2_224", description="paper CoAtNet-2 (untrained in timm)"),
    "coatnet_3_224": _cfg("coatnet_3", "coatnet_3_224", description="paper CoAtNet-3 (untrained in timm)"),
    "coatnet_4_224": _cfg("coatnet_4", "coatnet_4_224", description="paper CoAtNet-4 (untrained in timm)"),
    "coatnet_tiny": _cfg("coatnet_tiny", None, crop_pct=0.875, mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=64,
                         description="tiny test/smoke variant on the rw code path"),
}


def variant_params(name: str, image_size: int, num_classes: int = 1000) -> int:
    """Registered variant name + image size -> parameter count, from its config (no model built)."""
    return count_params(model_cfgs[default_cfgs[name].arch], image_size, num_classes)


def variant_macs(name: str, image_size: int, num_classes: int = 1000) -> int:
    """Registered variant name + image size -> multiply-accumulates per image, from its config."""
    return count_macs(model_cfgs[default_cfgs[name].arch], image_size, num_classes)


# --------------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------------


def _create(variant: str, img_size: int = 224, num_classes: int = 1000, **kwargs) -> CoAtNet:
    return CoAtNet(model_cfgs[default_cfgs[variant].arch], img_size=img_size, num_classes=num_classes, **kwargs)


@register_model
def coatnet_pico_rw_224(**kw) -> CoAtNet:
    return _create("coatnet_pico_rw_224", **kw)


@register_model
def coatnet_nano_rw_224(**kw) -> CoAtNet:
    return _create("coatnet_nano_rw_224", **kw)


@register_model
def coatnet_0_rw_224(**kw) -> CoAtNet:
    return _create("coatnet_0_rw_224", **kw)


@register_model
def coatnet_1_rw_224(**kw) -> CoAtNet:
    return _create("coatnet_1_rw_224", **kw)


@register_model
def coatnet_2_rw_224(**kw) -> CoAtNet:
    return _create("coatnet_2_rw_224", **kw)


@register_model
def coatnet_bn_0_rw_224(**kw) -> CoAtNet:
    return _create("coatnet_bn_0_rw_224", **kw)


@register_model
def coatnet_0_224(**kw) -> CoAtNet:
    return _create("coatnet_0_224", **kw)


@register_model
def coatnet_1_224(**kw) -> CoAtNet:
    return _create("coatnet_1_224", **kw)


@register_model
def coatnet_2_224(**kw) -> CoAtNet:
    return _create("coatnet_2_224", **kw)


@register_model
def coatnet_3_224(**kw) -> CoAtNet:
    return _create("coatnet_3_224", **kw)


@register_model
def coatnet_4_224(**kw) -> CoAtNet:
    return _create("coatnet_4_224", **kw)


@register_model
def coatnet_tiny(img_size: int = 64, **kw) -> CoAtNet:
    """Tiny test/smoke variant: same blocks as coatnet_pico_rw, widths 16-64, one block per stage."""
    return _create("coatnet_tiny", img_size=img_size, **kw)


# --------------------------------------------------------------------------------------------------
# Relative-position table resizing (checkpoints made at another image size)
# --------------------------------------------------------------------------------------------------


def _interp_linear_clamped(points: torch.Tensor, values: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    """Piecewise-linear interpolation of ``values`` along ``dim`` (clamped at the ends), as timm's
    RegularGridInterpolator does per axis; bilinear on a grid is two such passes."""
    idx_r = torch.bucketize(x, points).clamp(max=points.shape[0] - 1)
    idx_l = (idx_r - 1).clamp(0, points.shape[0] - 1)
    dl = (x - points[idx_l]).clamp(min=0)
    dr = (points[idx_r] - x).clamp(min=0)
    both_zero = (dl == 0) & (dr == 0)
    dl = torch.where(both_zero, torch.ones_like(dl), dl)
    dr = torch.where(both_zero, torch.ones_like(dr), dr)
    shape = [1] * values.ndim
    shape[dim] = -1
    vl = values.index_select(dim, idx_l)
    vr = values.index_select(dim, idx_r)
    return (vl * dr.view(shape) + vr * dl.view(shape)) / (dl + dr).view(shape)


def resize_rel_pos_bias_table(table: torch.Tensor, new_window_size: Tuple[int, int]) -> torch.Tensor:
    """Resize a flat ((2h-1)(2w-1), heads) bias table to ``new_window_size`` (timm's BEiT-style resize).

    The source window is assumed square (as timm does for checkpoints). Offsets are spread on a
    geometric progression so the near-diagonal entries keep their values, then interpolated linearly.
    """
    dst = (2 * new_window_size[0] - 1, 2 * new_window_size[1] - 1)
    src_n, heads = table.shape
    side = int(round(math.sqrt(src_n)))
    if side * side != src_n:
        raise ValueError(f"relative position table of {src_n} rows is not square")
    src = (side, side)
    if src == dst:
        return table

    def _calc(s, d):
        left, right = 1.01, 1.5
        while right - left > 1e-6:
            q = (left + right) / 2.0
            gp = (1.0 - q ** (s // 2)) / (1.0 - q)
            if gp > d // 2:
                right = q
            else:
                left = q
        dis, cur = [], 1
        for i in range(s // 2):
            dis.append(cur)
            cur += q ** (i + 1)
        return [-v for v in reversed(dis)] + [0] + dis

    y = torch.tensor(_calc(src[0], dst[0]))
    x = torch.tensor(_calc(src[1], dst[1]))
    ty, tx = dst[0] // 2.0, dst[1] // 2.0
    dy = torch.arange(-ty, ty + 0.1, 1.0)
    dx = torch.arange(-tx, tx + 0.1, 1.0)
    z = table.detach().float().cpu().t().reshape(heads, src[0], src[1])
    z = _interp_linear_clamped(y, z, dy, dim=1)
    z = _interp_linear_clamped(x, z, dx, dim=2)
    return z.reshape(heads, -1).t().contiguous().to(table.dtype)


# --------------------------------------------------------------------------------------------------
# Cost, from the config alone (no model is built)
# --------------------------------------------------------------------------------------------------


def count_macs(cfg: CoAtNetCfg, img_size: int, num_classes: int = 1000) -> int:
    """Config + image size -> multiply-accumulates for one image: convolutions, linear layers and the
    two attention matmuls (norms, activations, pooling and softmax are not counted)."""
    cc, tc = cfg.conv_cfg, cfg.transformer_cfg
    s = img_size // 2
    macs = s * s * 3 * 9 * cfg.stem_width[0] + s * s * cfg.stem_width[0] * 9 * cfg.stem_width[1]
    in_chs, f_in = cfg.stem_width[1], s
    for i, f_out in enumerate(feature_sizes(img_size, len(cfg.embed_dim))):
        out = cfg.embed_dim[i]
        for j in range(cfg.depths[i]):
            stride = 2 if j == 0 else 1
            fi = f_in if j == 0 else f_out
            n = f_out * f_out
            if stride == 2 and in_chs != out:
                macs += n * in_chs * out  # Proj(Pool(x)) shortcut
            if cfg.block_type[i] == "C":
                mid = make_divisible((out if cc.expand_output else in_chs) * cc.expand_ratio)
                rd = int(cc.attn_ratio * (out if cc.expand_output else mid))
                f1 = fi if (stride == 1 or cc.stride_mode == "dw") else f_out  # where the 1x1 expand runs
                macs += f1 * f1 * in_chs * mid + n * mid * cc.kernel_size ** 2 + 2 * mid * rd + n * mid * out
            else:
                dim_attn = out if tc.expand_first else in_chs
                macs += n * in_chs * 3 * dim_attn + 2 * n * n * dim_attn + n * dim_attn * out
                macs += 2 * n * out * int(out * tc.expand_ratio)
            in_chs = out
        f_in = f_out
    if cfg.head_hidden_size:
        macs += in_chs * cfg.head_hidden_size + cfg.head_hidden_size * num_classes
    else:
        macs += in_chs * num_classes
    return macs


def count_params(cfg: CoAtNetCfg, img_size: int, num_classes: int = 1000) -> int:
    """Config + image size -> number of parameters (the rel-pos tables grow with the image size)."""
    cc, tc = cfg.conv_cfg, cfg.transformer_cfg
    s0, s1 = cfg.stem_width
    p = 3 * 9 * s0 + 2 * s0 + s0 * 9 * s1 + (s0 + s1 if cfg.stem_bias else 0)
    in_chs = s1
    for i, f in enumerate(feature_sizes(img_size, len(cfg.embed_dim))):
        out = cfg.embed_dim[i]
        for j in range(cfg.depths[i]):
            if j == 0 and in_chs != out:
                bias = cc.output_bias if cfg.block_type[i] == "C" else tc.shortcut_bias
                p += in_chs * out + (out if bias else 0)
            if cfg.block_type[i] == "C":
                mid = make_divisible((out if cc.expand_output else in_chs) * cc.expand_ratio)
                rd = int(cc.attn_ratio * (out if cc.expand_output else mid))
                p += 2 * in_chs + in_chs * mid + 2 * mid + mid * cc.kernel_size ** 2 + 2 * mid * rd + rd + mid
                p += 2 * mid + mid * out + (out if cc.output_bias else 0)
            else:
                da = out if tc.expand_first else in_chs
                heads = da // tc.dim_head
                hidden = int(out * tc.expand_ratio)
                p += 2 * in_chs + in_chs * 3 * da + da * out + ((3 * da + out) if tc.attn_bias else 0)
                p += (2 * f - 1) ** 2 * heads + 2 * out + 2 * out * hidden + hidden + out
                p += 2 * out if tc.init_values else 0
            in_chs = out
    if cfg.head_hidden_size:
        h = cfg.head_hidden_size
        p += 2 * in_chs + in_chs * h + h + h * num_classes + num_classes
    else:
        p += 2 * in_chs + in_chs * num_classes + num_classes
    return p
