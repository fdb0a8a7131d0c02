#!/usr/bin/env python3
"""The README's picture of the serve page: the server (synthetic weights, CPU) and headless Chromium
with d0.mp4 as the camera; writes assets/serve-page.png (or the path given).

    python scripts/serve_screenshot.py [OUT.png]
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from lp_live.core.config import Config
from lp_live.server import background_server
from lp_live.tools.browser import Browser, run_page, write_y4m

REPO = Path(__file__).resolve().parents[1]
DRIVING = REPO.parent / "shared" / "assets" / "d0.mp4"


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "assets" / "serve-page.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = Config()
    cfg.engine.weights, cfg.engine.mode, cfg.engine.input_size, cfg.engine.device = "synthetic", "baseline", 128, "cpu"
    cfg.serve.port, cfg.serve.photo_side = 0, 512
    token = "screenshot"
    with tempfile.TemporaryDirectory() as tmp, background_server(cfg, token=token) as server:
        camera = write_y4m(DRIVING, Path(tmp) / "camera.y4m", max_frames=50)
        with Browser(camera) as browser:
            stats = asyncio.run(run_page(browser, f"{server.url}/?token={token}&autostart=1", min_frames=3,
                                         timeout_s=300, screenshot=out, settle_s=1.0))
    print(f"wrote {out}: {stats.get('framesShown')} frames shown, inference {stats.get('inferMs')} ms")
    return 0 if stats.get("error") is None else 1


if __name__ == "__main__":
    sys.exit(main())
