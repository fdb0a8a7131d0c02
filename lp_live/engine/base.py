"""The engine interface: source once, then one driving frame in, one animated frame out.

An engine owns the networks on one device and runs F, M, W, G and the stitching MLP. The
keypoint math between M and W is shared by every engine (`EngineBase.driving_keypoints`);
engines differ in how they run the networks (precision, layout, compilation, graphs, copies).

State has one owner each: the engine prepares an immutable `SourceState` per source (once per
engine); the caller owns the driving `Anchor` (one per driving stream, filled by the engine
from the first frame it animates) and the `AnimateOptions`, and passes both to every call.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ..core.config import INPUT_SIZES, AnimateOptions
from ..models import LivePortraitModels
from ..motion import kinematics as kin
from ..motion.kinematics import Motion

log = logging.getLogger(__name__)

LIP_NORMALIZE_THRESHOLD = 0.03  # source lip ratio above which lip normalisation applies


@dataclass
class Ratios:
    """Eye (B, 2: left, right) and lip (B, 1) openness from 203-point landmarks."""

    eye: torch.Tensor
    lip: torch.Tensor


@dataclass(frozen=True, eq=False)
class SourceVolumes:
    """Source-only tensors of W, precomputed in the layout the engine samples them in."""

    feature: torch.Tensor  # (1, 32, D, H, W): F(source)
    compressed: torch.Tensor  # (1, 4, D, H, W): W's dense-motion `compress_source(feature)`


@dataclass(frozen=True, eq=False)
class SourceState:
    """Everything about one source that does not change per frame, prepared by one engine.

    Immutable: an engine prepares it once (`prepare_source`) and only reads it afterwards.
    `lip_delta` is the keypoint shift that closes an open source mouth (used where the
    options ask for lip normalisation); `volumes` the engine's precomputed W inputs, if any.
    """

    feature_3d: torch.Tensor  # (1, 32, 16, 64, 64)
    motion: Motion | None
    x_s: torch.Tensor  # (1, 21, 3)
    ratios: Ratios | None = None
    lip_delta: torch.Tensor | None = None
    volumes: SourceVolumes | None = None


@dataclass(eq=False)
class Anchor:
    """The driving pose that maps to the source's own pose; owned by the caller, one per driving stream.

    Empty (`motion` None) until an engine animates with it: the engine then fills it from the
    first driving frame it sees (`fill`). `reset()` makes the next frame the anchor again.
    `x` and `expression_scale` are computed against the source it was filled for.
    """

    motion: Motion | None = None
    x: torch.Tensor | None = None  # the anchor's keypoints relative to the source
    expression_scale: float = 1.0

    def reset(self) -> None:
        self.motion = None
        self.x = None
        self.expression_scale = 1.0

    def fill(self, source: SourceState, motion: Motion) -> None:
        """Make the one-frame `motion` the driving pose that maps to `source`'s own pose."""
        self.motion = motion
        self.x = kin.relative_keypoints(source.motion, motion, motion)
        self.expression_scale = kin.expression_multiplier(source.x_s, self.x)


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
    """What the pipeline, the bench and the server type against (not `EngineBase`).

    Images are RGB uint8 (H, W, 3) numpy arrays, ideally already crops of the engine's
    `input_size` (256 by default; others are resized). `animate` returns the generated
    (2 * input_size, 2 * input_size, 3) RGB uint8 frame: 512x512 at the default size.
    `prepare_source` once per source; every frame then names its `SourceState`, the caller's
    `Anchor` for that driving stream (filled from the first frame) and the `AnimateOptions`.

    The live path splits a frame: inside `launching()` it runs `extract_motion` and `submit`,
    which returns a `PendingImage` at once where `asynchronous` is true (work queued on the
    device) and after computing it otherwise; `result()` gives what `animate` would.
    """

    name: str
    device: torch.device
    models: LivePortraitModels
    input_size: int
    asynchronous: bool
    timer: StageTimer

    def prepare_source(self, image: np.ndarray, *, ratios: Ratios | None = None) -> SourceState: ...

    def extract_motion(self, image: np.ndarray) -> Motion: ...

    def animate(self, source: SourceState, driving: np.ndarray | Motion, *, anchor: Anchor, options: AnimateOptions,
                ratios: Ratios | None = None) -> np.ndarray: ...

    def animate_batch(self, sources: SourceState | Sequence[SourceState], driving: np.ndarray | Motion, *,
                      anchors: Anchor | Sequence[Anchor], options: AnimateOptions | Sequence[AnimateOptions],
                      ratios: Ratios | None = None) -> np.ndarray: ...

    def launching(self) -> contextlib.AbstractContextManager[None]: ...

    def submit(self, source: SourceState, motion: Motion, *, anchor: Anchor, options: AnimateOptions,
               ratios: Ratios | None = None) -> PendingImage: ...


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

    def generate(self, sources: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> np.ndarray:
        """W + G + conversion: driving keypoints (B, 21, 3) -> (B, 512, 512, 3) uint8, for one
        source or one per slot (`per_slot`)."""
        raise NotImplementedError

    def with_volumes(self, source: SourceState) -> SourceState:
        """`source` with the engine's precomputed source-only tensors (a new state); here unchanged."""
        return source

    # -- shared ----------------------------------------------------------------------------
    @torch.no_grad()
    def prepare_source(self, image: np.ndarray, *, ratios: Ratios | None = None) -> SourceState:
        x = self.to_input(image)
        motion = kin.motion_from_raw(self.motion_raw(x))
        x_s = kin.transform_keypoints(motion)
        lip_delta = None
        if ratios is not None and float(ratios.lip[0, 0]) >= LIP_NORMALIZE_THRESHOLD:
            closed = torch.cat([ratios.lip, torch.zeros_like(ratios.lip)], dim=1)
            lip_delta = kin.retarget(self.models.lip, x_s, closed)
        source = SourceState(feature_3d=self.source_features(x), motion=motion, x_s=x_s, ratios=ratios,
                             lip_delta=lip_delta)
        return self.with_volumes(source)

    @torch.no_grad()
    def extract_motion(self, image: np.ndarray) -> Motion:
        with self.timer.stage("pre"):
            x = self.to_input(image)
        with self.timer.stage("motion"):
            return kin.motion_from_raw(self.motion_raw(x))

    @torch.no_grad()
    def driving_keypoints(self, sources: SourceState | Sequence[SourceState], motion: Motion, *,
                          anchors: Anchor | Sequence[Anchor], options: AnimateOptions | Sequence[AnimateOptions],
                          ratios: Ratios | None = None) -> torch.Tensor:
        """Driving keypoints (B, 21, 3) for B driving motions: relative motion, rescaling, retargeting, stitching.

        `sources`, `anchors` and `options` are each one for every frame or one per slot (B of
        them; one object may fill several slots). Slots are taken in order: an empty anchor takes
        the first of its slots' frames, so one call equals B single-frame calls in slot order.
        `ratios` (driving eye/lip ratios) has B rows.
        """
        b = motion.kp.shape[0]
        slots = [per_slot(sources, b, SourceState, "source states"), per_slot(anchors, b, Anchor, "anchors"),
                 per_slot(options, b, AnimateOptions, "options")]
        if not any(isinstance(s, list) for s in slots):
            return self._source_keypoints(*slots, motion, ratios)
        slots = [s if isinstance(s, list) else [s] * b for s in slots]
        groups: dict[tuple[int, ...], list[int]] = {}  # (source, anchor, options) -> its slots, in order
        for i, key in enumerate(zip(*slots)):
            groups.setdefault(tuple(map(id, key)), []).append(i)
        out: list[torch.Tensor | None] = [None] * b
        for indices in groups.values():
            def pick(t: torch.Tensor, indices: list[int] = indices) -> torch.Tensor:
                # narrow + cat rather than an index tensor: no host->device copy on CUDA
                return torch.cat([t[i : i + 1] for i in indices])

            sub_ratios = None if ratios is None else Ratios(eye=pick(ratios.eye), lip=pick(ratios.lip))
            first = indices[0]
            x_d = self._source_keypoints(slots[0][first], slots[1][first], slots[2][first], motion.map(pick),
                                         sub_ratios)
            for j, i in enumerate(indices):
                out[i] = x_d[j : j + 1]
        return torch.cat(out)

    def _source_keypoints(self, source: SourceState, anchor: Anchor, opts: AnimateOptions, motion: Motion,
                          ratios: Ratios | None) -> torch.Tensor:
        """`driving_keypoints` of B frames that all animate `source` (its x_s broadcast over them)."""
        x_s = source.x_s
        b = motion.kp.shape[0]
        if anchor.motion is None:
            anchor.fill(source, motion.map(lambda t: t[:1]))
        x_d = kin.relative_keypoints(source.motion, motion, anchor.motion)
        if opts.expression_friendly:
            x_d = (x_d - anchor.x) * anchor.expression_scale + x_s
        retargeting = (opts.eye_retargeting or opts.lip_retargeting) and ratios is not None \
            and source.ratios is not None
        if retargeting:
            x_d = x_s.expand(b, -1, -1)
            if opts.eye_retargeting:
                eye = torch.cat([source.ratios.eye.expand(b, -1), ratios.eye[:, :1]], dim=1)
                x_d = x_d + kin.retarget(self.models.eye, x_s, eye)
            if opts.lip_retargeting:
                lip = torch.cat([source.ratios.lip.expand(b, -1), ratios.lip], dim=1)
                x_d = x_d + kin.retarget(self.models.lip, x_s, lip)
            if opts.stitching:
                x_d = kin.stitch(self.models.stitching, x_s, x_d)
        else:
            if opts.stitching:
                x_d = kin.stitch(self.models.stitching, x_s, x_d)
            if opts.normalize_lip and source.lip_delta is not None:
                x_d = x_d + source.lip_delta
        return kin.apply_multiplier(x_s, x_d, opts.multiplier)

    @torch.no_grad()
    def animate_batch(self, sources: SourceState | Sequence[SourceState], driving: np.ndarray | Motion, *,
                      anchors: Anchor | Sequence[Anchor], options: AnimateOptions | Sequence[AnimateOptions],
                      ratios: Ratios | None = None) -> np.ndarray:
        """B driving frames (B, H, W, 3), or their motion, -> (B, 2S, 2S, 3) uint8.

        `sources`, `anchors`, `options`: one for every frame or one per slot (several users or
        faces in one batch; see `driving_keypoints` for the anchors). `ratios`: B rows.
        """
        motion = driving if isinstance(driving, Motion) else self.extract_motion(driving)
        with self.timer.stage("stitching"):
            x_d = self.driving_keypoints(sources, motion, anchors=anchors, options=options, ratios=ratios)
        return self.generate(sources, x_d)

    def animate(self, source: SourceState, driving: np.ndarray | Motion, *, anchor: Anchor, options: AnimateOptions,
                ratios: Ratios | None = None) -> np.ndarray:
        return self.animate_batch(source, driving, anchors=anchor, options=options, ratios=ratios)[0]

    # -- split per-frame path: queue the device work now, take the image later ---------------
    @contextlib.contextmanager
    def launching(self) -> Iterator[None]:
        """Where a frame's device work is queued (`extract_motion`, the caller's motion filter,
        `submit`): here the caller's own stream; the optimized engine's CUDA stream there."""
        yield

    def submit(self, source: SourceState, motion: Motion, *, anchor: Anchor, options: AnimateOptions,
               ratios: Ratios | None = None) -> PendingImage:
        """Start animating one frame from its driving motion; `result()` of the returned
        `PendingImage` is what `animate` returns. Here it is computed before returning."""
        return PendingImage(self.animate(source, motion, anchor=anchor, options=options, ratios=ratios))


def per_slot(items, batch: int, kind: type, what: str = "source states"):
    """`items` (one `kind` or a sequence of them) for a batch of `batch` slots: the one item when
    every slot has the same (then a source's tensors broadcast over the batch), else the list."""
    if isinstance(items, kind):
        return items
    items = list(items)
    if len(items) != batch:
        raise ValueError(f"{len(items)} {what} for a batch of {batch} driving frames")
    return items[0] if all(s is items[0] for s in items) else items
