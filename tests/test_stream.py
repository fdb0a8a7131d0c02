"""The live path: real threads on the shared driving video, no camera, no display.

Two kinds of animator drive it: the real `Animator` (synthetic weights, 128 px input, both
engines, compile off), run once per module because a frame costs seconds on this CPU, and a
fake one with a fixed cost per engine, for the timing properties (drops, bounded latency,
calibration) that need many frames.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import cv2
import numpy as np
import pytest
import torch

from lp_live.config import Config, StreamConfig
from lp_live.engine import AnimateOptions
from lp_live.errors import UserError
from lp_live.stream import (
    MODPROBE,
    CaptureError,
    Controls,
    FileSink,
    HudInfo,
    LatestQueue,
    NullSink,
    QueueClosed,
    SinkError,
    TerminalKeys,
    VirtualCameraSink,
    draw_hud,
    hud_lines,
    list_cameras,
    open_source,
    resolve_sinks,
    run_live,
)
from lp_live.stream import hud as hud_module
from lp_live.stream import live as live_module
from lp_live.stream import sinks as sinks_module
from lp_live.stream.capture import FrameSource
from lp_live.stream.hud import GpuMonitor

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
class FakeAnimator:
    """The Animator interface with a fixed sleep per engine; the output is the driving frame
    subsampled to 256x256, so tests can tell which driving frame (and mirror) produced it."""

    modes = ("baseline", "optimized")

    def __init__(self, cost: dict[str, float] | None = None, mode: str = "optimized", *,
                 no_face_every: int = 0, fail_at: int | None = None) -> None:
        self.cost = cost or {"baseline": 0.03, "optimized": 0.01}
        self.mode = mode
        self.paste_back = True
        self.options = AnimateOptions()
        self.weights_kind = "synthetic"
        self.device = torch.device("cpu")
        self.frames_without_face = 0
        self.no_face_every = no_face_every
        self.fail_at = fail_at
        self.calls: list[str] = []
        self.reanchored_before: list[int] = []  # call index of the frame after each re-anchor

    def set_mode(self, mode: str) -> None:
        assert mode in self.modes
        self.mode = mode

    def reanchor(self) -> None:
        self.reanchored_before.append(len(self.calls))

    def process(self, frame_rgb: np.ndarray, timestamp: float | None = None) -> SimpleNamespace:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise RuntimeError("engine exploded")
        time.sleep(self.cost[self.mode])
        self.calls.append(self.mode)
        face = not (self.no_face_every and len(self.calls) % self.no_face_every == 0)
        self.frames_without_face += not face
        h, w = frame_rgb.shape[:2]  # 512x512: 2x2 block means, which commute with a flip
        image = frame_rgb.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
        return SimpleNamespace(image=image, face_found=face, mode=self.mode)


class RecordingSink(NullSink):
    """A null sink that records what it got, optionally slow or failing after some frames."""

    def __init__(self, name: str = "rec", *, delay: float = 0.0, fail_after: int | None = None,
                 hud: bool = False) -> None:
        super().__init__()
        self.name, self.delay, self.fail_after, self.hud = name, delay, fail_after, hud
        self.images: list[np.ndarray] = []
        self.times: list[float] = []

    def write(self, image: np.ndarray, t_capture: float) -> None:
        if self.fail_after is not None and len(self.images) >= self.fail_after:
            raise OSError(28, "No space left on device")
        if self.delay:
            time.sleep(self.delay)
        self.images.append(image)
        self.times.append(t_capture)
        super().write(image, t_capture)


def stream_config(**kw) -> StreamConfig:
    kw.setdefault("sink", ["null"])
    kw.setdefault("calibrate_frames", 0)
    return StreamConfig(**kw)


@pytest.fixture(scope="module")
def video(assets) -> str:
    return str(assets / "d0.mp4")


@pytest.fixture
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


@pytest.fixture
def no_virtualcam(monkeypatch):
    monkeypatch.setattr(sinks_module, "v4l2loopback_devices", lambda: [])


# ---------------------------------------------------------------------------------------------
# queue
# ---------------------------------------------------------------------------------------------
def test_latest_queue_keeps_newest_counts_drops_and_closes():
    q: LatestQueue[int] = LatestQueue(1, "x")
    for i in range(5):
        q.put(i)
    assert len(q) == 1 and q.dropped == 4 and q.put_count == 5
    assert q.get(timeout=0) == 4
    t0 = time.perf_counter()
    with pytest.raises(Exception) as e:
        q.get(timeout=0.05)
    assert type(e.value).__name__ == "Empty" and time.perf_counter() - t0 >= 0.04
    q.put(7)
    q.close()
    q.close()  # idempotent
    assert q.get(timeout=0) == 7  # drained after close
    with pytest.raises(QueueClosed):
        q.get(timeout=1)
    with pytest.raises(QueueClosed):
        q.put(8)


def test_latest_queue_wakes_a_waiting_consumer_on_close():
    q: LatestQueue[int] = LatestQueue(2)
    got = []

    def consume():
        try:
            q.get(timeout=5)
        except QueueClosed:
            got.append(time.perf_counter())

    t = threading.Thread(target=consume)
    t.start()
    time.sleep(0.05)
    t_close = time.perf_counter()
    q.close()
    t.join(2)
    assert got and got[0] - t_close < 0.5


# ---------------------------------------------------------------------------------------------
# the real Animator, one run for the module
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_run(assets, synthetic_models, tmp_path_factory):
    """One live run of the real Animator on d0.mp4 (paced, looped), null sink from the config,
    4 frames: optimized, `b` -> baseline, `b` -> optimized, `r` -> optimized re-anchored."""
    from lp_live.pipeline import build_animator, read_image

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
    assert data["frames"]["dropped"]["capture"] >= 0 and data["frames"]["dropped"]["sink:null"] == 0
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
    assert data["sinks"]["slow"]["latency_ms"]["max"] < 1000
    latency = np.array(stats.latency_series_ms["slow"])
    third = len(latency) // 3
    assert third >= 3 and np.median(latency[-third:]) < np.median(latency[:third]) + 150
    assert np.all(np.diff(slow.times) > 0)  # frames reach a sink in capture order


def test_unpaced_file_is_read_as_fast_as_it_decodes_and_stale_frames_dropped(video):
    animator = FakeAnimator({"baseline": 0.1, "optimized": 0.1})
    stats = run_live(animator, video, stream_config(pace=False), keyboard=False)
    f = stats.frames
    assert stats.source["paced"] is False and stats.stop_reason == "end of input"
    assert f["captured"] == 78 and f["processed"] + f["dropped"]["capture"] == 78
    assert f["processed"] < 39 < f["dropped"]["capture"]  # decoding outran the 100 ms engine


def test_frame_limit_stops_capture_and_sinks_cleanly(video):
    before = threading.active_count()
    sink = RecordingSink()
    stats = run_live(FakeAnimator(), video, stream_config(), sinks=[sink], max_frames=5, keyboard=False)
    assert stats.stop_reason == "frame limit" and stats.frames["processed"] == 5 and len(sink.images) == 5
    assert sink.closed
    assert threading.active_count() == before  # every thread joined


def test_calibration_times_both_engines_and_reports_the_ratio(video):
    animator = FakeAnimator({"baseline": 0.09, "optimized": 0.03})
    seen = []
    stats = run_live(animator, video, stream_config(calibrate_frames=3), max_frames=3, keyboard=False,
                     on_frame=lambda out: seen.append((out.mode, out.calibration)))
    # one untimed warm-up frame per engine, then 3 timed ones; baseline first, ending in the chosen mode
    assert seen[:8] == [("baseline", True)] * 4 + [("optimized", True)] * 4
    assert seen[8:] == [("optimized", False)] * 3
    assert stats.frames["calibration"] == 8 and stats.frames["processed"] == 11
    assert stats.inference_ms["baseline"]["count"] == 3 and stats.inference_ms["optimized"]["count"] == 6
    assert stats.inference_ms["baseline"]["warmup"] is not None
    assert 2.0 < stats.speed_ratio < 4.5  # 90 ms / 30 ms, measured
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
    assert animator.paste_back is False and animator.options.stitching is False
    assert controls.mirror is True and controls.hud is False
    assert animator.reanchored_before == [4]  # applied right before the 5th frame
    assert animator.calls == ["optimized"] * 8


class StillSource(FrameSource):
    """A 25 fps camera that shows one picture (the first frame of d0.mp4)."""

    description, fps, is_file = "still", 25.0, True

    def __init__(self, video: str, frames: int = 50) -> None:
        with open_source(video) as source:
            self.image = source.read()[0]
        self.left = frames
        self.closed = False

    def read(self):
        self.left -= 1
        return None if self.left < 0 else (self.image, (50 - self.left) / 25)

    def close(self):
        self.closed = True


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

    stats = run_live(factory, video, stream_config(), max_frames=2, keyboard=False)
    assert built_in == ["lp-live-inference"] and stats.frames["processed"] == 2


INTERRUPT_CHILD = textwrap.dedent("""
    import cv2
    import sys
    sys.path.insert(0, {tests!r})
    from test_stream import FakeAnimator, stream_config
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
    av = pytest.importorskip("av")
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) >= 5


