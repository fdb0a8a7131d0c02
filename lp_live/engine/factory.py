"""Engines as the run configuration asks for them: the one place that turns `EngineConfig` into
an engine's keyword arguments (the live app, the server and the bench all build engines here)."""

from __future__ import annotations

from typing import Any

import torch

from ..core.config import EngineConfig
from ..kernels import kernels_runnable
from ..models import LivePortraitModels
from . import Engine, create_engine


def engine_kwargs(mode: str, config: EngineConfig, device: torch.device, *,
                  kernels_fallback: bool = True) -> dict[str, Any]:
    """The keyword arguments of `create_engine(mode, ...)` from `config` on `device`.

    Args:
        mode: the engine (one of `MODES`).
        config: the run's engine section.
        device: where the engine will run.
        kernels_fallback: where `kernels: on` asks for the Triton kernels and they cannot run on
            `device` (`kernels_runnable`), use the device's default plan instead (the live app and
            the server, which warn about it); False: the kernels' PyTorch reference runs (the bench
            measures what was asked).
    """
    kwargs: dict[str, Any] = {"input_size": config.input_size}
    if mode == "optimized":
        kwargs.update(config.optimized_kwargs())
        if kernels_fallback and config.kernels == "on" and not kernels_runnable(device):
            kwargs["kernels"] = None  # the default plan for this device
    return kwargs


def build_engine(mode: str, models: LivePortraitModels, device: torch.device, config: EngineConfig, *,
                 kernels_fallback: bool = True) -> Engine:
    """A new engine for `mode` on `device`, as `config` asks (see `engine_kwargs`).

    Args:
        mode: the engine (one of `MODES`).
        models: the shared networks.
        device: where it runs.
        config: the run's engine section.
        kernels_fallback: see `engine_kwargs`.
    """
    return create_engine(mode, models, device, **engine_kwargs(mode, config, device,
                                                               kernels_fallback=kernels_fallback))
