"""The Triton kernels compile for real GPUs (sm_80, sm_89, sm_90) without spilling registers.

No GPU is needed: `lp_live.kernels.aot` compiles each variant the launchers use
(`ops.triton_launches()`: every feature dtype and flag) with `triton.compile` for a given target,
with triton's bundled ptxas, and reads registers and local memory from the cubin. Both
specializations the JIT makes at run time are compiled: sizes and pointers divisible by 16
(the engine's shapes) and not. `test_launchers_use_the_compiled_variants` checks that the
launchers, called the way `ops` calls them, launch exactly these variants.

Skipped only where triton does not import (it is in the dev extra on Linux).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="triton is not installed (the dev extra installs it on Linux)")

from lp_live.kernels import aot, ops, triton_kernels  # after the skip: these import triton
from lp_live.kernels.aot import ARCHS, Resources

LAUNCHES = ops.triton_launches()
ALIGNMENTS = {False: "unaligned", True: "aligned"}
_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> dict[tuple[str, int, bool], Resources | str]:
    """Every variant, architecture and alignment compiled once, in parallel, into a fresh triton cache."""
    return aot.measure_all(ARCHS, ALIGNMENTS, cache_dir=tmp_path_factory.mktemp("triton_cache"))


def _check(name: str, arch: int, aligned: bool, result: Resources | str) -> None:
    where = f"{name} for sm_{arch} ({ALIGNMENTS[aligned]})"
    assert isinstance(result, Resources), f"{where} does not compile:\n{result}"
    assert result.spills == 0, (f"{where} spills: {result.registers} registers, {result.stack_bytes} B stack, "
                                f"{result.local_bytes} B local per thread")


@pytest.mark.parametrize("aligned", list(ALIGNMENTS), ids=list(ALIGNMENTS.values()))
@pytest.mark.parametrize("arch", list(ARCHS), ids=[f"sm_{a}" for a in ARCHS])
@pytest.mark.parametrize("name", [launch.name for launch in LAUNCHES])
def test_kernel_compiles_without_spills(measured, name, arch, aligned):
    _check(name, arch, aligned, measured[name, arch, aligned])


def test_every_kernel_has_variants_for_every_dtype():
    kernels = {launch.kernel.__name__ for launch in LAUNCHES}
    assert kernels == {"_grid_sample_3d_kernel", "_hourglass_input_kernel", "_deformation_kernel"}
    for kernel in kernels:
        # the first pointer is the features (or mask) whose dtype the variant is for
        dtypes = {launch.pointers[0][1] for launch in LAUNCHES if launch.kernel.__name__ == kernel}
        assert dtypes == set(ops.FEATURE_DTYPES), kernel


# ---------------------------------------------------------------------------------------------
# the checks above can fail
# ---------------------------------------------------------------------------------------------
def test_a_compile_error_fails():
    launch = triton_kernels.deformation_launch(torch.float32, True)
    broken = triton_kernels.Launch(launch.kernel, launch.pointers[1:], launch.constexprs)  # mask_ptr as an int
    result = aot.measure(broken, 90, aligned=False)
    assert isinstance(result, str) and "CompilationError" in result
    with pytest.raises(AssertionError, match="does not compile"):
        _check(broken.name, 90, False, result)


def test_a_spill_fails():
    launch = triton_kernels.hourglass_input_launch(torch.float32, ops.COMPRESSED_CHANNELS, 0.01)
    result = aot.measure(launch, 90, aligned=True, maxnreg=32)  # ~95 registers needed: ptxas must spill
    assert isinstance(result, Resources) and result.registers <= 32 and result.spills > 0, result
    with pytest.raises(AssertionError, match="spills"):
        _check(launch.name, 90, True, result)


# ---------------------------------------------------------------------------------------------
# the compiled variants are the launched ones
# ---------------------------------------------------------------------------------------------
def _signature(args: tuple) -> tuple[str, ...]:
    """The types triton's JIT sees for these positional arguments (no value specialization)."""
    types = []
    for arg in args:
        if isinstance(arg, torch.Tensor):
            types.append(f"*{_TRITON_TYPES[arg.dtype]}")
        else:
            assert type(arg) is int and 1 < arg < 2**31, f"size {arg!r}: not an int32 the JIT leaves unspecialized"
            types.append("i32")
    return tuple(types)


def test_launchers_use_the_compiled_variants(monkeypatch):
    """Each ops function, on inputs of every dtype, launches a variant in `triton_launches()`."""
    launched = set()
    kernels = {launch.kernel for launch in LAUNCHES}
    for kernel in kernels:

        def record(*args, grid, warmup, kernel=kernel, **kwargs):
            num_warps = kwargs.pop("num_warps")
            launched.add((kernel.__name__, _signature(args), tuple(sorted(kwargs.items())), num_warps))

        monkeypatch.setattr(kernel, "run", record)  # what `kernel[grid](...)` calls
    # the compiled module (not the interpreted copy) for CPU tensors, so that the calls reach `record`
    monkeypatch.setattr(ops, "triton_module", lambda device: triton_kernels)
    triton = ops.Backend.TRITON

    kd, ks = torch.rand(2, 21, 3), torch.rand(2, 21, 3)
    for dtype in ops.FEATURE_DTYPES:
        volume = torch.rand(2, 32, 2, 4, 6).to(dtype)
        for grid_dtype in (torch.float32, torch.float16):
            ops.grid_sample_3d(volume, torch.rand(2, 3, 4, 5, 3).to(grid_dtype), backend=triton)
        ops.hourglass_input(volume[:, :ops.COMPRESSED_CHANNELS], kd.to(dtype), ks, backend=triton)
        mask = torch.rand(2, 22, 2, 4, 6).to(dtype)
        ops.deformation(mask, kd, ks, backend=triton)
        ops.softmax_deformation(mask, kd, ks, backend=triton)
    ops.softmax_deformation(torch.rand(2, 22, 2, 4, 6, dtype=torch.float64), kd, ks, backend=triton)

    def key(launch: triton_kernels.Launch) -> tuple:
        signature = launch.signature()
        arg_types = tuple(kind for kind in signature.values() if kind != "constexpr")
        return launch.kernel.__name__, arg_types, tuple(sorted(launch.constexprs)), launch.num_warps

    compiled = {key(launch) for launch in LAUNCHES}
    assert launched == compiled, f"launched but not compiled ahead of time: {launched - compiled}; " \
        f"compiled but never launched: {compiled - launched}"
