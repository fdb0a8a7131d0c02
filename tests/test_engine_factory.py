"""One place turns the engine configuration into an engine's keyword arguments (live app, server, bench)."""

from __future__ import annotations

import torch

from lp_live.core.config import EngineConfig
from lp_live.engine import MODES
from lp_live.engine.factory import engine_kwargs
from lp_live.kernels import backend, kernels_runnable


def test_engine_kwargs_per_mode():
    cfg = EngineConfig(input_size=128, precision="fp32", compile=False, cuda_graph=False)
    cpu = torch.device("cpu")
    assert MODES == ("baseline", "optimized")
    assert engine_kwargs("baseline", cfg, cpu) == {"input_size": 128}
    assert engine_kwargs("optimized", cfg, cpu) == {"input_size": 128, "precision": "fp32", "compile": False,
                                                    "cuda_graph": False, "kernels": None, "rewrite_plan": "measured"}
    cfg.kernels = "off"
    assert engine_kwargs("optimized", cfg, cpu)["kernels"] is False


def test_kernels_on_where_they_cannot_run(monkeypatch):
    cfg = EngineConfig(kernels="on")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert not kernels_runnable(cpu)
    assert engine_kwargs("optimized", cfg, cpu)["kernels"] is None  # the live app: the device's default plan
    assert engine_kwargs("optimized", cfg, cpu, kernels_fallback=False)["kernels"] is True  # the bench: as asked
    monkeypatch.setattr(backend, "triton_available", lambda: True)
    assert kernels_runnable(cuda) and kernels_runnable("cuda:0") and not kernels_runnable(cpu)
    assert engine_kwargs("optimized", cfg, cuda)["kernels"] is True
    monkeypatch.setattr(backend, "triton_available", lambda: False)
    assert not kernels_runnable(cuda) and engine_kwargs("optimized", cfg, cuda)["kernels"] is None