# ---------------------------------------------------------------------------------------------
# sinks
# ---------------------------------------------------------------------------------------------
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


def test_file_sink_writes_h264_with_capture_timing(video, tmp_path):
    out = tmp_path / "live.mp4"
    stats = run_live(FakeAnimator(), video, stream_config(), output=out, max_frames=12, keyboard=False)
    assert "file" in stats.frames["shown"] and stats.frames["shown"]["file"] == 12
    av = pytest.importorskip("av")
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        times = [f.time for f in container.decode(stream)]
    assert len(times) == 12 and np.all(np.diff(times) > 0)
    # timestamps follow capture times: 12 frames of a 25 fps camera span about 11/25 s
    assert 0.2 < times[-1] - times[0] < 2.0


def test_file_sink_is_flushed_when_the_engine_fails(video, tmp_path):
    out = tmp_path / "partial.mkv"
    with pytest.raises(RuntimeError):
        run_live(FakeAnimator(fail_at=6), video, stream_config(), output=out, keyboard=False)
    av = pytest.importorskip("av")
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 6


def test_file_sink_on_a_full_disk_fails_and_closes_without_crashing(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    full = tmp_path / "full.mp4"
    full.symlink_to("/dev/full")
    sink = FileSink(full, fps=25)
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with pytest.raises(SinkError, match="No space left"):  # one line, saying what failed
        for i in range(200):
            sink.write(np.roll(noise, i, axis=1), time.perf_counter())
    with pytest.raises(SinkError, match="earlier write failed"):
        sink.write(noise, time.perf_counter())
    with contextlib.suppress(OSError):  # the trailer cannot be written either
        sink.close()  # must not mux again: PyAV would crash the process
    sink.close()


def test_full_disk_midway_is_reported_and_the_run_goes_on(video, tmp_path, caplog):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    full = tmp_path / "full.mp4"
    full.symlink_to("/dev/full")
    null = RecordingSink("null")
    with caplog.at_level(logging.WARNING, logger="lp_live.stream"):
        stats = run_live(FakeAnimator(), video, stream_config(), sinks=[FileSink(full, fps=25), null],
                         max_frames=30, keyboard=False)
    assert "No space left" in stats.sinks["file"].error and len(null.images) == 30
    assert sum("file" in r.getMessage() and "No space left" in r.getMessage() for r in caplog.records) == 1


def test_file_sink_needs_an_existing_folder(tmp_path):
    with pytest.raises(SinkError, match="does not exist"):
        FileSink(tmp_path / "nope" / "x.mp4")
    with pytest.raises(SinkError, match="--output"):
        resolve_sinks(["file"])


def test_auto_without_virtual_camera_or_display_says_why(no_display, no_virtualcam):
    sinks, summary = resolve_sinks(["auto"])
    assert [type(s) for s in sinks] == [NullSink]
    assert MODPROBE in summary and "DISPLAY" in summary and "\n" not in summary
    sinks, summary = resolve_sinks(["auto"], output="x.mp4")
    assert [type(s) for s in sinks] == [FileSink] and summary.startswith("output: file x.mp4;")


def test_explicit_virtualcam_without_device_raises_with_the_modprobe_hint(no_virtualcam):
    with pytest.raises(SinkError) as e:
        resolve_sinks(["virtualcam"])
    assert MODPROBE in str(e.value) and isinstance(e.value, UserError)


def test_explicit_window_without_display_raises(no_display):
    with pytest.raises(SinkError, match="no display"):
        resolve_sinks(["window"])


def test_auto_with_a_virtual_camera_names_it(no_display, monkeypatch, tmp_path):
    monkeypatch.setattr(sinks_module, "v4l2loopback_devices", lambda: [("/dev/video10", "lp-live")])
    monkeypatch.setattr(sinks_module.os, "access", lambda path, mode: True)
    sinks, summary = resolve_sinks(["auto", "null"], output=tmp_path / "o.mp4")
    assert [type(s) for s in sinks] == [VirtualCameraSink, NullSink, FileSink]
    assert summary.startswith("output: virtual camera (/dev/video10 (lp-live)) + null + file ")
    assert summary.endswith("no preview window: DISPLAY and WAYLAND_DISPLAY are unset (no desktop session)")


def test_window_keys_map_to_controls():
    from lp_live.stream.controls import ESC, key_from_code

    assert key_from_code(-1) is None and key_from_code(27) == ESC
    assert key_from_code(ord("b")) == "b" and key_from_code(0x100000 | ord("q")) == "q"  # Qt modifier bits
    assert key_from_code(0) is None


def test_unknown_sink_name():
    with pytest.raises(SinkError, match="unknown"):
        resolve_sinks(["screen"])


def test_virtualcam_that_fails_to_open_falls_back_to_the_other_sinks(video, caplog):
    """The real pyvirtualcam, on a machine without v4l2loopback: the sink fails on its first
    frame with the modprobe hint and the run goes on with the null sink."""
    if sinks_module.v4l2loopback_devices() or not sys.platform.startswith("linux"):
        pytest.skip("a virtual camera exists here")
    vc, null = VirtualCameraSink(fps=25), RecordingSink("null")
    with caplog.at_level(logging.WARNING, logger="lp_live.stream"):
        stats = run_live(FakeAnimator(), video, stream_config(), sinks=[vc, null], max_frames=4, keyboard=False)
    assert len(null.images) == 4 and stats.stop_reason == "frame limit"
    assert MODPROBE in stats.sinks["virtualcam"].error
    assert any(MODPROBE in r.getMessage() for r in caplog.records)


class FakeCamera:
    """pyvirtualcam.Camera's interface; `fail_after` frames then the device disappears."""

    instances: ClassVar[list[FakeCamera]] = []
    fail_after: int | None = None

    def __init__(self, width, height, fps, *, fmt=None, device=None, **kw):
        self.width, self.height, self.fps, self.fmt, self.device = width, height, fps, fmt, device or "/dev/video9"
        self.backend = "fake"
        self.frames: list[np.ndarray] = []
        self.closed = 0
        FakeCamera.instances.append(self)

    def send(self, frame):
        if self.fail_after is not None and len(self.frames) >= self.fail_after:
            raise RuntimeError("error writing frame: No such device")
        assert frame.shape == (self.height, self.width, 3) and frame.dtype == np.uint8
        self.frames.append(frame)

    def close(self):
        self.closed += 1


def test_virtualcam_sink_sends_rgb_at_a_fixed_size_and_survives_the_device_going_away(video, monkeypatch, caplog):
    import pyvirtualcam

    FakeCamera.instances = []
    monkeypatch.setattr(FakeCamera, "fail_after", 3)
    monkeypatch.setattr(pyvirtualcam, "Camera", FakeCamera)
    vc, null = VirtualCameraSink(fps=30, size=96), RecordingSink("null")
    with caplog.at_level(logging.WARNING, logger="lp_live.stream"):
        stats = run_live(FakeAnimator(), video, stream_config(), sinks=[vc, null], max_frames=6, keyboard=False)
    (cam,) = FakeCamera.instances
    assert (cam.width, cam.height, cam.fps) == (96, 96, 30) and cam.fmt == pyvirtualcam.PixelFormat.RGB
    assert len(cam.frames) == 3 and cam.closed == 1
    assert len(null.images) == 6
    assert "No such device" in stats.sinks["virtualcam"].error
    assert sum("virtual camera" in r.getMessage() for r in caplog.records) == 1


def test_no_gui_call_without_a_display(video, monkeypatch, no_display, no_virtualcam):
    calls = []

    def forbidden(name):
        def f(*a, **k):
            calls.append(name)
            raise AssertionError(f"cv2.{name} called without a display")
        return f

    for name in ("namedWindow", "imshow", "waitKey", "destroyWindow", "destroyAllWindows", "getWindowProperty",
                 "resizeWindow", "startWindowThread"):
        monkeypatch.setattr(cv2, name, forbidden(name))
    stats = run_live(FakeAnimator(), video, stream_config(sink=["auto"]), max_frames=3, keyboard=False)
    assert calls == []
    assert stats.output.startswith("output: null") and MODPROBE in stats.output


def test_display_status_checks_that_the_x_server_answers(monkeypatch):
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":987")  # nothing listens there
    ok, why = sinks_module.display_status()
    assert not ok and ":987" in why
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    ok, why = sinks_module.display_status()
    if sinks_module._qt_platforms() == ["libqxcb.so"]:  # opencv-python's Qt: X11 only
        assert not ok and "XWayland" in why


