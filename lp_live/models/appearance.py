"""Appearance feature extractor F: source image -> 3-D feature volume."""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from .blocks import DownBlock2d, ResBlock3d, SameBlock2d


class AppearanceFeatureExtractor(nn.Module):
    """2-D encoder whose channels fold into a (C, D) volume, refined by 3-D residual blocks.

    Args:
        image_channel: input channels (RGB).
        block_expansion: channels after the first block.
        num_down_blocks: 2x downsampling steps.
        max_features: channel cap of the encoder.
        reshape_channel: C of the volume; the 2-D channels fold as c * reshape_depth + d.
        reshape_depth: D of the volume.
        num_resblocks: 3-D residual blocks after the fold.
    """

    def __init__(
        self,
        *,
        image_channel: int = 3,
        block_expansion: int = 64,
        num_down_blocks: int = 2,
        max_features: int = 512,
        reshape_channel: int = 32,
        reshape_depth: int = 16,
        num_resblocks: int = 6,
    ) -> None:
        super().__init__()
        self.reshape_channel = reshape_channel
        self.reshape_depth = reshape_depth
        self.first = SameBlock2d(image_channel, block_expansion)
        chs = [min(max_features, block_expansion * 2**i) for i in range(num_down_blocks + 1)]
        self.down_blocks = nn.ModuleList(DownBlock2d(chs[i], chs[i + 1]) for i in range(num_down_blocks))
        self.second = nn.Conv2d(chs[-1], max_features, kernel_size=1)
        # The official names start with a digit ("3dr0"), so they go through an OrderedDict.
        self.resblocks_3d = nn.Sequential(
            OrderedDict((f"3dr{i}", ResBlock3d(reshape_channel)) for i in range(num_resblocks))
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: (B, 3, H, W) RGB in [0, 1] -> (B, C, D, H/4, W/4)."""
        x = self.first(image)
        for block in self.down_blocks:
            x = block(x)
        x = self.second(x)
        b, _, h, w = x.shape
        x = x.reshape(b, self.reshape_channel, self.reshape_depth, h, w)  # (B, 512, H, W) -> (B, 32, 16, H, W)
        return self.resblocks_3d(x)
