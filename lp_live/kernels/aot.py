"""Ahead-of-time compiles of the Triton kernels for NVIDIA GPUs, on a machine without one.

`compile_launch` compiles one `triton_kernels.Launch` with `triton.compile` for a compute
capability (no driver is needed: the target is given, and triton bundles ptxas), and
`resources` reads the cubin's registers and local memory with the cuobjdump triton bundles.
Local memory is what register spills go to; triton's runtime reports it as `n_spills`
(bytes / 4) once a kernel is loaded on a GPU. `measure_all` does this for every variant in
`ops.triton_launches()` and a list of architectures, in parallel processes.

Specialization: triton's JIT marks pointer arguments whose address, and int arguments whose
value, is a multiple of 16 with a divisibility hint, and compiles a variant per pattern.
`aligned=True` hints every pointer and size (the engine's 16x64x64 volumes), `aligned=False`
none (odd sizes); the two bracket what runs. (An int argument equal to 1 becomes a constant at
run time; the model never passes one.)
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ops import triton_launches
from .triton_kernels import Launch

ARCHS = {80: "A100", 89: "L4 / RTX 40x0", 90: "H100 / H200"}  # compute capability -> GPUs

_RES_USAGE = re.compile(r"REG:(?P<REG>\d+) STACK:(?P<STACK>\d+) SHARED:(?P<SHARED>\d+) LOCAL:(?P<LOCAL>\d+)")


@dataclass(frozen=True)
class Resources:
    """Per-thread registers and local memory, and static shared memory per block, of one compiled kernel."""

    registers: int
    stack_bytes: int  # the stack frame: spilled registers
    local_bytes: int
    shared_bytes: int

    @property
    def spills(self) -> int:
        """Triton's `n_spills`: the per-thread local memory (CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES) / 4."""
        return (self.stack_bytes + self.local_bytes) // 4


def compile_launch(launch: Launch, arch: int, *, aligned: bool, **options: Any) -> Any:
    """`triton.compile` of `launch` for compute capability `arch` (80, 89, 90, ...): a CompiledKernel.

    Args:
        launch: the kernel variant (signature, constexprs, num_warps).
        arch: compute capability, e.g. 90 for sm_90.
        aligned: give every pointer and size the divisibility-by-16 hint (see the module docstring).
        options: further compile options (e.g. maxnreg), as `kernel[grid](..., **options)` takes them.
    Raises what triton raises on a compile error (CompilationError, PTXASError, ...).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    signature = launch.signature()
    attrs = None
    if aligned:
        attrs = {(i,): [["tt.divisibility", 16]] for i, kind in enumerate(signature.values()) if kind != "constexpr"}
    source = ASTSource(launch.kernel, signature, dict(launch.constexprs), attrs)
    return triton.compile(source, target=GPUTarget("cuda", arch, 32),
                          options={"num_warps": launch.num_warps, **options})


def resources(kernel: Any) -> Resources:
    """Registers, stack, local and shared memory of a CompiledKernel, from `cuobjdump -res-usage` of its cubin."""
    from triton import knobs

    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / f"{kernel.name}.cubin"
        cubin.write_bytes(kernel.asm["cubin"])
        out = subprocess.run([knobs.nvidia.cuobjdump.path, "-res-usage", str(cubin)], capture_output=True,
                             text=True, check=True).stdout
    found = list(_RES_USAGE.finditer(out))
    if len(found) != 1:
        raise RuntimeError(f"expected one function in cuobjdump -res-usage output, got {len(found)}:\n{out}")
    usage = {key: int(value) for key, value in found[0].groupdict().items()}
    return Resources(registers=usage["REG"], stack_bytes=usage["STACK"], local_bytes=usage["LOCAL"],
                     shared_bytes=usage["SHARED"])


def measure(launch: Launch, arch: int, *, aligned: bool, **options: Any) -> Resources | str:
    """`resources(compile_launch(...))`, or the compile error as text (type, message) if it fails."""
    try:
        return resources(compile_launch(launch, arch, aligned=aligned, **options))
    except Exception as e:  # any compile failure is the result here; the caller reports it
        return f"{type(e).__name__}: {e}"


def measure_all(
    archs: Iterable[int], alignments: Iterable[bool] = (False, True), *, cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
) -> dict[tuple[str, int, bool], Resources | str]:
    """`measure` of every variant in `ops.triton_launches()`, per architecture and alignment.

    Args:
        archs: compute capabilities.
        alignments: which of aligned=False / True to compile.
        cache_dir: triton's cache directory for the compiles (default: triton's own).
        workers: worker processes (default: one per CPU this process may use).

    Returns {(launch name, arch, aligned): Resources or the error text}.
    """
    names = [launch.name for launch in triton_launches()]
    if len(set(names)) != len(names):
        raise RuntimeError(f"two kernel variants share a name: {names}")
    jobs = [(i, arch, aligned) for i in range(len(names)) for arch in archs for aligned in alignments]
    workers = min(workers or len(os.sched_getaffinity(0)), len(jobs))
    cache = None if cache_dir is None else str(cache_dir)
    # spawned processes: the parent may hold torch's and triton's threads, which fork does not copy safely
    with concurrent.futures.ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"),
                                                initializer=_set_cache_dir, initargs=(cache,)) as pool:
        results = list(pool.map(_measure_job, jobs))
    return {(names[i], arch, aligned): result for (i, arch, aligned), result in zip(jobs, results)}


def _set_cache_dir(cache_dir: str | None) -> None:
    if cache_dir is not None:
        os.environ["TRITON_CACHE_DIR"] = cache_dir  # read by triton at each compile


def _measure_job(job: tuple[int, int, bool]) -> Resources | str:
    index, arch, aligned = job
    return measure(triton_launches()[index], arch, aligned=aligned)