def test_fit_frame_letterboxes():
    image = np.full((50, 100, 3), 200, np.uint8)
    out = sinks_module.fit_frame(image, 100, 100)
    assert out.shape == (100, 100, 3)
    assert out[:20].max() == 0 and out[-20:].max() == 0 and out[50, 50, 0] == 200
    assert sinks_module.fit_frame(image, 100, 50) is image


# ---------------------------------------------------------------------------------------------
# HUD
# ---------------------------------------------------------------------------------------------
def _info(**kw) -> HudInfo:
    base = dict(mode="optimized", output_fps=24.5, inference_fps=61.0, latency_p50_ms=41.0, latency_p95_ms=58.0,
                dropped=12, weights="real", device="cuda:0", gpu=hud_module.GpuStatus(2.5, 80.0, 63),
                speed_ratio=3.4, modes=("baseline", "optimized"), paste_back=True, stitching=True, mirror=False,
                face_found=True)
    base.update(kw)
    return HudInfo(**base)


def test_hud_is_drawn_top_left_and_help_at_the_bottom():
    image = np.full((512, 512, 3), 128, np.uint8)
    out = draw_hud(image, hud_lines(_info()))
    assert np.all(image == 128)  # the frame itself is not modified
    changed = np.any(out != image, axis=2)
    _, cols = np.nonzero(changed)
    assert changed[:10, :10].all()  # the panel starts in the corner
    top = changed[:256]
    top_rows = np.nonzero(top.any(axis=1))[0]
    assert top_rows.max() < 200  # 5 lines of text at the top
    assert changed[-5:, :10].all()  # the help line sits on the bottom edge
    assert not changed[220:440].any()  # the middle of the frame (the face) is untouched
    assert cols.min() == 0 and cols.max() > 300  # text runs across, not a dot


