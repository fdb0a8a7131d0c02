"""The live path: real threads on the shared driving video, no camera, no display.

Two kinds of animator drive it: the real `Animator` (synthetic weights, 128 px input, both
engines, compile off), run once per module because a frame costs seconds on this CPU, and a
fake one with a fixed cost per engine (`livefakes.py`), for the timing properties (drops,
bounded latency, calibration) that need many frames. Timing bounds leave room for a loaded
machine: what they tell apart (bounded vs growing latency, 3x vs 1x) differs by far more.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from livefakes import FakeAnimator, RecordingSink, StillSource, stream_config

from lp_live.core.config import Config
from lp_live.stream import AnimatorFactory, Controls, LiveSession, open_live, run_live

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# the real Animator, one run for the module
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(assets, synthetic_models, tmp_path_factory):
    """One live run of the real Animator on d0.mp4 (paced, looped), null sink from the config,
    4 frames: optimized, `b` -> baseline, `b` -> optimized, `r` -> optimized re-anchored."""
    from lp_live.session import build_animator, read_image

    config = Config()
    config.engine.weights = "synthetic"
    config.engine.input_size = 128
    config.engine.compile = False
    config.engine.mode = "optimized"
    config.animation.smoothing = False  # so that a re-anchored frame is exactly the neutral pose
    config.stream.sink = ["null"]
    config.stream.calibrate_frames = 0
    config.stream.in_flight = 1  # keys pressed in on_frame apply from the very next frame
    animator = build_animator(config, read_image(assets / "s6.jpg"), models=synthetic_models)
    animator.set_mode("baseline")  # create both engines now: the run measures switching, not set-up
    animator.set_mode("optimized")
    frames = []
    keys = {0: "b", 1: "b", 2: "r"}  # pressed after the frame of that index

    def on_frame(out):
        frames.append(out)
        if len(frames) - 1 in keys:
            controls.press(keys[len(frames) - 1])

    controls = Controls()
    stats_path = tmp_path_factory.mktemp("live") / "stats.json"
    t0 = time.perf_counter()
    stats = run_live(animator, str(assets / "d0.mp4"), config.stream, max_frames=4, stats_json=stats_path,
                     controls=controls, on_frame=on_frame, loop=True, keyboard=False)
    return SimpleNamespace(stats=stats, frames=frames, json=json.loads(stats_path.read_text()),
                           wall=time.perf_counter() - t0, animator=animator)


def test_real_engine_end_to_end_stats(real_run):
    s, data = real_run.stats, real_run.json
    assert s.stop_reason == "frame limit"
    assert data["frames"]["processed"] == 4 and data["frames"]["shown"] == {"null": 4}
    assert data["frames"]["captured"] >= 4
    # every frame captured was processed, dropped as stale, or still queued (one at most) at the end
    f = data["frames"]
    assert f["captured"] - f["processed"] - f["dropped"]["capture"] in (0, 1)
    assert f["dropped"]["sink:null"] == 0
    assert data["output"] == "output: null"
    assert data["fps"] > 0 and data["inference_fps"] > 0
    lat = data["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["max"] < real_run.wall * 1e3
    # latency is at least the inference time of the frame: the engine runs between capture and sink
    assert lat["max"] >= min(f.inference_ms for f in real_run.frames)
    assert data["engine"] == {"modes": ["baseline", "optimized"], "final_mode": "optimized", "weights": "synthetic",
                              "device": "cpu"}
    assert data["mode_switches"] == 2
    assert set(data["inference_ms"]) == {"baseline", "optimized"}
    assert data["frames_without_face"] == 0
    assert data["source"]["paced"] is True and data["source"]["fps"] == 25.0
    assert real_run.frames[0].image.shape == (724, 724, 3)  # paste-back into the (even-trimmed) photo
    line = s.summary()
    assert line.startswith("4 frames in ") and "latency p50" in line and line.endswith("stopped: frame limit")
    assert "\n" not in line


def test_real_engine_switch_takes_effect_on_next_frame_and_r_reanchors(real_run):
    frames = real_run.frames
    assert [f.mode for f in frames] == ["optimized", "baseline", "optimized", "optimized"]
    assert [f.seq for f in frames] == sorted(f.seq for f in frames)
    assert len({f.seq for f in frames}) == 4  # four different driving frames
    diff = [np.abs(f.image.astype(np.int16) - frames[0].image).mean() for f in frames]
    # frame 0 is the anchor (the neutral pose); frame 2 (same engine, later driving frame) moved;
    # frame 3 was re-anchored by `r`, so it is the neutral pose again
    assert diff[2] > 0.5
    assert diff[3] < 0.05 * diff[2]


# ---------------------------------------------------------------------------------------------
# timing properties with the fake animator
# ---------------------------------------------------------------------------------------------
def test_slow_sink_keeps_queues_bounded_drops_counted_latency_flat(video, tmp_path):
    animator = FakeAnimator({"baseline": 0.06, "optimized": 0.06})  # slower than the 25 fps camera
    slow = RecordingSink("slow", delay=0.15)
    fast = RecordingSink("fast")
    stats = run_live(animator, video, stream_config(), sinks=[slow, fast], stats_json=tmp_path / "s.json",
                     keyboard=False)
    data = json.loads((tmp_path / "s.json").read_text())
    f = data["frames"]
    assert stats.stop_reason == "end of input"
    assert f["captured"] == 78
    # every frame was processed or dropped at the capture queue; every processed frame was
    # shown or dropped at each sink queue: nothing waits anywhere
    assert f["processed"] + f["dropped"]["capture"] == f["captured"]
    assert f["dropped"]["capture"] > 0
    for name in ("slow", "fast"):
        assert f["shown"][name] + f["dropped"][f"sink:{name}"] == f["processed"]
    assert f["dropped"]["sink:slow"] > f["processed"] // 3
    assert f["shown"]["slow"] == len(slow.images) and slow.closed and fast.closed
    # latency at the slow sink is bounded by its own write time plus one frame in each queue,
    # and does not grow over the 3 s of the video
    assert data["sinks"]["slow"]["latency_ms"]["max"] < 2000  # unbounded queues: seconds, growing
    latency = np.array(stats.latency_series_ms["slow"])
    third = len(latency) // 3
    assert third >= 3 and np.median(latency[-third:]) < np.median(latency[:third]) + 400
    assert np.all(np.diff(slow.times) > 0)  # frames reach a sink in capture order


def test_unpaced_file_is_read_as_fast_as_it_decodes_and_stale_frames_dropped(video):
    animator = FakeAnimator({"baseline": 0.1, "optimized": 0.1})
    stats = run_live(animator, video, stream_config(pace=False), keyboard=False)
    f = stats.frames
    assert stats.source["paced"] is False and stats.stop_reason == "end of input"
    assert f["captured"] == 78 and f["processed"] + f["dropped"]["capture"] == 78
    assert f["processed"] < 39 < f["dropped"]["capture"]  # decoding outran the 100 ms engine


def test_frame_limit_stops_capture_and_sinks_cleanly(video):
    before = set(threading.enumerate())
    sink = RecordingSink()
    stats = run_live(FakeAnimator(), video, stream_config(), sinks=[sink], max_frames=5, keyboard=False)
    assert stats.stop_reason == "frame limit" and stats.frames["processed"] == 5 and len(sink.images) == 5
    assert sink.closed
    assert [t.name for t in set(threading.enumerate()) - before] == []  # every thread joined


def test_calibration_times_both_engines_after_the_first_animated_frame(video):
    animator = FakeAnimator({"baseline": 0.09, "optimized": 0.03})
    seen = []
    stats = run_live(animator, video, stream_config(calibrate_frames=3), max_frames=10, keyboard=False,
                     on_frame=lambda out: seen.append((out.mode, out.calibration)))
    # the chosen engine's first frame comes first (never a calibration frame before it); then one
    # untimed warm-up frame and 3 timed ones in baseline, 3 timed ones back in the chosen mode
    assert seen[0] == ("optimized", False)
    assert seen[1:8] == [("baseline", True)] * 4 + [("optimized", True)] * 3
    assert seen[8:] == [("optimized", False)] * 2  # --max-frames counts every frame shown
    assert stats.frames["calibration"] == 7 and stats.frames["processed"] == 10
    assert stats.inference_ms["baseline"]["count"] == 3 and stats.inference_ms["optimized"]["count"] == 5
    assert stats.inference_ms["baseline"]["warmup"] is not None
    assert 1.7 < stats.speed_ratio < 4.5  # 90 ms / 30 ms, measured (sleeps overshoot on a loaded machine)
    assert stats.mode_switches == 0 and animator.mode == "optimized"


def test_key_from_another_thread_applies_exactly_from_the_next_frame(video):
    """Presses race the inference thread; `apply` times tell which frame saw which press."""
    animator = FakeAnimator({"baseline": 0.02, "optimized": 0.02}, mode="baseline")
    controls = Controls()
    frames = []
    presses = []

    def presser():
        for key in "bbb":
            time.sleep(0.3)
            presses.append(controls.press(key))

    threading.Thread(target=presser, daemon=True).start()
    run_live(animator, video, stream_config(), controls=controls, max_frames=60, keyboard=False,
             on_frame=frames.append)
    assert len(presses) == 3 and controls.mode_switches == 3
    for f in frames:
        n = sum(t < f.t_controls for t in presses)  # presses applied before this frame
        assert f.mode == ("baseline", "optimized")[n % 2]
    assert {f.mode for f in frames} == {"baseline", "optimized"}


def test_toggles_paste_stitching_mirror_hud_and_reanchor(video):
    animator = FakeAnimator()
    controls = Controls()
    frames = []
    keys = {1: "p", 2: "s", 3: "m", 4: "r", 5: "h", 6: "x"}  # x: not a hotkey, ignored

    def on_frame(out):
        frames.append(out)
        if len(frames) in keys:
            controls.press(keys[len(frames)])

    run_live(animator, video, stream_config(), controls=controls, max_frames=8, keyboard=False, on_frame=on_frame)
    assert animator.paste_back is False and animator.stitching is False
    assert animator.mirror is True and controls.hud is False
    assert animator.reanchored_before == [4]  # applied right before the 5th frame
    assert animator.calls == ["optimized"] * 8


def test_mirror_flips_the_driving_frame(video):
    plain, mirrored = [], []
    run_live(FakeAnimator(), StillSource(video), stream_config(), max_frames=1, keyboard=False, on_frame=plain.append)
    source = StillSource(video)
    run_live(FakeAnimator(), source, stream_config(mirror=True), max_frames=1, keyboard=False,
             on_frame=mirrored.append)
    np.testing.assert_array_equal(mirrored[0].image, plain[0].image[:, ::-1])
    assert source.closed


def test_quit_key_stops_everything_and_closes_sinks(video):
    controls = Controls()
    sink = RecordingSink()
    stats = run_live(FakeAnimator(), video, stream_config(), controls=controls, sinks=[sink], keyboard=False,
                     on_frame=lambda out: out.seq >= 10 and controls.press("q"))
    assert stats.stop_reason == "quit key" and sink.closed
    assert stats.frames["captured"] < 78  # it did not run to the end of the video


def test_engine_error_shuts_down_cleanly_then_raises(video, tmp_path):
    sink = RecordingSink()
    with pytest.raises(RuntimeError, match="engine exploded"):
        run_live(FakeAnimator(fail_at=3), video, stream_config(), sinks=[sink], keyboard=False,
                 stats_json=tmp_path / "s.json")
    assert sink.closed and len(sink.images) == 3
    assert json.loads((tmp_path / "s.json").read_text())["stop_reason"] == "error: engine exploded"


def test_frames_without_a_face_are_counted(video):
    stats = run_live(FakeAnimator(no_face_every=2), video, stream_config(), max_frames=6, keyboard=False)
    assert stats.frames_without_face == 3


def test_animator_factory_is_built_in_the_inference_thread(video):
    built_in = []

    def factory():
        built_in.append(threading.current_thread().name)
        return FakeAnimator()

    stats = run_live(AnimatorFactory(factory), video, stream_config(), max_frames=2, keyboard=False)
    assert built_in == ["lp-live-inference"] and stats.frames["processed"] == 2


def test_open_live_builds_the_session_and_run_starts_it(video):
    threads = threading.active_count()
    sink = RecordingSink()
    session = open_live(FakeAnimator(), video, stream_config(), sinks=[sink], max_frames=3, keyboard=False)
    assert isinstance(session, LiveSession) and session.source.description == video
    assert threading.active_count() == threads and sink.images == [] and not sink.closed  # nothing started
    stats = session.run()
    assert stats.frames["processed"] == 3 and len(sink.images) == 3 and sink.closed
    assert threading.active_count() == threads


def test_a_session_is_built_from_an_opened_source_and_given_sinks(video):
    source = StillSource(video, frames=5)
    sink = RecordingSink()
    stats = LiveSession(FakeAnimator(), source, [sink], stream_config(), keyboard=False).run()
    assert stats.stop_reason == "end of input" and len(sink.images) == 5
    assert source.closed and sink.closed and stats.output == "output: rec"


INTERRUPT_CHILD = textwrap.dedent("""
    import faulthandler
    faulthandler.dump_traceback_later(120, exit=True)  # a hang fails with every thread's stack, not a timeout
    import cv2
    import sys
    sys.path.insert(0, {tests!r})
    from livefakes import FakeAnimator, stream_config
    from lp_live.stream import run_live

    def on_frame(out):
        if out.seq == 5:
            print("STARTED", flush=True)

    stats = run_live(FakeAnimator(), {video!r}, stream_config(), output={out!r}, stats_json={stats!r}, loop=True,
                     on_frame=on_frame)
    print("STOP", stats.stop_reason, flush=True)
