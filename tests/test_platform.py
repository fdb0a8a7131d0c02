"""What the machine offers the live path (`lp_live.stream.platform`), probed without a GUI call."""

from __future__ import annotations

import os

import pytest

from lp_live.stream import platform


def test_display_status_checks_that_the_x_server_answers(monkeypatch):
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setenv("DISPLAY", ":987")  # nothing listens there
    ok, why = platform.display_status()
    assert not ok and ":987" in why
    monkeypatch.delenv("DISPLAY")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    ok, why = platform.display_status()
    if platform.qt_platforms() == ["libqxcb.so"]:  # opencv-python's Qt: X11 only
        assert not ok and "XWayland" in why


def test_list_cameras_probes_quietly(capfd, monkeypatch):
    """Every index is really probed (as if each /dev/videoN existed): OpenCV warns about each one
    that does not open, and `list_cameras` silences those warnings."""
    import cv2

    missing = next((i for i in range(platform.MAX_CAMERA_INDEX) if not os.path.exists(f"/dev/video{i}")), None)
    if missing is None:
        pytest.skip("every probed camera index exists here")
    capfd.readouterr()
    cv2.VideoCapture(missing, platform.camera_backend()).release()  # unsilenced: what there is to silence
    if "WARN" not in capfd.readouterr().err:
        pytest.skip("this OpenCV build does not warn about a missing camera")
    probed = []
    monkeypatch.setattr(platform, "camera_device_exists", lambda index: probed.append(index) or True)
    found = platform.list_cameras()
    assert probed == list(range(platform.MAX_CAMERA_INDEX)) and missing not in found
    assert all(isinstance(i, int) for i in found)
    err = capfd.readouterr().err
    assert "WARN" not in err and "ERROR" not in err, err
