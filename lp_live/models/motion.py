"""Motion extractor M: ConvNeXt-V2 tiny with pose, expression and keypoint heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of an NCHW tensor (ConvNeXt's channels_first variant).

    Written out instead of permuting to NHWC because the official form divides by
    sqrt(var + eps) with a biased variance, and parity is checked at 2e-5.
    """

    def __init__(self, chs: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(chs))
        self.bias = nn.Parameter(torch.zeros(chs))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2) on NHWC input."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, chs))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.norm(x, p=2, dim=(1, 2), keepdim=True)  # (B, 1, 1, C)
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        return self.gamma * (x * nx) + self.beta + x


class ConvNeXtBlock(nn.Module):
    """Depthwise 7x7 -> LayerNorm -> Linear 4x -> GELU -> GRN -> Linear, plus the input."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(chs, chs, kernel_size=7, padding=3, groups=chs)
        self.norm = nn.LayerNorm(chs, eps=1e-6)
        self.pwconv1 = nn.Linear(chs, 4 * chs)
        self.act = nn.GELU()
        self.grn = GRN(4 * chs)
        self.pwconv2 = nn.Linear(4 * chs, chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).permute(0, 2, 3, 1)  # (B, C, H, W) -> (B, H, W, C)
        h = self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(h)))))
        return x + h.permute(0, 3, 1, 2)


class ConvNeXtV2Heads(nn.Module):
    """ConvNeXt-V2 backbone, global average pool, LayerNorm and seven linear heads.

    The heads return raw values: pose angles as `num_bins` logits, scale and translation
    unconstrained, expression and canonical keypoints as (B, 3 * num_kp).
    """

    def __init__(self, *, num_kp: int, num_bins: int, depths: Sequence[int], dims: Sequence[int]) -> None:
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0]))
        downs = [
            nn.Sequential(LayerNorm2d(dims[i]), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            for i in range(len(dims) - 1)
        ]
        self.downsample_layers = nn.ModuleList([stem, *downs])
        self.stages = nn.ModuleList(
            nn.Sequential(*(ConvNeXtBlock(dim) for _ in range(depth))) for depth, dim in zip(depths, dims)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.fc_kp = nn.Linear(dims[-1], 3 * num_kp)
        self.fc_scale = nn.Linear(dims[-1], 1)
        self.fc_pitch = nn.Linear(dims[-1], num_bins)
        self.fc_yaw = nn.Linear(dims[-1], num_bins)
        self.fc_roll = nn.Linear(dims[-1], num_bins)
        self.fc_t = nn.Linear(dims[-1], 3)
        self.fc_exp = nn.Linear(dims[-1], 3 * num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        x = self.norm(x.mean(dim=(-2, -1)))  # (B, C, H, W) -> (B, C)
        return {
            "pitch": self.fc_pitch(x),
            "yaw": self.fc_yaw(x),
            "roll": self.fc_roll(x),
            "t": self.fc_t(x),
            "exp": self.fc_exp(x),
            "scale": self.fc_scale(x),
            "kp": self.fc_kp(x),
        }


class MotionExtractor(nn.Module):
    """M(image) -> dict(pitch, yaw, roll, t, exp, scale, kp), all raw head outputs.

    Args:
        num_kp: implicit keypoints (21).
        num_bins: pose-angle bins (66, 3 degrees each).
        depths, dims: ConvNeXt-V2 stage depths and widths (tiny: 3-3-9-3, 96..768).
    """

    def __init__(
        self,
        *,
        num_kp: int = 21,
        num_bins: int = 66,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
    ) -> None:
        super().__init__()
        self.detector = ConvNeXtV2Heads(num_kp=num_kp, num_bins=num_bins, depths=depths, dims=dims)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """image: (B, 3, 256, 256) RGB in [0, 1]."""
        return self.detector(image)
