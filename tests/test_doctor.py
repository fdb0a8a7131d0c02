"""`lp-live doctor`: every check reports (name, ok, detail, hint) and never raises."""

from __future__ import annotations

import io
import re
import sys
from types import SimpleNamespace

import pytest
import torch

from lp_live import doctor
from lp_live.doctor import Check, print_report, run_checks
from lp_live.models import default_cache_dir
from lp_live.models.checkpoint import CHECKPOINT_FILES
from lp_live.models.integrity import sha256_file, write_digests
from lp_live.stream import MODPROBE, platform

NAMES = ["package data", "torch", "cuda", "nvml", "cpu threading", "compile cache", "weights", "face models",
         "face detector", "video encoder",
         "virtual camera", "display"]


def test_run_checks_covers_everything_and_never_raises():
    checks = run_checks("synthetic", cameras=False)
    assert [c.name for c in checks] == NAMES
    for c in checks:
        assert isinstance(c.ok, bool) and isinstance(c.detail, str) and c.detail
        assert "\n" not in c.detail and "\n" not in c.hint
        assert c.ok or c.hint, f"{c.name} fails without saying what to do"
    by = {c.name: c for c in checks}
    assert by["torch"].ok and torch.__version__ in by["torch"].detail
    assert by["weights"].ok and "synthetic" in by["weights"].detail
    assert by["video encoder"].ok and "libx264" in by["video encoder"].detail
    assert [c.name for c in run_checks("synthetic", cameras=True)][-1] == "cameras"


def test_a_check_that_crashes_is_reported_as_failed(monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "check_encoder", broken)
    by = {c.name: c for c in run_checks("synthetic", cameras=False)}
    assert not by["video encoder"].ok and "RuntimeError: boom" in by["video encoder"].detail


def test_missing_weights_say_how_to_get_them(tmp_path, monkeypatch):
    c = doctor.check_weights(tmp_path / "nowhere")
    assert not c.ok and not c.required and "does not exist" in c.detail  # --weights synthetic runs without
    assert "download-weights" in c.hint and "--weights synthetic" in c.hint
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    c = doctor.check_weights(None)
    assert not c.ok and str(default_cache_dir()) in c.detail and c.hint.startswith("lp-live download-weights ")


