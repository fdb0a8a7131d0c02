"""The batching step: the newest frame of every session, one mixed-source batch per engine, per step.

    session frames ──(newest wins)──▶ step: prepare each ─▶ step.launch (B streams) ─▶ finish each ─▶ tracks

A step takes every session that has a new frame, so each active session gets exactly one slot
per step and none can starve; frames that arrive while a step runs replace each other and are
counted as drops. The step runs on one worker thread so the asyncio loop keeps serving HTTP and
WebRTC; each session's host work (tracking and crop, then paste-back) runs on a thread pool.
It is the desktop app's per-frame path (`lp_live.session`: one `DrivingStream` per session,
`launch` and `finish`), with one engine call for all the sessions on an engine. Sessions on
different engines (baseline and optimized) are two batches of the same step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
import time
from collections import defaultdict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.figures import percentiles, speed_ratio
from ..session import DrivingInput, DrivingStream, EnginePool, finish, launch
from .sessions import Driving, Session

log = logging.getLogger(__name__)

ROLLING = 200  # steps behind the step figures
LOG_LENGTH = 4096  # steps remembered (serve-bench reads a time window of them)
HOST_THREADS = min(8, os.cpu_count() or 1)


@dataclass
class Job:
    session: Session
    driving: Driving


@dataclass
class Result:
    session: Session
    image: np.ndarray
    t_received: float
    infer_ms: float


class Scheduler:
    """Runs the step loop for all sessions on one engine pool.

    Args:
        pool: the engines (built once per server).
    """

    def __init__(self, pool: EnginePool) -> None:
        self.pool = pool
        self.sessions: dict[str, Session] = {}
        self.wake = asyncio.Event()
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="lp-live-step")
        self.host = ThreadPoolExecutor(HOST_THREADS, thread_name_prefix="lp-live-host")  # per-session host work
        self.steps = 0
        self.frames = 0
        # (perf_counter() at the end of the step, its milliseconds, its frames)
        self.step_log: deque[tuple[float, float, int]] = deque(maxlen=LOG_LENGTH)
        self.per_frame_ms: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=ROLLING))  # engine ms / frame
        self.started = time.perf_counter()
        self._task: asyncio.Task | None = None

    # -- sessions ---------------------------------------------------------------------------
    def add(self, session: Session) -> None:
        self.sessions[session.id] = session

    def remove(self, session_id: str) -> None:
        session = self.sessions.pop(session_id, None)
        if session is not None:
            session.close()
            log.info("session %s closed (%d frames out)", session_id, session.frames_out)

    # -- the loop ---------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lp-live-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for session_id in list(self.sessions):
            self.remove(session_id)
        self.worker.shutdown(wait=True, cancel_futures=True)
        self.host.shutdown(wait=True)

    async def call(self, fn, *args) -> Any:
        """Run `fn(*args)` on the step thread (where the engines live)."""
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    async def _run(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            jobs = [Job(s, d) for s in list(self.sessions.values()) if (d := s.take()) is not None]
            if not jobs:
                continue
            try:
                results = await self.call(self.step, jobs)
            except Exception:
                log.exception("step failed; its %d frames are dropped", len(jobs))
                continue
            for r in results:
                r.session.deliver(r.image, r.t_received, r.infer_ms)

    # -- the step (worker thread) -----------------------------------------------------------
    def running_mode(self, mode: str) -> str:
        """The engine that animates a stream asking for `mode`: baseline while `mode` is still being
        built in the background."""
        build = self.pool.pending()
        return "baseline" if build is not None and build.mode == mode and not self.pool.ready() else mode

    def background_status(self) -> str | None:
        """"optimized engine compiling... 12 s" while it is built in the background, else None."""
        build = self.pool.pending()
        if build is None or self.pool.ready():
            return None
        return f"{build.mode} engine compiling... {build.seconds():.0f} s"

    def step(self, jobs: list[Job]) -> list[Result]:
        """Animate the newest frame of each job's session as one batch per engine (the step thread)."""
        if self.pool.ready():  # between two steps: the engine built in the background takes over
            self.pool.adopt()
        # while an exclusive background build (CUDA) warms, no step runs on the device (`EnginePool.device_lock`)
        with self.pool.device_lock if self.pool.exclusive() else contextlib.nullcontext():
            return self._step(jobs)

    @torch.no_grad()
    def _step(self, jobs: list[Job]) -> list[Result]:
        t0 = time.perf_counter()
        live = [(job, job.session.stream) for job in jobs]
        live = [(job, stream) for job, stream in live if stream is not None]  # not closed since taken
        for job, stream in live:
            if job.session.reanchor_requested:
                job.session.reanchor_requested = False
                stream.reanchor()
        # host work of every session at once: decode to RGB, track the face, crop (OpenCV releases the GIL)
        inputs = list(self.host.map(lambda entry: self._prepare(*entry), live))
        batches: dict[str, list[tuple[Job, DrivingStream, DrivingInput]]] = defaultdict(list)
        for (job, stream), driving in zip(live, inputs):
            batches[self.running_mode(job.session.mode)].append((job, stream, driving))
        results: list[Result] = []
        for mode, entries in batches.items():
            t_engine = time.perf_counter()
            launched = launch(self.pool.get(mode), mode, [(stream, driving) for _, stream, driving in entries])
            for launched_job in launched:
                if launched_job.image is not None:
                    launched_job.image.result()  # the device's part, timed as the engine's
            engine_ms = (time.perf_counter() - t_engine) * 1e3
            images = list(self.host.map(finish, launched))  # paste-back
            self.per_frame_ms[mode].append(engine_ms / len(entries))
            results.extend(Result(job.session, image, job.driving.t_received, engine_ms)
                           for (job, _, _), image in zip(entries, images))
        self.steps += 1
        self.frames += len(results)
        t1 = time.perf_counter()
        self.step_log.append((t1, (t1 - t0) * 1e3, len(results)))
        return results

    @staticmethod
    def _prepare(job: Job, stream: DrivingStream) -> DrivingInput:
        return stream.prepare(job.driving.frame.to_ndarray(format="rgb24"), job.driving.t_received)

    # -- figures ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        recent = list(self.step_log)[-ROLLING:]
        p50, p95 = percentiles([ms for _, ms, _ in recent])
        batches = [n for _, _, n in recent]
        medians = {m: statistics.median(v) for m, v in self.per_frame_ms.items() if v}
        sessions = [s.stats() for s in self.sessions.values()]
        return {
            "sessions": len(sessions),
            "steps": self.steps,
            "frames": self.frames,
            "step_ms": {"p50": p50, "p95": p95},
            "batch_mean": statistics.fmean(batches) if batches else None,
            "batch_max": max(batches, default=None),
            "engine_ms_per_frame": medians,
            "speed_ratio": speed_ratio(self.per_frame_ms),
            "background": self.background_status(),
            "output_fps": sum(s["fps"] or 0.0 for s in sessions),
            "per_session": sessions,
        }
