"""lp_live.kernels: the PyTorch reference against the models, the Triton kernels against both.

Without a GPU the Triton kernels run in triton's interpreter on CPU tensors (`Backend.TRITON`
on CPU loads an interpreted copy of the kernels; TRITON_INTERPRET is not needed and is not
set for the rest of the process). The interpreter is slow: shapes here are small.

Tolerances: float32 rtol = atol = 1e-6 for the samplers and the deformation (values are
O(1)); on CUDA atol 2e-6 where a result goes through tl.exp (ex2.approx); 1e-5 for whole
samplers (float32 summation order). float16 / bfloat16 features: the kernels compute
in float32 and round once, so against the float32 result of the same (rounded) inputs the
error is half an output ULP (rtol 2**-11 / 2**-8 on CUDA); the interpreter gets 2**-10 for
float16 and a whole ULP, 2**-7, for bfloat16, because it truncates float32 -> bfloat16 where
the GPU rounds to nearest.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from lp_live.kernels import (
    Backend,
    FusedSampler,
    GridSampleSampler,
    SeparableSampler,
    deformation,
    grid_sample_3d,
    hourglass_input,
    reference,
    resolve_backend,
    softmax_deformation,
    triton_available,
)
from lp_live.kernels import backend as backend_module
from lp_live.models.warping import deformed_features, heatmaps, sparse_motion
from lp_live.tools.kernel_bench import format_kernel_benchmarks, run_kernel_benchmarks

needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")
requires_cuda = pytest.mark.skipif(not (torch.cuda.is_available() and triton_available()),
                                   reason="needs an NVIDIA GPU and triton")

FP32 = dict(rtol=1e-6, atol=1e-6)
LOW = {torch.float16: dict(rtol=2**-10, atol=1e-5), torch.bfloat16: dict(rtol=2**-7, atol=1e-5)}
TRITON = Backend.TRITON


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _uniform(shape, lo: float, hi: float, seed: int) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=_gen(seed))


def _keypoints(b: int, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source keypoints in [-1.1, 1.1] (some outside the volume), driving = source + noise."""
    ks = _uniform((b, k, 3), -1.1, 1.1, seed)
    kd = ks + 0.1 * torch.randn(b, k, 3, generator=_gen(seed + 1))
    return kd, ks


def _special_grid(n: int, d: int, h: int, w: int) -> torch.Tensor:
    """(n, Dz, Dy, Dx, 3): every combination of border, corner, voxel-centre and just-outside values."""

    def values(size: int) -> list[float]:
        step = 2.0 / size
        return [-1.0, 1.0, 0.0, -1 + step / 2, 1 - step / 2, -1 - step / 2, 1 + step / 2, -1 - step, 1 + step,
                -1 + step, 1 - step, -1 - 1e-7, 1 + 1e-7, 0.5 * step]

    xs, ys, zs = values(w), values(h), values(d)
    grid = torch.tensor([[x, y, z] for z, y, x in itertools.product(zs, ys, xs)], dtype=torch.float32)
    return grid.reshape(1, len(zs), len(ys), len(xs), 3).expand(n, -1, -1, -1, -1).contiguous()


def _rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# ---------------------------------------------------------------------------------------------
# reference path (PyTorch) against the models
# ---------------------------------------------------------------------------------------------
def test_reference_grid_sample_is_torch():
    x = torch.randn(2, 3, 5, 6, 7, generator=_gen(0))
    grid = _uniform((2, 4, 5, 3, 3), -1.3, 1.3, 1)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert torch.equal(grid_sample_3d(x, grid), expected)
    assert torch.equal(grid_sample_3d(x, grid, backend=Backend.REFERENCE), expected)


def test_reference_hourglass_input_is_dense_motion_layout():
    b, k, c, d, h, w = 2, 21, 4, 3, 8, 8
    compressed = torch.randn(b, c, d, h, w, generator=_gen(2))
    kd, ks = _keypoints(b, k, 3)
    grid = reference.identity_grid(d, h, w, compressed.device)
    sparse = sparse_motion(grid, kd, ks)
    expected = torch.cat([heatmaps(grid, kd, ks), deformed_features(compressed, sparse)], dim=2)
    out = hourglass_input(compressed, kd, ks, backend=Backend.REFERENCE)
    assert out.shape == (b, 110, d, h, w)
    assert torch.equal(out, expected.reshape(b, -1, d, h, w))


