"""Which implementation runs a kernel: Triton on CUDA when it imports, the PyTorch reference otherwise.

`Backend.AUTO` picks Triton only for CUDA tensors. `Backend.TRITON` forces it: on CPU tensors
the kernels then run in Triton's interpreter (slow; small shapes only), which is how the
kernels are tested on machines without a GPU. `Backend.REFERENCE` forces the PyTorch path.
"""

from __future__ import annotations

import contextlib
import enum
import importlib.util
import logging
import os
import sys
from functools import cache
from types import ModuleType

import torch

log = logging.getLogger(__name__)


class Backend(str, enum.Enum):
    AUTO = "auto"
    TRITON = "triton"
    REFERENCE = "reference"


@cache
def triton_available() -> bool:
    """True if `triton` imports (a CUDA device is a separate question, asked per tensor)."""
    try:
        import triton  # noqa: F401
    except ImportError as e:
        log.debug("triton unavailable, kernels use the PyTorch reference: %s", e)
        return False
    return True


def kernels_runnable(device: torch.device | str) -> bool:
    """Whether the fused Triton warping kernels can run compiled on `device` (CUDA with triton importable).

    The one answer to "can the kernels run here": the engine's plan, the run's warnings and
    `resolve_backend` (per tensor) ask it.
    """
    return torch.device(device).type == "cuda" and triton_available()


def resolve_backend(backend: Backend | str, *tensors: torch.Tensor) -> Backend:
    """TRITON or REFERENCE for these tensors; AUTO means Triton iff all are on CUDA and triton imports."""
    backend = Backend(backend)
    if backend is Backend.AUTO:
        return Backend.TRITON if all(kernels_runnable(t.device) for t in tensors) else Backend.REFERENCE
    if backend is Backend.TRITON and not triton_available():
        raise RuntimeError("Backend.TRITON requested but triton does not import; install triton or use "
                           "Backend.AUTO / Backend.REFERENCE")
    return backend


def interpreting() -> bool:
    """True if triton was told to interpret every kernel (TRITON_INTERPRET=1 before its import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_module(device: torch.device) -> ModuleType:
    """`triton_kernels`, compiled for CUDA tensors, or an interpreted copy for CPU tensors."""
    if device.type == "cpu" and not interpreting():
        return _interpreted_module()
    from . import triton_kernels

    return triton_kernels


@cache
def _interpreted_module() -> ModuleType:
    # triton.jit decides compiled vs interpreted when a kernel is defined, so a second copy of
    # the module is executed with the interpreter knob on; the knob (and the TRITON_INTERPRET
    # variable it mirrors) is restored at once, so nothing else in the process (e.g. inductor's
    # kernels) is interpreted.
    from . import triton_kernels

    name = f"{__package__}._triton_kernels_interpreted"
    spec = importlib.util.spec_from_file_location(name, triton_kernels.__file__)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before executing it, as importlib does (dataclasses look it up)
    try:
        with _interpret_knob():
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    log.debug("loaded the Triton kernels in interpreter mode for CPU tensors")
    return module


@contextlib.contextmanager
def _interpret_knob():
    try:
        from triton import knobs  # recent triton; older ones read TRITON_INTERPRET in `jit`
    except ImportError:
        knobs = None
    if knobs is not None:
        with knobs.runtime.scope():
            knobs.runtime.interpret = True
            yield
        return
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous
