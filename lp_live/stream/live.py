"""The live path: a capture thread, an inference thread and one thread per sink.

    camera ──CaptureThread──▶ [capture queue, 1] ──InferenceThread──▶ [sink queue, 1] ──▶ sink
                                                                  └──▶ [sink queue, 1] ──▶ sink ...

Every queue holds one frame and the newest frame wins: when the engine is slower than the
camera, or a sink slower than the engine, stale frames are dropped and counted instead of
waiting, so latency stays bounded. Each sink has its own thread (the preview window uses the
calling thread, as GUI toolkits require), so no stage waits on another's slow sink. The
inference thread owns the Animator: graphs and streams are created and launched there. With
two frames in flight (`inflight.py`) it prepares the next frame while the device runs the
current one; where the engine computes synchronously (CPU), that device part runs on one
worker thread.

Shutdown flows downstream on end of input or the frame limit (each stage closes its output
queue and the next one drains it), and everywhere at once through one stop Event on q/Esc,
Ctrl-C, a closed window, a fatal error or when no sink is left. Every sink is closed on every
path; the file sink flushes its encoder when closed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from signal import SIGINT, Signals
from typing import Any, Protocol

import numpy as np

from ..core import signals
from ..core.config import ConfigError, StreamConfig
from ..core.errors import one_line
from ..core.progress import Progress, first_frame_step
from .capture import CapturedFrame, CaptureThread, FrameSource, open_source
from .controls import Controls, TerminalKeys
from .hud import GpuMonitor, HudInfo, draw_hud, draw_pip, hud_lines
from .inflight import DEPTHS, InFlight
from .metrics import LiveMetrics, LiveStats
from .queues import LatestQueue, QueueClosed
from .reconnect import CameraLost
from .sinks import Sink, WindowSink, resolve_sinks
from .starting import StartingFrame, StartingFrames

log = logging.getLogger(__name__)

GET_TIMEOUT_S = 0.1  # how long a consumer waits for a frame before checking the stop event
# With a frame in flight and no new one, how often the inference thread checks whether the
# device is done with it: a CUDA event or a worker's future cannot wake a wait on the queue.
READY_POLL_S = 0.002
JOIN_TIMEOUT_S = 10.0  # shutdown: how long to wait for a stage to finish its current frame
SHUTDOWN_NOTICE_S = 1.0  # shutdown: say what it waits for once a stage takes longer than this
PRIMARY_ORDER = ("window", "virtualcam", "file", "null")


class LiveAnimator(Protocol):
    """What the live path drives (`lp_live.session.animator.Animator` is one); the stream package does
    not import the engine or the pipeline."""

    modes: tuple[str, ...]
    mode: str
    paste_back: bool
    options: Any  # AnimateOptions; `s` replaces them with `stitching` toggled (never mutates them)
    weights_kind: str
    device: Any

    def set_mode(self, mode: str) -> None: ...

    def reanchor(self) -> None: ...

    def process(self, frame_rgb: np.ndarray, timestamp: float | None = None) -> Any:
        """-> AnimatedFrame(image, face_found, mode); `timestamp` (s) drives the motion filter.

        `submit(frame_rgb, timestamp, worker=...)` -> pending and `finish(pending)` ->
        AnimatedFrame, where present, let two frames be in flight (see `inflight.py`)."""


@dataclass(frozen=True)
class AnimatorFactory:
    """Builds the Animator in the inference thread, so that all its device state (CUDA graphs,
    streams) is created in the thread that uses it.

    `still`: the picture under the "starting…" text the sinks show until the first animated
    frame (the source photo; None: a dark frame). `progress`: the `Progress` that `build`
    reports its steps to, so that the starting frames say what is happening.
    """

    build: Callable[[], LiveAnimator]
    still: np.ndarray | None = None
    progress: Progress | None = None


@dataclass
class OutputFrame:
    """An animated frame on its way to the sinks."""

    seq: int  # the driving frame's capture number
    t_capture: float  # perf_counter() when the driving frame was read
    image: np.ndarray  # (H, W, 3) RGB uint8; shared by all sinks, never modified in place
    mode: str  # the engine that produced it
    face_found: bool
    t_controls: float  # perf_counter() when the hotkeys applied to this frame were taken
    inference_ms: float
    calibration: bool = False
    driving: np.ndarray | None = None  # the driving frame as the engine got it (the picture-in-picture)


@dataclass
class _Submitted:
    """What the inference thread keeps of a frame while it is in flight."""

    frame: CapturedFrame
    t_controls: float
    calibration: bool
    warmup: bool  # the first frame of its engine: lazy init, compile, graph capture


class _BusyClock:
    """The inference thread's milliseconds per finished frame, not counting the time it has
    nothing to do (waiting for input with no frame in flight), spends on hotkeys (a switch may
    build an engine) or hands frames to the sinks. One frame at a time that is the frame's own
    time; with two in flight it is the time between two finished frames, about max(host, device)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.excluded = 0.0

    def exclude(self, since: float) -> None:
        """Do not count the time from `since` until now."""
        self.excluded += time.perf_counter() - max(since, self.start)

    def lap(self) -> float:
        now = time.perf_counter()
        ms = (now - self.start - self.excluded) * 1e3
        self.start, self.excluded = now, 0.0
        return ms


class InferenceThread(threading.Thread):
    """Runs the Animator on the newest driving frames and hands the results to every sink queue.

    Before the first frame it calls `build` for the Animator (so that all device state is
    created in this thread). The first frame of each engine is its warm-up (lazy init, compile,
    graph capture): it runs alone, as a `progress` step. `ready` is set when the first animated
    frame is handed to the sinks: a video file used as the camera waits for it, and the
    "starting…" frames stop. When two engines are loaded and `calibrate_frames` > 0, both are
    then timed on that many frames each (after the first animated frame, never before), so that
    the HUD's speed ratio is measured early; with 0 it is measured once the user has used both
    (`b`). Hotkeys are applied before each frame; hotkeys first finish the frames in flight, so
    they apply from the next frame submitted. `max_frames` counts every animated frame handed
    to the sinks (calibration frames included: the user sees them). `in_flight` is 1 (one frame
    at a time) or 2 (the host work of one frame overlaps the device work of the other;
    animators with only `process` run one at a time).
    """

    def __init__(self, build: Callable[[], LiveAnimator], inp: LatestQueue[CapturedFrame],
                 outs: list[LatestQueue[OutputFrame]], controls: Controls, metrics: LiveMetrics,
                 stop: threading.Event, *, max_frames: int | None = None, calibrate_frames: int = 0,
                 in_flight: int = 1, on_frame: Callable[[OutputFrame], None] | None = None,
                 progress: Progress | None = None) -> None:
        super().__init__(name="lp-live-inference", daemon=True)
        if in_flight not in DEPTHS:
            raise ValueError(f"in_flight must be 1 or 2, got {in_flight}")
        self._build = build
        self.animator: LiveAnimator | None = None  # built when the thread starts
        self.inp, self.outs, self.controls, self.metrics, self.stop = inp, outs, controls, metrics, stop
        self.max_frames = max_frames
        self.calibrate_frames = calibrate_frames
        self.in_flight = in_flight
        self.on_frame = on_frame
        self.progress = progress or Progress()
        self.frames = 0  # animated frames submitted (calibration frames included)
        self.ready = threading.Event()  # the first animated frame is out (or the thread ended)
        self.ready_lock = threading.Lock()  # held while setting `ready` and by whoever must not race it
        self.error: BaseException | None = None
        self.flight: InFlight[_Submitted] | None = None
        self._warm: set[str] = set()
        self._t_controls = 0.0
        self._clock = _BusyClock()

    def run(self) -> None:
        try:
            self.animator = self._build()
            self.flight = InFlight(self.animator, self.in_flight)
            self._clock = _BusyClock()
            calibrate = self.calibrate_frames > 0 and len(self.animator.modes) > 1
            while not self.stop.is_set():
                if self._at_limit():
                    break
                if calibrate and self.ready.is_set():
                    calibrate = False
                    self._calibrate()
                    continue
                frame = self._next()
                if frame is None:
                    break
                t0 = time.perf_counter()
                self._t_controls = self.controls.apply(self.animator, before=self._drain)
                self._clock.exclude(t0)
                self._submit(frame)
            if not self.stop.is_set():
                self._drain()
        except Exception as e:  # the engine failed: stop the run and let run_live raise it
            self.error = e
            self.stop.set()
        finally:
            with self.ready_lock:
                self.ready.set()  # nobody waits for a first frame that will not come
            if self.flight is not None:
                self.flight.close()
            self.inp.close()  # tells the capture thread to stop
            for q in self.outs:
                q.close()  # the sinks drain what is left, then finish

    def _next(self) -> CapturedFrame | None:
        """The next driving frame, or None at the end of input or on stop.

        While a frame is in flight and no new one has come, the oldest is finished as soon as its
        device part is done: holding it for the next camera frame would only add latency.
        """
        while True:
            in_flight = len(self.flight) > 0
            t0 = time.perf_counter()
            try:
                return self.inp.get(timeout=READY_POLL_S if in_flight else GET_TIMEOUT_S)
            except queue.Empty:
                if in_flight:
                    if self.flight.ready():
                        self._finish()
                elif self.stop.is_set():
                    return None
            except QueueClosed:
                if not self.stop.is_set():
                    self.metrics.stop("end of input")
                return None
            finally:
                if not in_flight:
                    self._clock.exclude(t0)

    def _at_limit(self) -> bool:
        if self.max_frames is not None and self.frames >= self.max_frames:
            self.metrics.stop("frame limit")
            return True
        return False

    def _submit(self, frame: CapturedFrame, calibration: bool = False) -> None:
        """Start `frame`; then finish the oldest frames until there is room for the next one.
        An engine's first frame runs alone, as a progress step (it may compile the engine)."""
        if self.controls.mirror:
            frame = CapturedFrame(frame.seq, frame.t_capture, np.ascontiguousarray(frame.image[:, ::-1]))
        image = frame.image
        mode = self.animator.mode
        warmup = mode not in self._warm
        self._warm.add(mode)
        self.frames += 1
        submitted = _Submitted(frame, self._t_controls, calibration, warmup)
        if warmup:
            self._drain()
            with self.progress.step(first_frame_step(self.animator, mode)):
                self.flight.submit(image, frame.t_capture, submitted)
                self._drain()
            return
        self.flight.submit(image, frame.t_capture, submitted)
        while self.flight.full:
            self._finish()

    def _finish(self) -> None:
        """Finish the oldest frame in flight and hand it to the sinks."""
        result, sub = self.flight.finish()
        ms = self._clock.lap()
        t_lap = time.perf_counter()
        self.metrics.record_inference(result.mode, ms, face_found=result.face_found, calibration=sub.calibration,
                                      warmup=sub.warmup)
        out = OutputFrame(sub.frame.seq, sub.frame.t_capture, result.image, result.mode, result.face_found,
                          sub.t_controls, ms, sub.calibration, driving=sub.frame.image)
        if not self.ready.is_set():
            with self.ready_lock:  # no "starting…" frame is put after this one
                self.ready.set()
                log.info("running: first animated frame after %.1f s", self.metrics.first_animated())
        for q in self.outs:
            with contextlib.suppress(QueueClosed):  # that sink has failed and was closed
                q.put(out)
        if self.on_frame is not None:
            self.on_frame(out)
        self._clock.exclude(t_lap)  # handing the frame on is no frame's work

    def _drain(self) -> None:
        while len(self.flight):
            self._finish()

    def _switch(self, mode: str) -> None:
        """Finish the frames in flight, then change the engine (not timed: it may build it)."""
        self._drain()
        t0 = time.perf_counter()
        self.animator.set_mode(mode)
        self._clock.exclude(t0)

    def _calibrate(self) -> None:
        animator = self.animator
        initial = animator.mode
        order = [m for m in animator.modes if m != initial] + [initial]  # end in the mode the user chose
        for mode in order:
            self._switch(mode)
            timed = 0
            while timed < self.calibrate_frames:
                frame = None if self._at_limit() else self._next()
                if frame is None or self.stop.is_set():
                    self._switch(initial)
                    return
                timed += mode in self._warm  # the first frame per engine is its untimed warm-up
                self._submit(frame, calibration=True)
        self._drain()
        log.info("calibrated: optimized %sx baseline (median of %d frames each)",
                 _fmt(self.metrics.speed_ratio()), self.calibrate_frames)


