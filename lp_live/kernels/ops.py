"""The kernels' public functions: argument checks, then Triton or the PyTorch reference.

Every function takes `backend=` (`Backend.AUTO`: Triton for CUDA tensors when triton imports,
else the reference; `Backend.REFERENCE` forces PyTorch; `Backend.TRITON` forces Triton, in its
interpreter for CPU tensors). Coordinates, keypoints and the deformation are float32;
features keep their dtype (float32, float16 or bfloat16) and are accumulated in float32.

Source-side inputs (the sampled volume, `compressed`, `kp_source`) may have batch 1 for a
batch of B driving frames: one source for every slot, read with batch stride 0 (never copied
per slot). `grid` is the float32 (D, H, W, 3) identity grid; pass the caller's own tensor when
the call is captured in a CUDA graph (None: a cached one per size and device).

Under `torch.compile` each function is recorded as one opaque custom op (`torch.ops.lp_live.*`),
so graphs with `fullgraph=True` and CUDA graphs can contain them; called eagerly, they skip
the custom-op dispatch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from ..models.warping import KP_VARIANCE, make_coordinate_grid
from . import reference
from .backend import Backend, resolve_backend, triton_module

if TYPE_CHECKING:
    from .triton_kernels import Launch

FEATURE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
COMPRESSED_CHANNELS = 4  # `compress` of the official W (lp_live/models/registry.py): the hourglass input's C
_INT32_MAX = 2**31 - 1


# ---------------------------------------------------------------------------------------------
# public functions
# ---------------------------------------------------------------------------------------------
def grid_sample_3d(input: torch.Tensor, grid: torch.Tensor, *, backend: Backend | str = Backend.AUTO) -> torch.Tensor:
    """F.grid_sample(input, grid, mode="bilinear", padding_mode="zeros", align_corners=False) on 5-D inputs.

    Args:
        input: (N, C, D, H, W) or (1, C, D, H, W) features (batch 1: one volume sampled by all N
            grids), float32/float16/bfloat16.
        grid: (N, Do, Ho, Wo, 3) coordinates (x, y, z), used in float32 whatever its dtype.
        backend: see the module docstring.

    Returns (N, C, Do, Ho, Wo) in input's dtype.
    """
    _check_features("input", input, 5)
    if grid.dim() != 5 or grid.shape[-1] != 3 or input.shape[0] not in (1, grid.shape[0]):
        raise ValueError(f"grid shape {tuple(grid.shape)} != ({input.shape[0]}, Do, Ho, Wo, 3) for input "
                         f"{tuple(input.shape)}")
    _check_devices(input, grid)
    if torch.compiler.is_compiling():
        return torch.ops.lp_live.grid_sample_3d(input, grid, Backend(backend).value)
    return _grid_sample_3d(input, grid, backend)


def hourglass_input(
    compressed: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor, *,
    grid: torch.Tensor | None = None, backend: Backend | str = Backend.AUTO,
) -> torch.Tensor:
    """The dense-motion hourglass input: heatmaps and deformed features of the K+1 slots, fused.

    Slot 0 is the background (zero heatmap, compressed volume sampled at the identity grid);
    slot k >= 1 has heatmap gauss(kd_k) - gauss(ks_k) and the volume sampled at
    grid - kd_k + ks_k. The repeated (B*(K+1), C, D, H, W) volume is never built.

    Args:
        compressed: (B, C, D, H, W) or (1, C, D, H, W), `DenseMotionNetwork.compress_source`
            output (C = 4); D, H, W >= 2 (the identity grid divides by n - 1, as in the model).
        kp_driving: (B, K, 3); kp_source: (B, K, 3), or (1, K, 3) with a batch-1 `compressed`.
        grid: the identity grid (D, H, W, 3), or None.

    Returns (B, (K+1)*(C+1), D, H, W) in compressed's dtype; channel k*(C+1) is slot k's heatmap,
    channels k*(C+1)+1 .. k*(C+1)+C its deformed features (110 channels for K = 21, C = 4).
    """
    _check_features("compressed", compressed, 5)
    _check_keypoints(kp_driving, kp_source, kp_driving.shape[0])
    if compressed.shape[0] != kp_source.shape[0]:
        raise ValueError(f"compressed batch {compressed.shape[0]} != kp_source batch {kp_source.shape[0]}")
    grid = _grid(grid, compressed)
    _check_devices(compressed, kp_driving, kp_source, grid)
    if torch.compiler.is_compiling():
        return torch.ops.lp_live.hourglass_input(compressed, kp_driving, kp_source, grid, Backend(backend).value)
    return _hourglass_input(compressed, kp_driving, kp_source, grid, backend)


def deformation(
    mask: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor, *, grid: torch.Tensor | None = None,
    backend: Backend | str = Backend.AUTO,
) -> torch.Tensor:
    """sum_k mask_k * sparse_motion_k without building the (B, K+1, D, H, W, 3) sparse motions.

    Args:
        mask: (B, K+1, D, H, W) softmax weights over the slots (any float dtype; read as float32,
            float64 cast to float32 first).
        kp_driving: (B, K, 3); kp_source: (B, K, 3) or (1, K, 3).
        grid: the identity grid (D, H, W, 3), or None.

    Returns the deformation (B, D, H, W, 3), float32, last axis (x, y, z).
    """
    _check_mask(mask, kp_driving, kp_source)
    grid = _grid(grid, mask)
    if torch.compiler.is_compiling():
        return torch.ops.lp_live.deformation(mask, kp_driving, kp_source, grid, False, Backend(backend).value)
    return _deformation(mask, kp_driving, kp_source, grid, False, backend)


def softmax_deformation(
    mask_logits: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor, *,
    grid: torch.Tensor | None = None, backend: Backend | str = Backend.AUTO,
) -> torch.Tensor:
    """`deformation` of softmax(mask_logits, dim=1), the softmax computed in float32 inside the kernel.

    Args:
        mask_logits: (B, K+1, D, H, W), the `DenseMotionNetwork.mask` conv output.
        kp_driving: (B, K, 3); kp_source: (B, K, 3) or (1, K, 3).
        grid: the identity grid (D, H, W, 3), or None.

    Returns (B, D, H, W, 3) float32. The mask itself is not returned (W does not output it).
    """
    _check_mask(mask_logits, kp_driving, kp_source)
    grid = _grid(grid, mask_logits)
    if torch.compiler.is_compiling():
        return torch.ops.lp_live.deformation(mask_logits, kp_driving, kp_source, grid, True, Backend(backend).value)
    return _deformation(mask_logits, kp_driving, kp_source, grid, True, backend)


# ---------------------------------------------------------------------------------------------
# implementations
# ---------------------------------------------------------------------------------------------
def _grid_sample_3d(input: torch.Tensor, grid: torch.Tensor, backend: Backend | str) -> torch.Tensor:
    if resolve_backend(backend, input, grid) is Backend.REFERENCE:
        return reference.grid_sample_3d(input, grid)
    _, c, d, h, w = input.shape
    n = grid.shape[0]
    out_voxels = grid.shape[1] * grid.shape[2] * grid.shape[3]
    if n == 0 or c == 0 or out_voxels == 0:
        return input.new_zeros((n, c, *grid.shape[1:4]))
    _check_int32(c * d * h * w, c * out_voxels)
    return triton_module(input.device).grid_sample_3d(input.contiguous(), grid.float().contiguous())


def _hourglass_input(
    compressed: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor, grid: torch.Tensor,
    backend: Backend | str,
) -> torch.Tensor:
    if resolve_backend(backend, compressed, kp_driving, kp_source) is Backend.REFERENCE:
        return reference.hourglass_input(compressed, kp_driving, kp_source, grid)
    _, c, d, h, w = compressed.shape
    b, k = kp_driving.shape[:2]
    if compressed.numel() == 0 or b == 0:
        return compressed.new_zeros((b, (k + 1) * (c + 1), d, h, w))
    _check_int32((k + 1) * (c + 1) * d * h * w)
    return triton_module(compressed.device).hourglass_input(
        compressed.contiguous(), kp_driving.float().contiguous(), kp_source.float().contiguous(),
        grid.float().contiguous(), KP_VARIANCE,
    )


def _deformation(
    mask: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor, grid: torch.Tensor, softmax: bool,
    backend: Backend | str,
) -> torch.Tensor:
    if resolve_backend(backend, mask, kp_driving, kp_source) is Backend.REFERENCE:
        fn = reference.softmax_deformation if softmax else reference.deformation
        return fn(mask, kp_driving, kp_source, grid)
    b, slots, d, h, w = mask.shape
    if mask.numel() == 0:
        return torch.zeros((b, d, h, w, 3), dtype=torch.float32, device=mask.device)
    _check_int32(slots * d * h * w, 3 * d * h * w)
    if mask.dtype not in FEATURE_DTYPES:
        mask = mask.float()  # e.g. float64: the kernel reads float32 anyway, and is compiled for FEATURE_DTYPES
    return triton_module(mask.device).deformation(
        mask.contiguous(), kp_driving.float().contiguous(), kp_source.float().contiguous(),
        grid.float().contiguous(), softmax,
    )


def triton_launches() -> list[Launch]:
    """Every Triton kernel variant the functions above launch on CUDA (`triton_kernels.Launch` objects).

    One per feature dtype and flag (softmax or not for the deformation). The hourglass
    input is compiled per channel count (a constexpr); this lists the model's (COMPRESSED_CHANNELS).
    `tests/test_kernels_aot.py` compiles each for the GPU architectures the project supports.
    """
    from . import triton_kernels as tk

    launches = []
    for dtype in FEATURE_DTYPES:
        launches.append(tk.grid_sample_3d_launch(dtype))
        launches.append(tk.hourglass_input_launch(dtype, COMPRESSED_CHANNELS, KP_VARIANCE))
        launches.extend(tk.deformation_launch(dtype, softmax) for softmax in (False, True))
    return launches


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
def _check_features(name: str, t: torch.Tensor, dims: int) -> None:
    if t.dim() != dims:
        raise ValueError(f"{name} must be {dims}-D, got shape {tuple(t.shape)}")
    if t.dtype not in FEATURE_DTYPES:
        raise TypeError(f"{name} dtype {t.dtype} not in {FEATURE_DTYPES}")


def _check_keypoints(kp_driving: torch.Tensor, kp_source: torch.Tensor, batch: int) -> None:
    if kp_driving.dim() != 3 or kp_driving.shape[0] != batch or kp_driving.shape[2] != 3:
        raise ValueError(f"kp_driving shape {tuple(kp_driving.shape)} != ({batch}, K, 3)")
    if kp_source.dim() != 3 or kp_source.shape[1:] != kp_driving.shape[1:] or kp_source.shape[0] not in (1, batch):
        raise ValueError(f"kp_source shape {tuple(kp_source.shape)} != kp_driving shape {tuple(kp_driving.shape)} "
                         f"(or batch 1)")


def _grid(grid: torch.Tensor | None, volume: torch.Tensor) -> torch.Tensor:
    """The identity grid for `volume`'s (D, H, W): the given one (checked) or the cached one."""
    d, h, w = volume.shape[2:]
    if grid is None:
        if torch.compiler.is_compiling():  # traced into the graph (dynamo would bypass the cache)
            return make_coordinate_grid(d, h, w, dtype=torch.float32, device=volume.device)
        return reference.identity_grid(d, h, w, volume.device)
    if tuple(grid.shape) != (d, h, w, 3):
        raise ValueError(f"grid shape {tuple(grid.shape)} != {(d, h, w, 3)}")
    return grid



