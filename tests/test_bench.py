"""`lp-live bench` on CPU: several batch sizes in one run, both engines, one JSON."""

from __future__ import annotations

import json

import pytest

from lp_live import cli
from lp_live.bench import parse_batches


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
