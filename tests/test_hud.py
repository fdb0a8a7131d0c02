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
    monkeypatch.setattr(outputs_module, "hud_lines", lambda info, **kw: infos.append(info) or real(info, **kw))
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


def _text_width(text: str, width: int) -> int:
    scale = hud_module._scale(width)
    return hud_module.cv2.getTextSize(text, hud_module.FONT, scale, 1)[0][0]


def test_the_default_hud_is_compact_and_fits_a_512_window():
    info = _info(background="optimized engine compiling... 12 s", warnings=("Triton kernels off",))
    compact = hud_lines(info, detail=False)
    assert len(compact) == 2 and compact[1].startswith("optimized engine compiling... 12 s")
    assert "(+1: i)" in compact[1]  # the warning is one key away
    assert all(_text_width(line, 512) + 12 <= 512 for line in compact)
    assert hud_lines(_info(), detail=False) == ["optimized  24.5 fps  latency 41 ms"]
    assert "NO FACE" in hud_lines(_info(face_found=False), detail=False)[0]
    detail = hud_lines(info)
    assert len(detail) > 5 and "optimized engine compiling... 12 s" in detail
    assert "WARNING: Triton kernels off" in detail
    # the key legend is wrapped to the width, never cut ("m mirror 1-")
    lines = hud_module.wrap(hud_module.HELP_LINE, lambda t: _text_width(t, 512) + 12 <= 512)
    assert len(lines) > 1 and "  ".join(lines) == hud_module.HELP_LINE
    assert all(_text_width(line, 512) + 12 <= 512 for line in lines)
    image = np.full((512, 512, 3), 128, np.uint8)
    out = draw_hud(image, compact, hud_module.COMPACT_HELP_LINE, face=(0.28, 0.4, 0.72, 0.84))
    rows = np.nonzero(np.any(out != image, axis=2).any(axis=1))[0]
    assert rows[rows < 256].max() < 60  # two lines at the top, above the head
    assert not np.any(out[100:440] != image[100:440])  # the head and the face are clear


def test_the_hud_goes_beside_the_face_where_there_is_room():
    image = np.full((400, 900, 3), 128, np.uint8)
    lines = hud_lines(_info(), detail=True)
    left_face = draw_hud(image, lines, None, face=(0.0, 0.1, 0.35, 0.9))
    changed = np.any(left_face != image, axis=2)
    assert not changed[:, :300].any() and changed[:, -10:].any()  # top-right, clear of the face on the left
    right_face = draw_hud(image, lines, None, face=(0.65, 0.1, 1.0, 0.9))
    assert np.any(right_face != image, axis=2)[:10, :10].all()  # top-left


def test_i_toggles_the_details(video):
    controls = Controls()
    seen = []
    real = outputs_module.hud_lines

    def on_frame(out):
        if len(seen) == 3:
            controls.press("i")

    import pytest

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(outputs_module, "hud_lines", lambda info, **kw: seen.append(kw["detail"]) or real(info, **kw))
        run_live(FakeAnimator(), video, stream_config(in_flight=1), sinks=[RecordingSink("shown", hud=True)],
                 controls=controls, max_frames=8, keyboard=False, on_frame=on_frame)
    assert seen[0] is False and seen[-1] is True


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
