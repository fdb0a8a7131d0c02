"""The only place the server calls the engines: building them, preparing a source, one batched step.

Everything here runs on the scheduler's one worker thread, where all device state (CUDA graphs,
streams, compiled code) is created and used. Engines are built once per server and mode, on
first use. Each session owns a `SessionEngineState`: its source prepared for each engine it
used and its driving anchor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from ..core.config import AnimateOptions
from ..engine import Anchor, Engine, SourceState
from ..motion.kinematics import Motion
from ..motion.smoothing import MotionSmoother

log = logging.getLogger(__name__)


class EnginePool:
    """One engine per mode, built on first use by `factory` (pipeline.engine_factory)."""

    def __init__(self, factory: Callable[[str], Engine], modes: Sequence[str]) -> None:
        self.modes = tuple(modes)
        self._factory = factory
        self._engines: dict[str, Engine] = {}

    def get(self, mode: str) -> Engine:
        if mode not in self.modes:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(self.modes)}")
        if mode not in self._engines:
            log.info("building the %s engine", mode)
            self._engines[mode] = self._factory(mode)
        return self._engines[mode]

    @property
    def built(self) -> tuple[str, ...]:
        return tuple(self._engines)


class SessionEngineState:
    """A session's source prepared per engine (once each), and its driving anchor, which the
    session owns: it is kept across engine switches."""

    def __init__(self, source_input: np.ndarray) -> None:
        self.source_input = source_input  # (S, S, 3) RGB uint8 face crop of the photo
        self.states: dict[str, SourceState] = {}
        self.anchor = Anchor()

    def reanchor(self) -> None:
        """The next driving frame becomes the neutral pose."""
        self.anchor.reset()

    def _state(self, pool: EnginePool, mode: str) -> SourceState:
        state = self.states.get(mode)
        if state is None:
            state = self.states[mode] = pool.get(mode).prepare_source(self.source_input)
        return state


@dataclass
class Slot:
    """One session's place in a batch: its engine state, options, driving crop (S, S, 3) RGB uint8,
    and its motion filter with the frame's time in seconds."""

    state: SessionEngineState
    options: AnimateOptions
    crop: np.ndarray
    smoother: MotionSmoother | None = None
    timestamp: float = 0.0


def animate(pool: EnginePool, mode: str, slots: Sequence[Slot]) -> np.ndarray:
    """One mixed-source batch on the `mode` engine: B slots -> (B, 2S, 2S, 3) RGB uint8.

    The driving motion of the batch is extracted once, then each slot's own filter smooths its row.
    """
    engine = pool.get(mode)
    states = [slot.state._state(pool, mode) for slot in slots]
    with engine.launching():
        motion = engine.extract_motion(np.stack([slot.crop for slot in slots]))
        if any(slot.smoother is not None for slot in slots):
            rows = [motion.map(lambda t, i=i: t[i : i + 1]) for i in range(len(slots))]
            rows = [row if slot.smoother is None else slot.smoother(row, slot.timestamp)
                    for row, slot in zip(rows, slots)]
            motion = Motion(**{f.name: torch.cat([getattr(r, f.name) for r in rows]) for f in fields(Motion)})
        return engine.animate_batch(states, motion, anchors=[slot.state.anchor for slot in slots],
                                    options=[slot.options for slot in slots])


def warm_up(pool: EnginePool, mode: str, crop: np.ndarray) -> None:
    """Build the `mode` engine and run one frame (a throwaway session driven by its own source)."""
    animate(pool, mode, [Slot(SessionEngineState(crop), AnimateOptions(), crop)])
