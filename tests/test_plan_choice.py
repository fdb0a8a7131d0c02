"""The optimized engine's CPU rewrite plan, chosen by measurement per ISA and cached."""

from __future__ import annotations

import pytest
import torch

from lp_live.core import usercache
from lp_live.engine import plan_choice

DTYPES = {"warping": torch.float32, "generator": torch.float32}


def test_cpu_isa_follows_the_caps(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    aten = torch.backends.cpu.get_cpu_capability().lower()
    assert plan_choice.cpu_isa() == aten
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert plan_choice.cpu_isa() == ("avx2" if aten == "avx2" else f"{aten}, onednn avx2")
    assert plan_choice.cpu_isa() in plan_choice.cache_key(DTYPES, 128)


def test_plan_keeps_a_rewrite_only_where_it_wins_and_is_cached(monkeypatch, tmp_path, synthetic_models):
    """Timings faked per rewrite (the probe itself runs): on wins for three, loses or ties for the rest."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    winners = {"warping_channels_last", "separable_sampling", "polyphase_spade"}
    order = iter([*plan_choice.WARPING_REWRITES, *plan_choice.GENERATOR_REWRITES])
    timed = []

    def fake_best_ms(fns):
        assert set(fns) == {"on", "off"} and all(callable(f) for f in fns.values())
        name = next(order)
        timed.append(name)
        return {"on": 50.0, "off": 100.0} if name in winners else {"on": 99.0, "off": 100.0}  # 0.99: a tie

    monkeypatch.setattr(plan_choice, "_best_ms", fake_best_ms)
    plan, report = plan_choice.choose_plan(synthetic_models, torch.device("cpu"), DTYPES, 128)
    assert timed == [*plan_choice.WARPING_REWRITES, *plan_choice.GENERATOR_REWRITES]
    assert report["source"] == "measured" and report["isa"] == plan_choice.cpu_isa()
    assert report["on"] == ["warping_channels_last", "polyphase_spade", "separable_sampling"]
    assert plan.warping_channels_last and plan.separable_sampling and plan.polyphase_spade
    assert plan.hourglass_chunk is None and plan.split_channels is None and not plan.occlusion_as_conv3d
    assert not (plan.sample_channels_last or plan.split_sampling or plan.generator_channels_last)
    assert report["why"]["polyphase_spade"] == "kept 50/100 ms" and report["why"]["hourglass_chunk"].startswith(
        "dropped")
    entry = usercache.cache_entry(plan_choice.CACHE_NAME, plan_choice.cache_key(DTYPES, 128))
    assert entry["plan"]["separable_sampling"] is True
    assert entry["timings"]["rewrites"]["split_sampling"]["kept"] is False

    monkeypatch.setattr(plan_choice, "measure_plan", lambda *a: pytest.fail("measured despite the cache"))
    cached, report = plan_choice.choose_plan(synthetic_models, torch.device("cpu"), DTYPES, 128)
    assert cached == plan and report["source"] == "cache"
    other, report = plan_choice.choose_plan(synthetic_models, torch.device("cpu"), DTYPES, 128, measured=False)
    assert report["source"] == "default table" and other.hourglass_chunk == 256  # the committed table


def test_the_engine_takes_the_measured_plan(monkeypatch, tmp_path, synthetic_models):
    from dataclasses import replace

    from lp_live.engine.optimized import OptimizedEngine
    from lp_live.engine.plan import default_plan

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    wanted = replace(default_plan(torch.device("cpu"), torch.float32), separable_sampling=False, hourglass_chunk=None)
    monkeypatch.setattr(plan_choice, "measure_plan", lambda models, dtypes: (wanted, {"rewrites": {}}))
    engine = OptimizedEngine(synthetic_models, "cpu", input_size=128, precision="fp32", compile=False)
    assert engine.plan == wanted and engine.plan_report["source"] == "measured"
    assert type(engine.warping.sampler).__name__ == "GridSampleSampler"
    with pytest.raises(ValueError, match="unknown rewrite plan 'fast'"):
        OptimizedEngine(synthetic_models, "cpu", input_size=128, precision="fp32", compile=False, rewrite_plan="fast")


@pytest.mark.parametrize(("isa", "bf16"), [("avx512", True), ("avx2", False), ("avx512, onednn avx2", False),
                                           ("avx512, onednn avx512_core", False),
                                           ("avx512, onednn avx512_core_bf16", True)])
def test_bf16_runs_natively_only_at_avx512_bf16(monkeypatch, isa, bf16):
    monkeypatch.setattr(plan_choice, "cpu_isa", lambda: isa)
    assert plan_choice.isa_runs_bf16() is bf16