def test_every_hud_figure_comes_from_its_measurement():
    base = hud_lines(_info())
    assert any("HUD" in line for line in [hud_module.HELP_LINE])
    for field, value in [("output_fps", 9.75), ("inference_fps", 12.5), ("latency_p50_ms", 77.0),
                         ("latency_p95_ms", 99.0), ("dropped", 3), ("speed_ratio", 1.7),
                         ("gpu", hud_module.GpuStatus(7.0, 24.0, 5)), ("weights", "synthetic"),
                         ("mode", "baseline")]:
        changed = hud_lines(_info(**{field: value}))
        assert changed != base, field
    unmeasured = "\n".join(hud_lines(_info(output_fps=None, inference_fps=None, latency_p50_ms=None,
                                           latency_p95_ms=None, speed_ratio=None, gpu=None)))
    assert unmeasured.count("--") == 5 and "cuda:0" in unmeasured


def test_hud_figures_during_a_run_are_measured(video, monkeypatch):
    infos: list[HudInfo] = []
    real = live_module.hud_lines
    monkeypatch.setattr(live_module, "hud_lines", lambda info: infos.append(info) or real(info))
    animator = FakeAnimator({"baseline": 0.05, "optimized": 0.02})
    shown = RecordingSink("shown", hud=True)
    raw = {}
    stats = run_live(animator, video, stream_config(calibrate_frames=2), sinks=[shown], max_frames=20,
                     keyboard=False, on_frame=lambda out: raw.setdefault(out.t_capture, out.image))
    assert len(infos) == len(shown.images) == stats.frames["shown"]["shown"]
    assert infos[0].output_fps is None  # nothing is measured before the first frame is shown
    late = infos[-5:]
    for name in ("output_fps", "inference_fps", "latency_p50_ms", "latency_p95_ms", "speed_ratio"):
        values = [getattr(i, name) for i in infos]
        assert all(getattr(i, name) is not None for i in late), name
        assert len({v for v in values if v is not None}) > 1, f"{name} is constant"
    assert 1.5 < late[-1].speed_ratio < 4.5  # 50 ms / 20 ms
    assert 20 < late[-1].inference_fps < 60  # 1000 / 20 ms
    assert all(i.gpu is None and i.device == "cpu" and i.weights == "synthetic" for i in infos)
    assert any(i.mode.endswith("(calibrating)") for i in infos[:3])
    # the sink got the frames with the HUD drawn on them; the animator's frames are untouched
    for image, t in zip(shown.images, shown.times):
        original = raw[t]
        assert np.any(image[:20, :40] != original[:20, :40])
        np.testing.assert_array_equal(image[120:200, 60:200], original[120:200, 60:200])
    # `h` hides it