def _check_mask(mask: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor) -> None:
    if mask.dim() != 5 or not mask.is_floating_point():
        raise ValueError(f"mask must be a 5-D float tensor (B, K+1, D, H, W), got {mask.dtype} {tuple(mask.shape)}")
    _check_keypoints(kp_driving, kp_source, mask.shape[0])
    if mask.shape[1] != kp_driving.shape[1] + 1:
        raise ValueError(f"mask has {mask.shape[1]} slots, expected K+1 = {kp_driving.shape[1] + 1}")
    _check_devices(mask, kp_driving, kp_source)


def _check_devices(*tensors: torch.Tensor) -> None:
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"tensors on different devices: {sorted(map(str, devices))}")


def _check_int32(*counts: int) -> None:
    # the kernels index within one batch item in int32
    if max(counts) > _INT32_MAX:
        raise ValueError(f"a per-sample tensor has {max(counts)} elements; the Triton kernels index with int32")


# ---------------------------------------------------------------------------------------------
# custom ops: what torch.compile records
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("lp_live::grid_sample_3d", mutates_args=())
def _grid_sample_3d_op(input: torch.Tensor, grid: torch.Tensor, backend: str) -> torch.Tensor:
    return _grid_sample_3d(input, grid, backend)


@_grid_sample_3d_op.register_fake
def _(input: torch.Tensor, grid: torch.Tensor, backend: str) -> torch.Tensor:
    return input.new_empty((grid.shape[0], input.shape[1], *grid.shape[1:4]))


@torch.library.custom_op("lp_live::hourglass_input", mutates_args=())
def _hourglass_input_op(
    compressed: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor, grid: torch.Tensor, backend: str
) -> torch.Tensor:
    return _hourglass_input(compressed, kp_driving, kp_source, grid, backend)


@_hourglass_input_op.register_fake
def _(compressed: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor, grid: torch.Tensor,
      backend: str) -> torch.Tensor:
    _, c, d, h, w = compressed.shape
    b, k = kp_driving.shape[:2]
    return compressed.new_empty((b, (k + 1) * (c + 1), d, h, w))


@torch.library.custom_op("lp_live::deformation", mutates_args=())
def _deformation_op(
    mask: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor, grid: torch.Tensor, softmax: bool,
    backend: str,
) -> torch.Tensor:
    return _deformation(mask, kp_driving, kp_source, grid, softmax, backend).contiguous()


@_deformation_op.register_fake
def _(mask: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor, grid: torch.Tensor, softmax: bool,
      backend: str):
    b, _, d, h, w = mask.shape
    return mask.new_empty((b, d, h, w, 3), dtype=torch.float32)
