"""The PeakNet segmentation model: ConvNeXt V2 backbone (``transformers``), BiFPN, seg head.

Module and parameter names follow PeakNet (github.com/carbonscott/peaknet, ``modeling/``), so
the ``state_dict`` of a trained PeakNet loads unchanged: ``backbone.*`` (transformers'
``ConvNextV2Backbone``), ``backbone_to_bifpn.{i}``, ``bifpn.blocks.{b}.conv.{m|q}{level}``,
``bifpn.blocks.{b}.w_m|w_q``, ``seg_lateral_layers.{i}.layers.{j}``, ``head_segmask``,
``head_upsample_layer`` (with ``uses_learned_upsample``) and ``final_conv``.
"""

from __future__ import annotations

from math import log2
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from airflow_provider_lclstream.inference.config import (
        BiFPNBlockConfig,
        BiFPNConfig,
        PeakNetModelConfig,
    )


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinear resize done in float32 (as PeakNet does), returned in the input's dtype."""
    return F.interpolate(x.float(), scale_factor=scale, mode="bilinear", align_corners=False).to(
        x.dtype
    )


class DepthwiseSeparableConv2d(nn.Module):
    """A per-channel convolution followed by a 1x1 channel mix."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 1, bias: bool = True
    ) -> None:
        super().__init__()
        self.depthwise_conv = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=kernel_size // 2,
            groups=in_channels, bias=bias,
        )  # fmt: skip
        self.pointwise_conv = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class BiFPNBlock(nn.Module):
    """One bidirectional fusion over levels ``base_level .. base_level + num_levels - 1``.

    Top-down pass M fuses each level with the upsampled coarser one; bottom-up pass Q fuses
    each level with its input, its M output and the downsampled finer Q output. Fusion weights
    are learned (``w_m``: 2 per M level, ``w_q``: 3 per Q level) and normalised by their sum.
    """

    def __init__(self, config: BiFPNBlockConfig) -> None:
        super().__init__()
        self.config = config
        levels = max(config.num_levels, 3)
        self.min_level = config.base_level
        self.max_level = config.base_level + levels - 1
        features = config.num_features

        def fuse() -> nn.Sequential:
            return nn.Sequential(
                DepthwiseSeparableConv2d(features, features, bias=False),
                nn.BatchNorm2d(features, eps=config.bn.eps, momentum=config.bn.momentum),
                nn.ReLU(),
            )

        self.conv = nn.ModuleDict()
        for level in range(self.min_level, self.max_level):
            self.conv[f"m{level}"] = fuse()
        for level in range(self.min_level + 1, self.max_level + 1):
            self.conv[f"q{level}"] = fuse()
        self.w_m = nn.Parameter(torch.randn(levels - 1, 2))
        self.w_q = nn.Parameter(torch.randn(levels - 1, 3))

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        eps = self.config.fusion.eps
        p = {level: x[i] for i, level in enumerate(range(self.min_level, self.max_level + 1))}
        m: dict[int, torch.Tensor] = {}
        coarse = p[self.max_level]
        for i, level in enumerate(range(self.max_level - 1, self.min_level - 1, -1)):
            w1, w2 = self.w_m[i]
            up = _resize_plain(coarse, self.config.up_scale_factor)
            fused = (w1 * p[level] + w2 * up) / (w1 + w2 + eps)
            coarse = m[level] = self.conv[f"m{level}"](fused)
        q: dict[int, torch.Tensor] = {self.min_level: m[self.min_level]}
        for i, level in enumerate(range(self.min_level + 1, self.max_level + 1)):
            w1, w2, w3 = self.w_q[i]
            down = _resize_plain(q[level - 1], self.config.down_scale_factor)
            middle = m[level] if level < self.max_level else p[level]
            fused = (w1 * p[level] + w2 * middle + w3 * down) / (w1 + w2 + w3 + eps)
            q[level] = self.conv[f"q{level}"](fused)
        return [q[level] for level in range(self.min_level, self.max_level + 1)]


def _resize_plain(x: torch.Tensor, scale: float) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


class BiFPN(nn.Module):
    def __init__(self, config: BiFPNConfig) -> None:
        super().__init__()
        self.config = config
        self.blocks = nn.Sequential(*[BiFPNBlock(config.block) for _ in range(config.num_blocks)])

    def forward(self, x: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.blocks(x)


class SegLateralLayer(nn.Module):
    """3x3 conv + GroupNorm + GELU, each followed by a 2x upsample, ``num_layers`` times."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_groups: int,
        num_layers: int,
        base_scale_factor: int = 2,
    ) -> None:
        super().__init__()
        self.enables_upsample = num_layers > 0
        self.base_scale_factor = base_scale_factor
        self.layers = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1),
                nn.GroupNorm(num_groups, out_channels),
                nn.GELU(),
            )
            for i in range(max(num_layers, 1))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
            if self.enables_upsample:
                x = _resize(x, self.base_scale_factor)
        return x


class PeakNet(nn.Module):
    """``forward(x)``: ``(N, C, H, W)`` frames -> ``(N, num_classes, H, W)`` logits."""

    def __init__(self, config: PeakNetModelConfig) -> None:
        super().__init__()
        from transformers import ConvNextV2Backbone, ConvNextV2Config

        self.config = config
        backbone_config = ConvNextV2Config(**config.backbone)
        self.backbone = ConvNextV2Backbone(config=backbone_config)
        features = config.bifpn.block.num_features
        indices: list[int] = list(self.backbone.out_indices or [])
        sizes: list[int] = list(backbone_config.hidden_sizes or [])
        channels = [sizes[i - 1] for i in indices]
        self.backbone_to_bifpn = nn.ModuleList(nn.Conv2d(c, features, 1) for c in channels)
        self.bifpn = BiFPN(config.bifpn)
        head = config.seg_head
        finest = head.up_scale_factor[0]
        self.seg_lateral_layers = nn.ModuleList(
            SegLateralLayer(
                features,
                head.out_channels,
                head.num_groups,
                int(log2(scale / finest)),
                head.base_scale_factor,
            )  # fmt: skip
            for scale in head.up_scale_factor
        )
        self.head_segmask = nn.Conv2d(head.out_channels, head.num_classes, 1)
        if head.uses_learned_upsample:
            self.head_upsample_layer = nn.Sequential(
                nn.ConvTranspose2d(
                    head.num_classes, head.num_classes, finest + 2, stride=finest, padding=1
                ),  # fmt: skip
                nn.GroupNorm(1, head.num_classes),
                nn.GELU(),
            )
        self.final_conv = nn.Conv2d(head.num_classes, head.num_classes, 3, padding=1)
        self.max_scale_factor = finest

    def extract_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.backbone(x).feature_maps
        return self.bifpn(
            [adapt(fmap) for adapt, fmap in zip(self.backbone_to_bifpn, maps, strict=True)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = None
        for lateral, fmap in zip(
            self.seg_lateral_layers[::-1], self.extract_features(x)[::-1], strict=True
        ):
            out = lateral(fmap)
            fused = out if fused is None else fused + out
        assert fused is not None
        pred = _resize(self.head_segmask(fused), self.max_scale_factor)
        if self.config.seg_head.uses_learned_upsample:
            pred = pred + self.head_upsample_layer(pred)
        return self.final_conv(pred)


def instance_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Each ``(C, H, W)`` image scaled to zero mean and unit variance (PeakNet's input norm)."""
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    std = x.std(dim=(-3, -2, -1), keepdim=True)
    return (x - mean) / (std + eps)