def test_h_hides_the_hud(video):
    controls = Controls()
    shown = RecordingSink("shown", hud=True)
    raw = {}

    def on_frame(out):
        raw[out.t_capture] = out.image
        if len(raw) == 3:
            controls.press("h")

    run_live(FakeAnimator(), video, stream_config(), sinks=[shown], controls=controls, max_frames=8,
             keyboard=False, on_frame=on_frame)
    hidden = [np.array_equal(image, raw[t]) for image, t in zip(shown.images, shown.times)]
    assert hidden[0] is False and hidden[-1] is True


def test_gpu_monitor_reads_nvml_lazily(monkeypatch):
    calls = []

    class FakeNvml:
        @staticmethod
        def nvmlInit():
            calls.append("init")

        @staticmethod
        def nvmlDeviceGetHandleByIndex(i):
            calls.append(("handle", i))
            return i

        @staticmethod
        def nvmlDeviceGetMemoryInfo(h):
            return SimpleNamespace(used=3e9, total=24e9)

        @staticmethod
        def nvmlDeviceGetUtilizationRates(h):
            return SimpleNamespace(gpu=42)

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert GpuMonitor("cpu").read() is None and calls == []
    monitor = GpuMonitor("cuda:1")
    assert calls == []  # nothing until the first read
    status = monitor.read()
    assert status == hud_module.GpuStatus(3.0, 24.0, 42) and calls == ["init", ("handle", 3)]
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: no GPU line, no error
    assert GpuMonitor("cuda:0").read() is None