def test_weights_in_the_official_layout_are_found(linked_weights, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    (cache / "lp-live").mkdir(parents=True)
    (cache / "lp-live" / "weights").symlink_to(linked_weights.parent)  # .../weights/liveportrait/...
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    c = doctor.check_weights(None)
    assert c.ok and str(default_cache_dir() / "liveportrait") in c.detail and "official layout" in c.detail
    assert "no digest manifest, so shapes and values only" in c.detail
    write_digests(linked_weights, {rel: sha256_file(linked_weights / rel) for rel in CHECKPOINT_FILES})
    c = doctor.check_weights(linked_weights.parent)
    assert c.ok and "checked: SHA-256 as downloaded" in c.detail
    face = doctor.check_face_models(None)
    assert not face.ok and "insightface" in face.detail and "download-weights" in face.hint


def test_damaged_weights_are_reported(linked_weights, damage):
    """A file with 4 KB of random bytes inside: a failed check naming the file, the hint re-downloads."""
    damage(linked_weights / CHECKPOINT_FILES[1])
    c = doctor.check_weights(linked_weights)
    assert not c.ok and "\n" not in c.detail
    assert re.fullmatch(r".*motion_extractor\.pth: damaged \(\S+ has \d+ NaN or infinite values\)", c.detail)
    assert c.hint.startswith(f"lp-live download-weights {linked_weights} (fetches the damaged file again)")
    report = io.StringIO()
    print_report([c], report)
    lines = report.getvalue().splitlines()
    assert lines[0].startswith("--    weights  ") and lines[0].endswith("NaN or infinite values)")
    assert "-> lp-live download-weights" in lines[1] and "--weights synthetic" in lines[2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="v4l2loopback is Linux only")
def test_virtual_camera_devices_from_sysfs(tmp_path, monkeypatch):
    for name, label in [("video10", "lp-live"), ("video2", "Dummy video device"), ("videoX", "?")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "name").write_text(label + "\n")
    monkeypatch.setattr(platform, "V4L2_VIRTUAL", tmp_path)
    assert platform.v4l2loopback_devices() == [("/dev/video2", "Dummy video device"), ("/dev/video10", "lp-live")]
    monkeypatch.setattr(platform.os, "access", lambda path, mode: path == "/dev/video10")
    c = doctor.check_virtual_camera()
    assert c.ok and c.detail == "/dev/video10 (lp-live)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="v4l2loopback is Linux only")
def test_missing_virtual_camera_gives_the_modprobe_command(tmp_path, monkeypatch):
    monkeypatch.setattr(platform, "V4L2_VIRTUAL", tmp_path / "none")
    c = doctor.check_virtual_camera()
    assert not c.ok and MODPROBE in c.hint and "v4l2loopback" in c.detail
    (tmp_path / "video3").mkdir()
    monkeypatch.setattr(platform, "V4L2_VIRTUAL", tmp_path)
    monkeypatch.setattr(platform.os, "access", lambda path, mode: False)
    c = doctor.check_virtual_camera()
    assert not c.ok and c.detail == "/dev/video3 not writable" and "usermod -aG video" in c.hint


def test_display_check_without_a_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    c = doctor.check_display()
    if sys.platform.startswith("linux"):
        assert not c.ok and "DISPLAY" in c.detail and "terminal" in c.hint


def test_nvml_check(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    c = doctor.check_nvml()
    assert not c.ok and "nvidia-ml-py" in c.hint
    fake = SimpleNamespace(nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 2,
                           nvmlSystemGetDriverVersion=lambda: b"580.65")
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    c = doctor.check_nvml()
    assert c.ok and c.detail == "driver 580.65, 2 GPU(s)"


def test_cuda_check_matches_torch():
    c = doctor.check_cuda()
    assert c.ok == torch.cuda.is_available()
    if not c.ok:
        assert "pytorch.org" in c.hint or "nvidia-smi" in c.hint


def test_cameras_check(monkeypatch):
    monkeypatch.setattr(platform, "list_cameras", lambda: [0, 2])
    c = doctor.check_cameras()
    assert c.ok and c.detail.endswith("0, 2")
    monkeypatch.setattr(platform, "list_cameras", lambda: [])
    c = doctor.check_cameras()
    assert not c.ok and "--camera video.mp4" in c.hint


def test_print_report():
    checks = [Check("torch", True, "2.x", required=True), Check("cuda", False, "no GPU", "install CUDA torch"),
              Check("weights", False, "missing", "lp-live download-weights", required=True)]
    out = io.StringIO()
    assert print_report(checks, out) is False
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("ok    torch") and lines[1].startswith("--    cuda")
    assert lines[2].strip() == "-> install CUDA torch"
    assert lines[3].startswith("FAIL  weights") and lines[4].strip() == "-> lp-live download-weights"
    assert "cannot run" in lines[-1]
    out = io.StringIO()
    assert print_report(checks[:2], out) is True and out.getvalue().splitlines()[-1] == "lp-live can run"


def test_doctor_stays_offline(monkeypatch):
    """A quick, offline report: no socket to the outside is opened."""
    import socket

    opened = []
    real_connect = socket.socket.connect

    def connect(self, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "localhost", "::1"):
            opened.append(address)
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    run_checks("synthetic", cameras=False)
    assert opened == []


def test_compile_cache_place_is_shown(tmp_path, monkeypatch):
    from lp_live.doctor import check_compile_cache

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    empty = check_compile_cache()
    assert empty.ok and str(tmp_path / "inductor") in empty.detail and "first optimized run compiles" in empty.detail
    (tmp_path / "inductor").mkdir()
    (tmp_path / "inductor" / "k.so").write_bytes(b"x" * 3_000_000)
    assert "3 MB" in check_compile_cache().detail