def test_reference_deformation_is_dense_motion_sum():
    b, k, d, h, w = 2, 21, 3, 4, 5
    kd, ks = _keypoints(b, k, 4)
    mask = F.softmax(torch.randn(b, k + 1, d, h, w, generator=_gen(5)), dim=1)
    sparse = sparse_motion(reference.identity_grid(d, h, w, mask.device), kd, ks)
    expected = (sparse.permute(0, 1, 5, 2, 3, 4) * mask.unsqueeze(2)).sum(dim=1).permute(0, 2, 3, 4, 1)
    assert torch.equal(deformation(mask, kd, ks, backend=Backend.REFERENCE), expected)


def _sampler_inputs(b: int, source_batch: int, seed: int, size=(4, 8, 8), channels: int = 3):
    """W's sampling inputs: feature, compressed (source batch), mask logits (float32), keypoints."""
    d, h, w = size
    feature = torch.randn(source_batch, channels, d, h, w, generator=_gen(seed))
    compressed = torch.relu(torch.randn(source_batch, 4, d, h, w, generator=_gen(seed + 1)))
    logits = 3 * torch.randn(b, 22, d, h, w, generator=_gen(seed + 2))
    kd, ks = _keypoints(b, 21, seed + 3)
    return feature, compressed, logits, kd, ks[:source_batch]


def _sample(sampler, feature, compressed, logits, kd, ks) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = sampler.hourglass_input(compressed, kd, ks)
    deformation = sampler.deformation(logits, kd, ks)
    return x, deformation, sampler.warp(feature, deformation)


