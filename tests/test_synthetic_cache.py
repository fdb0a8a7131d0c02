"""Synthetic weights built once into the weights cache and loaded like the official files."""

from __future__ import annotations

import logging

import pytest
import torch

from lp_live.models import checkpoint
from lp_live.models.checkpoint import NETWORK_NAMES, synthetic_liveportrait, synthetic_weights_dir
from lp_live.models.integrity import DIGESTS_NAME, recorded_digest
from lp_live.models.synthetic import synthetic_state_dict


def test_cached_weights_are_the_recipes_bit_for_bit(synthetic_models):
    """What the cache holds (the session's models were loaded from it) is what the recipe builds now."""
    for name in ("spade_generator", "stitching", "lip", "eye"):  # spectral norm's power iteration included
        built, cached = synthetic_state_dict(name), getattr(synthetic_models, name).state_dict()
        assert built.keys() == cached.keys() and all(torch.equal(built[k], cached[k]) for k in built), name
    assert synthetic_models.kind == synthetic_models.source == "synthetic"


@pytest.fixture
def cache(monkeypatch, tmp_path, synthetic_models):
    """An empty weights cache, and the recipe replaced by the session's (cached) weights, counting calls."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls: list[str] = []

    def recipe(name, module=None):
        calls.append(name)
        return getattr(synthetic_models, name).state_dict()

    monkeypatch.setattr(checkpoint, "synthetic_state_dict", recipe)
    return calls


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for n in NETWORK_NAMES
               for x, y in zip(getattr(a, n).state_dict().values(), getattr(b, n).state_dict().values()))


def test_built_once_then_loaded_with_digests(cache, synthetic_models, caplog):
    caplog.set_level(logging.INFO, logger="lp_live.models.checkpoint")
    first = synthetic_liveportrait()
    assert sorted(cache) == sorted(NETWORK_NAMES) and "building the synthetic weights" in caplog.text
    folder = synthetic_weights_dir()
    assert (folder / DIGESTS_NAME).is_file() and folder.is_relative_to(checkpoint.default_cache_dir())
    assert all(recorded_digest(folder / f) for f in checkpoint.CHECKPOINT_FILES)
    cache.clear()
    second = synthetic_liveportrait()
    assert cache == [] and _same(first, second) and _same(second, synthetic_models)


@pytest.mark.parametrize("how", ["truncate", "flip", "delete"])
def test_damaged_cache_is_rebuilt_with_one_info_line(cache, synthetic_models, caplog, how):
    synthetic_liveportrait()
    path = synthetic_weights_dir() / checkpoint.BASE_FILES["spade_generator"]
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "flip":
        path.write_bytes(data[:-100] + bytes(b ^ 0xFF for b in data[-100:]))
    else:
        path.unlink()
    cache.clear()
    caplog.clear()
    caplog.set_level(logging.INFO, logger="lp_live.models.checkpoint")
    models = synthetic_liveportrait()
    assert sorted(cache) == sorted(NETWORK_NAMES) and _same(models, synthetic_models)
    lines = [r for r in caplog.records if r.name == "lp_live.models.checkpoint"]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and "rebuilding" in lines[0].getMessage()
    cache.clear()
    synthetic_liveportrait()
    assert cache == []  # the rebuilt files load


def test_unwritable_cache_builds_in_memory(cache, synthetic_models, tmp_path, monkeypatch, caplog):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # not a folder: nothing can be written
    assert _same(synthetic_liveportrait(), synthetic_models) and "in memory" in caplog.text