# ---------------------------------------------------------------------------------------------
# capture errors
# ---------------------------------------------------------------------------------------------
def test_missing_camera_index_is_a_clear_error(capfd):
    if os.path.exists("/dev/video9"):
        pytest.skip("/dev/video9 exists here")
    threads = threading.active_count()
    with pytest.raises(CaptureError) as e:
        run_live(FakeAnimator(), "9", stream_config(), keyboard=False)
    msg = str(e.value)
    assert "camera 9" in msg and "--list-cameras" in msg and "\n" not in msg
    assert isinstance(e.value, UserError)
    assert threading.active_count() == threads  # failed before any thread started
    assert "WARN" not in capfd.readouterr().err  # OpenCV's own warnings are silenced


def test_stream_url_that_does_not_answer_is_a_clear_error():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)  # accepts connections, never sends a byte
    port = server.getsockname()[1]
    try:
        t0 = time.perf_counter()
        with pytest.raises(CaptureError) as e:
            open_source(f"tcp://127.0.0.1:{port}", timeout=1.0)
        assert time.perf_counter() - t0 < 10
        assert "no answer within 1 s" in str(e.value) and "\n" not in str(e.value)
    finally:
        server.close()
    with pytest.raises(CaptureError, match="cannot be opened"):
        open_source(f"rtsp://127.0.0.1:{port}/live", timeout=1.0)  # now refused


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(CaptureError, match="no such file"):
        open_source(str(tmp_path / "nope.mp4"))
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(CaptureError, match="cannot be opened"):
        open_source(str(tmp_path / "text.mp4"))