def _photo_label(animator: LiveAnimator) -> str:
    """"photo 2/3" when the animator holds several source photos, else ""."""
    count = getattr(animator, "source_count", 1)
    return f"photo {animator.source_index + 1}/{count}" if count > 1 else ""


def _fmt(value: float | None) -> str:
    return "--" if value is None else f"{value:.2f}"


class _Outputs:
    """Delivers frames to sinks (HUD, latency, failures); shared by the sink threads and the window."""

    def __init__(self, inference: InferenceThread, controls: Controls, metrics: LiveMetrics,
                 stop: threading.Event, queues: dict[str, LatestQueue[OutputFrame]],
                 all_queues: list[LatestQueue]) -> None:
        self.inference, self.controls, self.metrics, self.stop = inference, controls, metrics, stop
        self.queues, self.all_queues = queues, all_queues
        self.warnings: tuple[str, ...] = ()  # run-level requests not honoured (shown on the HUD)
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
            dropped=sum(q.dropped for q in self.all_queues[1:]),
            skipped=self.all_queues[0].dropped,
            photo=_photo_label(animator),
            weights=animator.weights_kind,
            device=str(animator.device),
            gpu=self._gpu.read(),
            speed_ratio=self.metrics.speed_ratio(),
            modes=tuple(animator.modes),
            paste_back=bool(animator.paste_back),
            stitching=bool(animator.options.stitching),
            mirror=self.controls.mirror,
            face_found=out.face_found,
            warnings=self.warnings + tuple(getattr(animator, "warnings", ())),
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
                    image = draw_hud(image, hud_lines(self.hud_info(sink, out)))
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
        self.queues[sink.name].close()
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

    def __init__(self, sink: Sink, q: LatestQueue[OutputFrame], outputs: _Outputs, stop: threading.Event) -> None:
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


