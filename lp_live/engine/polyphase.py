"""Polyphase SPADE: G's shared SPADE conv computed on the low-resolution segmap (exact)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.spade import SPADE

# Polyphase form of conv3x3(nearest_upsample(x, f)): output row f*i + p reads upsampled rows
# f*i + p + a (a = -1, 0, 1), i.e. low-res rows i + floor((p + a) / f). Per axis there are three
# phase kinds: p = 0 reads rows (i-1, i) with taps (a=-1 | a=0,1); 0 < p < f-1 reads row i with
# all taps; p = f-1 reads rows (i, i+1) with taps (a=-1,0 | a=1). Zero padding agrees: a
# low-res row is out of range exactly when the upsampled rows it stands for are.
_PHASE_TAPS = {"first": ((0,), (1, 2)), "inner": ((0, 1, 2),), "last": ((0, 1), (2,))}
_PHASE_PAD = {"first": (1, 0), "inner": (0, 0), "last": (0, 1)}  # low-res padding (before, after)


class NearestUpConv2d(nn.Module):
    """`conv(interpolate(x, scale_factor=f, mode="nearest"))` for a 3x3, stride-1, padding-1 conv,
    computed on the low-resolution x: one small conv per pair of phase kinds (kernels 1 or 2
    taps wide, pre-summed), interleaved by a pixel shuffle. Same sum, 2.25x (f = 2) to 5.8x
    (f = 4) fewer multiply-adds; float32 results agree to about 1e-7.

    Args:
        conv: the 3x3 conv (not modified).
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1) or conv.groups != 1:
            raise ValueError(f"NearestUpConv2d needs a plain 3x3 conv with padding 1, got {conv}")
        w = conv.weight.detach().float()
        self.kernels = nn.ParameterDict()
        for row, row_taps in _PHASE_TAPS.items():
            for col, col_taps in _PHASE_TAPS.items():
                k = torch.stack([torch.stack([w[:, :, list(r)][:, :, :, list(c)].sum((2, 3)) for c in col_taps], -1)
                                 for r in row_taps], -2)  # (out, in, rows, cols)
                self.kernels[f"{row}_{col}"] = nn.Parameter(k.to(conv.weight.dtype), requires_grad=False)
        self.bias = conv.bias

    def forward(self, x: torch.Tensor, factor: int) -> torch.Tensor:
        kinds = ["first", *["inner"] * (factor - 2), "last"]  # phase p -> kind
        outs = {}
        for row in dict.fromkeys(kinds):
            for col in dict.fromkeys(kinds):
                (top, bottom), (left, right) = _PHASE_PAD[row], _PHASE_PAD[col]
                padded = F.pad(x, (left, right, top, bottom)) if top or bottom or left or right else x
                outs[row, col] = F.conv2d(padded, self.kernels[f"{row}_{col}"], self.bias)
        phases = torch.stack([outs[r, c] for r in kinds for c in kinds], dim=2)  # (B, C, f*f, H, W)
        b, c, _, h, w = phases.shape
        return F.pixel_shuffle(phases.reshape(b, c * factor * factor, h, w), factor)


class PolyphaseSPADE(nn.Module):
    """SPADE whose shared conv runs on the low-resolution segmap when it is upsampled by 2 or 4
    (`NearestUpConv2d`); other sizes take the original path. Wraps a copied `SPADE`."""

    def __init__(self, spade: nn.Module) -> None:
        super().__init__()
        self.param_free_norm = spade.param_free_norm
        conv, act = spade.mlp_shared[0], spade.mlp_shared[1]
        self.mlp_shared = spade.mlp_shared
        self.up_conv = NearestUpConv2d(conv)
        self.act = act
        self.mlp_gamma = spade.mlp_gamma
        self.mlp_beta = spade.mlp_beta

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        normalized = self.param_free_norm(x)
        factor = x.shape[2] // seg.shape[2]
        if factor in (2, 4) and tuple(x.shape[2:]) == (factor * seg.shape[2], factor * seg.shape[3]):
            actv = self.act(self.up_conv(seg, factor))
        else:
            actv = self.mlp_shared(F.interpolate(seg, size=x.shape[2:], mode="nearest"))
        return normalized * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


def polyphase_spades(module: nn.Module) -> nn.Module:
    """Replace every SPADE under `module` by a `PolyphaseSPADE`."""
    for name, child in module.named_children():
        if isinstance(child, SPADE):
            setattr(module, name, PolyphaseSPADE(child))
        else:
            polyphase_spades(child)
    return module

