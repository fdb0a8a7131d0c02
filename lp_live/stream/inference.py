"""The inference thread: the animator on the newest driving frames, results to every sink queue.

    [capture queue] ──InferenceThread──▶ OutputFrame ──▶ [sink queue] per sink

It builds the animator (so that its device state lives in this thread), applies the hotkeys
between frames, keeps up to two frames in flight (`inflight.py`), runs each engine's first frame
alone as a progress step, opens the `FirstFrameGate` with the first animated frame, and times
both engines for the HUD's speed ratio when asked to (calibration).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..core.progress import Progress, first_frame_step
from .capture import CapturedFrame
from .contract import LiveAnimator
from .controls import Controls
from .gate import FirstFrameGate
from .inflight import DEPTHS, InFlight
from .metrics import LiveMetrics
from .queues import GET_TIMEOUT_S, LatestQueue, QueueClosed

log = logging.getLogger(__name__)

# A video file used as the camera (not looped) is "far slower" when one frame of the engine
# lasts this many of the file's frames: most of it is skipped and the run ends with it.
FAR_SLOWER = 10.0

# With a frame in flight and no new one, how often the inference thread checks whether the
# device is done with it: a CUDA event or a worker's future cannot wake a wait on the queue.
READY_POLL_S = 0.002


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
    mirrored: bool  # the animator mirrors it (the picture-in-picture shows it as the engine sees it)


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
    graph capture): it runs alone, as a `progress` step. `gate` opens when the first animated
    frame is handed to the sinks (or when the thread ends): a video file used as the camera
    waits for it, and the "starting…" frames stop. When two engines are loaded and
    `calibrate_frames` > 0, both are then timed on that many frames each (after the first
    animated frame, never before), so that the HUD's speed ratio is measured early; with 0 it is
    measured once the user has used both (`b`). Hotkeys are applied before each frame; hotkeys
    first finish the frames in flight, so they apply from the next frame submitted. `max_frames`
    counts every animated frame handed to the sinks (calibration frames included: the user sees
    them). `in_flight` is 1 (one frame at a time) or 2 (the host work of one frame overlaps the
    device work of the other).
    """

    def __init__(self, build: Callable[[], LiveAnimator], inp: LatestQueue[CapturedFrame],
                 outs: list[LatestQueue[OutputFrame]], controls: Controls, metrics: LiveMetrics,
                 stop: threading.Event, *, max_frames: int | None = None, calibrate_frames: int = 0,
                 in_flight: int = 1, on_frame: Callable[[OutputFrame], None] | None = None,
                 progress: Progress | None = None, gate: FirstFrameGate | None = None,
                 mirror: bool = False, file_fps: float | None = None) -> None:
        super().__init__(name="lp-live-inference", daemon=True)
        if in_flight not in DEPTHS:
            raise ValueError(f"in_flight must be 1 or 2, got {in_flight}")
        self._build = build
        self._mirror = mirror  # the animator's mirror setting at start (`m` toggles it)
        self.animator: LiveAnimator | None = None  # built when the thread starts
        self.inp, self.outs, self.controls, self.metrics, self.stop = inp, outs, controls, metrics, stop
        self.max_frames = max_frames
        self.calibrate_frames = calibrate_frames
        self.in_flight = in_flight
        self.on_frame = on_frame
        self.progress = progress or Progress()
        self.frames = 0  # animated frames submitted (calibration frames included)
        self.gate = gate or FirstFrameGate()  # opens with the first animated frame (or when the thread ends)
        self.error: BaseException | None = None
        self.flight: InFlight[_Submitted] | None = None
        self._warm: set[str] = set()
        self.file_fps = file_fps  # the frame rate of a video file used as the camera, played once
        self.notices: tuple[str, ...] = ()  # found during the run, for the HUD (each also logged once)
        self._t_controls = 0.0
        self._clock = _BusyClock()

    def run(self) -> None:
        try:
            self.animator = self._build()
            self.animator.set_mirror(self._mirror)
            self.flight = InFlight(self.animator, self.in_flight)
            self._clock = _BusyClock()
            calibrate = self.calibrate_frames > 0 and len(self.animator.modes) > 1
            while not self.stop.is_set():
                if self._at_limit():
                    break
                if self.animator.background_ready():
                    self._adopt()
                if calibrate and self.gate.is_open() and self.animator.background_status() is None:
                    calibrate = False  # both engines ready: timed now (after a background build, once it is adopted)
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
            self.gate.open()  # nobody waits for a first frame that will not come
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
        image = frame.image
        mode = self.animator.mode
        warmup = mode not in self._warm
        self._warm.add(mode)
        self.frames += 1
        submitted = _Submitted(frame, self._t_controls, calibration, warmup, self.animator.mirror)
        if warmup:
            self._drain()
            with self.progress.step(first_frame_step(mode, self.animator.compiles(mode))):
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
        if not sub.warmup:
            self._check_pace(ms)
        out = OutputFrame(sub.frame.seq, sub.frame.t_capture, result.image, result.mode, result.face_found,
                          sub.t_controls, ms, sub.calibration,
                          driving=sub.frame.image[:, ::-1] if sub.mirrored else sub.frame.image)
        if self.gate.open():  # no "starting…" frame is put after this one
            log.info("running: first animated frame after %.1f s", self.metrics.first_animated())
        for q in self.outs:
            with contextlib.suppress(QueueClosed):  # that sink has failed and was closed
                q.put(out)
        if self.on_frame is not None:
            self.on_frame(out)
        self._clock.exclude(t_lap)  # handing the frame on is no frame's work

    def _check_pace(self, ms: float) -> None:
        """Say once when the engine is far slower than a video file used as the camera."""
        if self.file_fps is None or ms * self.file_fps / 1e3 < FAR_SLOWER:
            return
        line = (f"the engine takes {ms / 1e3:.1f} s a frame, the video file gives {self.file_fps:g} frames a "
                "second: most of them are skipped and the run ends with the file; --loop plays it again")
        log.warning("%s", line)
        self.notices = (*self.notices, line)
        self.file_fps = None  # once

    def _drain(self) -> None:
        while len(self.flight):
            self._finish()

    def _adopt(self) -> None:
        """Finish the frames in flight, then switch to the engine built in the background."""
        self._drain()
        t0 = time.perf_counter()
        mode = self.animator.adopt_background()
        self._clock.exclude(t0)
        if mode is not None:
            self.metrics.background_adopted(mode)
            log.info("switched to the %s engine %.1f s into the run (built in the background)", mode,
                     self.metrics.elapsed())

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


def _fmt(value: float | None) -> str:
    return "--" if value is None else f"{value:.2f}"
