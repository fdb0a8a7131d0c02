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

This module wires the stages and runs them (`LiveSession`); `capture.py` is the capture thread,
`inference.py` the inference thread, `outputs.py` the sink threads and `starting.py` the
"starting…" frames; `contract.py` says what the live path needs from the animator.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from signal import SIGINT, Signals
from typing import Any

from ..core import signals
from ..core.config import ConfigError, StreamConfig
from ..core.errors import one_line
from ..core.progress import Progress
from .capture import CapturedFrame, CaptureThread, FrameSource, open_source
from .contract import AnimatorFactory, LiveAnimator
from .controls import Controls, TerminalKeys
from .gate import FirstFrameGate
from .inference import InferenceThread, OutputFrame
from .inflight import DEPTHS
from .metrics import LiveMetrics, LiveStats
from .outputs import Outputs, SinkThread, primary_sink, resolve_live_sinks, unique_names
from .queues import GET_TIMEOUT_S, LatestQueue, QueueClosed
from .reconnect import CameraLost
from .sinks import Sink, WindowSink
from .starting import StartingFrame, StartingFrames

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 10.0  # shutdown: how long to wait for a stage to finish its current frame
SHUTDOWN_NOTICE_S = 1.0  # shutdown: say what it waits for once a stage takes longer than this


def check_config(config: StreamConfig) -> None:
    """ConfigError for a stream configuration the live path cannot run."""
    if config.in_flight not in DEPTHS:
        raise ConfigError(f"stream.in_flight: expected 1 or 2, got {config.in_flight}")


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
        unique_names(sinks)
        self.source, self.sinks, self.keyboard = source, sinks, keyboard
        self.summary = summary or "output: " + " + ".join(s.describe() for s in sinks)
        self.stop = threading.Event()
        self.entered = False  # `run` was called (it then handles every signal itself)
        self.controls = controls or Controls(hud=config.hud)
        self.metrics = LiveMetrics([s.name for s in sinks], primary_sink(sinks), modes)
        self.capture_q: LatestQueue[CapturedFrame] = LatestQueue(1, "capture")
        self.sink_qs = {s.name: LatestQueue(1, f"sink:{s.name}", placeholders=(StartingFrame,)) for s in sinks}
        self.first_frame = FirstFrameGate()  # opens with the first animated frame
        self.inference = InferenceThread(build, self.capture_q, list(self.sink_qs.values()), self.controls,
                                         self.metrics, self.stop, max_frames=max_frames,
                                         calibrate_frames=config.calibrate_frames, in_flight=config.in_flight,
                                         on_frame=on_frame, progress=self.progress, gate=self.first_frame,
                                         mirror=config.mirror,
                                         file_fps=source.fps if source.is_file and config.pace and not source.loop
                                         else None)
        # a video file used as the camera gives its first frame, then waits for the engine to be ready
        self.capture = CaptureThread(source, self.capture_q, self.stop, pace=config.pace,
                                     wait_for=self.first_frame if source.is_file else None)
        self.starting = StartingFrames([self.sink_qs[s.name] for s in sinks if s.starting], self.first_frame,
                                       self.stop, still=still, size=config.size, status=self.progress.status)
        self.outputs = Outputs(self.inference, self.controls, self.metrics, self.stop, self.capture_q, self.sink_qs,
                               warnings=tuple(warnings))
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
            self.metrics.rss.start()  # memory samples from the first second, whatever the frames do
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
                self.metrics.rss.stop()
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
            self.metrics.stop(f"error: {one_line(error)}", error=True)  # replaces the reason recorded before
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