def test_list_cameras_is_quiet(capfd):
    found = list_cameras()
    assert isinstance(found, list) and all(isinstance(i, int) for i in found)
    err = capfd.readouterr().err
    assert "WARN" not in err and "ERROR" not in err


def test_looped_file_keeps_increasing_times(video):
    source = open_source(video, loop=True)
    times = [source.read()[1] for _ in range(100)]
    source.close()
    assert np.all(np.diff(times) > 0) and times[-1] > 78 / 25


# ---------------------------------------------------------------------------------------------
# terminal keys
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
def test_terminal_keys_cbreak_on_a_tty_and_restored():
    import termios

    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    controls = Controls()
    animator = FakeAnimator()
    try:
        with os.fdopen(slave, "rb", buffering=0, closefd=False) as stream, TerminalKeys(controls, stream) as keys:
            assert keys.active
            during = termios.tcgetattr(slave)
            assert not during[3] & termios.ICANON and not during[3] & termios.ECHO
            assert during[3] & termios.ISIG  # Ctrl-C still interrupts
            os.write(master, b"b")
            os.write(master, b"\x1b[A")  # an arrow key: not Esc
            deadline = time.perf_counter() + 3
            while not controls._pending and time.perf_counter() < deadline:
                time.sleep(0.01)
            time.sleep(0.1)
            assert not controls.quit.is_set()
            controls.apply(animator)
            assert animator.mode == "baseline"
            os.write(master, b"q")
            assert controls.quit.wait(3)
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_terminal_keys_do_nothing_without_a_tty(tmp_path):
    with open(tmp_path / "f", "w+") as f, TerminalKeys(Controls(), f) as keys:
        assert not keys.active


# ---------------------------------------------------------------------------------------------
# a real window under Xvfb
# ---------------------------------------------------------------------------------------------
WINDOW_CHILD = textwrap.dedent("""
    import cv2  # before av (PyAV's bundled libxcb hangs OpenCV's window otherwise)
    import sys
    sys.path.insert(0, {tests!r})
    from test_stream import FakeAnimator, stream_config
    from lp_live.stream import WindowSink, NullSink, run_live, display_status, resolve_sinks

    ok, why = display_status()
    assert ok, why
    sinks, summary = resolve_sinks(["auto"])
    assert any(isinstance(s, WindowSink) for s in sinks), summary
    assert summary.startswith("output: preview window"), summary
    window = WindowSink()
    shown = []
    stats = run_live(FakeAnimator(), {video!r}, stream_config(), sinks=[window, NullSink()], max_frames=10,
                     keyboard=False, on_frame=lambda out: shown.append(out.seq))
    assert window.opened, "the window never opened"
    assert stats.primary_sink == "window", stats.primary_sink
    assert stats.frames["shown"]["window"] >= 1, stats.frames
    assert stats.stop_reason == "frame limit", stats.stop_reason
    print("WINDOW-OK", stats.frames["shown"]["window"])
""")


AV_FIRST_CHILD = textwrap.dedent("""
    import av
    import cv2
    from lp_live.stream import SinkError, WindowSink
    try:
        WindowSink()
    except SinkError as e:
        print("REFUSED", e)
""")


@pytest.mark.xvfb
def test_preview_window_opens_under_xvfb(video, tmp_path):
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    display = f":{100 + os.getpid() % 400}"
    server = subprocess.Popen([xvfb, display, "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        socket_path = f"/tmp/.X11-unix/X{display[1:]}"
        deadline = time.perf_counter() + 10
        while not os.path.exists(socket_path) and time.perf_counter() < deadline:
            time.sleep(0.05)
        env = {**os.environ, "DISPLAY": display, "QT_QPA_PLATFORM": "xcb"}
        env.pop("WAYLAND_DISPLAY", None)
        code = WINDOW_CHILD.format(tests=str(REPO / "tests"), video=video)
        result = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "WINDOW-OK" in result.stdout
        # PyAV loaded before OpenCV would hang the window for ever: it is refused instead
        result = subprocess.run([sys.executable, "-c", AV_FIRST_CHILD], env=env, cwd=REPO, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "REFUSED" in result.stdout and "import cv2 before av" in result.stdout
    finally:
        server.terminate()
        server.wait(10)