def _unique_names(sinks: list[Sink]) -> None:
    seen: dict[str, int] = {}
    for sink in sinks:
        n = seen.get(sink.name, 0)
        seen[sink.name] = n + 1
        if n:
            sink.name = f"{sink.name}{n + 1}"


def _primary(sinks: list[Sink]) -> str | None:
    for kind in PRIMARY_ORDER:
        for sink in sinks:
            if type(sink).name == kind:
                return sink.name
    return sinks[0].name if sinks else None


def check_config(config: StreamConfig) -> None:
    """ConfigError for a stream configuration the live path cannot run."""
    if config.in_flight not in DEPTHS:
        raise ConfigError(f"stream.in_flight: expected 1 or 2, got {config.in_flight}")


def resolve_live_sinks(config: StreamConfig, fps: float, output: str | Path | None
                       ) -> tuple[list[Sink], str, tuple[str, ...]]:
    """The sinks for `config.sink` (plus a file sink for `output`), the summary line, and the
    warnings to show on the HUD (a virtual camera that `auto` could not find)."""
    sinks, summary = resolve_sinks(config.sink, output=output, fps=fps, size=config.size,
                                   hud_on_virtualcam=config.hud_on_virtualcam)
    log.info("%s", summary)
    warnings = []
    for note in summary.split("; ")[1:]:
        if note.startswith("no virtual camera"):  # asked for by `auto`: say so, as a warning
            log.warning("%s; apps cannot pick lp-live as a camera", note)
            warnings.append("no virtual camera")
    return sinks, summary, tuple(warnings)


