"""The sinks' side of the live path: each frame to each sink, with the HUD, and the sink threads.

    [sink queue] ──SinkThread──▶ sink        (the preview window: the calling thread, `LiveSession`)

`Outputs` writes an animated frame (with the HUD and the picture-in-picture where the sink shows
them) or a "starting…" frame to a sink, records what was shown, and closes a sink that fails; when
no sink is left it stops the run. `resolve_live_sinks` picks the sinks for the configuration.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path

import numpy as np

from ..core.config import StreamConfig
from ..core.errors import one_line
from .capture import CapturedFrame
from .contract import LiveAnimator
from .controls import Controls
from .hud import COMPACT_HELP_LINE, HELP_LINE, GpuMonitor, HudInfo, draw_hud, draw_pip, hud_lines
from .inference import InferenceThread, OutputFrame
from .metrics import LiveMetrics
from .queues import GET_TIMEOUT_S, LatestQueue, QueueClosed
from .sinks import Sink, choose_sinks
from .starting import StartingFrame

log = logging.getLogger(__name__)

PRIMARY_ORDER = ("window", "virtualcam", "file", "null")


def _photo_label(animator: LiveAnimator) -> str:
    """"photo 2/3" when the animator holds several source photos, else ""."""
    count = animator.source_count
    return f"photo {animator.source_index + 1}/{count}" if count > 1 else ""



class Outputs:
    """Delivers frames to sinks (HUD, latency, failures); shared by the sink threads and the window.

    Args:
        inference: the inference thread (its animator, once built, is what the HUD describes).
        controls: the hotkey state (HUD, picture-in-picture, mirror).
        metrics: where shown frames and sink failures are recorded.
        stop: set when no sink is left.
        capture_queue: the driving frames' queue (its drops are the HUD's skipped frames).
        sink_queues: each sink's queue, by sink name (their drops are the HUD's dropped frames).
        warnings: run-level requests not honoured, one line each (shown on the HUD).
    """

    def __init__(self, inference: InferenceThread, controls: Controls, metrics: LiveMetrics,
                 stop: threading.Event, capture_queue: LatestQueue[CapturedFrame],
                 sink_queues: dict[str, LatestQueue[OutputFrame]], warnings: tuple[str, ...] = ()) -> None:
        self.inference, self.controls, self.metrics, self.stop = inference, controls, metrics, stop
        self.capture_queue, self.sink_queues = capture_queue, sink_queues
        self.warnings = tuple(warnings)
        self._gpu: GpuMonitor | None = None

    def mode_label(self, out: OutputFrame) -> str:
        """The engine of `out`, or "switching to X…" from the press of `b` until X's first frame."""
        animator = self.inference.animator
        modes = tuple(animator.modes)
        target = animator.mode
        pending = self.controls.pending_switches()
        if pending and len(modes) > 1 and target in modes:
            target = modes[(modes.index(target) + pending) % len(modes)]
        if target != out.mode:
            return f"switching to {target}…"
        return out.mode + (" (calibrating)" if out.calibration else "")

    def hud_info(self, sink: Sink, out: OutputFrame) -> HudInfo:
        animator = self.inference.animator
        if self._gpu is None:
            self._gpu = GpuMonitor(animator.device)
        live = self.metrics.live(sink.name)
        return HudInfo(
            mode=self.mode_label(out),
            output_fps=live["output_fps"],
            inference_fps=self.metrics.inference_fps(out.mode),
            latency_p50_ms=live["latency_p50_ms"],
            latency_p95_ms=live["latency_p95_ms"],
            dropped=sum(q.dropped for q in self.sink_queues.values()),
            skipped=self.capture_queue.dropped,
            photo=_photo_label(animator),
            weights=animator.weights_kind,
            device=str(animator.device),
            gpu=self._gpu.read(),
            speed_ratio=self.metrics.speed_ratio(),
            modes=tuple(animator.modes),
            paste_back=bool(animator.paste_back),
            stitching=bool(animator.stitching),
            mirror=bool(animator.mirror),
            face_found=out.face_found,
            warnings=self.warnings + tuple(animator.warnings) + self.inference.notices,
            background=animator.background_status(),
        )

    def deliver(self, sink: Sink, out: OutputFrame, *, record: bool = True) -> bool:
        """Write `out` to `sink` (scaled to the sink's size first, so that the HUD and the
        picture-in-picture are drawn at a legible size); on failure close the sink, report it
        in one line and return False. `record`: count it as shown (False: a redraw)."""
        try:
            image = out.image
            if sink.hud and (self.controls.hud or self.controls.pip):
                image = sink.fit(image)
                if self.controls.pip and out.driving is not None:
                    image = draw_pip(image, out.driving)
                if self.controls.hud:
                    detail = self.controls.detail
                    image = draw_hud(image, hud_lines(self.hud_info(sink, out), detail=detail),
                                     HELP_LINE if detail else COMPACT_HELP_LINE,
                                     face=self.inference.animator.face_box())
            sink.write(image, out.t_capture)
        except Exception as e:  # any sink failure (device gone, disk full) ends that sink only
            self.fail(sink, e)
            return False
        if record:
            self.metrics.record_shown(sink.name, out.t_capture)
        return True

    def deliver_starting(self, sink: Sink, image: np.ndarray) -> bool:
        """Write a "starting…" frame to `sink` (not counted as shown); False when the sink failed."""
        try:
            sink.write(image, time.perf_counter())
        except Exception as e:  # as in `deliver`
            self.fail(sink, e)
            return False
        self.metrics.record_starting(sink.name)
        return True

    def deliver_any(self, sink: Sink, item: OutputFrame | StartingFrame) -> bool:
        if isinstance(item, StartingFrame):
            return self.deliver_starting(sink, item.image)
        return self.deliver(sink, item)

    def fail(self, sink: Sink, error: BaseException) -> None:
        message = one_line(error)
        self.sink_queues[sink.name].close()
        try:
            sink.close()
        except Exception as e:  # closing a broken device can fail too; it is closed as far as it goes
            log.debug("closing %s: %s", sink.name, e)
        alive = self.metrics.sink_failed(sink.name, message)
        if alive:
            log.warning("%s failed and was closed (%s); continuing with %s", sink.describe(), message,
                        ", ".join(alive))
        else:
            log.warning("%s failed and was closed (%s); no sink left, stopping", sink.describe(), message)
            self.metrics.stop("no sink left")
            self.stop.set()


