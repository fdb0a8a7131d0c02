"""`lp-live bench` end to end at the smallest size: batch sizes, competing load, threading, stages."""

from __future__ import annotations

import json

import pytest
import torch

from lp_live import cli
from lp_live.core.cpuload import max_load
from lp_live.tools.bench_format import format_table, parse_batches


def test_parse_batches():
    assert parse_batches(["1", "2", "4"]) == parse_batches(["1,2,4"]) == parse_batches(["1,2", "4", "2"]) == [1, 2, 4]
    with pytest.raises(ValueError, match=">= 1"):
        parse_batches(["0"])


def test_bench_measures_each_batch_size(tmp_path, capsys):
    """Tiny run (input 128, one timed step, no warm-up, optimized eager): per-batch entries with B
    in them, and the batch-1 figures where a single-batch run puts them."""
    out = tmp_path / "bench.json"
    rc = cli.main(["bench", "--device", "cpu", "--weights", "synthetic", "--input-size", "128", "--frames", "1",
                   "--warmup", "0", "--batch", "1,2", "--modes", "baseline", "optimized", "--no-compile",
                   "--no-stages", "--json", str(out)])
    assert rc == 0
    results = json.loads(out.read_text())
    assert results["meta"]["batches"] == [1, 2] and results["meta"]["batch"] == 1
    assert set(results["batches"]) == {"1", "2"}
    for b in (1, 2):
        entry = results["batches"][str(b)]
        assert set(entry["modes"]) == {"baseline", "optimized"} and "speedup" in entry
        for r in entry["modes"].values():
            assert r["batch"] == b and r["frames_timed"] == b and r["output_shape"] == [b, 256, 256, 3]
            assert r["fps"] > 0 and r["ms_per_step_p95"] >= r["ms_per_step_p50"] > 0
            assert r["fps_p50"] == pytest.approx(b / (r["ms_per_step_p50"] / 1e3))
    assert results["modes"]["optimized"] == results["batches"]["1"]["modes"]["optimized"]
    assert results["speedup"] == results["batches"]["1"]["speedup"]
    assert "frames/s (p50)" in capsys.readouterr().out



def test_bench_with_a_competing_load_reports_it(tmp_path, capsys):
    path = tmp_path / "bench.json"
    rc = cli.main(["bench", "--device", "cpu", "--modes", "baseline", "--input-size", "128", "--frames", "1",
                   "--warmup", "0", "--load", "1", "--json", str(path)])
    assert rc == 0
    results = json.loads(path.read_text())
    meta, base = results["meta"], results["modes"]["baseline"]
    assert meta["load"] == {"processes": 1, "kind": "spin"}
    assert meta["threading"]["torch_threads"] >= 1 and meta["threading"]["openmp"] == "libgomp"
    assert meta["threading"]["source"] == "not applied"  # torch was loaded before main() in this process
    # CPU: stages timed in the timed step itself; the outermost stages plus "other" are the step
    stages = base["stages_ms"]
    assert base["stages_from"] == "timed steps" and base["stages_nested"] == {"copy_h2d": "pre"}
    outer = sum(v for k, v in stages.items() if k not in base["stages_nested"])
    assert outer == pytest.approx(base["ms_per_step_mean"], rel=1e-9)
    assert 0 <= stages["other"] < 0.1 * base["ms_per_step_mean"]
    table = capsys.readouterr().out
    assert "competing load: 1 busy spin process(es)" in table and "other (outside stages)" in table
    assert "copy_h2d (in pre)" in table and "threading: " in table
    assert table.strip() == format_table(results).strip()


def test_bench_refuses_an_unbounded_load(capsys):
    with pytest.raises(SystemExit):
        cli.main(["bench", "--load", str(max_load() + 1)])
    assert "--load must be" in capsys.readouterr().err


def test_bench_roofline_is_consistent(tmp_path, monkeypatch, capsys):
    """Input 128, one frame per engine (eager, the committed plan): per stage, the same positive
    GFLOP per frame for both engines, achieved = GFLOP / stage time, share = achieved / peak."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    rc = cli.main(["bench", "--device", "cpu", "--weights", "synthetic", "--input-size", "128", "--frames", "1",
                   "--warmup", "0", "--no-compile", "--rewrite-plan", "default", "--json", str(out)])
    assert rc == 0
    results = json.loads(out.read_text())
    roof = results["roofline"]
    assert roof["flops_source"] == "counted" and roof["peak_gflop_per_s"]["fp32"] > 0
    for mode in ("baseline", "optimized"):
        rates = results["modes"][mode]["roofline"]
        assert set(rates) == {"motion", "warping", "generator"}
        for stage, r in rates.items():
            assert r["gflop_per_frame"] == roof["flops_per_frame"][stage] / 1e9 > 0
            assert r["ms_per_frame"] == results["modes"][mode]["stages_ms"][stage]
            assert r["gflop_per_s"] == pytest.approx(r["gflop_per_frame"] / (r["ms_per_frame"] / 1e3), rel=1e-9)
            assert r["peak_gflop_per_s"] == roof["peak_gflop_per_s"][r["dtype"]]
            assert r["share_of_peak"] == pytest.approx(r["gflop_per_s"] / r["peak_gflop_per_s"], rel=1e-9)
    assert results["modes"]["optimized"]["plan_report"]["source"] == "default table"
    table = capsys.readouterr().out
    assert "roofline: matmul peak fp32" in table and "optimized rewrite plan (default table" in table
    assert table.strip() == format_table(results).strip()


def test_flop_counts_agree_between_the_engines(synthetic_models):
    """The optimized engine's own eager frame (plan without the polyphase SPADE, which saves
    multiply-adds) counts the baseline's FLOPs per stage: M and G exactly, W within 2 % (the
    hoisted source compression, the deformation sum as a matmul)."""
    from dataclasses import replace

    from lp_live.engine.baseline import BaselineEngine
    from lp_live.engine.fast import FastGenerator
    from lp_live.engine.optimized import OptimizedEngine
    from lp_live.tools.roofline import count_stage_flops

    base = count_stage_flops(BaselineEngine(synthetic_models, "cpu", input_size=128), 128)
    engine = OptimizedEngine(synthetic_models, "cpu", input_size=128, precision="fp32", compile=False,
                             rewrite_plan="default")
    engine.plan = replace(engine.plan, polyphase_spade=False)
    engine.generator = FastGenerator(synthetic_models.spade_generator, dtype=torch.float32, channels_last=False,
                                     polyphase=False)
    engine._decode_fn = engine.generator
    fast = count_stage_flops(engine, 128)
    assert base["motion"] == fast["motion"] > 0 and base["generator"] == fast["generator"] > 0
    assert fast["warping"] == pytest.approx(base["warping"], rel=0.02) and base["warping"] > 0