def open_live(animator: LiveAnimator | AnimatorFactory, camera: str | FrameSource, config: StreamConfig, *,
              output: str | Path | None = None, sinks: list[Sink] | None = None,
              open_timeout: float = 10.0, loop: bool = False, controls: Controls | None = None,
              max_frames: int | None = None, keyboard: bool = True,
              on_frame: Callable[[OutputFrame], None] | None = None) -> LiveSession:
    """Open the driving source and the sinks and build a `LiveSession` (nothing started yet).

    Args:
        animator: the Animator, or an AnimatorFactory (then built in the inference thread).
        camera: a camera index ("0"), a /dev/video* path, a video file or a stream URL (or an
            opened FrameSource).
        config: `--sink` names, size, fps, HUD, mirror, pacing and calibration frames.
        output: also record to this video file (H.264).
        sinks: use these sinks instead of resolving `config.sink` (tests, embedding).
        open_timeout: seconds to wait for a network stream to answer.
        loop: play a video file again from the start at its end, like a camera.
        controls, max_frames, keyboard, on_frame: as `LiveSession`.

    Raises:
        CaptureError: the camera/file/URL cannot be opened (one-line message).
        SinkError: an explicitly requested sink cannot work (one-line message).
    """
    check_config(config)
    source = camera if isinstance(camera, FrameSource) else \
        open_source(camera, timeout=open_timeout, loop=loop, reconnect_s=config.reconnect_s)
    try:
        if sinks is None:
            sinks, summary, warnings = resolve_live_sinks(config, config.fps or source.fps or 30.0, output)
        else:
            summary, warnings = "output: " + " + ".join(s.describe() for s in sinks), ()
        return LiveSession(animator, source, sinks, config, summary=summary, warnings=warnings, controls=controls,
                           max_frames=max_frames, keyboard=keyboard, on_frame=on_frame)
    except BaseException:
        source.close()
        raise


def run_live(animator: LiveAnimator | AnimatorFactory, camera: str | FrameSource, config: StreamConfig, *,
             stats_json: str | Path | None = None, **kwargs: Any) -> LiveStats:
    """Animate live from `camera` until q/Esc, Ctrl-C, end of input, `max_frames` or an error:
    `open_live(animator, camera, config, **kwargs).run(stats_json)` (`kwargs`: open_live's).

    Raises what `open_live` and `LiveSession.run` raise.
    """
    return open_live(animator, camera, config, **kwargs).run(stats_json)


