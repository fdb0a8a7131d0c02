"""The first frame does not wait for compilation, with the real networks (synthetic weights,
input 128, torch.compile on: it really compiles): the baseline engine renders the first frames
while the optimized engine compiles on its own thread; once it is ready the render switches to
it and every frame is in the file. `--wait-for-optimized` and `engine.mode: baseline` build
nothing in the background."""

from __future__ import annotations

import numpy as np
import pytest

from lp_live.core.config import Config
from lp_live.media.video import VideoReader
from lp_live.session import build_animator, read_image
from lp_live.stream.render import render_video


def _config(**engine) -> Config:
    cfg = Config()
    cfg.engine.weights, cfg.engine.input_size, cfg.engine.device = "synthetic", 128, "cpu"
    cfg.animation.paste_back = False
    for key, value in engine.items():
        setattr(cfg.engine, key, value)
    return cfg


def _frames(path) -> list[np.ndarray]:
    with VideoReader(path) as reader:
        return [f for f, _ in reader.frames()]


@pytest.mark.slow
def test_the_render_starts_on_baseline_and_switches_once_optimized_has_compiled(assets, synthetic_models, tmp_path):
    photo = read_image(assets / "s6.jpg")
    animator = build_animator(_config(mode="optimized", compile=True), photo, models=synthetic_models)
    assert animator.mode == "baseline" and animator.background_status().startswith("optimized engine compiling")
    assert animator.compiles("baseline") is False
    first = render_video(animator, assets / "d0.mp4", tmp_path / "first.mp4", max_frames=3, progress=False)
    # the compile takes minutes on a CPU: these frames came from baseline without waiting for it
    assert first.frames == 3 and len(_frames(tmp_path / "first.mp4")) == 3
    if animator.background_ready():
        pytest.skip("the optimized engine compiled faster than three baseline frames: nothing to tell apart")
    assert first.frames_by_mode == {"baseline": 3}
    animator.pool.pending().thread.join()  # the compile ends
    second = render_video(animator, assets / "d0.mp4", tmp_path / "second.mp4", max_frames=4, progress=False)
    assert second.frames_by_mode == {"optimized": 4} and len(_frames(tmp_path / "second.mp4")) == 4
    assert animator.mode == "optimized" and animator.background_status() is None
    assert animator.pool.background_error is None
    # the engine handed over is the compiled one, warmed on its thread: no second compile on its first frame
    engine = animator.pool.built()["optimized"]
    assert engine.compiled and engine.compile_seconds


def test_wait_for_optimized_and_baseline_build_nothing_in_the_background(assets, synthetic_models):
    photo = read_image(assets / "s6.jpg")
    waits = build_animator(_config(mode="optimized", compile=False, wait_for_optimized=True), photo,
                           models=synthetic_models)
    assert waits.mode == "optimized" and waits.background_status() is None and waits.pool.pending() is None
    baseline = build_animator(_config(mode="baseline"), photo, models=synthetic_models)
    assert baseline.mode == "baseline" and baseline.pool.pending() is None
    assert list(baseline.pool.built()) == ["baseline"]
