"""A real preview window under Xvfb (skipped without Xvfb), and the PyAV-before-OpenCV refusal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


WINDOW_CHILD = textwrap.dedent("""
    import cv2  # before av (PyAV's bundled libxcb hangs OpenCV's window otherwise)
    import sys
    sys.path.insert(0, {tests!r})
    from livefakes import FakeAnimator, stream_config
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


SIZE_CHILD = textwrap.dedent("""
    import cv2
    import numpy as np
    from lp_live.stream import WindowSink
    from lp_live.stream.platform import screen_size
    from lp_live.stream.hud import draw_hud

    assert screen_size() == (1024, 768), screen_size()
    window = WindowSink()
    tall = np.full((1280, 720, 3), 90, np.uint8)  # a portrait photo, taller than the screen
    shown = window.fit(tall)
    window.write(draw_hud(shown, ["optimized  out 0.1 fps"]), 0.0)
    for _ in range(20):
        window.poll_key(10)
    x, y, w, h = cv2.getWindowImageRect(window.title)
    assert shown.shape[:2] == (691, 389), shown.shape  # 90% of the screen's height, aspect kept
    assert h <= 768 and w <= 1024 and abs(w / h - 720 / 1280) < 0.02, (w, h)
    square = np.full((512, 512, 3), 90, np.uint8)  # paste-back off: the crop
    window.write(square, 0.0)
    for _ in range(20):
        window.poll_key(10)
    x, y, w2, h2 = cv2.getWindowImageRect(window.title)
    assert window.display_size == (512, 512) and abs(w2 - h2) <= 2, (w2, h2)
    window.close()
    print("SIZE-OK", (w, h), (w2, h2))
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
        # the window fits the screen, aspect kept, and takes a square crop's shape
        result = subprocess.run([sys.executable, "-c", SIZE_CHILD], env=env, cwd=REPO, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SIZE-OK" in result.stdout
        # PyAV loaded before OpenCV would hang the window for ever: it is refused instead
        result = subprocess.run([sys.executable, "-c", AV_FIRST_CHILD], env=env, cwd=REPO, capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "REFUSED" in result.stdout and "import cv2 before av" in result.stdout
    finally:
        server.terminate()
        server.wait(10)
