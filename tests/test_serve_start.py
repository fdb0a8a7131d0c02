"""`lp-live serve` answers with the baseline engine while the optimized one compiles beside it
(a sleep stands for the compile), switches between two steps once it is ready, and says so in
its figures; `--wait-for-optimized` waits at start as before."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

pytest.importorskip("aiortc", reason="the serve extra is not installed (pip install lp-live[serve])")

from lp_live.core.config import Config
from lp_live.server import app as app_module
from lp_live.server.app import Server

COMPILE_S = 1.0


def _config(wait: bool) -> Config:
    cfg = Config()
    cfg.engine.weights, cfg.engine.mode, cfg.engine.input_size, cfg.engine.device = "synthetic", "optimized", 128, "cpu"
    cfg.engine.compile, cfg.engine.wait_for_optimized = False, wait
    cfg.serve.port = 0
    return cfg


@pytest.fixture
def slow_optimized(monkeypatch):
    """The optimized engine's build "compiles" until the test sets `done`; returns (built modes, done)."""
    real = app_module.engine_factory
    built: list[str] = []
    done = threading.Event()

    def factory(cfg, models, device):
        build = real(cfg, models, device)

        def make(mode):
            if mode == "optimized":
                assert done.wait(60)  # the compile
            built.append(mode)
            return build(mode)

        return make

    monkeypatch.setattr(app_module, "engine_factory", factory)
    return built, done


def test_the_server_answers_with_baseline_while_optimized_compiles(synthetic_models, slow_optimized):
    async def scenario() -> None:
        server = Server(_config(wait=False), models=synthetic_models)
        await server.start()  # returns while the optimized engine still compiles
        try:
            sched = server.scheduler
            assert sched.running_mode("optimized") == "baseline"
            assert sched.stats()["background"].startswith("optimized engine compiling... ")
            assert sched.pool.built().keys() == {"baseline"}
            done.set()  # the compile ends
            for _ in range(200):
                if sched.pool.ready():
                    break
                await asyncio.sleep(0.05)
            assert sched.stats()["background"] is None
            await sched.call(sched.step, [])  # between two steps: adopted on the step thread
            assert sched.pool.pending() is None and "optimized" in sched.pool.built()
            assert sched.running_mode("optimized") == "optimized"
        finally:
            await server.stop()

    built, done = slow_optimized
    asyncio.run(scenario())
    assert built == ["baseline", "optimized"]


def test_wait_for_optimized_waits_at_start(synthetic_models, slow_optimized):
    async def scenario() -> float:
        server = Server(_config(wait=True), models=synthetic_models)
        t0 = time.perf_counter()
        await server.start()
        try:
            assert server.scheduler.stats()["background"] is None
            assert list(server.scheduler.pool.built()) == ["optimized"]
            return time.perf_counter() - t0
        finally:
            await server.stop()

    built, done = slow_optimized
    threading.Timer(COMPILE_S, done.set).start()
    assert asyncio.run(scenario()) >= COMPILE_S
    assert built == ["optimized"]
