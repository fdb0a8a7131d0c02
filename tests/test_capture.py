"""Driving sources: camera, file and stream errors in one line, looping, the PyAV source."""

from __future__ import annotations

import os
import socket
import threading
import time

import numpy as np
import pytest
from livefakes import FakeAnimator, stream_config

from lp_live.core.errors import UserError
from lp_live.stream import CaptureError, open_source, run_live


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


def test_looped_file_keeps_increasing_times(video):
    source = open_source(video, loop=True)
    times = [source.read()[1] for _ in range(100)]
    source.close()
    assert np.all(np.diff(times) > 0) and times[-1] > 78 / 25
