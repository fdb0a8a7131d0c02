"""One engine per mode, built on first use, for the desktop app and the server alike.

Engines hold device state (compiled code, CUDA graphs and streams): build and use them on one
thread, the inference thread of the desktop app or the server's step thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from ..core.config import AnimateOptions
from ..engine import Anchor, Engine
from .photo import SourcePhoto

log = logging.getLogger(__name__)


class EnginePool:
    """The engines of `modes`, each built by `factory(mode)` the first time it is asked for."""

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

    def built(self) -> dict[str, Engine]:
        """The engines built so far, by mode."""
        return dict(self._engines)


def warm_up(pool: EnginePool, mode: str, photo: SourcePhoto) -> None:
    """Build the `mode` engine and run one frame (the photo driving itself, a throwaway anchor):
    compilation and graph capture happen now instead of on someone's first frame."""
    engine = pool.get(mode)
    engine.animate(photo.state(engine, mode), photo.input, anchor=Anchor(), options=AnimateOptions())
