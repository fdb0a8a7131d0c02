"""Live measurements shared by the threads, and the final `LiveStats`.

Every number on the HUD and in `--stats-json` comes from here and is measured in this run:
latency is `perf_counter()` at the sink minus the frame's capture time, inference time is the
inference thread's busy time per finished frame (host pixels, so it includes the device work;
with two frames in flight, the time between two finished frames: see `live._BusyClock`).
"""

from __future__ import annotations

import json
import threading
import time
from array import array
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..core.figures import percentiles, rate, speed_ratio
from .rss import RssSeries

ROLLING = 60  # samples behind each live (HUD) figure
RATE_FRAMES = 10  # output FPS on the HUD: over the last 10 frames shown, so it has a number at any rate


@dataclass
class SinkStats:
    shown: int = 0
    dropped: int = 0
    starting: int = 0  # "starting…" frames it got before the first animated frame
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None


@dataclass
class LiveStats:
    """What a live run measured; `to_json` is the `--stats-json` file.

    `fps` is the output rate at the primary sink (the one the user watches: window, else
    virtual camera, else file, else null); `latency_ms` is capture-to-sink at that sink;
    `inference_fps` is 1000 / mean inference milliseconds (the inference thread's busy time
    per frame); `in_flight` is how many frames it kept between submit and finish (1 or 2);
    `first_frame_s` is the time from the start of the run (models loading included) to the
    first animated frame. In `frames`, `skipped` counts camera frames the engine was too busy
    to take (normal when it is slower than the camera) and `lost` animated frames a sink was
    too slow to show. `source` adds the source's counts (`reconnects`, `frames_lost`,
    `seconds_lost` for a camera or live stream, `frames_missing` for a truncated file); `memory`
    is the RSS over the run (`rss.RssSeries`: [seconds since start, MiB] every 5 s from the start
    of the run, on a timer of its own, and one at the end). `latency_ms` leaves out the frames
    that waited for an engine's warm-up frame; `switched_s` is when the optimized engine built in
    the background took over (None: no such switch).
    """

    fps: float | None
    inference_fps: float | None
    latency_ms: dict[str, float | None]
    frames: dict[str, object]
    mode_switches: int
    inference_ms: dict[str, dict[str, float | int | None]]
    speed_ratio: float | None  # median baseline ms / median optimized ms, measured in this run
    frames_without_face: int
    duration_s: float
    stop_reason: str
    primary_sink: str | None
    sinks: dict[str, SinkStats]
    engine: dict[str, object]
    source: dict[str, object]
    output: str = ""  # what the sinks are, in one line (the `--sink auto` choice and why)
    in_flight: int = 1
    first_frame_s: float | None = None
    switched_s: float | None = None  # when the engine built in the background took over (seconds from the start)
    memory: dict[str, object] = field(default_factory=dict)  # RSS over the run (`rss.RssSeries.to_dict`)
    # per-frame capture-to-sink latency at each sink, in display order (not in the JSON)
    latency_series_ms: dict[str, list[float]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, object]:
        data = asdict(self)
        data.pop("latency_series_ms")
        return data

    def summary(self) -> str:
        """One line for the terminal at the end of a run."""

        def num(value: float | None, fmt: str = ".1f") -> str:
            return "--" if value is None else format(value, fmt)

        lat = self.latency_ms
        text = (f"{self.frames.get('processed', 0)} frames in {self.duration_s:.1f} s "
                f"(first after {num(self.first_frame_s)} s): {num(self.fps)} fps out, "
                f"{num(self.inference_fps)} fps inference, latency p50 {num(lat.get('p50'), '.0f')} / "
                f"p95 {num(lat.get('p95'), '.0f')} / max {num(lat.get('max'), '.0f')} ms, "
                f"{self.frames.get('skipped', 0)} camera frames skipped (engine busy), "
                f"{self.frames.get('lost', 0)} lost")
        if self.speed_ratio is not None:
            text += f", optimized {self.speed_ratio:.2f}x baseline"
        src = self.source
        if src.get("reconnects") or src.get("frames_lost"):
            text += f", camera reconnected {src.get('reconnects', 0)}x (about {src.get('frames_lost', 0)} frames lost)"
        if src.get("frames_missing"):
            text += f", driving video truncated ({src['frames_missing']} frames missing)"
        return text + f"; stopped: {self.stop_reason}"

    def write_json(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")


class _SinkRecord:
    def __init__(self, name: str) -> None:
        self.name = name
        self.latency_ms = array("d")
        self.recent_latency: deque[float] = deque(maxlen=ROLLING)
        self.shown_at: deque[float] = deque(maxlen=4 * ROLLING)
        self.first_shown: float | None = None
        self.last_shown: float | None = None
        self.starting = 0
        self.shown = 0  # animated frames shown (the latency figures leave out those held by a warm-up)
        self.error: str | None = None
        self.alive = True


class LiveMetrics:
    """Thread-safe counters and rolling windows, written by the stage threads."""

    def __init__(self, sink_names: list[str], primary: str | None, modes: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        self.t_start = time.perf_counter()
        self.sinks = {name: _SinkRecord(name) for name in sink_names}
        self.primary = primary
        self.modes = modes
        self.processed = 0
        self.calibration = 0
        self.without_face = 0
        self.inference_ms: dict[str, array] = {m: array("d") for m in modes}
        self.recent_ms: dict[str, deque[float]] = {m: deque(maxlen=ROLLING // 2) for m in modes}
        self.warmup_ms: dict[str, float] = {}
        self.stop_reason: str | None = None
        self.first_frame_s: float | None = None
        self.rss = RssSeries(self.t_start)  # sampled on its own timer while the run lasts (`LiveSession.run`)
        self.warm_at: float | None = None  # perf_counter() at the end of the last engine warm-up frame
        self.background_switch_s: float | None = None  # seconds from the start to a background engine's adoption

    # -- writers -------------------------------------------------------------------------------
    def record_inference(self, mode: str, ms: float, *, face_found: bool, calibration: bool = False,
                         warmup: bool = False) -> None:
        with self._lock:
            self.processed += 1
            self.calibration += calibration
            self.without_face += not face_found
            if warmup:
                self.warmup_ms[mode] = ms
                self.warm_at = time.perf_counter()  # frames captured before now waited for it: not latency
                return
            self.inference_ms.setdefault(mode, array("d")).append(ms)
            self.recent_ms.setdefault(mode, deque(maxlen=ROLLING // 2)).append(ms)

    def record_shown(self, sink: str, t_capture: float) -> float:
        """An animated frame captured at `t_capture` reached `sink` now; returns its latency in ms.
        A frame captured before an engine's warm-up frame ended (it waited for the warm-up) is
        counted as shown but left out of the latency figures."""
        now = time.perf_counter()
        ms = (now - t_capture) * 1e3
        with self._lock:
            rec = self.sinks[sink]
            rec.shown += 1
            if self.warm_at is None or t_capture >= self.warm_at:
                rec.latency_ms.append(ms)
                rec.recent_latency.append(ms)
            rec.shown_at.append(now)
            rec.first_shown = rec.first_shown or now
            rec.last_shown = now
        return ms

    def first_animated(self) -> float:
        """Record that the first animated frame goes to the sinks now; returns the seconds since the start."""
        with self._lock:
            self.first_frame_s = time.perf_counter() - self.t_start
            return self.first_frame_s

    def background_adopted(self, mode: str) -> None:
        """The `mode` engine built in the background is used from now on."""
        with self._lock:
            self.background_switch_s = time.perf_counter() - self.t_start

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.perf_counter() - self.t_start

    def record_starting(self, sink: str) -> None:
        with self._lock:
            self.sinks[sink].starting += 1

    def sink_failed(self, sink: str, message: str) -> list[str]:
        """Mark `sink` dead; returns the sinks still alive."""
        with self._lock:
            rec = self.sinks[sink]
            rec.alive, rec.error = False, message
            return [n for n, r in self.sinks.items() if r.alive]

    def stop(self, reason: str, *, error: bool = False) -> None:
        """Record why the run ends; the first reason wins, except an error's, which replaces any.

        Args:
            reason: a few words for the stats ("quit key", "end of input", "error: ...").
            error: the run failed: this reason replaces one recorded before (e.g. the frame
                limit reached, then the engine failing on the frames still in flight).
        """
        with self._lock:
            self.stop_reason = reason if error else self.stop_reason or reason

    # -- readers -------------------------------------------------------------------------------
    def speed_ratio(self, recent: bool = True) -> float | None:
        """Median baseline ms / median optimized ms (how many times faster optimized is)."""
        with self._lock:
            return speed_ratio(self.recent_ms if recent else self.inference_ms)

    def live(self, sink: str | None = None) -> dict[str, float | None]:
        """Rolling figures for the HUD, at `sink` (default: the primary sink)."""
        with self._lock:
            rec = self.sinks.get(sink or self.primary or "")
            out: dict[str, float | None] = {"output_fps": None, "latency_p50_ms": None, "latency_p95_ms": None}
            if rec is not None:
                out["output_fps"] = rate(list(rec.shown_at)[-RATE_FRAMES:])
                out["latency_p50_ms"], out["latency_p95_ms"] = percentiles(rec.recent_latency)
            return out

    def inference_fps(self, mode: str) -> float | None:
        with self._lock:
            recent = self.recent_ms.get(mode)
            return 1e3 / float(np.median(recent)) if recent else None

    def final(self, *, dropped: dict[str, int], captured: int, mode_switches: int, engine: dict[str, object],
              source: dict[str, object], output: str = "", in_flight: int = 1) -> LiveStats:
        self.rss.sample(force=True)
        with self._lock:
            duration = time.perf_counter() - self.t_start
            sinks = {}
            for name, rec in self.sinks.items():
                p50, p95 = percentiles(rec.latency_ms)
                sinks[name] = SinkStats(
                    shown=rec.shown, dropped=dropped.get(f"sink:{name}", 0), starting=rec.starting,
                    latency_ms={"p50": p50, "p95": p95, "max": max(rec.latency_ms) if rec.latency_ms else None},
                    error=rec.error)
            primary = self.sinks.get(self.primary or "")
            fps = None
            if primary is not None and primary.shown >= 2 and primary.last_shown > primary.first_shown:
                fps = (primary.shown - 1) / (primary.last_shown - primary.first_shown)
            all_ms = [ms for times in self.inference_ms.values() for ms in times]
            per_mode = {}
            for mode, times in self.inference_ms.items():
                p50, p95 = percentiles(times)
                per_mode[mode] = {"median": p50, "p95": p95, "mean": float(np.mean(times)) if times else None,
                                  "count": len(times), "warmup": self.warmup_ms.get(mode)}
            base, opt = self.inference_ms.get("baseline"), self.inference_ms.get("optimized")
            ratio = float(np.median(base) / np.median(opt)) if base and opt else None
            return LiveStats(
                fps=fps,
                inference_fps=1e3 / float(np.mean(all_ms)) if all_ms else None,
                latency_ms=sinks[self.primary].latency_ms if primary is not None else
                {"p50": None, "p95": None, "max": None},
                frames={"captured": captured, "processed": self.processed, "calibration": self.calibration,
                        "shown": {n: s.shown for n, s in sinks.items()}, "dropped": dict(dropped),
                        "skipped": dropped.get("capture", 0),
                        "lost": sum(v for k, v in dropped.items() if k != "capture")},
                mode_switches=mode_switches,
                inference_ms=per_mode,
                speed_ratio=ratio,
                frames_without_face=self.without_face,
                duration_s=duration,
                stop_reason=self.stop_reason or "stopped",
                primary_sink=self.primary,
                sinks=sinks,
                engine=engine,
                source=source,
                output=output,
                in_flight=in_flight,
                first_frame_s=self.first_frame_s,
                switched_s=self.background_switch_s,
                memory=self.rss.to_dict(),
                latency_series_ms={name: list(rec.latency_ms) for name, rec in self.sinks.items()},
            )
