"""Compiled and graphed callables of the optimized engine.

* `FrozenCompiled`: M, W and G each compiled as one function (inductor, `fullgraph=True`,
  `dynamic=False`: one graph per batch size, errors raised, never a silent eager fallback),
  with inductor *freezing* (weights become constants: conv+BN folding, oneDNN weight
  prepacking on CPUs). Three functions instead of one so that a timed run can report W and G
  apart; the boundary costs one materialised feature map. The FX graph cache lives in
  `inductor_cache_dir()` (`persist.py`), and the oneDNN-packed weights no longer keep graphs out
  of it (`cache_frozen_mkldnn_weights`), so a second process loads the generated code.
* `Graph` (CUDA only): one stage captured as a CUDA graph on static buffers, replayed on the
  engine's stream; `StageGraphs` holds them and W's static source buffers; `packed` /
  `unpack` give M one output tensor to capture.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import torch

from .fast import MOTION_KEYS

log = logging.getLogger(__name__)


def inductor_cache_dir() -> Path:
    """Where inductor keeps its FX graph and kernel caches: $TORCHINDUCTOR_CACHE_DIR if set, else this
    machine's folder under <user cache>/lp-live/inductor (`persist.py`; torch's default is under /tmp)."""
    from . import persist

    return persist.user_folder() or persist._chosen or persist.partition(torch.device("cpu"))


def cache_frozen_mkldnn_weights() -> bool:
    """Let inductor's FX graph cache keep graphs whose frozen weights are oneDNN-packed (CPUs).

    With freezing, inductor packs each conv/linear weight for oneDNN (an mkldnn tensor) and then
    bypasses its FX graph cache ("mkldnn tensors unpickleable"): every process lowered and generated
    W and G again. Yet the cache never stores frozen weights: it keys a non-inlined frozen parameter
    by its metadata only and, on a hit, takes the values from the current process's frozen graph
    (`CompiledFxGraphConstantsWithGm`). So the packed weights are keyed here as frozen parameters
    are (shape and dtype; the graph's code, shapes and the weights' layout before packing are in the
    key as ever): a second process skips lowering and code generation. Returns False (and changes
    nothing) where this torch lacks the hooks.
    """
    try:
        from torch._inductor import codecache
        from torch._inductor.freezing_utils import is_frozen_param
        pickler, validator, ident = codecache.FxGraphCachePickler, codecache.CacheabilityValidator, codecache._ident
        reduce_tensor, check_tensor = pickler._reduce_tensor, validator.check_tensor
    except (ImportError, AttributeError) as e:
        log.debug("inductor's FX graph cache keeps no frozen oneDNN weights here (%s)", e)
        return False
    if getattr(pickler, "_lp_live_frozen_mkldnn", False):
        return True

    def frozen_mkldnn(t: torch.Tensor) -> bool:
        return t.is_mkldnn and is_frozen_param(t)

    def _reduce_tensor(self, t):
        if frozen_mkldnn(t):
            return ident, (("frozen mkldnn", tuple(t.shape), str(t.dtype)),)
        return reduce_tensor(self, t)

    def _check_tensor(t) -> None:
        if not frozen_mkldnn(t):
            check_tensor(t)

    pickler._reduce_tensor = _reduce_tensor
    validator.check_tensor = staticmethod(_check_tensor)
    pickler._lp_live_frozen_mkldnn = True
    return True


class FrozenCompiled:
    """`torch.compile(fn)` (inductor, full graph, static shapes) with inductor freezing.

    Freezing turns the weights into constants (conv+BN folding, oneDNN weight prepacking and
    fused conv+activation kernels on CPUs). It must be on while dynamo *traces*, not only in
    inductor's options (`torch.compile(options={"freezing": True})` leaves the parameters as
    graph inputs and nothing is frozen), so every call runs under `config.patch(freezing=True)`;
    compilation happens lazily inside the first call per input shape. Errors propagate.
    """

    def __init__(self, fn) -> None:
        cache_frozen_mkldnn_weights()
        self.fn = torch.compile(fn, fullgraph=True, dynamic=False)

    def __call__(self, *args):
        import torch._inductor.config as inductor_config

        with inductor_config.patch(freezing=True), torch.no_grad():
            return self.fn(*args)



@contextlib.contextmanager
def cudnn_benchmark():
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = saved


class Graph:
    """One captured CUDA graph over static buffers: write `inputs`, `replay()`, read `outputs`.

    The caller owns the input buffers (W's source buffers are shared by every batch size).
    """

    def __init__(self, fn, inputs: tuple[torch.Tensor, ...], *, stream: torch.cuda.Stream, pool,
                 warmup: int = 2) -> None:
        self.inputs = inputs
        with torch.cuda.stream(stream):
            for _ in range(warmup):  # compiles, autotunes and fills cuDNN caches outside the capture
                fn(*inputs)
        stream.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, pool=pool, stream=stream):
            self.outputs = fn(*inputs)

    def replay(self):
        self.graph.replay()
        return self.outputs



def packed(motion_fn):
    """M as one (B, N) float32 tensor (one clone per frame instead of seven), plus the widths."""

    def fn(image):
        raw = motion_fn(image)
        widths = tuple(raw[k].shape[1] for k in MOTION_KEYS)
        return torch.cat([raw[k].float() for k in MOTION_KEYS], dim=1), widths

    return fn


def unpack(packed: torch.Tensor, widths) -> dict[str, torch.Tensor]:
    return dict(zip(MOTION_KEYS, packed.split(list(widths), dim=1)))



class StageGraphs:
    """The engine's CUDA graphs, by (stage, batch size, ...), on one memory pool and stream, and
    the static source buffers W's graphs read.

    W's graphs come in two kinds per batch size: one source (batch-1 source buffers shared by
    every batch size, broadcast in the graph) and a source per slot (batch-B source buffers, a
    slot refreshed only when its source's tensors change). Source tensors are copied into the
    buffers device to device, never on the host.
    """

    def __init__(self, stream: torch.cuda.Stream) -> None:
        self.stream = stream
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple, Graph] = {}
        self._source_buffers: tuple[torch.Tensor, ...] | None = None  # static one-source input
        self._source_loaded: tuple[torch.Tensor, ...] | None = None  # what is in them
        self._slot_buffers: dict[int, tuple[torch.Tensor, ...]] = {}  # per batch size: a source per slot
        self._slot_loaded: dict[int, list[tuple[torch.Tensor, ...]]] = {}

    def __contains__(self, key: tuple) -> bool:
        return key in self.graphs

    def __getitem__(self, key: tuple) -> Graph:
        return self.graphs[key]

    def capture(self, key: tuple, fn, inputs: tuple[torch.Tensor, ...]) -> Graph:
        # cuDNN autotuning only while warming up and capturing: the chosen kernels are baked into
        # the graph, and the global flag (which the baseline engine also sees) is restored.
        with cudnn_benchmark():
            graph = Graph(fn, inputs, stream=self.stream, pool=self.pool)
        log.debug("captured %s", key)
        self.graphs[key] = graph
        return graph

    def load_source(self, tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """The batch-1 static source buffers of the one-source graphs (every batch size reads
        them, broadcast), refreshed when the source's tensors change."""
        if self._source_buffers is None:
            self._source_buffers = tuple(t.clone() for t in tensors)
        elif self._source_loaded is None or any(a is not b for a, b in zip(tensors, self._source_loaded)):
            for buf, t in zip(self._source_buffers, tensors):
                buf.copy_(t, non_blocking=True)
        self._source_loaded = tensors
        return self._source_buffers

    def load_slots(self, per: list[tuple[torch.Tensor, ...]], stack) -> tuple[torch.Tensor, ...]:
        """The batch-b static source buffers of the per-slot graphs (`stack` builds them); a slot
        is copied only when its source's tensors changed since the last batch of this size."""
        b = len(per)
        if b not in self._slot_buffers:
            self._slot_buffers[b] = stack(per)
            self._slot_loaded[b] = per
            return self._slot_buffers[b]
        loaded = self._slot_loaded[b]
        for i, tensors in enumerate(per):
            if any(a is not c for a, c in zip(tensors, loaded[i])):
                for buf, t in zip(self._slot_buffers[b], tensors):
                    buf[i : i + 1].copy_(t, non_blocking=True)
                loaded[i] = tensors
        return self._slot_buffers[b]
