"""The optimized engine: same networks and keypoint math as the baseline, run for speed.

What differs from `BaselineEngine`, and where it is decided (all when the engine is built):

* **Source once.** `with_volumes` stores F(source) and the dense-motion network's compressed
  volume (`compress_source`, the only source-only part of W) in the `SourceState`; every
  frame reuses them. One source for a batch of B driving frames is broadcast (views, matmul
  broadcasting, stride-0 kernel reads), never copied per slot; a batch mixing sources stacks
  the slots' tensors.
* **Precision per module** (`precision.py`): float32 for the MLPs, keypoints and every
  coordinate; W's convolutions and G in `precision` (fp16 on CUDA; bf16 or float32 per
  network on CPUs, as measured); on CUDA, M's backbone in the W/G dtype (`FastMotion`).
* **Private copies** (`fast.py`, rewrites in `rewrites.py` / `polyphase.py` as the
  `RewritePlan` of `plan.py` says, W's sampling through one `lp_live.kernels.Sampler`).
* **torch.compile and CUDA graphs** (`compiled.py`): M, W and G compiled with inductor
  freezing, what was generated kept between runs (`persist.py`: a second start loads it); on
  CUDA each stage captured per batch size (after loading) and replayed on the engine's stream.
  The first call per batch size is timed into `compile_seconds` (compile + warm-up + graph
  capture + one run).
* **Pre/post on the device.** uint8 -> float, resize and normalisation before M/F, and the
  official clip/scale/clip/truncate conversion to uint8 after G, run on the device. The
  per-frame path never synchronises the host except to wait for the final pinned,
  non-blocking device->host copy (and, on the very first driving frame, the anchor's hull
  volume in the shared keypoint math).

The `StageTimer` stages are the baseline's ("copy_h2d", "pre", "motion", "stitching",
"warping", "generator", "post", "copy_d2h"); with the timer disabled nothing synchronises.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from ..core.config import AnimateOptions
from ..motion.kinematics import Motion
from . import persist
from .base import Anchor, EngineBase, PendingImage, Ratios, SourceState, SourceVolumes, per_slot
from .compiled import FrozenCompiled, StageGraphs, packed, unpack
from .dtypes import NAMES
from .fast import FastGenerator, FastMotion, FastWarping, to_uint8
from .plan_choice import REWRITE_PLANS, choose_plan
from .precision import resolve_precisions
from .transfer import PinnedTransfers

log = logging.getLogger(__name__)


class OptimizedEngine(EngineBase):
    """Source-cached, mixed-precision, compiled (and on CUDA graph-replayed) engine.

    Args:
        models: the shared networks (not modified; W and G are copied).
        device: where to run.
        input_size: network input side (see `EngineBase`).
        precision: "auto" (fp16 on CUDA; on CPUs with native bf16, bf16 or fp32 per network
            as measured by `cpu_precision`, else fp32), "fp32", "bf16" or "fp16": the dtype
            of W's and G's convolutions.
        compile: torch.compile M, W and G (inductor, freezing).
        cuda_graph: on CUDA, capture each stage per batch size and replay it.
        kernels: W's sampling through the fused kernels (None: the plan's default, on for
            CUDA with triton).
        rewrite_plan: on CPUs, "measured" keeps each rewrite only where it beats its absence on
            this CPU's ISA (`plan_choice`, cached), "default" takes `default_plan`'s table.
    """

    name = "optimized"

    def __init__(self, models, device, *, input_size: int = 256, precision: str = "auto", compile: bool = True,
                 cuda_graph: bool = True, kernels: bool | None = None, rewrite_plan: str = "measured") -> None:
        super().__init__(models, device, input_size=input_size)
        # W's and G's dtypes: chosen once here (on CPUs with "auto": measured or cached)
        self.dtypes, self.precision_source = resolve_precisions(precision, self.device)
        self.dtype = self.dtypes["warping"]  # also the dtype of the feature G decodes
        self.precisions = {"motion": "fp32", **{k: NAMES[v] for k, v in self.dtypes.items()}}
        w, g = self.precisions["warping"], self.precisions["generator"]
        self.precision = w if w == g else f"W {w}, G {g}"
        self.compiled = compile
        self.uses_cuda_graph = cuda_graph and self.device.type == "cuda"
        # W's part of the plan follows W's dtype, G's G's; on CPUs measured per ISA (or cached)
        if rewrite_plan not in REWRITE_PLANS:
            raise ValueError(f"unknown rewrite plan {rewrite_plan!r}; choose one of {', '.join(REWRITE_PLANS)}")
        self.plan, self.plan_report = choose_plan(models, self.device, self.dtypes, input_size,
                                                  measured=rewrite_plan == "measured")
        if kernels is not None:  # override the default (on for CUDA with triton)
            self.plan = replace(self.plan, kernels=kernels)
        self.uses_kernels = self.plan.kernels
        self.volume_format = torch.channels_last_3d if self.plan.sample_channels_last else torch.contiguous_format
        # seconds of the first call per "<stage>@<batch>": compile + warm-up/capture + one run
        self.compile_seconds: dict[str, float] = {}

        grid = _feature_grid(models, input_size)
        self.warping = FastWarping(models.warping_module, dtype=self.dtype, plan=self.plan, grid_shape=grid)
        self.generator = FastGenerator(models.spade_generator, dtype=self.dtypes["generator"],
                                       channels_last=self.plan.generator_channels_last,
                                       polyphase=self.plan.polyphase_spade)
        self.warping.to(self.device)
        self.generator.to(self.device)
        # M: float32 on CPUs (bf16 M costs pose accuracy for little time there); on CUDA the
        # backbone in the W/G dtype like the baseline's fp16 autocast (plain float32 without
        # TF32 was slower than the baseline), heads float32
        low = self.device.type == "cuda" and self.dtype != torch.float32
        self._motion = FastMotion(models.motion_extractor, self.dtype) if low else models.motion_extractor
        self._warp_fn, self._decode_fn, self._motion_fn = self.warping, self.generator, self._motion
        if compile:
            self._setup_compile()

        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self._graphs = StageGraphs(self.stream) if self.uses_cuda_graph else None
        self._transfers = PinnedTransfers(self.device)
        self.asynchronous = self.stream is not None  # `submit` queues on the stream and returns
        log.info("optimized engine on %s: W/G in %s (%s), compile=%s, cuda_graph=%s, plan=%s", self.device,
                 self.precision, self.precision_source, compile, self.uses_cuda_graph, self.plan)

    # -- setup -----------------------------------------------------------------------------
    def _setup_compile(self) -> None:
        # the compiled graphs and kernels kept between runs, in this machine's folder (persist.py)
        log.info("compile cache: %s", persist.use_cache(self.device))
        self._warp_fn = FrozenCompiled(self.warping)
        self._decode_fn = FrozenCompiled(self.generator)
        self._motion_fn = FrozenCompiled(self._motion)

    @contextlib.contextmanager
    def _on_stream(self):
        """Run the enclosed work on the engine's stream, ordered after and before the caller's."""
        if self.stream is None or torch.cuda.current_stream(self.device) == self.stream:
            yield
            return
        caller = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(caller)
        try:
            with torch.cuda.stream(self.stream):
                yield
        finally:
            caller.wait_stream(self.stream)

    # -- entry points: the whole per-frame path runs on the engine's stream ----------------
    def prepare_source(self, image, *, ratios=None) -> SourceState:
        with self._on_stream():
            return super().prepare_source(image, ratios=ratios)

    def extract_motion(self, image):
        with self._on_stream():
            return super().extract_motion(image)

    def animate_batch(self, sources, driving, *, anchors, options, ratios=None):
        with self._on_stream():
            return super().animate_batch(sources, driving, anchors=anchors, options=options, ratios=ratios)

    # -- networks --------------------------------------------------------------------------
    def to_input(self, images: np.ndarray) -> torch.Tensor:
        if images.ndim == 3:
            images = images[None]
        with self.timer.stage("copy_h2d"):
            x = self._transfers.upload(np.ascontiguousarray(images))
        x = x.permute(0, 3, 1, 2).float() / 255.0  # (B, H, W, 3) uint8 -> (B, 3, H, W)
        size = self.input_size
        if x.shape[2:] != (size, size):
            # bilinear without antialiasing: cv2.resize's default (INTER_LINEAR), without its
            # intermediate rounding to uint8
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
        return x.clamp(0, 1).contiguous()

    def source_features(self, image: torch.Tensor) -> torch.Tensor:
        # once per source: the shared float32 F, eager
        return self.models.appearance_feature_extractor(image)

    def volumes(self, feature_3d: torch.Tensor) -> SourceVolumes:
        """F(source) and the compressed volume, in the layout the warp samples them in."""
        compressed = self.models.warping_module.dense_motion_network.compress_source(feature_3d)
        return SourceVolumes(feature=feature_3d.contiguous(memory_format=self.volume_format),
                             compressed=compressed.contiguous(memory_format=self.volume_format))

    def with_volumes(self, source: SourceState) -> SourceState:
        return replace(source, volumes=self.volumes(source.feature_3d))

    def motion_raw(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        b = image.shape[0]
        first = self._first(f"motion@{b}")
        if self._graphs is not None:
            key = ("motion", b)
            graph = self._graphs[key] if key in self._graphs else self._graphs.capture(
                key, packed(self._motion_fn), (image.clone(),))
            graph.inputs[0].copy_(image, non_blocking=True)
            motion, widths = graph.replay()
            raw = unpack(motion.clone(), widths)  # graph outputs are overwritten by the next replay
        else:
            raw = self._motion_fn(image)
        first()
        return raw

    def warp(self, sources: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> torch.Tensor:
        """W: the 2-D feature G decodes, (B, 256, H, W) in the engine's dtype (never graph-replayed)."""
        feature, compressed, x_s = self._source(sources, x_d.shape[0])
        return self._warp_fn(feature, compressed, x_d.float(), x_s)

    def decode(self, feature: torch.Tensor) -> torch.Tensor:
        """G: feature -> float32 image (B, 3, 2S, 2S) in (0, 1) (never graph-replayed)."""
        return self._decode_fn(feature)

    def generate(self, sources: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> np.ndarray:
        with self._on_stream():
            image = self._generate_on_device(sources, x_d)
            with self.timer.stage("copy_d2h"):
                return self._download(image)

    def _first(self, key: str):
        """A callable that, on the first call for `key` only, records the wall time since now."""
        if key in self.compile_seconds or not (self.compiled or self.uses_cuda_graph):
            return lambda: None
        t0 = time.perf_counter()

        def done() -> None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.compile_seconds[key] = time.perf_counter() - t0
            log.info("%s: first call (compile, warm-up, capture, one run) %.1f s", key, self.compile_seconds[key])

        return done

    # -- W's source inputs -------------------------------------------------------------------
    def _source_tensors(self, source: SourceState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(feature volume, compressed volume, x_s) of one source, each with batch 1; a source
        another engine prepared has no volumes of this engine: computed for this call."""
        volumes = source.volumes or self.volumes(source.feature_3d)
        return volumes.feature, volumes.compressed, source.x_s.float()

    def _source(self, sources: SourceState | Sequence[SourceState], b: int,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """W's source inputs for a batch of b: one source's own batch-1 tensors (W broadcasts
        them), or the slots' sources stacked (batch b; a copy per call)."""
        slots = per_slot(sources, b, SourceState)
        if isinstance(slots, SourceState):
            return self._source_tensors(slots)
        return self._stack([self._source_tensors(s) for s in slots])

    def _stack(self, per: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-slot (feature, compressed, x_s) stacked into batch tensors, volumes in the sampling layout."""
        return (torch.cat([p[0] for p in per]).contiguous(memory_format=self.volume_format),
                torch.cat([p[1] for p in per]).contiguous(memory_format=self.volume_format),
                torch.cat([p[2] for p in per]))

    # -- W, G and the conversion, queued on the current stream ---------------------------------
    def _generate_on_device(self, sources: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> torch.Tensor:
        """W, G and the uint8 conversion, queued on the current stream: the (B, 2S, 2S, 3) image on the device."""
        first = self._first(f"generate@{x_d.shape[0]}")
        if self._graphs is not None:
            image = self._generate_graphed(sources, x_d.float())
        else:
            with self.timer.stage("warping"):
                feature = self.warp(sources, x_d)
            with self.timer.stage("generator"):
                image = self.decode(feature)
            with self.timer.stage("post"):
                image = to_uint8(image)
        first()
        return image

    def _generate_graphed(self, sources: SourceState | Sequence[SourceState], x_d: torch.Tensor) -> torch.Tensor:
        b = x_d.shape[0]
        slots = per_slot(sources, b, SourceState)
        stacked = not isinstance(slots, SourceState)  # graphs read per-slot source buffers
        graphs = self._graphs
        if stacked:
            f_s, compressed, x_s = graphs.load_slots([self._source_tensors(s) for s in slots], self._stack)
        else:
            f_s, compressed, x_s = graphs.load_source(self._source_tensors(slots))
        key = (b, stacked)
        if ("post", *key) not in graphs:
            w = graphs.capture(("warping", *key), lambda *a: (self._warp_fn(*a),), (f_s, compressed, x_d.clone(), x_s))
            g = graphs.capture(("generator", *key), lambda f: (self._decode_fn(f),), w.outputs)
            graphs.capture(("post", *key), lambda im: (to_uint8(im),), g.outputs)
        with self.timer.stage("warping"):
            w = graphs[("warping", *key)]
            w.inputs[2].copy_(x_d, non_blocking=True)
            w.replay()
        with self.timer.stage("generator"):
            graphs[("generator", *key)].replay()
        with self.timer.stage("post"):
            return graphs[("post", *key)].replay()[0]

    def _download(self, image: torch.Tensor) -> np.ndarray:
        if self.device.type != "cuda":
            return image.numpy()
        return self._transfers.download(image).result()  # the only host wait of the frame

    # -- split per-frame path (CUDA): queue the whole frame, wait for it in `result()` -------
    @contextlib.contextmanager
    def launching(self):
        """The engine's stream as the current stream, ordered after the caller's queued work.

        Unlike `_on_stream`, the caller's stream is not made to wait for the engine's at the end:
        the host waits for a frame through the event of its `PendingImage`, so work the caller
        queues meanwhile (the previous frame's paste-back) does not wait for this frame.
        """
        if self.stream is None or torch.cuda.current_stream(self.device) == self.stream:
            yield
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            yield

    @torch.no_grad()
    def submit(self, source: SourceState, motion: Motion, *, anchor: Anchor, options: AnimateOptions,
               ratios: Ratios | None = None) -> PendingImage:
        """On CUDA: queue keypoints, W, G, the uint8 conversion and a non-blocking copy into a
        pinned buffer on the engine's stream, and return without waiting; elsewhere `animate`."""
        if self.stream is None:
            return super().submit(source, motion, anchor=anchor, options=options, ratios=ratios)
        with self.launching():
            x_d = self.driving_keypoints(source, motion, anchors=anchor, options=options, ratios=ratios)
            return self._transfers.download(self._generate_on_device(source, x_d)[0])


def _feature_grid(models, input_size: int) -> tuple[int, int, int]:
    """(D, H, W) of the feature volume for `input_size`: F downsamples 4x, D = reshape depth."""
    depth = models.appearance_feature_extractor.reshape_depth
    return depth, input_size // 4, input_size // 4

