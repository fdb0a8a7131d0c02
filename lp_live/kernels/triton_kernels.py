"""Triton kernels for the warping module: trilinear sampling, the fused hourglass input and the
softmax-weighted deformation.

The launchers here trust their arguments (contiguous, validated shapes); `ops.py` checks them.
Coordinates are always float32; features may be float32, float16 or bfloat16 and are
accumulated in float32.

Interpreter note: `backend.triton_module` may load a second copy of this file with
`triton.knobs.runtime.interpret` switched on, after triton itself was imported without
TRITON_INTERPRET. triton's own `@jit` library functions (`tl.zeros`, `tl.cdiv`, `tl.sum`,
...) were then built as compiled functions that the interpreter cannot call, so
the kernels use builtins only (`tl.full`, `tl.where`, `tl.maximum`, `tl.exp`, ...).
Each kernel is still written for the CUDA compiler; the interpreter is its CPU check.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import torch
import triton
import triton.language as tl

SAMPLE_BLOCK = 256  # output voxels per program (2 per thread at 4 warps)
CHANNELS_PER_PROGRAM = 4  # grid_sample_3d: channels one program samples with one set of weights


@triton.jit
def _axis_taps(g, size):
    """One axis of ATen's trilinear sampler (zeros padding, align_corners=False).

    Returns the two tap indices (0 where outside, so that addresses stay in range), their
    weights (0 where outside, so that a far-away or non-finite coordinate adds an exact 0,
    as ATen's skipped corner does) and their in-range masks.
    """
    pos = ((g + 1.0) * size - 1.0) * 0.5  # grid_sampler_compute_source_index (/ 2, exactly)
    lo = tl.floor(pos)
    hi = lo + 1.0
    ok_lo = (lo >= 0.0) & (lo <= size - 1.0)  # false for NaN and +-inf too
    ok_hi = (hi >= 0.0) & (hi <= size - 1.0)
    w_lo = tl.where(ok_lo, hi - pos, 0.0)  # ATen: (ix_bse - ix)
    w_hi = tl.where(ok_hi, pos - lo, 0.0)  # ATen: (ix - ix_tnw)
    i_lo = tl.where(ok_lo, lo, 0.0).to(tl.int32)
    i_hi = tl.where(ok_hi, hi, 0.0).to(tl.int32)
    return i_lo, i_hi, w_lo, w_hi, ok_lo, ok_hi


@triton.jit
def _trilinear(
    src, x0, x1, y0, y1, z0, z1, wx0, wx1, wy0, wy1, wz0, wz1, mx0, mx1, my0, my1, mz0, mz1
):
    """One channel: `src` points at its (D, H, W) volume; y*/z* are pre-multiplied row/plane offsets.

    Corner order and weight products are ATen's (tnw, tne, tsw, tse, bnw, bne, bsw, bse;
    weight = wx * wy * wz), accumulated from the first corner on, so float32 results match
    `F.grid_sample` up to fused multiply-adds.
    """
    acc = tl.load(src + z0 + y0 + x0, mask=mz0 & my0 & mx0, other=0.0).to(tl.float32) * (wx0 * wy0 * wz0)
    acc += tl.load(src + z0 + y0 + x1, mask=mz0 & my0 & mx1, other=0.0).to(tl.float32) * (wx1 * wy0 * wz0)
    acc += tl.load(src + z0 + y1 + x0, mask=mz0 & my1 & mx0, other=0.0).to(tl.float32) * (wx0 * wy1 * wz0)
    acc += tl.load(src + z0 + y1 + x1, mask=mz0 & my1 & mx1, other=0.0).to(tl.float32) * (wx1 * wy1 * wz0)
    acc += tl.load(src + z1 + y0 + x0, mask=mz1 & my0 & mx0, other=0.0).to(tl.float32) * (wx0 * wy0 * wz1)
    acc += tl.load(src + z1 + y0 + x1, mask=mz1 & my0 & mx1, other=0.0).to(tl.float32) * (wx1 * wy0 * wz1)
    acc += tl.load(src + z1 + y1 + x0, mask=mz1 & my1 & mx0, other=0.0).to(tl.float32) * (wx0 * wy1 * wz1)
    acc += tl.load(src + z1 + y1 + x1, mask=mz1 & my1 & mx1, other=0.0).to(tl.float32) * (wx1 * wy1 * wz1)
    return acc


@triton.jit
def _grid_sample_3d_kernel(
    src_ptr, grid_ptr, out_ptr, C, D, H, W, P, SRC_STRIDE,
    BLOCK: tl.constexpr, CHANNELS: tl.constexpr,
):
    """Program (voxel block, channel group, n): P = Do*Ho*Wo output voxels of sample n.

    SRC_STRIDE: elements between input samples; 0 when one input volume serves every sample.
    """
    pid = tl.program_id(0)
    c_start = tl.program_id(1) * CHANNELS
    n = tl.program_id(2).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    lane = offs < P

    g = grid_ptr + (n * P + offs) * 3
    gx = tl.load(g, mask=lane, other=0.0)
    gy = tl.load(g + 1, mask=lane, other=0.0)
    gz = tl.load(g + 2, mask=lane, other=0.0)
    x0, x1, wx0, wx1, mx0, mx1 = _axis_taps(gx, W)
    y0, y1, wy0, wy1, my0, my1 = _axis_taps(gy, H)
    z0, z1, wz0, wz1, mz0, mz1 = _axis_taps(gz, D)
    y0 = y0 * W
    y1 = y1 * W
    z0 = z0 * (H * W)
    z1 = z1 * (H * W)

    volume = D * H * W
    src_n = src_ptr + n * SRC_STRIDE
    out_n = out_ptr + n * C * P + offs
    # unrolled so that all 8 * CHANNELS gathers can be in flight; past C the last channel is
    # sampled again and not stored
    for i in tl.static_range(CHANNELS):
        c = c_start + i
        src_c = src_n + tl.minimum(c, C - 1) * volume
        value = _trilinear(src_c, x0, x1, y0, y1, z0, z1, wx0, wx1, wy0, wy1, wz0, wz1, mx0, mx1, my0, my1, mz0, mz1)
        in_range = (offs * 0 + c) < C  # as a vector: the interpreter mis-broadcasts a scalar bool in `&`
        tl.store(out_n + c * P, value.to(out_ptr.dtype.element_ty), mask=lane & in_range)


@triton.jit
def _hourglass_input_kernel(
    src_ptr, ident_ptr, kd_ptr, ks_ptr, out_ptr, D, H, W, K, SRC_STRIDE, KS_STRIDE,
    C: tl.constexpr, VARIANCE: tl.constexpr, BLOCK: tl.constexpr,
):
    """Program (voxel block, b): for slot k = 0..K writes channel k*(C+1) (heatmap) and
    k*(C+1)+1+c (compressed channel c sampled at p - kd + ks; slot 0 uses kd = ks = 0).
    SRC_STRIDE / KS_STRIDE: elements between the source volumes / source keypoints of
    consecutive b (0: one source for every b).

    Slot 0 runs the same code with zero keypoints: (p - 0) + 0 == p, and the two Gaussians
    are then bit-identical, so its heatmap is exactly 0 as in the reference.
    """
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    P = D * H * W
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    lane = offs < P
    px = tl.load(ident_ptr + offs * 3, mask=lane, other=0.0)
    py = tl.load(ident_ptr + offs * 3 + 1, mask=lane, other=0.0)
    pz = tl.load(ident_ptr + offs * 3 + 2, mask=lane, other=0.0)

    src_b = src_ptr + b * SRC_STRIDE
    out_b = out_ptr + b * (K + 1) * (C + 1) * P + offs
    kd_b = kd_ptr + b * K * 3
    ks_b = ks_ptr + b * KS_STRIDE
    for k in range(0, K + 1):
        real = k > 0
        j = tl.maximum(k - 1, 0) * 3
        dx = tl.load(kd_b + j, mask=real, other=0.0)
        dy = tl.load(kd_b + j + 1, mask=real, other=0.0)
        dz = tl.load(kd_b + j + 2, mask=real, other=0.0)
        sx = tl.load(ks_b + j, mask=real, other=0.0)
        sy = tl.load(ks_b + j + 1, mask=real, other=0.0)
        sz = tl.load(ks_b + j + 2, mask=real, other=0.0)

        # kp2gaussian: difference, square, sum (x, y, z), * -0.5, / variance, exp
        ex = px - dx
        ey = py - dy
        ez = pz - dz
        gauss_d = tl.exp(-0.5 * (ex * ex + ey * ey + ez * ez) / VARIANCE)
        fx = px - sx
        fy = py - sy
        fz = pz - sz
        gauss_s = tl.exp(-0.5 * (fx * fx + fy * fy + fz * fz) / VARIANCE)
        slot = out_b + k * (C + 1) * P
        tl.store(slot, (gauss_d - gauss_s).to(out_ptr.dtype.element_ty), mask=lane)

        # sparse motion (grid - kd) + ks, then the trilinear sample of every channel
        x0, x1, wx0, wx1, mx0, mx1 = _axis_taps(ex + sx, W)
        y0, y1, wy0, wy1, my0, my1 = _axis_taps(ey + sy, H)
        z0, z1, wz0, wz1, mz0, mz1 = _axis_taps(ez + sz, D)
        y0 = y0 * W
        y1 = y1 * W
        z0 = z0 * (H * W)
        z1 = z1 * (H * W)
        for c in tl.static_range(C):  # C = 4 in the model: unrolled, 32 gathers in flight
            value = _trilinear(
                src_b + c * P, x0, x1, y0, y1, z0, z1, wx0, wx1, wy0, wy1, wz0, wz1, mx0, mx1, my0, my1, mz0, mz1
            )
            tl.store(slot + (c + 1) * P, value.to(out_ptr.dtype.element_ty), mask=lane)


@triton.jit
def _deformation_kernel(
    mask_ptr, ident_ptr, kd_ptr, ks_ptr, out_ptr, P, K, KS_STRIDE,
    SOFTMAX: tl.constexpr, BLOCK: tl.constexpr,
):
    """Program (voxel block, b): sum over slots k of m_k * ((p - kd_k) + ks_k), slot 0 = p.
    KS_STRIDE: elements between the source keypoints of consecutive b (0: shared).

    With SOFTMAX, `mask_ptr` holds logits and m_k = exp(l_k - max) / sum_j exp(l_j - max)
    (three passes over the K+1 logits; they stay in cache between passes).
    """
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    lane = offs < P
    px = tl.load(ident_ptr + offs * 3, mask=lane, other=0.0)
    py = tl.load(ident_ptr + offs * 3 + 1, mask=lane, other=0.0)
    pz = tl.load(ident_ptr + offs * 3 + 2, mask=lane, other=0.0)
    m_b = mask_ptr + b * (K + 1) * P + offs
    kd_b = kd_ptr + b * K * 3
    ks_b = ks_ptr + b * KS_STRIDE

    top = tl.full([BLOCK], 0.0, tl.float32)
    total = tl.full([BLOCK], 1.0, tl.float32)
    if SOFTMAX:
        top = tl.load(m_b, mask=lane, other=0.0).to(tl.float32)
        for k in range(1, K + 1):
            top = tl.maximum(top, tl.load(m_b + k * P, mask=lane, other=0.0).to(tl.float32))
        total = tl.full([BLOCK], 0.0, tl.float32)
        for k in range(0, K + 1):
            total += tl.exp(tl.load(m_b + k * P, mask=lane, other=0.0).to(tl.float32) - top)

    ax = tl.full([BLOCK], 0.0, tl.float32)
    ay = tl.full([BLOCK], 0.0, tl.float32)
    az = tl.full([BLOCK], 0.0, tl.float32)
    for k in range(0, K + 1):
        weight = tl.load(m_b + k * P, mask=lane, other=0.0).to(tl.float32)
        if SOFTMAX:
            weight = tl.exp(weight - top) / total
        real = k > 0
        j = tl.maximum(k - 1, 0) * 3
        dx = tl.load(kd_b + j, mask=real, other=0.0)
        dy = tl.load(kd_b + j + 1, mask=real, other=0.0)
        dz = tl.load(kd_b + j + 2, mask=real, other=0.0)
        sx = tl.load(ks_b + j, mask=real, other=0.0)
        sy = tl.load(ks_b + j + 1, mask=real, other=0.0)
        sz = tl.load(ks_b + j + 2, mask=real, other=0.0)
        ax += (px - dx + sx) * weight
        ay += (py - dy + sy) * weight
        az += (pz - dz + sz) * weight

    out = out_ptr + (b * P + offs) * 3
    tl.store(out, ax, mask=lane)
    tl.store(out + 1, ay, mask=lane)
    tl.store(out + 2, az, mask=lane)


_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass(frozen=True)
class Launch:
    """One compiled variant of a kernel: the dtype of each pointer argument, the constexpr values
    and num_warps. Every other argument is an int32 size.

    The launchers below launch through these objects, and `tests/test_kernels_aot.py` compiles
    the same objects for sm_80 / sm_89 / sm_90 without a GPU, so the two cannot drift apart.
    """

    kernel: Any  # a triton.runtime.JITFunction
    pointers: tuple[tuple[str, torch.dtype], ...]
    constexprs: tuple[tuple[str, Any], ...]
    num_warps: int = 4

    @property
    def name(self) -> str:
        """Kernel, first pointer dtype (features or mask), flags: `_deformation_kernel[bf16, SOFTMAX=True]`."""
        flags = [f"{k}={v}" for k, v in self.constexprs if isinstance(v, (bool, str))]
        return f"{self.kernel.__name__}[{', '.join([_TRITON_TYPES[self.pointers[0][1]], *flags])}]"

    def signature(self) -> dict[str, str]:
        """`triton.compiler.ASTSource`'s signature: "*fp32"-style pointers, "i32" sizes, "constexpr"."""
        pointers, constexprs = dict(self.pointers), dict(self.constexprs)
        return {
            arg: "constexpr" if arg in constexprs else f"*{_TRITON_TYPES[pointers[arg]]}" if arg in pointers else "i32"
            for arg in self.kernel.arg_names
        }

    def __call__(self, grid: tuple[int, ...], *args: Any) -> None:
        self.kernel[grid](*args, **dict(self.constexprs), num_warps=self.num_warps)


