"""Several source photos live: keys 1-9 select one, each prepared once per engine on first use,
with the real networks (synthetic weights, 128 px, baseline engine)."""

from __future__ import annotations

import numpy as np
import pytest

from lp_live.cli import source_photos
from lp_live.core.config import Config
from lp_live.core.errors import UserError
from lp_live.session import DEFAULT_SOURCE, build_animator, fit_source, read_image
from lp_live.stream import Controls, open_source


def test_source_switching_with_the_real_networks(assets, synthetic_models, video):
    config = Config()
    config.engine.weights = "synthetic"
    config.engine.input_size = 128
    config.engine.mode = "baseline"
    config.animation.smoothing = False
    first, second = read_image(assets / "s6.jpg"), read_image(DEFAULT_SOURCE)
    animator = build_animator(config, first, models=synthetic_models, more_sources=[second])
    assert animator.source_count == 2 and animator.source_index == 0
    with open_source(video) as source:
        frames = [source.read()[0] for _ in range(2)]
    a = animator.process(frames[0]).image
    assert a.shape[:2] == animator.source.shape[:2] == fit_source(first).shape[:2]

    prepared = []
    engine = animator.engine("baseline")
    real_prepare = engine.prepare_source
    engine.prepare_source = lambda *a, **kw: prepared.append(1) or real_prepare(*a, **kw)
    anchor = animator.anchor.motion
    assert anchor is not None  # the first driving frame
    controls = Controls()
    controls.press("2")
    controls.apply(animator)
    assert animator.anchor.motion is anchor  # the driving anchor is kept across photos
    b = animator.process(frames[1]).image
    assert animator.source_index == 1 and b.shape[:2] == animator.source.shape[:2] != a.shape[:2]
    assert prepared == [1]  # the second photo was prepared when first selected

    controls.press("1")
    controls.press("9")  # no photo 9: ignored
    controls.apply(animator)
    c = animator.process(frames[0]).image
    assert animator.source_index == 0 and prepared == [1]  # the first photo's state is kept
    assert c.shape == a.shape and np.abs(c.astype(int) - a).mean() < 8  # the same photo (the face box is tracked)


def test_source_folders_and_too_many_photos(tmp_path):
    assert source_photos(None) == []
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("b.jpg", "a.PNG", "notes.txt"):
        (folder / name).write_bytes(b"")
    one = tmp_path / "one.jpg"
    assert source_photos([one, folder]) == [one, folder / "a.PNG", folder / "b.jpg"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no photo in this folder"):
        source_photos([empty])
    with pytest.raises(UserError, match="at most 9"):
        source_photos([one] * 10)
