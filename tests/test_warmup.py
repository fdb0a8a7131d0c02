"""The first seconds of a live run: a video camera is not consumed while the engine builds,
every sink that someone watches shows "starting…" from the first second (a recording does
not), the HUD answers at low rates and at once on `b`, and `d` shows the driving camera."""

from __future__ import annotations

import threading
import time

import numpy as np
import pyvirtualcam
from livefakes import FakeAnimator, FakeCamera, RecordingSink, StillSource, stream_config

from lp_live.core.config import StreamConfig
from lp_live.stream import AnimatorFactory, Controls, FileSink, VirtualCameraSink, open_live, run_live
from lp_live.stream import metrics as metrics_module
from lp_live.stream.metrics import LiveMetrics
from lp_live.stream.starting import StartingFrame, starting_image

BUILD_S = 1.5  # the fake engine's build: long enough for a few starting frames


def slow_factory(animator: FakeAnimator, still: np.ndarray | None = None) -> AnimatorFactory:
    def build():
        time.sleep(BUILD_S)
        return animator

    return AnimatorFactory(build, still=still)


def test_video_camera_waits_for_the_engine_and_sinks_show_starting_frames(video, tmp_path, monkeypatch):
    FakeCamera.instances = []
    monkeypatch.setattr(pyvirtualcam, "Camera", FakeCamera)
    still = np.full((300, 200, 3), 200, np.uint8)
    watched = RecordingSink("watched", starting=True)
    cam = VirtualCameraSink(fps=25)
    rec = FileSink(tmp_path / "rec.mp4", fps=25)
    seqs = []
    stats = run_live(slow_factory(FakeAnimator(), still), video, stream_config(), sinks=[watched, cam, rec],
                     max_frames=6, keyboard=False, on_frame=lambda out: seqs.append(out.seq))
    # the file was not played while the engine built: the first frames animated are its first ones
    assert seqs == [0, 1, 2, 3, 4, 5]
    assert stats.frames["captured"] <= 8 and stats.frames["skipped"] == 0
    assert stats.first_frame_s >= BUILD_S
    # "starting…" frames first (the still, darkened, with the text), then only animated frames
    starting = stats.sinks["watched"].starting
    assert starting >= 2
    assert all(img.shape == (300, 200, 3) for img in watched.images[:starting])
    assert all(img.shape == (256, 256, 3) for img in watched.images[starting:])
    assert len(watched.images) == starting + 6
    # the virtual camera got them too (so a call shows something), sized like the photo
    (camera,) = FakeCamera.instances
    assert stats.sinks["virtualcam"].starting == starting and len(camera.frames) == starting + 6
    assert (camera.width, camera.height) == (200, 300)
    # the recording starts with the first animated frame
    assert stats.sinks["file"].starting == 0 and stats.sinks["file"].shown == 6
    assert stats.frames["lost"] == 0 and "skipped (engine busy)" in stats.summary()


class LiveStill(StillSource):
    """A camera (not a file): it gives frames at its own rate whether they are taken or not."""

    is_file = False

    def read(self):
        time.sleep(0.04)
        return super().read()


def test_live_camera_keeps_being_read_during_warm_up(video):
    watched = RecordingSink("watched", starting=True)
    seqs = []
    stats = run_live(slow_factory(FakeAnimator()), LiveStill(video, frames=200), stream_config(), sinks=[watched],
                     max_frames=3, keyboard=False, on_frame=lambda out: seqs.append(out.seq))
    assert seqs[0] >= 20  # the camera ran on while the engine built; the newest frame was taken
    assert stats.frames["skipped"] >= 20 and stats.frames["lost"] == 0
    assert stats.sinks["watched"].starting >= 2
    assert watched.images[0].shape == (512, 512, 3)  # no still given: a dark square with the text


def test_starting_image_says_what_happens():
    plain = starting_image(None, "loading the models 3 s")
    other = starting_image(None, "compiling the optimized engine 12 s")
    assert plain.shape == (512, 512, 3) and plain.max() == 255 and not np.array_equal(plain, other)
    photo = np.full((1280, 720, 3), 250, np.uint8)
    shown = starting_image(photo, "starting 3 s")
    assert shown.shape == photo.shape and shown[:600].max() == 100  # darkened; text in the lower part
    assert isinstance(StartingFrame(shown).image, np.ndarray)


def test_hud_fps_has_a_number_at_a_tenth_of_a_frame_per_second(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(metrics_module.time, "perf_counter", lambda: clock[0])
    metrics = LiveMetrics(["null"], "null", ("optimized",))
    for _ in range(3):
        metrics.record_shown("null", clock[0] - 0.5)
        clock[0] += 10.0  # one frame every 10 s, as a CPU shows at start
    live = metrics.live()
    assert abs(live["output_fps"] - 0.1) < 1e-9 and live["latency_p50_ms"] == 500.0


def test_mode_label_switches_when_b_is_pressed(video):
    class SlowSwitch(FakeAnimator):
        def set_mode(self, mode):
            time.sleep(0.4)  # building the other engine
            super().set_mode(mode)

    controls = Controls()
    labels = []

    def on_frame(out):
        labels.append(session.outputs.mode_label(out))
        if len(labels) == 2:
            controls.press("b")
            labels.append(session.outputs.mode_label(out))  # at once, before any baseline frame
            threading.Timer(0.2, lambda: labels.append(session.outputs.mode_label(out))).start()

    session = open_live(SlowSwitch(), video, stream_config(in_flight=1), sinks=[RecordingSink()],
                        controls=controls, max_frames=6, keyboard=False, on_frame=on_frame)
    session.run()
    assert labels[:3] == ["optimized", "optimized", "switching to baseline…"]
    assert "switching to baseline…" in labels[3:5]  # still so while the engine is built
    assert labels[-1] == "baseline"


def test_d_shows_the_driving_camera_small_in_a_corner(video):
    controls = Controls()
    shown = RecordingSink("shown", hud=True)
    raw = {}

    def on_frame(out):
        raw[out.t_capture] = out.image
        if len(raw) == 2:
            controls.press("d")
            controls.press("h")  # the picture-in-picture does not need the HUD

    run_live(FakeAnimator(), video, stream_config(in_flight=1), sinks=[shown], controls=controls, max_frames=6,
             keyboard=False, on_frame=on_frame)
    last, original = shown.images[-1], raw[shown.times[-1]]
    corner = np.any(last != original, axis=2)
    assert corner[2:40, -60:-4].mean() > 0.5 and not corner[100:, :].any()  # top right only, no HUD


def test_stream_config_default_starts_without_calibration():
    assert StreamConfig().calibrate_frames == 0