class SinkThread(threading.Thread):
    """Feeds one sink from its queue until the queue is closed and drained or `stop` is set."""

    def __init__(self, sink: Sink, q: LatestQueue[OutputFrame], outputs: Outputs, stop: threading.Event) -> None:
        super().__init__(name=f"lp-live-sink-{sink.name}", daemon=True)
        self.sink, self.q, self.outputs, self.stop = sink, q, outputs, stop

    def run(self) -> None:
        try:
            while True:
                try:
                    out = self.q.get(timeout=GET_TIMEOUT_S)
                except queue.Empty:
                    if self.stop.is_set():
                        break
                    continue
                except QueueClosed:
                    break
                if not self.outputs.deliver_any(self.sink, out):
                    break
        finally:
            try:
                self.sink.close()
            except Exception as e:  # e.g. disk full while flushing the file: report, do not hide
                log.warning("%s: closing failed (%s)", self.sink.describe(), one_line(e))
                self.outputs.metrics.sink_failed(self.sink.name, f"close: {one_line(e)}")


def unique_names(sinks: list[Sink]) -> None:
    """Rename sinks of the same kind "null", "null2", ... so that each name is one sink."""
    seen: dict[str, int] = {}
    for sink in sinks:
        n = seen.get(sink.name, 0)
        seen[sink.name] = n + 1
        if n:
            sink.name = f"{sink.name}{n + 1}"


def primary_sink(sinks: list[Sink]) -> str | None:
    """The sink whose figures the HUD and the stats lead with (PRIMARY_ORDER), or None."""
    for kind in PRIMARY_ORDER:
        for sink in sinks:
            if type(sink).name == kind:
                return sink.name
    return sinks[0].name if sinks else None


def resolve_live_sinks(config: StreamConfig, fps: float, output: str | Path | None
                       ) -> tuple[list[Sink], str, tuple[str, ...]]:
    """The sinks for `config.sink` (plus a file sink for `output`), the summary line, and the
    warnings to show on the HUD (a virtual camera that `auto` could not find)."""
    choice = choose_sinks(config.sink, output=output, fps=fps, size=config.size,
                          hud_on_virtualcam=config.hud_on_virtualcam)
    log.info("%s", choice.summary)
    warnings = []
    if "virtualcam" in choice.unavailable:  # asked for by `auto`: say so, as a warning
        log.warning("%s; apps cannot pick lp-live as a camera", choice.unavailable["virtualcam"])
        warnings.append("no virtual camera")
    return choice.sinks, choice.summary, tuple(warnings)
