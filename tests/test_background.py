"""The first frame does not wait for compilation: the baseline engine animates while the
optimized one is built in the background, then the live loop switches between two frames; the
HUD says so meanwhile; a frame held by a warm-up is no latency figure; a video file far slower
than the engine says so once (fakes and sleeps: the timing; `test_background_real.py`: the networks)."""

from __future__ import annotations

import time

from livefakes import FakeAnimator, RecordingSink, StillSource, stream_config

from lp_live.stream import AnimatorFactory, run_live
from lp_live.stream import outputs as outputs_module
from lp_live.stream.hud import HudInfo


def test_baseline_animates_until_the_background_engine_is_ready_then_the_loop_switches(video, monkeypatch):
    infos: list[HudInfo] = []
    real = outputs_module.hud_lines
    monkeypatch.setattr(outputs_module, "hud_lines", lambda info, **kw: infos.append(info) or real(info, **kw))
    animator = FakeAnimator({"baseline": 0.05, "optimized": 0.02}, background_after=6)
    modes: list[str] = []
    stats = run_live(animator, StillSource(video, frames=200), stream_config(in_flight=2, calibrate_frames=2),
                     sinks=[RecordingSink("shown", hud=True)], max_frames=40, keyboard=False,
                     on_frame=lambda out: modes.append(out.mode))
    assert modes[:6] == ["baseline"] * 6  # the first frames do not wait for the build
    assert animator.adopted_at == 6  # switched between two frames, once it was ready
    # then both engines are timed for the speed ratio (calibration: baseline, then optimized), as before
    assert modes[6:11] == ["baseline"] * 2 + ["optimized"] * 3 and set(modes[11:]) == {"optimized"}, modes
    assert animator.mode == "optimized"  # it ends on the engine asked for
    # the HUD said so while it compiled, and no more after
    assert infos[0].background == "optimized engine compiling... 0 s" and infos[-1].background is None
    # then the speed ratio is measured as before (calibration after the switch)
    assert stats.speed_ratio is not None and stats.frames["calibration"] >= 4
    assert 0 < stats.switched_s < stats.duration_s and stats.to_dict()["switched_s"] == stats.switched_s


def test_a_frame_held_by_the_warm_up_is_not_counted_as_latency(video):
    class SlowFirst(FakeAnimator):
        def process(self, frame_rgb, timestamp=None):
            if not self.calls:
                time.sleep(1.0)  # the first frame compiles the engine
            return super().process(frame_rgb, timestamp)

    infos: list[HudInfo] = []
    stats = run_live(AnimatorFactory(lambda: SlowFirst(compiled=("optimized",))), video, stream_config(in_flight=1),
                     sinks=[RecordingSink("shown", hud=True)], max_frames=6, keyboard=False,
                     on_frame=lambda out: None)
    # a video file waits for the engine: its first frame was held for the whole warm-up
    assert stats.frames["shown"]["shown"] == 6
    assert stats.latency_ms["max"] < 500  # the 1 s warm-up is not in it
    del infos


def test_the_hud_latency_is_empty_right_after_a_warm_up_frame(video, monkeypatch):
    infos: list[HudInfo] = []
    real = outputs_module.hud_lines
    monkeypatch.setattr(outputs_module, "hud_lines", lambda info, **kw: infos.append(info) or real(info, **kw))

    class SlowFirst(FakeAnimator):
        def process(self, frame_rgb, timestamp=None):
            if not self.calls:
                time.sleep(0.8)
            return super().process(frame_rgb, timestamp)

    run_live(SlowFirst(), video, stream_config(in_flight=1), sinks=[RecordingSink("shown", hud=True)],
             max_frames=5, keyboard=False)
    assert infos[0].latency_p50_ms is None  # not 800 ms: the first frame waited for the warm-up
    assert infos[-1].latency_p50_ms is not None and infos[-1].latency_p50_ms < 500


def test_a_video_file_far_slower_than_the_engine_says_so_once(video, caplog):
    infos: list[HudInfo] = []
    animator = FakeAnimator({"baseline": 0.5, "optimized": 0.5})  # 25 fps file: 12.5 file frames per frame
    with caplog.at_level("WARNING", logger="lp_live"):
        from lp_live.stream import open_live

        session = open_live(animator, video, stream_config(in_flight=1), sinks=[RecordingSink("shown", hud=True)],
                            max_frames=4, keyboard=False)
        real = session.outputs.hud_info
        session.outputs.hud_info = lambda sink, out: infos.append(real(sink, out)) or infos[-1]
        session.run()
    lines = [r.getMessage() for r in caplog.records if "--loop" in r.getMessage()]
    assert len(lines) == 1 and " s a frame, the video file gives 25 frames a second" in lines[0]
    assert any(w.startswith("the engine takes") for w in infos[-1].warnings)


def test_a_looped_file_or_a_fast_engine_says_nothing(video, caplog):
    with caplog.at_level("WARNING", logger="lp_live"):
        run_live(FakeAnimator({"baseline": 0.01, "optimized": 0.01}), video, stream_config(), keyboard=False,
                 sinks=[RecordingSink()], max_frames=4)
        run_live(FakeAnimator({"baseline": 0.5, "optimized": 0.5}), video, stream_config(in_flight=1),
                 keyboard=False, sinks=[RecordingSink()], max_frames=3, loop=True)
    assert not [r for r in caplog.records if "--loop" in r.getMessage()]
