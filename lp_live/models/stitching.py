"""Stitching and eye/lip retargeting MLPs: flat keypoint vectors -> keypoint deltas."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class RetargetingMLP(nn.Module):
    """Linear/ReLU stack ending in a bare Linear; keys `mlp.{0,2,4,...}`.

    Args:
        input_size: flattened input (e.g. 126 = [x_s, x_d] for stitching).
        hidden_sizes: widths of the hidden layers.
        output_size: flattened output (63 deltas, plus (tx, ty) for stitching).
    """

    def __init__(self, *, input_size: int, hidden_sizes: Sequence[int], output_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = input_size
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, hidden), nn.ReLU()]
            width = hidden
        layers.append(nn.Linear(width, output_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)
