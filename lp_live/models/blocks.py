"""Convolution blocks shared by the appearance extractor and the warping module."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SameBlock2d(nn.Module):
    """Conv2d 3x3 -> BatchNorm -> activation, resolution preserved."""

    def __init__(self, in_chs: int, out_chs: int, act_layer: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_chs)
        self.ac = act_layer()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


class DownBlock2d(nn.Module):
    """Conv2d 3x3 -> BatchNorm -> ReLU -> 2x2 average pool."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(out_chs)
        self.pool = nn.AvgPool2d(kernel_size=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class DownBlock3d(nn.Module):
    """Conv3d 3x3x3 -> BatchNorm -> ReLU -> average pool over H and W only (depth is kept)."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_chs, out_chs, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_chs)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class UpBlock3d(nn.Module):
    """Nearest upsampling x2 over H and W, then Conv3d 3x3x3 -> BatchNorm -> ReLU."""

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_chs, out_chs, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(out_chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=(1, 2, 2))
        return F.relu(self.norm(self.conv(x)))


class ResBlock3d(nn.Module):
    """Pre-activation residual block: x + conv2(relu(bn2(conv1(relu(bn1(x))))))."""

    def __init__(self, chs: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(chs, chs, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(chs, chs, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(chs)
        self.norm2 = nn.BatchNorm3d(chs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.relu(self.norm1(x)))
        h = self.conv2(F.relu(self.norm2(h)))
        return h + x
