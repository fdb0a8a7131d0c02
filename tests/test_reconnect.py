"""Camera loss: a live stream that drops is reconnected with backoff for a bounded time, then the
run ends cleanly as "camera lost" with the recording kept; a truncated driving file is counted.

The stream is real: `streamserver.py` in a child process sends MPEG-TS over TCP, and killing it
is a dropped connection. Reconnect windows are short so that each test takes a few seconds.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from cli_run import LIVE_FAST, CliRun, decoded_frames
from livefakes import FakeAnimator, stream_config

from lp_live.media.video import VideoReader
from lp_live.stream import CaptureError, FrameSource, run_live
from lp_live.stream.capture import open_source
from lp_live.stream.reconnect import CameraLost, ReconnectingSource

HERE = Path(__file__).resolve().parent


class StreamServer:
    """`streamserver.py` on a free port; `start()` again after `kill()` is the stream coming back."""

    def __init__(self, video: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.video = video
        self.url = f"tcp://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "streamserver.py"), str(self.port), self.video],
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout.readline().strip() == b"listening"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def server(video):
    srv = StreamServer(video)
    srv.start()
    yield srv
    srv.kill()


def test_a_stream_that_comes_back_is_reconnected(server, caplog):
    caplog.set_level(logging.INFO, logger="lp_live")
    with open_source(server.url, timeout=3, reconnect_s=6) as source:
        assert isinstance(source, ReconnectingSource)
        for _ in range(10):
            assert source.read() is not None
        server.kill()
        restart = threading.Timer(1.0, server.start)
        restart.start()
        t0 = time.perf_counter()
        for _ in range(10):  # the frames buffered before the drop, then the stream again
            assert source.read() is not None
        restart.join()
        assert time.perf_counter() - t0 > 0.5  # it waited for the server
        stats = source.stats()
        assert stats["reconnects"] == 1
        assert stats["frames_lost"] >= 0.5 * 25 - 1  # at least the second the server was away, at 25 fps
    messages = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "lp_live.stream.reconnect"]
    assert [lvl for lvl, m in messages if "lost" in m and "reconnecting" in m] == ["WARNING"]
    assert any(lvl == "INFO" and "is back" in m for lvl, m in messages)


def test_a_live_run_ends_cleanly_when_the_stream_does_not_come_back(server, tmp_path):
    """Drop, come back (counted), drop for good: the run ends as 'camera lost' after the window,
    the stats are written, the recording decodes."""
    out, stats_path = tmp_path / "rec.mp4", tmp_path / "stats.json"
    frames: list[int] = []
    events: list[str] = []

    def on_frame(_out) -> None:
        frames.append(1)
        if len(frames) == 10 and not events:
            events.append("drop")
            server.kill()
            threading.Timer(0.5, server.start).start()
        elif len(frames) == 40 and events == ["drop"]:
            events.append("gone")
            server.kill()

    t0 = time.perf_counter()
    stats = run_live(FakeAnimator(), server.url, stream_config(reconnect_s=2.0, sink=["file"]), output=out,
                     stats_json=stats_path, open_timeout=3, keyboard=False, on_frame=on_frame)
    assert events == ["drop", "gone"]
    assert stats.stop_reason == "camera lost"
    assert stats.source["reconnects"] == 1 and stats.source["frames_lost"] > 0
    assert "camera reconnected 1x" in stats.summary()
    assert time.perf_counter() - t0 < 30
    data = json.loads(stats_path.read_text())
    assert data["stop_reason"] == "camera lost" and data["source"]["reconnects"] == 1
    with VideoReader(out) as reader:
        assert sum(1 for _ in reader.frames()) >= 30


@pytest.mark.slow
def test_the_cli_ends_a_lost_stream_cleanly_with_exit_3(assets, server, tmp_path):
    """A real run (synthetic weights): the stream drops for good; exit 3, the recording plays."""
    rec, stats_path = tmp_path / "rec.mp4", tmp_path / "stats.json"
    run = CliRun("--source", str(assets / "s6.jpg"), "--camera", server.url, "--sink", "null", "--output", str(rec),
                 "--stats-json", str(stats_path), "--reconnect-s", "1", *LIVE_FAST)
    run.wait_for("running: first animated frame")
    time.sleep(2)
    server.kill()
    rc = run.finish()
    err = run.stderr
    assert rc == 3, f"exit {rc}:\n{err}"
    assert "Traceback" not in err and "terminate called" not in err, err
    assert "WARNING: " + server.url + " lost" in err and "stopped: camera lost" in run.stdout
    assert json.loads(stats_path.read_text())["stop_reason"] == "camera lost"
    assert decoded_frames(rec) >= 1


class _Flaky(FrameSource):
    """A camera that gives `frames` frames, then fails; records how it was closed."""

    description, fps = "camera 9", 10.0

    def __init__(self, frames: int) -> None:
        self.left, self.closed = frames, False

    def read(self):
        self.left -= 1
        if self.left < 0:
            raise CaptureError("camera 9 stopped giving frames")
        return np.zeros((4, 4, 3), np.uint8), None

    def close(self) -> None:
        self.closed = True


def test_backoff_doubles_to_its_cap_and_the_window_bounds_it(monkeypatch):
    monkeypatch.setattr("lp_live.stream.reconnect.BACKOFF_FIRST_S", 0.1)
    monkeypatch.setattr("lp_live.stream.reconnect.BACKOFF_MAX_S", 0.4)
    attempts: list[float] = []

    def reopen(timeout: float) -> FrameSource:
        attempts.append(time.perf_counter())
        if len(attempts) < 4:
            raise CaptureError("camera 9 cannot be opened")
        return _Flaky(3)

    first = _Flaky(2)
    source = ReconnectingSource(reopen, first, window_s=1.5)
    got = [source.read() for _ in range(5)]  # 2 frames, the loss, 3 frames from the reopened camera
    assert all(g is not None for g in got) and first.closed
    assert np.diff(attempts) == pytest.approx([0.2, 0.4, 0.4], abs=0.1)  # 0.1, doubled, capped at 0.4
    assert source.stats()["reconnects"] == 1

    def never(timeout: float) -> FrameSource:
        attempts.append(time.perf_counter())
        raise CaptureError("camera 9 cannot be opened")

    attempts.clear()
    source._reopen = never
    t0 = time.perf_counter()
    with pytest.raises(CameraLost, match="not back within 2 s"):  # the reopened camera fails for good
        source.read()
    assert 1.4 < time.perf_counter() - t0 < 2.5
    assert len(attempts) == 4  # at 0.1, 0.3, 0.7, 1.1 s; the next would be after the window


def test_interrupt_stops_a_reconnect_at_once():
    source = ReconnectingSource(lambda t: (_ for _ in ()).throw(CaptureError("gone")), _Flaky(0), window_s=60)
    threading.Timer(0.3, source.interrupt).start()
    t0 = time.perf_counter()
    with pytest.raises(CameraLost, match="stopped while reconnecting"):
        source.read()
    assert time.perf_counter() - t0 < 2.0


def test_no_window_ends_at_the_first_loss():
    source = ReconnectingSource(lambda t: pytest.fail("reopened"), _Flaky(1), window_s=0)
    assert source.read() is not None
    with pytest.raises(CameraLost, match="camera 9 lost"):
        source.read()


def test_a_file_is_not_wrapped_and_its_end_is_the_end(video):
    with open_source(video, reconnect_s=30) as source:
        assert not isinstance(source, ReconnectingSource)


def _truncated(video: str, tmp_path: Path) -> tuple[Path, Path]:
    """d0.mp4 remuxed to Matroska, and that file cut in half (its header still says 78 frames' worth)."""
    full = tmp_path / "full.mkv"
    with av.open(video) as src, av.open(str(full), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                dst.mux(packet)
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    return full, cut


def test_a_truncated_driving_file_is_reported_once_and_counted(video, tmp_path, caplog):
    full, cut = _truncated(video, tmp_path)
    with VideoReader(full) as reader:
        assert sum(1 for _ in reader.frames()) == 78 and reader.frames_missing == 0
    caplog.set_level(logging.WARNING, logger="lp_live")
    with VideoReader(cut, loop=True) as reader:
        decoded = [reader.read() for _ in range(100)]  # through the cut twice
        assert 20 < reader.frames_missing < 60
        times = [t for _, t in decoded]
        assert all(np.diff(times) > 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "frames missing" in warnings[0] and "of 78" in warnings[0]
    with open_source(str(cut)) as source:
        while source.read() is not None:
            pass
        assert source.stats()["frames_missing"] == reader.frames_missing


def test_an_offline_render_of_a_truncated_file_counts_the_missing_frames(video, tmp_path):
    from lp_live.stream.render import render_video

    _, cut = _truncated(video, tmp_path)
    summary = render_video(FakeAnimator({"baseline": 0.0, "optimized": 0.0}), cut, tmp_path / "out.mp4",
                           progress=False)
    assert summary.frames + summary.frames_missing == 78 and summary.frames_missing > 20
