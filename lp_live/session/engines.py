"""One engine per mode, built on first use, for the desktop app and the server alike.

Engines hold device state (compiled code, CUDA graphs and streams): build and use them on one
thread, the inference thread of the desktop app or the server's step thread. The one exception
is `EnginePool.build_in_background`: the optimized engine is built, compiled and warmed on a
thread of its own (on CUDA on a stream of its own) while the baseline engine animates, then
handed to the using thread between two frames (`adopt`), which synchronises with that stream.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..core.config import AnimateOptions
from ..core.progress import TICK_S
from ..engine import Anchor, Engine
from .photo import SourcePhoto

log = logging.getLogger(__name__)

# Background build or wait: measured once on the shared 2-core development machine (load ~9 from
# other jobs, so rough; scripts/measure_background_compile.py, synthetic weights, input 256, cold
# inductor cache): baseline 27.7 s/frame alone, 40.8 s/frame (median of 15) while the optimized
# engine compiled beside it, i.e. ~1.5x slower; the build and its warm frame took 613 s meanwhile.
# An animated face at 1.5x the baseline's frame time beats a "starting…" frame for the whole
# compile, so the background build is the default everywhere; `--wait-for-optimized` keeps the
# old behaviour. Rerun the script on a quiet machine for figures worth quoting.


@dataclass
class BackgroundBuild:
    """An engine being built on its own thread, until the using thread adopts it."""

    mode: str
    thread: threading.Thread
    t_start: float  # perf_counter() when the build started
    stream: torch.cuda.Stream | None = None  # the build's CUDA stream (None on CPU)
    exclusive: bool = False  # its warm frame runs holding the pool's device lock (see `build_in_background`)
    engine: Engine | None = None
    error: BaseException | None = None
    done: threading.Event | None = None

    def seconds(self) -> float:
        return time.perf_counter() - self.t_start


class EnginePool:
    """The engines of `modes`, each built by `factory(mode)` the first time it is asked for."""

    def __init__(self, factory: Callable[[str], Engine], modes: Sequence[str]) -> None:
        self.modes = tuple(modes)
        self._factory = factory
        self._engines: dict[str, Engine] = {}
        self._lock = threading.Lock()
        self._background: BackgroundBuild | None = None
        # held by a frame of the running engine (`Animator.submit` to `finish`) and by an exclusive
        # background warm frame: the two never overlap (CUDA graph capture, see `build_in_background`)
        self.device_lock = threading.RLock()
        self.background_error: str | None = None  # why the last background build failed, one line

    def get(self, mode: str) -> Engine:
        """The engine of `mode`, built now when it is not yet (one being built in the background is
        waited for and adopted)."""
        if mode not in self.modes:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(self.modes)}")
        background = self._background
        if mode not in self._engines and background is not None and background.mode == mode:
            background.thread.join()
            self.adopt()
        if mode not in self._engines:
            log.info("building the %s engine", mode)
            self._engines[mode] = self._factory(mode)
        return self._engines[mode]

    def built(self) -> dict[str, Engine]:
        """The engines built so far, by mode."""
        return dict(self._engines)

    # -- the optimized engine compiled beside the running one ------------------------------------
    def build_in_background(self, mode: str, warm: Callable[[Engine], None], *,
                            device: torch.device | None = None,
                            factory: Callable[[str], Engine] | None = None,
                            exclusive: bool | None = None) -> None:
        """Build engine `mode` and run `warm(engine)` (one throwaway frame: compiles it) on a new
        thread; `ready()` says when `adopt()` may hand it over. On CUDA the thread works on its own
        stream, so that its kernels do not queue behind (or in front of) the running engine's.
        `factory`: builds it instead of the pool's factory.

        `exclusive` (default: on CUDA) runs the warm frame (compile, CUDA graph capture) holding
        `device_lock`, which the running engine's frames also hold: a graph captured in the
        default ("global") capture mode fails when another thread synchronises or allocates
        meanwhile, and the running engine's frames do both. The engine itself is built unlocked.
        Once the capture is thread-local (`torch.cuda.graph(..., capture_error_mode="thread_local")`
        in `engine/compiled.py`), the lock can go and the frames run on during the compile too."""
        if mode not in self.modes:
            raise ValueError(f"unknown mode {mode!r}; choose one of {', '.join(self.modes)}")
        if mode in self._engines or self._background is not None:
            return
        stream = torch.cuda.Stream(device) if device is not None and device.type == "cuda" else None
        done = threading.Event()
        make = factory or self._factory
        exclusive = stream is not None if exclusive is None else exclusive
        build = BackgroundBuild(mode, threading.Thread(), time.perf_counter(), stream, exclusive, done=done)

        def warm_up_engine(engine: Engine) -> None:
            if not exclusive:
                warm(engine)
                return
            with self.device_lock:
                warm(engine)

        def run() -> None:
            try:
                if stream is None:
                    engine = make(mode)
                    warm_up_engine(engine)
                else:
                    with torch.cuda.device(device), torch.cuda.stream(stream):
                        engine = make(mode)
                        warm_up_engine(engine)
                    stream.synchronize()  # everything it queued is done before anyone may use it
                build.engine = engine
            except Exception as e:  # the running engine goes on; the failure is said once
                build.error = e
            finally:
                done.set()

        def tick() -> None:  # the terminal says it too, as a progress step would
            while not done.wait(TICK_S):
                log.info("%s engine compiling... %.0f s (in the background)", mode, build.seconds())

        build.thread = threading.Thread(target=run, name=f"lp-live-build-{mode}", daemon=True)
        self._background = build
        log.info("building the %s engine in the background", mode)
        build.thread.start()
        threading.Thread(target=tick, name=f"lp-live-build-{mode}-progress", daemon=True).start()

    def pending(self) -> BackgroundBuild | None:
        """The background build not yet adopted (None: none)."""
        return self._background

    def exclusive(self) -> bool:
        """True while an exclusive background build runs: a frame then holds `device_lock`."""
        build = self._background
        return build is not None and build.exclusive and build.done is not None and not build.done.is_set()

    def ready(self) -> bool:
        """True when a background build has finished (built or failed) and `adopt` would not wait."""
        build = self._background
        return build is not None and build.done is not None and build.done.is_set()

    def adopt(self) -> str | None:
        """Hand a finished background build over to the calling thread (between two frames): its
        mode, or None when it failed (the reason is logged and kept in `background_error`)."""
        build = self._background
        if build is None or build.done is None or not build.done.is_set():
            return None
        with self._lock:
            self._background = None
        if build.error is not None or build.engine is None:
            self.background_error = f"{build.mode} engine failed: {' '.join(str(build.error).split())}"
            log.error("%s; staying on the engine in use", self.background_error)
            return None
        if build.stream is not None:  # the build's work is ordered before the caller's next kernels
            torch.cuda.current_stream(build.stream.device).wait_stream(build.stream)
        self._engines[build.mode] = build.engine
        log.info("the %s engine is ready after %.1f s in the background", build.mode, build.seconds())
        return build.mode


def warm_frame(photo: SourcePhoto, mode: str) -> Callable[[Engine], None]:
    """One throwaway frame of `photo` driving itself with the `mode` engine (compiles it), without
    touching `photo`'s states (the background thread must not write what the live thread reads)."""

    def warm(engine: Engine) -> None:
        engine.animate(engine.prepare_source(photo.input, ratios=photo.ratios), photo.input, anchor=Anchor(),
                       options=AnimateOptions())

    return warm


def warm_up(pool: EnginePool, mode: str, photo: SourcePhoto) -> None:
    """Build the `mode` engine and run one frame (the photo driving itself, a throwaway anchor):
    compilation and graph capture happen now instead of on someone's first frame."""
    engine = pool.get(mode)
    engine.animate(photo.state(engine, mode), photo.input, anchor=Anchor(), options=AnimateOptions())
