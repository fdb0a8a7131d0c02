"""The engine interface: source once, then one driving frame in, one animated frame out.

An engine owns the networks on one device and runs F, M, W, G and the stitching MLP. The
keypoint math between M and W is shared by every engine (`EngineBase.driving_keypoints`);
engines differ in how they run the networks (precision, layout, compilation, graphs, copies).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from .. import kinematics as kin
from ..config import INPUT_SIZES, AnimateOptions
from ..kinematics import Motion
from ..models import LivePortraitModels

log = logging.getLogger(__name__)

LIP_NORMALIZE_THRESHOLD = 0.03  # source lip ratio above which lip normalisation applies


@dataclass
class Ratios:
    """Eye (B, 2: left, right) and lip (B, 1) openness from 203-point landmarks."""

    eye: torch.Tensor
    lip: torch.Tensor


@dataclass
class SourceState:
    """Everything about the source that does not change per frame, plus the driving anchor.

    `anchor` is the driving motion that maps to the source's own pose (the first driving
    frame, or the frame at the last re-anchor); `reanchor()` makes the next frame the anchor.
    `cache` holds engine-specific source-only tensors (e.g. the compressed volume).
    """

    feature_3d: torch.Tensor  # (1, 32, 16, 64, 64)
    motion: Motion
    x_s: torch.Tensor  # (1, 21, 3)
    options: AnimateOptions
    ratios: Ratios | None = None
    lip_delta: torch.Tensor | None = None
    anchor: Motion | None = None
    anchor_x: torch.Tensor | None = None
    expression_scale: float = 1.0
    cache: dict[str, torch.Tensor] = field(default_factory=dict)

    def reanchor(self) -> None:
        self.anchor = None
        self.anchor_x = None


class PendingImage:
    """A generated frame that may still be on its way from the device (`EngineBase.submit`).

    `result()` waits for it and returns the (2S, 2S, 3) RGB uint8 image; `ready()` says whether
    that wait would return at once. This base class holds an image that is already computed.
    """

    def __init__(self, image: np.ndarray) -> None:
        self._image = image

    def ready(self) -> bool:
        return True

    def result(self) -> np.ndarray:
        return self._image


@runtime_checkable
class Engine(Protocol):
    """What the pipeline needs from an engine.

    Images are RGB uint8 (H, W, 3) numpy arrays, ideally already crops of the engine's
    `input_size` (256 by default; others are resized). `animate` returns the generated
    (2 * input_size, 2 * input_size, 3) RGB uint8 frame: 512x512 at the default size.

    The live path splits a frame: inside `launching()` it runs `extract_motion` and `submit`,
    which returns a `PendingImage` at once where `asynchronous` is true (work queued on the
    device) and after computing it otherwise; `result()` gives what `animate` would.
    """

    name: str
    device: torch.device
    models: LivePortraitModels
    asynchronous: bool

    def prepare_source(self, image: np.ndarray, *, options: AnimateOptions | None = None,
                       ratios: Ratios | None = None) -> SourceState: ...

    def extract_motion(self, image: np.ndarray) -> Motion: ...

    def animate(self, state: SourceState, driving: np.ndarray | Motion, *,
                ratios: Ratios | None = None) -> np.ndarray: ...

    def launching(self) -> contextlib.AbstractContextManager[None]: ...

    def submit(self, state: SourceState, motion: Motion, *, ratios: Ratios | None = None) -> PendingImage: ...


class StageTimer:
    """Per-stage wall-clock milliseconds, synchronising the device at stage edges when enabled.

    Disabled (the default) it costs nothing and adds no synchronisation: the live path and the
    optimized engine never wait on the device for measurement unless a benchmark asks.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.enabled = False
        self.totals: dict[str, list[float]] = defaultdict(list)
        self.parents: dict[str, str] = {}  # stage -> the stage it ran inside (its time is counted twice)
        self._open: list[str] = []

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def stage(self, name: str) -> _Stage:
        return _Stage(self, name)

    def reset(self) -> None:
        self.totals.clear()
        self.parents.clear()
        self._open.clear()