""")


def test_ctrl_c_stops_cleanly_and_flushes_the_file(video, tmp_path):
    import signal

    out, stats = tmp_path / "run.mp4", tmp_path / "stats.json"
    code = INTERRUPT_CHILD.format(tests=str(REPO / "tests"), video=video, out=str(out), stats=str(stats))
    child = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "STARTED", child.stderr.read()
        time.sleep(0.5)
        child.send_signal(signal.SIGINT)
        stdout, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    assert "STOP interrupted" in stdout
    assert json.loads(stats.read_text())["stop_reason"] == "interrupted"
    pytest.importorskip("av")
    from lp_live.media.video import VideoReader

    with VideoReader(out) as reader:
        assert sum(1 for _ in reader.frames()) >= 5


def test_failing_sink_is_closed_and_reported_run_goes_on(video, caplog):
    bad, good = RecordingSink("bad", fail_after=2), RecordingSink("good")
    with caplog.at_level(logging.WARNING, logger="lp_live.stream"):
        stats = run_live(FakeAnimator(), video, stream_config(), sinks=[bad, good], max_frames=8, keyboard=False)
    assert bad.closed and len(bad.images) == 2
    assert len(good.images) == 8 and stats.stop_reason == "frame limit"
    assert "No space left on device" in stats.sinks["bad"].error
    lines = [r.getMessage() for r in caplog.records if "bad" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and "continuing with good" in lines[0]


def test_run_stops_cleanly_when_no_sink_is_left(video, caplog):
    only = RecordingSink("only", fail_after=1)
    with caplog.at_level(logging.WARNING, logger="lp_live.stream"):
        stats = run_live(FakeAnimator(), video, stream_config(), sinks=[only], keyboard=False)
    assert stats.stop_reason == "no sink left" and only.closed
    assert stats.frames["captured"] < 78
    assert any("no sink left" in r.getMessage() for r in caplog.records)