@cache
def grid_sample_3d_launch(dtype: torch.dtype) -> Launch:
    """`grid_sample_3d` on features of `dtype` (float32 grid)."""
    return Launch(
        _grid_sample_3d_kernel,
        pointers=(("src_ptr", dtype), ("grid_ptr", torch.float32), ("out_ptr", dtype)),
        constexprs=(("BLOCK", SAMPLE_BLOCK), ("CHANNELS", CHANNELS_PER_PROGRAM)),
    )


@cache
def hourglass_input_launch(dtype: torch.dtype, channels: int, variance: float) -> Launch:
    """`hourglass_input` on a compressed volume of `dtype` with `channels` channels (float32 grid and keypoints)."""
    f32 = torch.float32
    return Launch(
        _hourglass_input_kernel,
        pointers=(("src_ptr", dtype), ("ident_ptr", f32), ("kd_ptr", f32), ("ks_ptr", f32), ("out_ptr", dtype)),
        constexprs=(("C", channels), ("VARIANCE", variance), ("BLOCK", SAMPLE_BLOCK)),
    )


@cache
def deformation_launch(dtype: torch.dtype, softmax: bool) -> Launch:
    """`deformation` of a mask (or logits, `softmax`) of `dtype`; float32 grid, keypoints and output."""
    f32 = torch.float32
    return Launch(
        _deformation_kernel,
        pointers=(("mask_ptr", dtype), ("ident_ptr", f32), ("kd_ptr", f32), ("ks_ptr", f32), ("out_ptr", f32)),
        constexprs=(("SOFTMAX", softmax), ("BLOCK", SAMPLE_BLOCK)),
    )


