"""The batching step: the newest frame of every session, one mixed-source batch per engine, per step.

    session frames ──(newest wins)──▶ step: crop each ─▶ engines.animate (B slots) ─▶ paste-back ─▶ tracks

A step takes every session that has a new frame, so each active session gets exactly one slot
per step and none can starve; frames that arrive while a step runs replace each other and are
counted as drops. The step (face tracking, the engine, paste-back) runs on one worker thread so
the asyncio loop keeps serving HTTP and WebRTC. Sessions on different engines (baseline and
optimized) are two batches of the same step.
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

import cv2
import numpy as np
import torch

from ..face import DRIVING_CROP, crop_face
from ..session.engines import EnginePool, Slot, animate
from ..stream.metrics import _percentiles
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
        input_size: network input side (driving crops are made at this size).
        crop_driving: crop driving frames around the face (off: whole frames, already face crops).
    """

    def __init__(self, pool: EnginePool, *, input_size: int, crop_driving: bool = True) -> None:
        self.pool = pool
        self.input_size = input_size
        self.crop_driving = crop_driving
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
    @torch.no_grad()
    def step(self, jobs: list[Job]) -> list[Result]:
        t0 = time.perf_counter()
        batches: dict[str, list[tuple[Job, Slot]]] = defaultdict(list)
        held: list[Result] = []
        # host work of every session at once: decode to RGB, track the face, crop (OpenCV releases the GIL)
        crops = list(self.host.map(lambda job: self._driving_crop(job.session, job.driving), jobs))
        for job, crop in zip(jobs, crops):
            s = job.session
            state = s.engine_state
            if state is None:  # closed since it was taken
                continue
            if s.reanchor_requested:
                s.reanchor_requested = False
                state.reanchor()
                if s.smoother is not None:
                    s.smoother.reset()
            if crop is None:  # no face: hold the last frame (or show the still photo)
                s.frames_without_face += 1
                held.append(Result(s, self._still(s), job.driving.t_received, 0.0))
                continue
            slot = Slot(state, s.settings.options, crop, s.smoother, job.driving.t_received)
            batches[s.settings.mode].append((job, slot))
        results = held
        for mode, entries in batches.items():
            t_engine = time.perf_counter()
            generated = animate(self.pool, mode, [slot for _, slot in entries])
            engine_ms = (time.perf_counter() - t_engine) * 1e3
            self.per_frame_ms[mode].append(engine_ms / len(entries))

            def finish(entry: tuple[Job, Slot], image: np.ndarray, engine_ms: float = engine_ms) -> Result:
                s = entry[0].session
                out = s.source.paster(image) if s.settings.paste_back else image
                return Result(s, out, entry[0].driving.t_received, engine_ms)

            results.extend(self.host.map(finish, entries, generated))
        self.steps += 1
        self.frames += len(results)
        t1 = time.perf_counter()
        self.step_log.append((t1, (t1 - t0) * 1e3, len(results)))
        return results

    def _driving_crop(self, session: Session, driving: Driving) -> np.ndarray | None:
        rgb = driving.frame.to_ndarray(format="rgb24")
        if session.settings.mirror:
            rgb = np.ascontiguousarray(rgb[:, ::-1])
        size = self.input_size
        if not self.crop_driving:
            return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
        face = session.detector.track(rgb)
        if face is None:
            return None
        return crop_face(rgb, face, DRIVING_CROP, input_size=size).input

    def _still(self, session: Session) -> np.ndarray:
        """The last animated frame, or the un-animated photo (its crop without paste-back)."""
        side = 2 * self.input_size
        shape = session.source.photo.shape if session.settings.paste_back else (side, side, 3)
        if session.last_output is not None and session.last_output.shape == shape:
            return session.last_output
        if session.settings.paste_back:
            return session.source.photo
        return cv2.resize(session.source.crop.image, (side, side), interpolation=cv2.INTER_AREA)

    # -- figures ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        recent = list(self.step_log)[-ROLLING:]
        p50, p95 = _percentiles([ms for _, ms, _ in recent])
        batches = [n for _, _, n in recent]
        medians = {m: statistics.median(v) for m, v in self.per_frame_ms.items() if v}
        ratio = medians["baseline"] / medians["optimized"] if {"baseline", "optimized"} <= medians.keys() else None
        sessions = [s.stats() for s in self.sessions.values()]
        return {
            "sessions": len(sessions),
            "steps": self.steps,
            "frames": self.frames,
            "step_ms": {"p50": p50, "p95": p95},
            "batch_mean": statistics.fmean(batches) if batches else None,
            "batch_max": max(batches, default=None),
            "engine_ms_per_frame": medians,
            "speed_ratio": ratio,
            "output_fps": sum(s["fps"] or 0.0 for s in sessions),
            "per_session": sessions,
        }
