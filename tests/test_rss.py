"""RSS over a run: samples at most once per interval, and what the process holds shows in them."""

from __future__ import annotations

import mmap
import time

import numpy as np
import pytest
from livefakes import FakeAnimator, StillSource, stream_config

from lp_live.stream import run_live
from lp_live.stream.rss import RssSeries, rss_mb

pytestmark = pytest.mark.skipif(rss_mb() is None, reason="needs Linux /proc/self/statm")


def test_rss_follows_memory_held():
    # fresh pages from the kernel: a malloc could reuse memory the process already holds
    # (after earlier tests freed some), and then RSS would not move
    with mmap.mmap(-1, 64 * 2**20) as block:
        before = rss_mb()
        block.write(b"\x01" * len(block))  # 64 MiB, touched
        assert rss_mb() - before > 50


def test_samples_at_most_once_per_interval():
    series = RssSeries(interval_s=0.2)
    t_end = time.perf_counter() + 0.5
    while time.perf_counter() < t_end:
        series.sample()
    series.sample(force=True)
    data = series.to_dict()
    times = [t for t, _ in data["samples"]]
    assert 3 <= len(times) <= 5  # at 0, 0.2, 0.4 s, and the forced one
    assert all(np.diff(times[:-1]) >= 0.19)
    assert data["peak_mb"] >= data["last_mb"] > 0


def test_a_live_run_records_rss_in_its_stats(video, tmp_path, monkeypatch):
    monkeypatch.setattr("lp_live.stream.rss.RSS_INTERVAL_S", 0.1)
    stats = run_live(FakeAnimator(), StillSource(video, frames=30), stream_config(), keyboard=False)
    samples = stats.to_dict()["memory"]["samples"]
    assert len(samples) >= 5  # 30 frames at 25 fps: about 1.2 s
    assert all(mb > 10 for _, mb in samples) and samples[-1][0] <= stats.duration_s + 0.01


def test_samples_come_on_their_own_timer_from_the_start(video, monkeypatch):
    """Memory is sampled before the first frame and every interval however slow the frames are
    (a newcomer saw samples 20 s apart with 8 s frames, and none before the first frame)."""
    monkeypatch.setattr("lp_live.stream.rss.RSS_INTERVAL_S", 0.1)

    def build():
        time.sleep(0.5)  # the models load: no frame yet
        return FakeAnimator({"baseline": 0.6, "optimized": 0.6})

    from lp_live.stream import AnimatorFactory

    stats = run_live(AnimatorFactory(build), StillSource(video, frames=3), stream_config(in_flight=1),
                     keyboard=False, max_frames=2)
    times = [t for t, _ in stats.to_dict()["memory"]["samples"]]
    assert stats.first_frame_s > 0.5
    assert sum(t < stats.first_frame_s for t in times) >= 3  # before the first frame
    gaps = np.diff(times[:-1])  # the last one is the final, forced sample
    assert gaps.max() < 0.35  # every ~0.1 s, not once per 0.6 s frame
