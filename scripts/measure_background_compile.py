"""Baseline frame time alone vs while the optimized engine compiles on a background thread.

    PYTHONPATH=. python scripts/measure_background_compile.py [--input-size 256] [--frames 6]

Prints one line: the median baseline ms per frame alone and while the optimized engine builds and
compiles beside it, and how long that build took. The comment above `EnginePool` in
`lp_live/session/engines.py` (background build or wait) quotes such a run.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import torch

from lp_live.core.config import AnimateOptions, EngineConfig
from lp_live.engine import Anchor
from lp_live.engine.factory import build_engine
from lp_live.models import load_liveportrait


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--frames", type=int, default=6)
    args = p.parse_args()
    device = torch.device("cpu")
    models = load_liveportrait("synthetic", device=device)
    cfg = EngineConfig(input_size=args.input_size)
    base = build_engine("baseline", models, device, cfg)
    src = np.random.default_rng(0).integers(0, 255, (args.input_size, args.input_size, 3), np.uint8)
    state = base.prepare_source(src)

    def frame() -> float:
        t0 = time.perf_counter()
        base.animate(state, src, anchor=Anchor(), options=AnimateOptions())
        return (time.perf_counter() - t0) * 1e3

    frame()
    alone = [frame() for _ in range(args.frames)]
    done = threading.Event()
    t_build = [0.0]

    def build() -> None:
        t0 = time.perf_counter()
        eng = build_engine("optimized", models, device, cfg)
        eng.animate(eng.prepare_source(src), src, anchor=Anchor(), options=AnimateOptions())
        t_build[0] = time.perf_counter() - t0
        done.set()

    threading.Thread(target=build, daemon=True).start()
    during = []
    while not done.is_set():
        during.append(frame())
    print(f"input {args.input_size}, torch threads {torch.get_num_threads()}: baseline alone "
          f"{statistics.median(alone):.0f} ms/frame; during the background build {statistics.median(during):.0f} "
          f"ms/frame ({len(during)} frames); background build + warm frame {t_build[0]:.1f} s")


if __name__ == "__main__":
    main()
