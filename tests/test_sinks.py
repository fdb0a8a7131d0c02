"""The sinks: file (decoded back), virtual camera (pyvirtualcam faked, and the real one where
no device exists), window refused without a display, `resolve_sinks`, the base contract."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

import cv2
import numpy as np
import pytest
from livefakes import FakeAnimator, FakeCamera, RecordingSink, stream_config

from lp_live.core.errors import UserError
from lp_live.stream import MODPROBE, FileSink, NullSink, SinkError, VirtualCameraSink, platform, resolve_sinks, run_live
from lp_live.stream import sinks as sinks_module


def test_file_sink_writes_h264_with_capture_timing(video, tmp_path):
    out = tmp_path / "live.mp4"
    stats = run_live(FakeAnimator(), video, stream_config(), output=out, max_frames=12, keyboard=False)
    assert "file" in stats.frames["shown"] and stats.frames["shown"]["file"] == 12
    pytest.importorskip("av")
    from lp_live.media.video import VideoReader

    with VideoReader(out) as reader:
        assert reader.stream.codec_context.name == "h264"
        times = [t for _, t in reader.frames()]
    assert len(times) == 12 and np.all(np.diff(times) > 0)
    # timestamps follow capture times: 12 frames of a 25 fps camera span about 11/25 s
    assert 0.2 < times[-1] - times[0] < 3.0


def test_file_sink_is_flushed_when_the_engine_fails(video, tmp_path):
    out = tmp_path / "partial.mkv"
    with pytest.raises(RuntimeError):
        run_live(FakeAnimator(fail_at=6), video, stream_config(), output=out, keyboard=False)
    pytest.importorskip("av")
    from lp_live.media.video import VideoReader

    with VideoReader(out) as reader:
        assert sum(1 for _ in reader.frames()) == 6


def test_file_sink_on_a_full_disk_fails_and_closes_without_crashing(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    full = tmp_path / "full.mp4"
    full.symlink_to("/dev/full")
    sink = FileSink(full, fps=25)
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    with pytest.raises(SinkError, match="No space left"):
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
    monkeypatch.setattr(platform, "v4l2loopback_devices", lambda: [("/dev/video10", "lp-live")])
    monkeypatch.setattr(platform.os, "access", lambda path, mode: True)
    sinks, summary = resolve_sinks(["auto", "null"], output=tmp_path / "o.mp4")
    assert [type(s) for s in sinks] == [VirtualCameraSink, NullSink, FileSink]
    assert summary.startswith("output: virtual camera (/dev/video10 (lp-live)) + null + file ")
    assert summary.endswith("no preview window: DISPLAY and WAYLAND_DISPLAY are unset (no desktop session)")


def test_unknown_sink_name():
    with pytest.raises(SinkError, match="unknown"):
        resolve_sinks(["screen"])


def test_virtualcam_that_fails_to_open_falls_back_to_the_other_sinks(video, caplog):
    """The real pyvirtualcam, on a machine without v4l2loopback: the sink fails on its first
    frame with the modprobe hint and the run goes on with the null sink."""
    if platform.v4l2loopback_devices() or not sys.platform.startswith("linux"):
        pytest.skip("a virtual camera exists here")
    vc, null = VirtualCameraSink(fps=25), RecordingSink("null")
    with caplog.at_level(logging.WARNING, logger="lp_live.stream"):
        stats = run_live(FakeAnimator(), video, stream_config(), sinks=[vc, null], max_frames=4, keyboard=False)
    assert len(null.images) == 4 and stats.stop_reason == "frame limit"
    assert MODPROBE in stats.sinks["virtualcam"].error
    assert any(MODPROBE in r.getMessage() for r in caplog.records)


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


def test_fit_frame_letterboxes():
    image = np.full((50, 100, 3), 200, np.uint8)
    out = sinks_module.fit_frame(image, 100, 100)
    assert out.shape == (100, 100, 3)
    assert out[:20].max() == 0 and out[-20:].max() == 0 and out[50, 50, 0] == 200
    assert sinks_module.fit_frame(image, 100, 50) is image


def test_close_is_idempotent_and_a_closed_sink_refuses_frames():
    class CountingSink(sinks_module.Sink):
        name = "counting"

        def __init__(self) -> None:
            self.written, self.released = 0, 0

        def _write(self, image, t_capture):
            self.written += 1

        def _close(self):
            self.released += 1

    frame = np.zeros((4, 4, 3), np.uint8)
    with CountingSink() as sink:
        sink.write(frame, 0.0)
    assert sink.closed and sink.written == 1 and sink.released == 1
    sink.close()
    assert sink.released == 1  # the second close does nothing
    with pytest.raises(SinkError, match="counting is closed"):
        sink.write(frame, 0.0)
    assert sink.written == 1


def test_file_sink_closed_twice_flushes_once(tmp_path):
    pytest.importorskip("av")
    from lp_live.media.video import VideoReader

    sink = FileSink(tmp_path / "o.mp4", fps=25)
    for i in range(3):
        sink.write(np.full((64, 64, 3), 40 * i, np.uint8), i / 25)
    sink.close()
    sink.close()
    with pytest.raises(SinkError, match="is closed"):
        sink.write(np.zeros((64, 64, 3), np.uint8), 1.0)
    with VideoReader(tmp_path / "o.mp4") as reader:
        assert len(list(reader.frames())) == 3
