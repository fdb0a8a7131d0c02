"""What the live path needs from the animator: one Protocol, `LiveAnimator`.

The stream package does not import the engine or the pipeline; `lp_live.session.animator.Animator`
is the real implementation and `tests/livefakes.FakeAnimator` a fake. The live loop, the hotkeys
(`controls.py`), the HUD and sinks (`outputs.py`), the progress steps and the run's stats use
these members and no others: nothing is probed with getattr/hasattr. The animator is driven from
the inference thread only; the sink threads read its display members (mode, flags, labels).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..core.progress import Progress


class AnimatedResult(Protocol):
    """One animated frame, as `LiveAnimator.finish` and `process` return it."""

    @property
    def image(self) -> np.ndarray:
        """(H, W, 3) RGB uint8."""

    @property
    def face_found(self) -> bool:
        """A face was found in the driving frame (else the last good motion, or the still photo)."""

    @property
    def mode(self) -> str:
        """The engine that produced it."""


class PendingResult(Protocol):
    """A frame between `LiveAnimator.submit` and `LiveAnimator.finish`."""

    def ready(self) -> bool:
        """True when `finish` would not wait for the device."""


@runtime_checkable
class LiveAnimator(Protocol):
    """What the live path drives: a source photo animated by driving frames, switchable engines."""

    @property
    def modes(self) -> tuple[str, ...]:
        """The engines that can be used, in the order `b` cycles through them."""

    @property
    def mode(self) -> str:
        """The engine the next frame is submitted to."""

    @property
    def paste_back(self) -> bool:
        """The animated face is pasted back into the photo (else the crop is shown)."""

    @property
    def stitching(self) -> bool:
        """Stitching (the crop's shoulders kept in place) is on."""

    @property
    def mirror(self) -> bool:
        """Driving frames are flipped horizontally before anything else (selfie view)."""

    @property
    def source_count(self) -> int:
        """How many source photos are loaded (keys 1-9 select one)."""

    @property
    def source_index(self) -> int:
        """The source photo in use, from 0."""

    @property
    def warnings(self) -> tuple[str, ...]:
        """Requests that cannot be honoured on this machine, one line each (shown on the HUD)."""

    @property
    def weights_kind(self) -> str:
        """"real" or "synthetic" (the HUD and the stats)."""

    @property
    def device(self) -> Any:
        """The torch device the engines run on (the HUD's GPU figures and the stats)."""

    def face_box(self) -> tuple[float, float, float, float] | None:
        """Where the face is in the frames it gives now, (x0, y0, x1, y1) as fractions of the
        frame's width and height (the HUD keeps clear of it); None: not known."""

    def set_mode(self, mode: str) -> None:
        """Use engine `mode` (one of `modes`) from the next frame on; may build it (slow)."""

    def reanchor(self) -> None:
        """Take the next driving frame as the neutral pose."""

    def select_source(self, index: int) -> None:
        """Animate source photo `index` (below `source_count`) from the next frame on."""

    def set_paste_back(self, on: bool) -> None:
        """Paste the animated face back into the photo from the next frame on."""

    def set_stitching(self, on: bool) -> None:
        """Turn stitching on or off from the next frame on (a frame in flight keeps its own options)."""

    def set_mirror(self, on: bool) -> None:
        """Flip driving frames from the next frame on."""

    def compiles(self, mode: str) -> bool:
        """True when the first frame of engine `mode` compiles it (the progress step says so)."""

    def background_status(self) -> str | None:
        """"optimized engine compiling... 12 s" while an engine is built beside the running one
        (read by the sink threads for the HUD and the stats), else None."""

    def background_ready(self) -> bool:
        """True when the engine built in the background is done (built or failed): `adopt_background`
        would not wait."""

    def adopt_background(self) -> str | None:
        """Switch to the engine built in the background, between two frames with none in flight;
        returns its mode, or None when the build failed (the animator's `warnings` then say why)."""

    def submit(self, frame_rgb: np.ndarray, timestamp: float | None = None, *,
               worker: Executor | None = None) -> PendingResult:
        """Start animating one driving frame (RGB uint8); `finish` returns it (see `inflight.py`).

        Args:
            frame_rgb: the driving frame.
            timestamp: seconds, for the motion filter (the wall clock when None).
            worker: one thread to run the device part on where it would block the caller.
        """

    def finish(self, pending: PendingResult) -> AnimatedResult:
        """Wait for a submitted frame (in submission order) and return it animated."""

    def process(self, frame_rgb: np.ndarray, timestamp: float | None = None) -> AnimatedResult:
        """`finish(submit(frame_rgb, timestamp))`: one frame, start to end."""


def contract_members(protocol: type = LiveAnimator) -> tuple[str, ...]:
    """The public member names `protocol` declares (the ones an implementation must have)."""
    names = {n for n in vars(protocol) if not n.startswith("_")} | set(vars(protocol).get("__annotations__", {}))
    return tuple(sorted(names))


@dataclass(frozen=True)
class AnimatorFactory:
    """Builds the animator in the inference thread, so that all its device state (CUDA graphs,
    streams) is created in the thread that uses it.

    `still`: the picture under the "starting…" text the sinks show until the first animated
    frame (the source photo; None: a dark frame). `progress`: the `Progress` that `build`
    reports its steps to, so that the starting frames say what is happening.
    """

    build: Callable[[], LiveAnimator]
    still: np.ndarray | None = None
    progress: Progress | None = None
