"""The heads-up display: measured figures drawn on a copy of the output frame with OpenCV.

`hud_lines` turns a `HudInfo` (every figure measured in this run, None until measured) into
text: by default a compact line (engine, output rate, latency) and, when there is one, a second
line with what the user should know now (the optimized engine compiling, a warning); the
details (every figure, every key) are on `i`. `draw_hud` draws it on a dark panel in a top
corner clear of the face, and the key legend at the bottom (wrapped to the frame's width).
GPU memory and utilisation come from NVML (`pynvml`, imported on first use) when present.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from .hotkeys import COMPACT_KEYS, legend

log = logging.getLogger(__name__)

HELP_LINE = legend()
COMPACT_HELP_LINE = legend(COMPACT_KEYS)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class GpuStatus:
    memory_used_gb: float
    memory_total_gb: float
    utilization_pct: int


@dataclass
class HudInfo:
    """What the HUD shows; None means "not measured yet" and is drawn as "--"."""

    mode: str
    output_fps: float | None
    inference_fps: float | None
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    dropped: int  # animated frames a sink was too slow to show: real losses
    weights: str
    device: str
    gpu: GpuStatus | None
    speed_ratio: float | None
    modes: tuple[str, ...]
    paste_back: bool
    stitching: bool
    mirror: bool
    face_found: bool
    warnings: tuple[str, ...] = ()  # options that cannot be honoured here (also logged once at start)
    skipped: int = 0  # camera frames not animated because the engine was busy (normal when it is slow)
    photo: str = ""  # "photo 2/3" with several source photos
    background: str | None = None  # "optimized engine compiling... 12 s" while it is built beside this one


def _num(value: float | None, fmt: str) -> str:
    return "--" if value is None else format(value, fmt)


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def hud_lines(info: HudInfo, *, detail: bool = True) -> list[str]:
    """The HUD text, one string per line (the key legend is separate: HELP_LINE, COMPACT_HELP_LINE).

    Args:
        info: the figures.
        detail: every figure (the `i` key); False: one line, and a second for the engine being
            compiled or the first warning.
    """
    if not detail:
        line = (f"{info.mode}  {_num(info.output_fps, '.1f')} fps  latency {_num(info.latency_p50_ms, '.0f')} ms"
                + ("" if info.face_found else "  NO FACE"))
        more = ([info.background] if info.background else []) + [f"WARNING: {w}" for w in info.warnings]
        if len(more) > 1:
            more[0] += f"  (+{len(more) - 1}: i)"
        return [line, *more[:1]]
    lines = [
        f"{info.mode}  out {_num(info.output_fps, '.1f')} fps  infer {_num(info.inference_fps, '.1f')} fps",
        f"latency p50 {_num(info.latency_p50_ms, '.0f')} ms  p95 {_num(info.latency_p95_ms, '.0f')} ms"
        f"  lost {info.dropped}",
        f"camera frames skipped (engine busy) {info.skipped}" + (f"  {info.photo}" if info.photo else ""),
    ]
    if info.gpu is not None:
        g = info.gpu
        lines.append(f"GPU {g.memory_used_gb:.1f}/{g.memory_total_gb:.1f} GB  {g.utilization_pct}%"
                     f"  weights {info.weights}")
    else:
        lines.append(f"{info.device}  weights {info.weights}")
    if "baseline" in info.modes and "optimized" in info.modes:
        lines.append(f"optimized {_num(info.speed_ratio, '.2f')}x baseline (this run)")
    else:
        lines.append(f"only {'/'.join(info.modes)} loaded: no speed ratio")
    state = f"paste-back {_on(info.paste_back)}  stitching {_on(info.stitching)}  mirror {_on(info.mirror)}"
    lines.append(state if info.face_found else state + "  NO FACE")
    if info.background:
        lines.append(info.background)
    lines.extend(f"WARNING: {w}" for w in info.warnings)
    return lines


def _scale(width: int) -> float:
    return float(np.clip(width / 1100.0, 0.4, 1.0))


PIP_FRACTION = 0.25  # the picture-in-picture's width, as a fraction of the frame's


def draw_pip(image: np.ndarray, driving: np.ndarray, fraction: float = PIP_FRACTION) -> np.ndarray:
    """A copy of `image` with `driving` small in its top-right corner, framed in white."""
    out = image.copy()
    h, w = out.shape[:2]
    dh, dw = driving.shape[:2]
    pw = max(8, int(w * fraction))
    ph = max(8, min(h // 2, round(dh * pw / dw)))
    small = cv2.resize(driving, (pw, ph), interpolation=cv2.INTER_AREA)
    x, y = w - pw - 2, 2
    out[y:y + ph, x:x + pw] = small
    cv2.rectangle(out, (x - 1, y - 1), (x + pw, y + ph), (255, 255, 255), 1)
    return out


Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) as fractions of the frame's width and height


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def wrap(text: str, fits: Callable[[str], bool]) -> list[str]:
    """`text` cut at double spaces (between keys) into lines that each `fits` where possible."""
    lines: list[str] = []
    for part in text.split("  "):
        if lines and fits(f"{lines[-1]}  {part}"):
            lines[-1] += f"  {part}"
        else:
            lines.append(part)
    return lines


def draw_hud(image: np.ndarray, lines: list[str], help_line: str | None = HELP_LINE, *,
             face: Box | None = None) -> np.ndarray:
    """A copy of `image` (H, W, 3 RGB uint8) with `lines` in a top corner and `help_line` at the
    bottom, wrapped to the width.

    Args:
        image: the frame.
        lines: the HUD's text lines.
        help_line: the key legend (None: none).
        face: where the face is (with the head above it kept clear too): the panel goes top-left,
            else top-right, whichever does not cover it; top-left when neither can.
    """
    out = image.copy()
    h, w = out.shape[:2]
    scale = _scale(w)
    thickness = 1
    (_, text_h), baseline = cv2.getTextSize("Ag", FONT, scale, thickness)
    step = text_h + baseline + max(2, int(4 * scale))
    pad = max(3, int(6 * scale))

    def size(texts: list[str]) -> tuple[int, int]:
        width = max(cv2.getTextSize(t, FONT, scale, thickness)[0][0] for t in texts) + 2 * pad
        return width, step * len(texts) + pad

    def panel(texts: list[str], x: int, y: int) -> None:
        width, height = size(texts)
        x1, y1 = min(w, x + width), min(h, y + height)
        region = out[y:y1, x:x1]
        region[:] = (region.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken to 40%
        for i, t in enumerate(texts):
            org = (x + pad, y + pad + text_h + i * step)
            cv2.putText(out, t, org, FONT, scale, (255, 255, 255), thickness, cv2.LINE_AA)

    if lines:
        x = 0
        if face is not None:
            width, height = size(lines)
            fx0, fy0, fx1, fy1 = face[0] * w, face[1] * h, face[2] * w, face[3] * h
            head = (int(fx0), int(max(0.0, fy0 - 0.5 * (fy1 - fy0))), int(fx1), int(fy1))  # the hair above too
            if _overlaps((0, 0, width, height), head) and not _overlaps((w - width, 0, w, height), head):
                x = max(0, w - width)
        panel(lines, x, 0)
    if help_line:
        help_lines = wrap(help_line, lambda t: cv2.getTextSize(t, FONT, scale, thickness)[0][0] + 2 * pad <= w)
        panel(help_lines, 0, max(0, h - step * len(help_lines) - pad))
    return out


class GpuMonitor:
    """GPU memory and utilisation from NVML for one CUDA device, read at most every `period` s.

    `read()` returns None when the device is not CUDA or NVML is unavailable (no driver, no
    pynvml); the reason is in `unavailable`.
    """

    def __init__(self, device: object, period: float = 0.5) -> None:
        self.device = str(device)
        self.period = period
        self.unavailable: str | None = None
        self._handle = None
        self._nvml = None
        self._last: tuple[float, GpuStatus | None] = (-1e9, None)
        self._lock = threading.Lock()
        if not self.device.startswith("cuda"):
            self.unavailable = f"device {self.device}"

    def _nvml_index(self) -> int:
        index = int(self.device.split(":")[1]) if ":" in self.device else 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if ids and all(v.isdigit() for v in ids) and index < len(ids):
            return int(ids[index])  # torch's cuda:N is the N-th visible device
        return index

    def _open(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self._nvml_index())
            self._nvml = pynvml
        except Exception as e:  # ImportError or any NVMLError: the HUD simply shows no GPU line
            self.unavailable = f"NVML unavailable ({type(e).__name__}: {e})"
            log.debug("HUD: %s", self.unavailable)

    def read(self) -> GpuStatus | None:
        with self._lock:
            if self.unavailable:
                return None
            now = time.monotonic()
            if now - self._last[0] < self.period:
                return self._last[1]
            if self._handle is None:
                self._open()
                if self.unavailable:
                    return None
            try:
                mem = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
                util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
                status = GpuStatus(mem.used / 1e9, mem.total / 1e9, int(util.gpu))
            except Exception as e:  # NVMLError: e.g. the GPU fell off the bus; stop asking
                self.unavailable = f"NVML read failed ({e})"
                return None
            self._last = (now, status)
            return status