class _Stage:
    def __init__(self, timer: StageTimer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        if self.timer.enabled:
            if self.timer._open:
                self.timer.parents[self.name] = self.timer._open[-1]
            self.timer._open.append(self.name)
            self.timer.sync()
            self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        if self.timer.enabled:
            self.timer.sync()
            self.timer.totals[self.name].append((time.perf_counter() - self.t0) * 1e3)
            self.timer._open.pop()


class EngineBase:
    """Shared driving-keypoint math and the animate loop; subclasses run the networks."""

    name = "base"
    # True where `submit` only queues the device work and returns (the optimized engine on
    # CUDA); elsewhere `submit` computes the frame, so a caller overlapping host and device
    # work runs it on a worker thread.
    asynchronous = False

    def __init__(self, models: LivePortraitModels, device: str | torch.device, *, input_size: int = 256) -> None:
        if input_size not in INPUT_SIZES:
            raise ValueError(f"input_size must be one of {INPUT_SIZES} (F downsamples 4x and the hourglass halves "
                             f"the feature grid 5 times), got {input_size}")
        self.models = models
        self.device = torch.device(device)
        self.input_size = input_size  # network input side; 256 is what LivePortrait was trained at
        self.timer = StageTimer(self.device)

    # -- implemented by engines ------------------------------------------------------------
    def source_features(self, image: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def motion_raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """(B, H, W, 3) or (H, W, 3) uint8 -> (B, 3, S, S) float32 on the device, S = input_size."""
        raise NotImplementedError

    def generate(self, states: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> np.ndarray:
        """W + G + conversion: driving keypoints (B, 21, 3) -> (B, 512, 512, 3) uint8, for one
        source or one state per slot (`per_slot`)."""
        raise NotImplementedError

    def cache_source(self, state: SourceState) -> None:
        """Hook for engines that precompute source-only tensors."""

    # -- shared ----------------------------------------------------------------------------
    @torch.no_grad()
    def prepare_source(self, image: np.ndarray, *, options: AnimateOptions | None = None,
                       ratios: Ratios | None = None) -> SourceState:
        x = self.to_input(image)
        motion = kin.motion_from_raw(self.motion_raw(x))
        x_s = kin.transform_keypoints(motion)
        state = SourceState(
            feature_3d=self.source_features(x),
            motion=motion,
            x_s=x_s,
            options=options or AnimateOptions(),
            ratios=ratios,
        )
        if ratios is not None and float(ratios.lip[0, 0]) >= LIP_NORMALIZE_THRESHOLD:
            closed = torch.cat([ratios.lip, torch.zeros_like(ratios.lip)], dim=1)
            state.lip_delta = kin.retarget(self.models.lip, x_s, closed)
        self.cache_source(state)
        return state

    @torch.no_grad()
    def extract_motion(self, image: np.ndarray) -> Motion:
        with self.timer.stage("pre"):
            x = self.to_input(image)
        with self.timer.stage("motion"):
            return kin.motion_from_raw(self.motion_raw(x))

    @torch.no_grad()
    def driving_keypoints(self, states: SourceState | Sequence[SourceState], motion: Motion,
                          ratios: Ratios | None = None) -> torch.Tensor:
        """Driving keypoints (B, 21, 3) for B driving motions: relative motion, rescaling, retargeting, stitching.

        `states` is one source for every frame, or one state per slot (B of them; a state may fill
        several slots). Slots are taken in order: a state without an anchor takes the first of its
        slots' frames as its anchor, so one call equals B single-frame calls in slot order.
        `ratios` (driving eye/lip ratios) has B rows.
        """
        b = motion.kp.shape[0]
        slots = per_slot(states, b)
        if isinstance(slots, SourceState):
            return self._source_keypoints(slots, motion, ratios)
        groups: dict[int, list[int]] = {}  # state -> its slots, in order of first appearance
        for i, state in enumerate(slots):
            groups.setdefault(id(state), []).append(i)
        out: list[torch.Tensor | None] = [None] * b
        for indices in groups.values():
            def pick(t: torch.Tensor, indices: list[int] = indices) -> torch.Tensor:
                # narrow + cat rather than an index tensor: no host->device copy on CUDA
                return torch.cat([t[i : i + 1] for i in indices])

            sub_ratios = None if ratios is None else Ratios(eye=pick(ratios.eye), lip=pick(ratios.lip))
            x_d = self._source_keypoints(slots[indices[0]], motion.map(pick), sub_ratios)
            for j, i in enumerate(indices):
                out[i] = x_d[j : j + 1]
        return torch.cat(out)

    def _source_keypoints(self, state: SourceState, motion: Motion, ratios: Ratios | None) -> torch.Tensor:
        """`driving_keypoints` of B frames that all animate `state` (its x_s broadcast over them)."""
        opts, x_s = state.options, state.x_s
        b = motion.kp.shape[0]
        if state.anchor is None:
            set_anchor(state, motion.map(lambda t: t[:1]))
        x_d = kin.relative_keypoints(state.motion, motion, state.anchor)
        if opts.expression_friendly:
            x_d = (x_d - state.anchor_x) * state.expression_scale + x_s
        retargeting = (opts.eye_retargeting or opts.lip_retargeting) and ratios is not None \
            and state.ratios is not None
        if retargeting:
            x_d = x_s.expand(b, -1, -1)
            if opts.eye_retargeting:
                eye = torch.cat([state.ratios.eye.expand(b, -1), ratios.eye[:, :1]], dim=1)
                x_d = x_d + kin.retarget(self.models.eye, x_s, eye)
            if opts.lip_retargeting:
                lip = torch.cat([state.ratios.lip.expand(b, -1), ratios.lip], dim=1)
                x_d = x_d + kin.retarget(self.models.lip, x_s, lip)
            if opts.stitching:
                x_d = kin.stitch(self.models.stitching, x_s, x_d)
        else:
            if opts.stitching:
                x_d = kin.stitch(self.models.stitching, x_s, x_d)
            if opts.normalize_lip and state.lip_delta is not None:
                x_d = x_d + state.lip_delta
        return kin.apply_multiplier(x_s, x_d, opts.multiplier)

    @torch.no_grad()
    def animate_batch(self, states: SourceState | Sequence[SourceState], driving: np.ndarray | Motion, *,
                      ratios: Ratios | None = None) -> np.ndarray:
        """B driving frames (B, H, W, 3), or their motion, -> (B, 2S, 2S, 3) uint8.

        `states`: one source animated by every frame, or one state per slot (several users or
        faces in one batch; see `driving_keypoints` for the anchors). `ratios`: B rows.
        """
        motion = driving if isinstance(driving, Motion) else self.extract_motion(driving)
        with self.timer.stage("stitching"):
            x_d = self.driving_keypoints(states, motion, ratios)
        return self.generate(states, x_d)

    def animate(self, state: SourceState, driving: np.ndarray | Motion, *,
                ratios: Ratios | None = None) -> np.ndarray:
        return self.animate_batch(state, driving, ratios=ratios)[0]

    # -- split per-frame path: queue the device work now, take the image later ---------------
    @contextlib.contextmanager
    def launching(self) -> Iterator[None]:
        """Where a frame's device work is queued (`extract_motion`, the caller's motion filter,
        `submit`): here the caller's own stream; the optimized engine's CUDA stream there."""
        yield

    def submit(self, state: SourceState, motion: Motion, *, ratios: Ratios | None = None) -> PendingImage:
        """Start animating one frame from its driving motion; `result()` of the returned
        `PendingImage` is what `animate` returns. Here it is computed before returning."""
        return PendingImage(self.animate(state, motion, ratios=ratios))


def per_slot(states: SourceState | Sequence[SourceState], batch: int) -> SourceState | list[SourceState]:
    """`states` for a batch of `batch` slots: one state when every slot animates the same source
    (then its tensors broadcast over the batch), else the list of the slots' states."""
    if isinstance(states, SourceState):
        return states
    states = list(states)
    if len(states) != batch:
        raise ValueError(f"{len(states)} source states for a batch of {batch} driving frames")
    return states[0] if all(s is states[0] for s in states) else states


def set_anchor(state: SourceState, anchor: Motion) -> None:
    """Make the one-frame motion `anchor` the driving pose that maps to the source's own pose."""
    state.anchor = anchor
    state.anchor_x = kin.relative_keypoints(state.motion, anchor, anchor)
    state.expression_scale = kin.expression_multiplier(state.x_s, state.anchor_x)
