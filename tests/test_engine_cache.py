"""Compiled engines kept between runs: a second process with the same graphs lowers nothing (FX-cache
hits), loads what the first generated and animates the same frames; a damaged entry is rebuilt with
one INFO line; one cache folder per machine and torch version, bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lp_live.engine import persist

REPO = Path(__file__).resolve().parents[1]
# one fresh process: the optimized engine at 128 px (fp32: no precision measurement), a frame, and
# inductor's FX-graph cache outcomes (a hit: the graph's code loaded, nothing lowered or generated)
SCRIPT = r"""
import json, logging, sys
import numpy as np, torch
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
torch.set_num_threads(2)
from torch._dynamo.utils import counters
from lp_live.core.config import AnimateOptions
from lp_live.engine.base import Anchor
from lp_live.engine.optimized import OptimizedEngine
from lp_live.models import synthetic_liveportrait
engine = OptimizedEngine(synthetic_liveportrait(), "cpu", input_size=128, precision="fp32", compile=True)
rng = np.random.default_rng(0)
source, driving = (rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2))
state = engine.prepare_source(source)
frame = engine.animate(state, driving, anchor=Anchor(), options=AnimateOptions())
np.save(sys.argv[1], frame)
print(json.dumps({k: counters["inductor"][f"fxgraph_cache_{k}"] for k in ("hit", "miss", "bypass")}))
"""


def _run(tmp_path: Path, name: str) -> tuple[dict, np.ndarray, str]:
    """One process with the cache folder under `tmp_path` (its own partition, as a user's run picks)."""
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}
    env.update(PYTHONPATH=str(REPO), XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / f"{name}.npy")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), np.load(tmp_path / f"{name}.npy"), proc.stderr


@pytest.mark.slow
def test_second_process_loads_and_a_damaged_entry_is_rebuilt(tmp_path, synthetic_models):
    """M, W and G (three frozen graphs, oneDNN-packed weights): compiled by the first process, loaded by
    the second (no graph lowered: three FX-cache hits), the same frame; a truncated entry is rebuilt."""
    first, frame, _ = _run(tmp_path, "first")
    assert first == {"hit": 0, "miss": 3, "bypass": 0}, first
    (folder,) = persist.entries(tmp_path / "cache" / "lp-live" / "inductor")
    assert folder["graphs"] == 3 and folder["key"]["torch"] == torch.__version__

    second, again, _ = _run(tmp_path, "second")
    assert second == {"hit": 3, "miss": 0, "bypass": 0}, second
    assert np.array_equal(frame, again)

    entry = sorted((folder["path"] / "fxgraph").glob("*/*/*"), key=lambda p: p.stat().st_size)[-1]
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2])  # truncated
    third, rebuilt, log = _run(tmp_path, "third")
    assert third == {"hit": 2, "miss": 1, "bypass": 0}, third
    lines = [line for line in log.splitlines() if "damaged" in line or "WARNING" in line]
    assert len(lines) == 1 and lines[0].startswith("INFO ") and "1 damaged entry removed" in lines[0], lines
    assert np.array_equal(frame, rebuilt)


def test_frozen_mkldnn_graph_is_cached_and_right_for_other_weights(tmp_path, monkeypatch):
    """A small conv + BN + linear with freezing: the packed weights no longer bypass the FX cache; a hit
    with other weights of the same shapes computes with those weights (values come from the graph)."""
    from torch._dynamo.utils import counters

    from lp_live.engine.compiled import FrozenCompiled

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    x = torch.randn(1, 3, 16, 16)
    outcomes = []
    for seed in (0, 0, 1):
        torch.manual_seed(seed)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                  torch.nn.Linear(8 * 14 * 14, 5)).eval()
        torch._dynamo.reset()
        counters.clear()
        with torch.no_grad():
            torch.testing.assert_close(FrozenCompiled(net)(x), net(x), rtol=1e-4, atol=1e-5)
        outcomes.append({k: v for k, v in counters["inductor"].items() if k.startswith("fxgraph_cache")})
    assert outcomes[0] == {"fxgraph_cache_miss": 1} and outcomes[1] == {"fxgraph_cache_hit": 1}
    assert counters["inductor"]["mkldnn_conv_weight_pack_matcher_count"] >= 1  # packed, yet cached


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setattr(persist, "_chosen", None)
    return tmp_path / "lp-live" / "inductor"


def test_partition_keyed_by_machine_and_bounded(root, monkeypatch):
    folder = persist.use_cache(torch.device("cpu"))
    assert folder.parent == root and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder)
    key = json.loads((folder / persist.KEY_NAME).read_text())
    assert key["torch"] == torch.__version__ and key["cpu"] and len(key["isa"]) == 12
    old = root / "cpu-0123456789abcdef"
    (old / "fxgraph").mkdir(parents=True)
    (old / "fxgraph" / "big").write_bytes(b"x" * 2000)
    os.utime(old, (0, 0))
    monkeypatch.setenv("LP_LIVE_ENGINE_CACHE_MAX_GB", "1e-6")  # 1000 bytes: the oldest folder goes
    (folder / "kernel.so").write_bytes(b"y" * 500)
    assert persist.evict(keep=folder) == [old] and not old.exists() and folder.exists()


def test_user_choice_of_folder_wins(root, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert persist.use_cache(torch.device("cpu")) == tmp_path / "mine"
    assert not root.exists()


def test_damaged_entry_dropped_with_one_info_line(root, caplog):
    import logging
    import pickle

    folder = persist.use_cache(torch.device("cpu"))
    good, bad = folder / "fxgraph" / "ab" / "key1" / "0", folder / "fxgraph" / "cd" / "key2" / "0"
    for path in (good, bad):
        path.parent.mkdir(parents=True)
    good.write_bytes(pickle.dumps({"fine": 1}))
    bad.write_bytes(pickle.dumps({"fine": 1})[:5])
    caplog.set_level(logging.INFO, logger="lp_live.engine.persist")
    assert persist.drop_damaged(folder) == [bad] and good.exists()
    assert [r.levelname for r in caplog.records] == ["INFO"] and "1 damaged entry" in caplog.text


def test_torch_default_folder_is_not_taken_for_the_users(root, monkeypatch):
    """Inductor writes its /tmp default into the variable when anything asks for its folder first."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")  # restored afterwards, whatever cache_dir() sets
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    cache_dir()
    assert persist.use_cache(torch.device("cpu")).parent == root
