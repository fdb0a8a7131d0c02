"""W's sampling steps behind one interface; the implementation is chosen when the engine is built.

    hourglass_input(compressed, kp_driving, kp_source) -> (B, (K+1)*(C+1), D, H, W) float32:
        per slot the heatmap and the compressed volume sampled at grid - kd_k + ks_k
    deformation(mask_logits, kp_driving, kp_source)    -> (B, D, H, W, 3) float32:
        the softmax-weighted sum of the K+1 slots' motions
    warp(feature, deformation)                          -> (B, C, D, H, W): the source volume
        sampled at the deformation, in its dtype

Implementations (each a module owning the float32 identity grid as a buffer, so a captured
CUDA graph reads a tensor the engine owns):
    FusedSampler       the `ops` kernels: Triton on CUDA, their PyTorch reference elsewhere;
                       no repeated volume and no (B, K+1, D, H, W, 3) sparse motions
    GridSampleSampler  PyTorch: `grid_sample` of the repeated volume, the deformation as one
                       matmul, the warp's `grid_sample` split over the threads at small batch
    SeparableSampler   GridSampleSampler with the slots sampled by three 1-D interpolations

A source with batch 1 serves a batch of B driving frames (views, broadcasting, stride-0 reads).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.warping import deformed_features, heatmaps, make_coordinate_grid, sparse_motion
from . import ops
from .backend import Backend


def axis_interpolation(coords: torch.Tensor, size: int) -> torch.Tensor:
    """Linear-interpolation weights (..., n_out, size) of normalised coordinates (..., n_out),
    as `grid_sample(align_corners=False, padding_mode="zeros")` computes them per axis."""
    pos = ((coords + 1) * size - 1) / 2  # grid_sample's unnormalisation
    i0 = torch.floor(pos)
    w0, w1 = (i0 + 1) - pos, pos - i0
    idx = torch.arange(size, dtype=coords.dtype, device=coords.device)
    # out-of-range taps match no index: zero padding
    return w0[..., None] * (idx == i0[..., None]) + w1[..., None] * (idx == (i0 + 1)[..., None])


def translated_samples(volume: torch.Tensor, axes: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
                       kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
    """`models.warping.deformed_features` without a grid: (B, C, D, H, W) -> (B, K+1, C, D, H, W).

    Slot k samples the volume at grid - kd_k + ks_k (slot 0: the grid itself). A shifted grid
    is still separable, so the trilinear sample is three 1-D interpolations, done as three
    small matmuls with dense (n_out, n_in) weight matrices: 8 ms instead of grid_sample's
    25 ms for the 22 x 4-channel volume on the 2-core CPU (compiled), 7e-8 relative apart.

    Args:
        volume: (B, C, D, H, W), or (1, C, D, H, W) for one source: broadcast, not copied.
        axes: the identity grid's x (W,), y (H,) and z (D,) coordinates.
        kp_driving: (B, K, 3); kp_source: (B or 1, K, 3).
    """
    vb, c, d, h, w = volume.shape
    b = kp_driving.shape[0]
    mats = []
    for i, (axis, size) in enumerate(zip(axes, (w, h, d))):
        shifted = (axis - kp_driving[..., i, None]) + kp_source[..., i, None]  # (B, K, n), as grid - kd + ks
        mats.append(axis_interpolation(torch.cat([axis.expand(b, 1, -1), shifted], dim=1), size))
    ax, ay, az = mats  # (B, K+1, n_out, n_in)
    slots = ax.shape[1]
    out = torch.matmul(volume.reshape(vb, 1, c * d * h, w), ax.transpose(-1, -2))  # (B, K+1, C*D*H, W)
    out = torch.matmul(ay[:, :, None], out.reshape(b, slots, c * d, h, w))  # (B, K+1, C*D, H, W)
    out = torch.matmul(az[:, :, None], out.reshape(b, slots, c, d, h * w))  # (B, K+1, C, D, H*W)
    return out.reshape(b, slots, c, d, h, w)


def grid_sample_split(volume: torch.Tensor, grid: torch.Tensor, pieces: int) -> torch.Tensor:
    """`F.grid_sample(volume, grid, align_corners=False)` (5-D), with the output depth split
    over `pieces` batch entries (the largest divisor of the depth not above `pieces`).

    PyTorch's CPU 3-D grid sampler parallelises over the batch only; at batch 1 the expanded
    (not copied) volume and a reshaped grid give each thread a slab of output depth. The
    samples are the same computations, so the result is bit-identical.
    """
    b, d = grid.shape[:2]
    pieces = max(p for p in range(1, max(1, pieces) + 1) if d % p == 0)
    if pieces == 1:
        return F.grid_sample(volume, grid, align_corners=False)
    c = volume.shape[1]
    volume = volume[:, None].expand(b, pieces, *volume.shape[1:]).reshape(b * pieces, *volume.shape[1:])
    grid = grid.reshape(b * pieces, d // pieces, *grid.shape[2:])  # (B*P, D/P, H, W, 3)
    out = F.grid_sample(volume, grid, align_corners=False)  # (B*P, C, D/P, H, W)
    out = out.reshape(b, pieces, c, d // pieces, *out.shape[3:]).transpose(1, 2)
    return out.reshape(b, c, d, *out.shape[4:])  # (B, C, P, D/P, H, W) -> (B, C, D, H, W)



class Sampler(nn.Module):
    """The interface (module docstring); `grid` is the (D, H, W, 3) float32 identity grid."""

    def __init__(self, grid_shape: tuple[int, int, int], *, device: torch.device | str = "cpu") -> None:
        super().__init__()
        # constant, float32, not in any state dict (ARCHITECTURE §8.4)
        self.register_buffer("grid", make_coordinate_grid(*grid_shape, dtype=torch.float32, device=device),
                             persistent=False)

    def hourglass_input(self, compressed: torch.Tensor, kp_driving: torch.Tensor,
                        kp_source: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def deformation(self, mask_logits: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def warp(self, feature: torch.Tensor, deformation: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FusedSampler(Sampler):
    """The fused `ops` kernels (`Backend.AUTO`: Triton for CUDA tensors, else the reference)."""

    def __init__(self, grid_shape: tuple[int, int, int], *, device: torch.device | str = "cpu",
                 backend: Backend | str = Backend.AUTO) -> None:
        super().__init__(grid_shape, device=device)
        self.backend = Backend(backend)

    def hourglass_input(self, compressed, kp_driving, kp_source):
        return ops.hourglass_input(compressed.contiguous(), kp_driving, kp_source, grid=self.grid,
                                   backend=self.backend)

    def deformation(self, mask_logits, kp_driving, kp_source):
        return ops.softmax_deformation(mask_logits, kp_driving, kp_source, grid=self.grid, backend=self.backend)

    def warp(self, feature, deformation):
        return ops.grid_sample_3d(feature.contiguous(), deformation, backend=self.backend)


class GridSampleSampler(Sampler):
    """PyTorch's `grid_sample`; the warp's depth split over `pieces` threads (`grid_sample_split`)."""

    def __init__(self, grid_shape: tuple[int, int, int], *, device: torch.device | str = "cpu",
                 pieces: int = 1) -> None:
        super().__init__(grid_shape, device=device)
        self.pieces = pieces

    def slot_samples(self, compressed: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> torch.Tensor:
        """(B, K+1, C, D, H, W): the compressed volume sampled for each slot."""
        return deformed_features(compressed, sparse_motion(self.grid, kp_driving, kp_source))

    def hourglass_input(self, compressed, kp_driving, kp_source):
        b = kp_driving.shape[0]
        _, _, d, h, w = compressed.shape
        deformed = self.slot_samples(compressed, kp_driving, kp_source)
        heat = heatmaps(self.grid, kp_driving, kp_source)
        # exp(-50 d^2) underflows to float32 denormals for about 9 % of the voxels; x86 float32
        # FMAs on denormal inputs are many times slower (the hourglass's first and last conv ran
        # 3-5x slower, compiled fp32). Flushing them changes values by < 1.2e-38.
        heat = torch.where(heat.abs() < torch.finfo(torch.float32).tiny, 0.0, heat)
        return torch.cat([heat, deformed], dim=2).reshape(b, -1, d, h, w)  # (B, (K+1)*5, D, H, W)

    def deformation(self, mask_logits, kp_driving, kp_source):
        b = kp_driving.shape[0]
        d, h, w = mask_logits.shape[2:]
        mask = F.softmax(mask_logits, dim=1)  # (B, K+1, D, H, W) float32
        # sum_k mask_k * (grid - kd_k + ks_k) = grid * sum_k mask_k + sum_{k>=1} mask_k * (ks_k - kd_k),
        # with sum_k mask_k = 1: one (D*H*W, K) x (K, 3) product instead of a 22-slot strided sum
        shift = (kp_source - kp_driving).float()  # (B, K, 3)
        offset = torch.bmm(mask[:, 1:].reshape(b, shift.shape[1], -1).transpose(1, 2), shift)  # (B, D*H*W, 3)
        return self.grid + offset.reshape(b, d, h, w, 3)

    def warp(self, feature, deformation):
        b = deformation.shape[0]
        feature = feature.expand(b, *feature.shape[1:])  # a view for one source
        return grid_sample_split(feature, deformation, max(1, self.pieces // b))


class SeparableSampler(GridSampleSampler):
    """`GridSampleSampler` with the slots sampled by `translated_samples` (CPU: 8 ms instead of 25)."""

    def slot_samples(self, compressed, kp_driving, kp_source):
        grid = self.grid
        axes = (grid[0, 0, :, 0], grid[0, :, 0, 1], grid[:, 0, 0, 2])
        return translated_samples(compressed.contiguous(), axes, kp_driving, kp_source)
