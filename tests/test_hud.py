"""The HUD: drawn where it should be, every figure from its measurement, `h` hides it, NVML read lazily."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
from livefakes import FakeAnimator, RecordingSink, stream_config

from lp_live.stream import Controls, HudInfo, draw_hud, hud_lines, run_live
from lp_live.stream import hud as hud_module
from lp_live.stream import outputs as outputs_module
from lp_live.stream.hud import GpuMonitor


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
    no_help = draw_hud(image, hud_lines(_info()), help_line=None)
    assert np.all(no_help[-40:] == 128) and np.array_equal(no_help[:200], out[:200])


def test_every_hud_figure_comes_from_its_measurement():
    base = hud_lines(_info())
    assert hud_module.HELP_LINE not in base  # the help line is drawn apart, at the bottom
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
    real = outputs_module.hud_lines
    monkeypatch.setattr(outputs_module, "hud_lines", lambda info: infos.append(info) or real(info))
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
    assert 1.3 < late[-1].speed_ratio < 4.5  # 50 ms / 20 ms (sleeps overshoot on a loaded machine)
    assert 10 < late[-1].inference_fps < 60  # 1000 / 20 ms
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
