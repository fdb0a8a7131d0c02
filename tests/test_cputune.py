"""CPU threading decision (`cputune`), the competing load (`cpuload`) and the per-network CPU precision.

No timing assertions: the measurements are replaced by fixed numbers where a decision is tested.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lp_live.core import cpuload, cputune, usercache
from lp_live.core.cputune import Threading

REPO = Path(__file__).resolve().parents[1]
FAKE = {"2 threads, default wait": {"quiet": 10.0, "loaded": 90.0},
        "2 threads, PASSIVE wait": {"quiet": 12.0, "loaded": 20.0},
        "1 thread": {"quiet": 19.0, "loaded": 25.0}}


@pytest.fixture
def env(monkeypatch, tmp_path):
    """A private environment without OpenMP variables, a temporary user cache, torch 'not loaded'
    and a 2-core machine whose measurement returns FAKE (counted in `calls`)."""
    environ = {k: v for k, v in os.environ.items() if k not in cputune.THREAD_VARS + cputune.WAIT_VARS}
    environ["XDG_CACHE_HOME"] = str(tmp_path)
    monkeypatch.setattr(os, "environ", environ)
    monkeypatch.setattr(cputune, "_torch_loaded", lambda: False)
    monkeypatch.setattr(cputune, "physical_cores", lambda: 2)
    calls = []

    def fake_measure(cores):
        calls.append(cores)
        return FAKE, "libgomp"

    monkeypatch.setattr(cputune, "measure", fake_measure)
    return environ, calls


def test_candidates_and_the_choice():
    assert cputune.candidates(1) == [Threading(1)]
    assert cputune.candidates(2) == [Threading(2), Threading(2, "PASSIVE"), Threading(1)]
    assert [c.label for c in cputune.candidates(8)] == ["8 threads, default wait", "8 threads, PASSIVE wait",
                                                        "7 threads, default wait", "7 threads, PASSIVE wait"]
    # least quiet + loaded: the default policy is fastest quiet but collapses under load
    assert cputune.choose(FAKE, cputune.candidates(2)) == Threading(2, "PASSIVE")
    assert Threading(2, "PASSIVE").env() == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    assert Threading(3).env() == {"OMP_NUM_THREADS": "3"}
    with pytest.raises(ValueError, match="no candidate"):
        cputune.choose({}, cputune.candidates(2))


def test_cache_miss_measures_then_the_cache_answers(env):
    environ, calls = env
    first = cputune.set_process_threading()
    assert first.source == "measured" and first.choice == Threading(2, "PASSIVE") and calls == [2]
    assert environ["OMP_NUM_THREADS"] == "2" and environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert cputune.applied() is first and first.env == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    del environ["OMP_NUM_THREADS"], environ["OMP_WAIT_POLICY"]
    second = cputune.set_process_threading()
    assert second.source == "cache" and second.choice == first.choice and calls == [2]  # not measured again
    assert second.timings == FAKE and environ["OMP_WAIT_POLICY"] == "PASSIVE"
    third = cputune.set_process_threading(retune=True)
    assert third.source == "measured" and calls == [2, 2]


def test_choosing_writes_no_environment_variable(env):
    environ, calls = env
    tuning = cputune.choose_threading()
    assert tuning.source == "measured" and tuning.env == {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"}
    assert "OMP_NUM_THREADS" not in environ and "OMP_WAIT_POLICY" not in environ and calls == [2]
    assert cputune.choose_threading().source == "cache" and "OMP_WAIT_POLICY" not in environ


def test_the_users_environment_wins(env):
    environ, calls = env
    cputune.set_process_threading()  # caches (2, PASSIVE)
    environ.pop("OMP_WAIT_POLICY")
    environ["OMP_NUM_THREADS"] = "1"  # the user's thread count, the cached wait policy
    tuning = cputune.set_process_threading()
    assert environ["OMP_NUM_THREADS"] == "1" and environ["OMP_WAIT_POLICY"] == "PASSIVE"
    assert tuning.env == {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    environ.pop("OMP_WAIT_POLICY")
    environ["GOMP_SPINCOUNT"] = "1000"  # a libgomp wait setting: no OMP_WAIT_POLICY beside it
    tuning = cputune.set_process_threading()
    assert tuning.source == "env" and "OMP_WAIT_POLICY" not in environ and calls == [2]


@pytest.mark.parametrize("content", ["{not json", '{"version": 1, "entries": []}', '["a list"]',
                                     '{"version": 1, "entries": {"KEY": {"threads": "many", "wait_policy": "x"}}}',
                                     '{"version": 1, "entries": {"KEY": {"threads": 2, "wait_policy": "SPIN"}}}'])
def test_a_bad_cache_file_is_ignored_and_replaced(env, content):
    _, calls = env
    path = usercache.cache_path(cputune.CACHE_NAME)
    path.parent.mkdir(parents=True)
    path.write_text(content.replace("KEY", cputune.machine_key()))
    tuning = cputune.set_process_threading()
    assert tuning.source == "measured" and calls == [2]
    data = json.loads(path.read_text())
    assert data["entries"][cputune.machine_key()]["wait_policy"] == "PASSIVE"


def test_nothing_is_applied_once_torch_is_loaded(env, monkeypatch):
    environ, calls = env
    monkeypatch.setattr(cputune, "_torch_loaded", lambda: True)
    tuning = cputune.set_process_threading()
    assert tuning.source == "not applied" and calls == [] and "OMP_NUM_THREADS" not in environ


def test_the_probe_subprocess_reports_its_timings():
    env = cputune._probe_env("PASSIVE", 1)
    out = subprocess.run([sys.executable, "-m", "lp_live.core.cputune", "--probe", "1"], env=env, capture_output=True,
                         text=True, timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["openmp"] == "libgomp"  # PyTorch's CPU wheels; another runtime would need other variables
    assert set(result["timings"]["1"]) == {"quiet", "loaded"} and all(v > 0 for v in result["timings"]["1"].values())


def _children() -> set[int]:
    """Live child processes of this one (Linux /proc)."""
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z":
            pids.add(int(stat.parent.name))
    return pids


def test_competing_load_starts_and_stops_its_processes():
    before = _children()
    with cpuload.CompetingLoad(1) as load:
        spinning = _children() - before
        assert len(spinning) == 1 and load.describe() == {"processes": 1, "kind": "spin"}
    time.sleep(0.1)
    assert not (_children() & spinning)
    load.stop()  # twice is fine
    with pytest.raises(ValueError, match="competing load must be"):
        cpuload.CompetingLoad(cpuload.max_load() + 1)


def test_competing_load_is_stopped_by_an_exception():
    before = _children()
    with pytest.raises(KeyboardInterrupt), cpuload.CompetingLoad(1):
        raise KeyboardInterrupt
    assert _children() <= before


# ---------------------------------------------------------------------------------------------
# per-network precision on CPUs
# ---------------------------------------------------------------------------------------------
def test_precision_pick_needs_a_clear_bf16_gain():
    from lp_live.engine.cpu_precision import pick

    assert pick({"warping": {"fp32": 100.0, "bf16": 50.0}, "generator": {"fp32": 100.0, "bf16": 95.0}}) == {
        "warping": "bf16", "generator": "fp32"}


def cached_auto_engine(monkeypatch, tmp_path, models):
    """An `auto` engine on a CPU said to have native bf16, whose cached choice is W bf16, G fp32."""
    from lp_live.engine import cpu_precision, optimized, precision

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(cpu_precision, "measure", lambda: pytest.fail("measured despite the cache"))
    usercache.store_cache_entry(cputune.PRECISION_CACHE_NAME, cpu_precision.cache_key(),
                              {"precisions": {"warping": "bf16", "generator": "fp32"}})
    return optimized.OptimizedEngine(models, "cpu", input_size=128, precision="auto", compile=False,
                                      rewrite_plan="default")  # the committed table's layouts per dtype


def test_auto_precision_comes_from_the_cache_per_network(monkeypatch, tmp_path, synthetic_models):
    engine = cached_auto_engine(monkeypatch, tmp_path, synthetic_models)
    assert engine.precision_source == "cache" and engine.precision == "W bf16, G fp32"
    assert engine.precisions == {"motion": "fp32", "warping": "bf16", "generator": "fp32"}
    assert engine.plan.warping_channels_last and not engine.plan.generator_channels_last


@pytest.mark.native_bf16
def test_cached_per_network_precision_runs(monkeypatch, tmp_path, synthetic_models):
    from lp_live.engine import Anchor, AnimateOptions

    engine = cached_auto_engine(monkeypatch, tmp_path, synthetic_models)
    source = (np.random.default_rng(0).uniform(0, 255, (128, 128, 3))).astype(np.uint8)
    with torch.no_grad():
        state = engine.prepare_source(source)
        feature = engine.warp(state, state.x_s)
        out = engine.animate(state, source, anchor=Anchor(), options=AnimateOptions())
    assert feature.dtype == torch.bfloat16 and out.shape == (256, 256, 3) and out.dtype == np.uint8


def test_auto_precision_measures_on_a_cache_miss(monkeypatch, tmp_path):
    from lp_live.engine import cpu_precision, precision

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: True)
    monkeypatch.setattr(cpu_precision, "measure", lambda: {"warping": {"fp32": 10.0, "bf16": 20.0},
                                                           "generator": {"fp32": 10.0, "bf16": 5.0}})
    dtypes, source = precision.resolve_precisions("auto", torch.device("cpu"))
    assert source == "measured" and dtypes == {"warping": torch.float32, "generator": torch.bfloat16}
    assert usercache.cache_entry(cputune.PRECISION_CACHE_NAME, cpu_precision.cache_key())["precisions"] == {
        "warping": "fp32", "generator": "bf16"}
    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: False)  # emulated bf16: never measured
    assert precision.resolve_precisions("auto", torch.device("cpu")) == (
        {"warping": torch.float32, "generator": torch.float32}, "no native bf16")


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=pytest.mark.native_bf16)])
def test_proxy_convs_run_in_each_dtype(dtype):
    """bf16 skips where it is emulated: `cpu_precisions` times the proxies only where bf16 is native."""
    from lp_live.engine.cpu_precision import NETWORKS, proxy_convs

    rng_state = torch.random.get_rng_state()
    for network in NETWORKS:
        for conv, x in proxy_convs(network, dtype):
            assert conv(x).dtype == dtype
    assert torch.equal(torch.random.get_rng_state(), rng_state)  # the global RNG is untouched