# ---------------------------------------------------------------------------------------------
# launchers: contiguous inputs, float32 coordinates and keypoints, outputs allocated here
# ---------------------------------------------------------------------------------------------
def _batch_stride(t: torch.Tensor, batch: int) -> int:
    """Elements between consecutive samples of a contiguous t; 0 when batch-1 t serves `batch` samples."""
    return 0 if t.shape[0] == 1 and batch > 1 else t[0].numel()


def grid_sample_3d(input: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """input (N or 1, C, D, H, W), grid (N, Do, Ho, Wo, 3) float32 -> (N, C, Do, Ho, Wo) in input's dtype."""
    _, c, d, h, w = input.shape
    n = grid.shape[0]
    do, ho, wo = grid.shape[1:4]
    p = do * ho * wo
    out = torch.empty((n, c, do, ho, wo), dtype=input.dtype, device=input.device)
    launch = (triton.cdiv(p, SAMPLE_BLOCK), triton.cdiv(c, CHANNELS_PER_PROGRAM), n)
    grid_sample_3d_launch(input.dtype)(launch, input, grid, out, c, d, h, w, p, _batch_stride(input, n))
    return out


def hourglass_input(
    compressed: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor, identity: torch.Tensor,
    variance: float,
) -> torch.Tensor:
    """compressed (B or 1, C, D, H, W), kp_driving (B, K, 3), kp_source (B or 1, K, 3), identity
    (D, H, W, 3) -> (B, (K+1)*(C+1), D, H, W)."""
    _, c, d, h, w = compressed.shape
    b, k = kp_driving.shape[:2]
    out = torch.empty((b, (k + 1) * (c + 1), d, h, w), dtype=compressed.dtype, device=compressed.device)
    launch = (triton.cdiv(d * h * w, SAMPLE_BLOCK), b)
    hourglass_input_launch(compressed.dtype, c, variance)(
        launch, compressed, identity, kp_driving, kp_source, out, d, h, w, k, _batch_stride(compressed, b),
        _batch_stride(kp_source, b),
    )
    return out


def deformation(
    mask: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor, identity: torch.Tensor, softmax: bool
) -> torch.Tensor:
    """mask (B, K+1, D, H, W) weights (or logits with softmax), kp_source (B or 1, K, 3) -> (B, D, H, W, 3) float32."""
    b, slots, d, h, w = mask.shape
    p = d * h * w
    out = torch.empty((b, d, h, w, 3), dtype=torch.float32, device=mask.device)
    launch = (triton.cdiv(p, SAMPLE_BLOCK), b)
    deformation_launch(mask.dtype, softmax)(
        launch, mask, identity, kp_driving, kp_source, out, p, slots - 1, _batch_stride(kp_source, b)
    )
    return out
