"""`EnginePool.build_in_background`: built once, handed over between frames, failures said once,
and an exclusive build (the CUDA default) never warms while a frame of the running engine is on
the device (stand-in engines and sleeps; the networks: `test_background_real.py`)."""

from __future__ import annotations

import threading
import time

import pytest

from lp_live.session.engines import EnginePool


def _pool(built: list[str], *, fail: bool = False) -> EnginePool:
    def factory(mode: str):
        if fail and mode == "optimized":
            raise RuntimeError("inductor\nexploded")
        built.append(mode)
        return f"{mode}-engine"

    return EnginePool(factory, ("baseline", "optimized"))


def test_a_background_build_is_adopted_once_ready_and_built_once():
    built: list[str] = []
    pool = _pool(built)
    pool.get("baseline")
    go = threading.Event()
    pool.build_in_background("optimized", lambda engine: go.wait(10))
    assert pool.pending().mode == "optimized" and not pool.ready() and pool.adopt() is None
    pool.build_in_background("optimized", lambda engine: None)  # a second request is ignored
    go.set()
    pool.pending().thread.join()
    assert pool.ready() and pool.adopt() == "optimized" and pool.pending() is None
    assert pool.get("optimized") == "optimized-engine" and built == ["baseline", "optimized"]


def test_asking_for_the_engine_being_built_waits_for_it_instead_of_building_another():
    built: list[str] = []
    pool = _pool(built)
    pool.build_in_background("optimized", lambda engine: time.sleep(0.3))
    assert pool.get("optimized") == "optimized-engine" and built == ["optimized"] and pool.pending() is None


def test_a_failed_background_build_is_said_once_and_the_running_engine_stays():
    pool = _pool([], fail=True)
    pool.get("baseline")
    pool.build_in_background("optimized", lambda engine: None)
    pool.pending().thread.join()
    assert pool.adopt() is None and pool.background_error == "optimized engine failed: inductor exploded"
    assert list(pool.built()) == ["baseline"] and pool.pending() is None


@pytest.mark.parametrize("exclusive", [True, False])
def test_an_exclusive_warm_frame_and_a_running_frame_never_overlap(exclusive):
    pool = _pool([])
    spans: dict[str, tuple[float, float]] = {}

    def warm(engine) -> None:
        t0 = time.perf_counter()
        time.sleep(0.4)  # compile and graph capture
        spans["warm"] = (t0, time.perf_counter())

    pool.build_in_background("optimized", warm, exclusive=exclusive)
    time.sleep(0.1)  # the warm frame has begun
    assert pool.exclusive() is exclusive
    t0 = time.perf_counter()
    with pool.device_lock if pool.exclusive() else threading.Lock():  # what `Animator.submit` to `finish` do
        spans["frame"] = (t0, time.perf_counter())
    pool.pending().thread.join()
    overlap = spans["frame"][1] > spans["warm"][1] - 0.01
    assert overlap is exclusive  # exclusive: the frame waited for the warm frame to end
    assert not pool.exclusive()