@pytest.mark.parametrize("source_batch", [1, 2])
def test_every_sampler_computes_the_dense_motion_math(source_batch):
    """The three samplers against `models.warping` (the official forward's steps), one source
    broadcast over the batch or one per slot."""
    size = (4, 8, 8)
    feature, compressed, logits, kd, ks = _sampler_inputs(2, source_batch, 50, size)
    grid = reference.identity_grid(*size, torch.device("cpu"))
    sparse = sparse_motion(grid, kd, ks.expand_as(kd))
    expected_x = torch.cat([heatmaps(grid, kd, ks.expand_as(kd)), deformed_features(compressed, sparse)], dim=2)
    mask = F.softmax(logits, dim=1)
    expected_deformation = (sparse.permute(0, 1, 5, 2, 3, 4) * mask.unsqueeze(2)).sum(dim=1).permute(0, 2, 3, 4, 1)
    expected_warp = F.grid_sample(feature.expand(2, -1, -1, -1, -1), expected_deformation, align_corners=False)
    for sampler in (FusedSampler(size), GridSampleSampler(size, pieces=2), SeparableSampler(size, pieces=2)):
        x, deformation, warped = _sample(sampler, feature, compressed, logits, kd, ks)
        name = type(sampler).__name__
        torch.testing.assert_close(x, expected_x.reshape(2, -1, *size), rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(deformation, expected_deformation, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(warped, expected_warp, rtol=1e-5, atol=1e-5, msg=name)


def test_auto_backend_is_reference_on_cpu():
    assert resolve_backend(Backend.AUTO, torch.zeros(1)) is Backend.REFERENCE
    assert resolve_backend("reference", torch.zeros(1)) is Backend.REFERENCE


def test_triton_backend_without_triton_is_an_error(monkeypatch):
    monkeypatch.setattr(backend_module, "triton_available", lambda: False)
    assert resolve_backend(Backend.AUTO, torch.zeros(1)) is Backend.REFERENCE
    with pytest.raises(RuntimeError, match="triton"):
        grid_sample_3d(torch.zeros(1, 1, 2, 2, 2), torch.zeros(1, 1, 1, 1, 3), backend=Backend.TRITON)


def test_argument_errors():
    x = torch.zeros(1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="grid shape"):
        grid_sample_3d(x, torch.zeros(1, 3, 4, 5, 2))
    with pytest.raises(ValueError, match="grid shape"):
        grid_sample_3d(x.expand(2, -1, -1, -1, -1), torch.zeros(3, 3, 4, 5, 3))
    with pytest.raises(ValueError, match="compressed batch"):
        hourglass_input(x.expand(2, -1, -1, -1, -1), torch.zeros(3, 21, 3), torch.zeros(3, 21, 3))
    with pytest.raises(ValueError, match=r"grid shape \(3, 4, 5, 2\)"):
        hourglass_input(x, torch.zeros(1, 21, 3), torch.zeros(1, 21, 3), grid=torch.zeros(3, 4, 5, 2))
    with pytest.raises(TypeError, match="dtype"):
        grid_sample_3d(x.double(), torch.zeros(1, 3, 4, 5, 3))
    with pytest.raises(ValueError, match="kp_source shape"):
        hourglass_input(x, torch.zeros(1, 21, 3), torch.zeros(1, 20, 3))
    with pytest.raises(ValueError, match="slots"):
        deformation(torch.zeros(1, 21, 3, 4, 5), torch.zeros(1, 21, 3), torch.zeros(1, 21, 3))


def test_custom_ops_under_torch_compile_fullgraph():
    def fn(x, grid, compressed, kd, ks, logits):
        return grid_sample_3d(x, grid), hourglass_input(compressed, kd, ks), softmax_deformation(logits, kd, ks)

    kd, ks = _keypoints(2, 3, 8)
    args = (torch.randn(2, 3, 4, 5, 6), _uniform((2, 3, 4, 5, 3), -1.2, 1.2, 9), torch.randn(2, 4, 3, 4, 5), kd, ks,
            torch.randn(2, 4, 3, 4, 5))
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    for got, expected in zip(compiled(*args), fn(*args)):
        assert torch.equal(got, expected)


def test_bench_runs_on_cpu(monkeypatch):
    """On CPU the kernel rows run the reference against the torch path it replaces (the same
    functions), so each kernel-side op is offset by a known amount: each row must report its own
    offset, i.e. it compares the kernel call with a separately computed torch result. The samplers
    row compares two different samplers (fused and PyTorch), unchanged."""
    import lp_live.tools.kernel_bench as bench_module

    offsets = {"grid_sample_3d": 1 / 64, "hourglass_input": 2 / 64, "softmax_deformation": 3 / 64}
    calls = dict.fromkeys(offsets, 0)

    def offset(name):
        op = getattr(bench_module, name)

        def shifted(*args, **kwargs):
            calls[name] += 1
            return op(*args, **kwargs) + offsets[name]
        return shifted

    for name in offsets:
        monkeypatch.setattr(bench_module, name, offset(name))
    sampled = []
    sample = bench_module._sample
    monkeypatch.setattr(bench_module, "_sample", lambda s, *a: sampled.append(type(s).__name__) or sample(s, *a))
    result = run_kernel_benchmarks("cpu", torch.float32, repeats=1, warmup=1, size=(16, 32, 32))
    assert result["backend"] == "reference"
    rows = {"grid_sample_3d (warp)": "grid_sample_3d", "grid_sample_3d (22 slots, repeated)": "grid_sample_3d",
            "hourglass_input": "hourglass_input", "softmax_deformation": "softmax_deformation"}
    assert set(result["kernels"]) == set(rows)
    for row, op in rows.items():
        timing = result["kernels"][row]
        assert timing["max_abs_diff"] == pytest.approx(offsets[op], abs=1e-5), row
        assert timing["kernel_ms"] > 0 and timing["torch_ms"] > 0
        assert timing["speedup"] == pytest.approx(timing["torch_ms"] / timing["kernel_ms"])
    # each op called once for the difference and once timed (twice for the two grid_sample rows)
    assert calls == {"grid_sample_3d": 4, "hourglass_input": 2, "softmax_deformation": 2}
    # the samplers row times both samplers (not one twice); the PyTorch sampler sums the deformation
    # as a matmul, the fused one slot by slot: the warped volume (|values| up to ~4) differs in float32 rounding
    assert sorted(set(sampled)) == ["FusedSampler", "GridSampleSampler"]
    whole = result["samplers"]
    assert whole["kernel_ms"] > 0 and whole["torch_ms"] > 0 and 0 <= whole["max_abs_diff"] < 1e-4
    assert "W sampling" in format_kernel_benchmarks(result)


# ---------------------------------------------------------------------------------------------
# Triton kernels in the interpreter (CPU tensors)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", [Backend.REFERENCE, pytest.param(TRITON, marks=needs_triton)])
def test_one_source_broadcasts_over_the_batch(backend):
    """A batch-1 volume and kp_source serve every driving slot (stride 0), equal to the expanded ones;
    a given identity grid is the one used."""
    b, d, h, w = 3, 3, 4, 5
    volume = torch.randn(1, 4, d, h, w, generator=_gen(30))
    kd, ks = _keypoints(b, 2, 31)
    ks = ks[:1]
    grid = _uniform((b, d, h, w, 3), -1.1, 1.1, 32)
    logits = torch.randn(b, 3, d, h, w, generator=_gen(33))
    full, ks_full = volume.expand(b, -1, -1, -1, -1).contiguous(), ks.expand(b, -1, -1).contiguous()
    assert torch.equal(grid_sample_3d(volume, grid, backend=backend), grid_sample_3d(full, grid, backend=backend))
    assert torch.equal(hourglass_input(volume, kd, ks, backend=backend),
                       hourglass_input(full, kd, ks_full, backend=backend))
    assert torch.equal(softmax_deformation(logits, kd, ks, backend=backend),
                       softmax_deformation(logits, kd, ks_full, backend=backend))
    shifted = reference.identity_grid(d, h, w, volume.device) + 0.25
    assert not torch.equal(hourglass_input(volume, kd, ks, grid=shifted, backend=backend),
                           hourglass_input(volume, kd, ks, backend=backend))
    torch.testing.assert_close(deformation(torch.softmax(logits, 1), kd, ks, grid=shifted, backend=backend),
                               deformation(torch.softmax(logits, 1), kd, ks, backend=backend) + 0.25, **FP32)


@needs_triton
def test_interpreter_really_runs_the_kernels(monkeypatch):
    from triton.runtime.interpreter import InterpretedFunction

    module = backend_module.triton_module(torch.device("cpu"))
    assert isinstance(module._grid_sample_3d_kernel, InterpretedFunction)

    def forbidden(*args, **kwargs):
        raise AssertionError("the reference path ran")

    for name in ("grid_sample_3d", "hourglass_input", "deformation", "softmax_deformation"):
        monkeypatch.setattr(reference, name, forbidden)
    x = torch.randn(1, 2, 3, 4, 5)
    assert torch.isfinite(grid_sample_3d(x, torch.zeros(1, 2, 2, 2, 3), backend=TRITON)).all()
    kd, ks = _keypoints(1, 2, 10)
    assert hourglass_input(x, kd, ks, backend=TRITON).shape == (1, 9, 3, 4, 5)
    assert softmax_deformation(torch.randn(1, 3, 3, 4, 5), kd, ks, backend=TRITON).shape == (1, 3, 4, 5, 3)


GRID_SAMPLE_CASES = {
    # name: (input shape N, C, D, H, W; output D, H, W; grid range)
    "random_outside": ((2, 3, 5, 6, 7), (4, 5, 3), 1.3),
    "odd_channels_multi_program": ((3, 5, 3, 5, 7), (3, 9, 11), 1.1),  # 297 voxels > one block; 5 channels
    "single_voxel": ((1, 1, 1, 1, 1), (2, 3, 4), 1.5),
    "flat_axes": ((2, 2, 1, 1, 2), (1, 1, 5), 1.2),
    "one_output": ((1, 4, 4, 4, 4), (1, 1, 1), 1.0),
    "upsample": ((1, 2, 2, 3, 2), (6, 7, 8), 1.05),
}


@needs_triton
@pytest.mark.parametrize("case", list(GRID_SAMPLE_CASES))
def test_triton_grid_sample_random(case):
    shape, out_size, reach = GRID_SAMPLE_CASES[case]
    x = torch.randn(shape, generator=_gen(11))
    grid = _uniform((shape[0], *out_size, 3), -reach, reach, 12)
    expected = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    got = grid_sample_3d(x, grid, backend=TRITON)
    assert got.shape == expected.shape and got.dtype == x.dtype
    torch.testing.assert_close(got, expected, **FP32)


@needs_triton
@pytest.mark.parametrize("size", [(1, 1, 1), (2, 3, 4), (5, 6, 7)])
def test_triton_grid_sample_borders_and_corners(size):
    x = torch.randn(2, 3, *size, generator=_gen(13))
    grid = _special_grid(2, *size)
    expected = F.grid_sample(x, grid, align_corners=False)
    got = grid_sample_3d(x, grid, backend=TRITON)
    torch.testing.assert_close(got, expected, **FP32)


@needs_triton
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy's inf - inf, masked
def test_triton_grid_sample_non_finite_and_far_coordinates():
    far = torch.tensor([1e6, -1e6, 1e30, -1e30, float("inf"), float("-inf"), float("nan"), 3.0, -3.0])
    grid = torch.stack(torch.meshgrid(far, far, torch.tensor([0.0, 0.3]), indexing="ij"), dim=-1)[None]
    x = torch.randn(1, 2, 3, 4, 5, generator=_gen(14))
    got = grid_sample_3d(x, grid.contiguous(), backend=TRITON)
    assert not got.isnan().any()
    torch.testing.assert_close(got, F.grid_sample(x, grid, align_corners=False), **FP32)
    assert (got == 0).all()  # every point has an axis far outside


@needs_triton
def test_triton_grid_sample_non_contiguous_and_low_precision_grid():
    x = torch.randn(2, 5, 6, 7, 3, generator=_gen(15)).permute(0, 4, 1, 2, 3)  # (2, 3, 5, 6, 7), not contiguous
    grid = _uniform((2, 3, 4, 5, 3), -1.1, 1.1, 16)
    torch.testing.assert_close(grid_sample_3d(x, grid, backend=TRITON), F.grid_sample(x, grid, align_corners=False),
                               **FP32)
    half_grid = grid.half()  # used in float32: same as sampling at its float32 value
    torch.testing.assert_close(grid_sample_3d(x, half_grid, backend=TRITON),
                               F.grid_sample(x, half_grid.float(), align_corners=False), **FP32)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_grid_sample_low_precision(dtype):
    x = torch.randn(2, 5, 5, 6, 7, generator=_gen(17)).to(dtype)
    grid = torch.cat([_uniform((2, 3, 9, 11, 3), -1.2, 1.2, 18), _special_grid(2, 5, 6, 7)[:, :1, :9, :11]], dim=1)
    got = grid_sample_3d(x, grid, backend=TRITON)
    assert got.dtype == dtype and not got.isnan().any()
    expected = F.grid_sample(x.float(), grid, align_corners=False)
    torch.testing.assert_close(got.float(), expected, **LOW[dtype])
    torch.testing.assert_close(got.float(), grid_sample_3d(x, grid).float(), **LOW[dtype])


HOURGLASS_CASES = {
    # name: (B, K, C, D, H, W)
    "official_slots": (2, 21, 4, 2, 4, 8),
    "odd": (1, 3, 3, 3, 5, 7),
    "smallest": (1, 2, 4, 2, 2, 2),  # the identity grid needs n >= 2 per axis
    "multi_program": (1, 2, 4, 3, 9, 11),
}


@needs_triton
@pytest.mark.parametrize("case", list(HOURGLASS_CASES))
def test_triton_hourglass_input(case):
    b, k, c, d, h, w = HOURGLASS_CASES[case]
    compressed = torch.relu(torch.randn(b, c, d, h, w, generator=_gen(19)))
    kd, ks = _keypoints(b, k, 20)
    kd[:, 0] = ks[:, 0]  # a keypoint that does not move: zero heatmap, same translation as slot 0
    ks[:, -1] = torch.tensor([-1.0, 1.0, -1.0])  # exactly on a corner of the grid
    expected = hourglass_input(compressed, kd, ks, backend=Backend.REFERENCE)
    got = hourglass_input(compressed, kd, ks, backend=TRITON)
    assert got.shape == (b, (k + 1) * (c + 1), d, h, w)
    torch.testing.assert_close(got, expected, **FP32)
    slots = got.reshape(b, k + 1, c + 1, d, h, w)
    assert (slots[:, 0, 0] == 0).all()  # background heatmap is exactly zero
    torch.testing.assert_close(slots[:, 1:, 1:], expected.reshape(b, k + 1, c + 1, d, h, w)[:, 1:, 1:], **FP32)


@needs_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_triton_hourglass_input_low_precision(dtype):
    b, k, c, d, h, w = 1, 21, 4, 2, 4, 8
    compressed = torch.relu(torch.randn(b, c, d, h, w, generator=_gen(21))).to(dtype)
    kd, ks = _keypoints(b, k, 22)
    got = hourglass_input(compressed, kd, ks, backend=TRITON)
    assert got.dtype == dtype and not got.isnan().any()
    expected = hourglass_input(compressed.float(), kd, ks, backend=Backend.REFERENCE)
    torch.testing.assert_close(got.float(), expected, **LOW[dtype])


@needs_triton
@pytest.mark.parametrize("logits_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(2, 21, 2, 4, 8), (1, 3, 3, 9, 11)])
def test_triton_deformation(shape, logits_dtype):
    b, k, d, h, w = shape
    kd, ks = _keypoints(b, k, 23)
    logits = (3 * torch.randn(b, k + 1, d, h, w, generator=_gen(24))).to(logits_dtype)
    got = softmax_deformation(logits, kd, ks, backend=TRITON)
    assert got.shape == (b, d, h, w, 3) and got.dtype == torch.float32
    torch.testing.assert_close(got, softmax_deformation(logits, kd, ks, backend=Backend.REFERENCE), **FP32)
    mask = F.softmax(logits.float(), dim=1)
    torch.testing.assert_close(deformation(mask, kd, ks, backend=TRITON),
                               deformation(mask, kd, ks, backend=Backend.REFERENCE), **FP32)


@needs_triton
def test_triton_sampler_matches_the_reference_sampler():
    """`FusedSampler` through the Triton kernels (interpreter) against their PyTorch reference."""
    size = (4, 8, 8)
    inputs = _sampler_inputs(2, 1, 60, size)
    got = _sample(FusedSampler(size, backend=TRITON), *inputs)
    expected = _sample(FusedSampler(size, backend=Backend.REFERENCE), *inputs)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# CUDA (compiled Triton kernels)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 32, 16, 64, 64), (22, 4, 16, 64, 64), (3, 5, 3, 5, 7)])
@pytest.mark.cuda
@requires_cuda
def test_cuda_grid_sample(shape, dtype):
    gen = torch.Generator(device="cuda").manual_seed(37)
    x = torch.randn(shape, device="cuda", generator=gen).to(dtype)
    n, _, d, h, w = shape
    grid = reference.identity_grid(d, h, w, x.device) + 0.05 * torch.randn(n, d, h, w, 3, device="cuda", generator=gen)
    grid = torch.cat([grid, 1.2 * (2 * torch.rand(n, 1, h, w, 3, device="cuda", generator=gen) - 1)], dim=1)
    assert resolve_backend(Backend.AUTO, x, grid) is Backend.TRITON
    got = grid_sample_3d(x, grid)
    assert got.dtype == dtype and not got.isnan().any()
    expected = F.grid_sample(x.float(), grid, align_corners=False)
    tol = FP32 if dtype == torch.float32 else dict(rtol=2**-8 if dtype == torch.bfloat16 else 2**-11, atol=1e-5)
    torch.testing.assert_close(got.float(), expected, **tol)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("batch", [1, 2])
def test_cuda_hourglass_input_and_deformation(batch):
    gen = torch.Generator(device="cuda").manual_seed(38)
    compressed = torch.relu(torch.randn(batch, 4, 16, 64, 64, device="cuda", generator=gen))
    kd, ks = (t.cuda() for t in _keypoints(batch, 21, 39))
    got = hourglass_input(compressed, kd, ks)
    expected = hourglass_input(compressed, kd, ks, backend=Backend.REFERENCE)
    # the GPU's tl.exp is ex2.approx (a few ULP): heatmaps and softmax weights get atol 2e-6
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=2e-6)
    logits = 3 * torch.randn(batch, 22, 16, 64, 64, device="cuda", generator=gen)
    torch.testing.assert_close(softmax_deformation(logits, kd, ks),
                               softmax_deformation(logits, kd, ks, backend=Backend.REFERENCE), rtol=1e-6, atol=2e-6)


@pytest.mark.cuda
@requires_cuda
def test_cuda_fused_sampler_matches_the_pytorch_sampler(no_tf32):
    """The production CUDA sampler (Triton) against PyTorch's at the official volume size, one source."""
    size = (16, 64, 64)
    inputs = [t.cuda() for t in _sampler_inputs(2, 1, 41, size, channels=32)]
    with torch.inference_mode():
        got = _sample(FusedSampler(size, device="cuda"), *inputs)
        expected = _sample(GridSampleSampler(size, device="cuda"), *inputs)
    for g, e in zip(got, expected):
        assert _rel_l2(g, e) <= 1e-5


@pytest.mark.cuda
@requires_cuda
def test_cuda_bench():
    result = run_kernel_benchmarks("cuda", torch.float16, repeats=3, warmup=2)
    assert result["backend"] == "triton"
    assert all(r["kernel_ms"] > 0 for r in result["kernels"].values())