class LiveSession:
    """A live run, built: source, sinks, queues and threads made, nothing started. `run()` runs it.

    Args:
        animator: the Animator, or an AnimatorFactory building it in the inference thread.
        source: the opened driving source; closed when the run ends.
        sinks: the sinks; each is closed when the run ends.
        config: the stream configuration (size, fps, HUD, mirror, pacing, calibration, in flight).
        summary: the line saying what output was picked (in the stats).
        warnings: run-level requests not honoured, shown on the HUD.
        controls: the hotkey state (tests inject presses with `controls.press`).
        max_frames: stop after this many frames (not counting calibration frames).
        keyboard: read hotkeys from the terminal when there is no window and stdin is a TTY.
        on_frame: called in the inference thread after each frame is handed to the sinks.
    """

    def __init__(self, animator: LiveAnimator | AnimatorFactory, source: FrameSource, sinks: list[Sink],
                 config: StreamConfig, *, summary: str | None = None, warnings: tuple[str, ...] = (),
                 controls: Controls | None = None, max_frames: int | None = None, keyboard: bool = True,
                 on_frame: Callable[[OutputFrame], None] | None = None) -> None:
        check_config(config)
        if isinstance(animator, AnimatorFactory):
            build, modes, still, progress = animator.build, (), animator.still, animator.progress
        else:
            build, modes, still, progress = (lambda: animator), tuple(animator.modes), None, None
        self.progress = progress or Progress()
        _unique_names(sinks)
        self.source, self.sinks, self.keyboard = source, sinks, keyboard
        self.summary = summary or "output: " + " + ".join(s.describe() for s in sinks)
        self.stop = threading.Event()
        self.entered = False  # `run` was called (it then handles every signal itself)
        self.controls = controls or Controls(mirror=config.mirror, hud=config.hud)
        self.metrics = LiveMetrics([s.name for s in sinks], _primary(sinks), modes)
        self.capture_q: LatestQueue[CapturedFrame] = LatestQueue(1, "capture")
        self.sink_qs = {s.name: LatestQueue(1, f"sink:{s.name}", placeholders=(StartingFrame,)) for s in sinks}
        self.inference = InferenceThread(build, self.capture_q, list(self.sink_qs.values()), self.controls,
                                         self.metrics, self.stop, max_frames=max_frames,
                                         calibrate_frames=config.calibrate_frames, in_flight=config.in_flight,
                                         on_frame=on_frame, progress=self.progress)
        # a video file used as the camera gives its first frame, then waits for the engine to be ready
        self.capture = CaptureThread(source, self.capture_q, self.stop, pace=config.pace,
                                     wait_for=self.inference.ready if source.is_file else None)
        self.starting = StartingFrames([self.sink_qs[s.name] for s in sinks if s.starting], self.inference.ready,
                                       self.inference.ready_lock, self.stop, still=still, size=config.size,
                                       status=self.progress.status)
        self.outputs = _Outputs(self.inference, self.controls, self.metrics, self.stop, self.sink_qs,
                                [self.capture_q, *self.sink_qs.values()])
        self.outputs.warnings = tuple(warnings)
        self.window = next((s for s in sinks if isinstance(s, WindowSink)), None)
        self.sink_threads = [SinkThread(s, self.sink_qs[s.name], self.outputs, self.stop)
                             for s in sinks if s is not self.window]

    def _quit(self) -> None:
        self.metrics.stop("quit key")
        self.stop.set()

    def interrupt(self, e: KeyboardInterrupt) -> None:
        """Stop for a signal (also before `run`: it then ends at once, still writing the stats)."""
        signum = getattr(e, "signum", SIGINT)
        self.metrics.stop("interrupted" if signum == SIGINT else f"interrupted ({Signals(signum).name})")
        self.stop.set()

    def run(self, stats_json: str | Path | None = None) -> LiveStats:
        """Start every thread, wait for the end (q/Esc, Ctrl-C, end of input, the frame limit, no
        sink left, an error), shut down and close everything; write the stats to `stats_json`
        (also after an error). Raises the Animator's or the source's error after the shutdown."""
        threads = [self.capture, self.inference, self.starting, *self.sink_threads]
        try:
            self.entered = True  # from here on a signal is handled below
            self.controls.on_quit = self._quit
            if self.controls.quit.is_set():
                self._quit()
            for t in threads:
                t.start()
            signals.raise_pending()  # a signal that came while the session was set up
            use_terminal = self.keyboard and self.window is None
            with TerminalKeys(self.controls) if use_terminal else contextlib.nullcontext():
                if self.window is not None:
                    self._window_loop()
                while not self.stop.is_set() and any(t.is_alive() for t in threads):
                    self.stop.wait(GET_TIMEOUT_S)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM where the CLI handles it (`lp_live.core.signals`)
            self.interrupt(e)
        finally:
            self.stop.set()
            self.source.interrupt()  # a reconnect in progress stops waiting
            with signals.deferred():  # a signal now is recorded, not raised into the cleanup
                log.info("stopping (%s)", self.metrics.stop_reason or "stop requested")
                self._shutdown()
                stats = self._stats()
                if stats_json is not None:
                    stats.write_json(stats_json)
        error = self.inference.error or self.capture.error
        if error is not None and not isinstance(error, CameraLost):  # a lost camera ends the run cleanly
            raise error
        return stats

    def _window_loop(self) -> None:
        window, q = self.window, self.sink_qs[self.window.name]
        last: OutputFrame | None = None  # redrawn when a key is pressed, so the HUD answers at once
        while not self.stop.is_set():
            try:
                out = q.get(timeout=0.01)
            except queue.Empty:
                out = None
            except QueueClosed:
                return  # the inference thread is done and every frame was shown
            if out is not None:
                if not self.outputs.deliver_any(window, out):
                    return  # the window failed; the other sinks go on
                last = out if isinstance(out, OutputFrame) else last
            key = window.poll_key(1)  # also pumps the window's events
            if key:
                self.controls.press(key)
                if last is not None and not self.outputs.deliver(window, last, record=False):
                    return
            if not window.is_open():
                self.metrics.stop("window closed")
                self.stop.set()

    def _shutdown(self) -> None:
        """Join every thread (the sinks first, so files are flushed) and close every sink.

        A stage busy in native code (a compile, a device call) cannot be stopped: after
        JOIN_TIMEOUT_S, or at once after a second Ctrl-C, it is left running, and the CLI ends
        the process without waiting for it (`signals.exit_now`)."""
        for group in (self.sink_threads, [self.inference, self.capture]):
            for t in group:
                if not t.is_alive():
                    continue
                t.join(SHUTDOWN_NOTICE_S)
                if not t.is_alive():
                    continue
                if t is self.inference and self.inference.animator is None:
                    log.info("%s is still building the engine; leaving it", t.name)  # it holds no output
                    continue
                log.info("waiting up to %.0f s for %s to finish its current step (Ctrl-C again: do not wait)",
                         JOIN_TIMEOUT_S, t.name)
                if not signals.wait_for(t, JOIN_TIMEOUT_S):
                    log.warning("%s did not finish; leaving it", t.name)
        done = {t.sink.name for t in self.sink_threads if not t.is_alive()}
        for sink in self.sinks:
            if sink is self.window or sink.name in done or not any(t.sink is sink for t in self.sink_threads):
                try:
                    sink.close()
                except Exception as e:  # report and go on closing the others
                    log.warning("%s: closing failed (%s)", sink.describe(), one_line(e))
                    self.metrics.sink_failed(sink.name, f"close: {one_line(e)}")
        if not self.capture.is_alive():
            self.source.close()

    def _stats(self) -> LiveStats:
        error = self.inference.error or self.capture.error
        if isinstance(error, CameraLost) and not self.inference.error:
            if self.metrics.stop_reason is None:  # not already stopping (a key, a signal)
                log.warning("%s; ending the run (what was recorded is kept)", error)
            self.metrics.stop("camera lost")  # the first reason wins
        elif error is not None:
            self.metrics.stop_reason = f"error: {one_line(error)}"
        animator = self.inference.animator
        engine = {}
        if animator is not None:
            engine = {"modes": list(animator.modes), "final_mode": animator.mode,
                      "weights": animator.weights_kind, "device": str(animator.device)}
        return self.metrics.final(
            dropped={q.name: q.dropped for q in [self.capture_q, *self.sink_qs.values()]},
            captured=self.capture.captured,
            mode_switches=self.controls.mode_switches,
            engine=engine,
            source={"camera": self.source.description, "fps": self.source.fps, "paced": self.capture.pace,
                    **self.source.stats()},
            output=self.summary,
            in_flight=self.inference.flight.depth if self.inference.flight is not None else self.inference.in_flight,
        )
