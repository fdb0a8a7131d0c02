"""Shared fixtures: the reference kit and assets in ../shared, synthetic models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the checkout (developers, CI); ./shared inside it where the checkout is copied
# alone (the GPU machine: scripts/gpu_check.sh)
SHARED = next((p for p in (REPO.parent / "shared", REPO / "shared") if p.is_dir()), REPO.parent / "shared")
REFERENCE = SHARED / "reference"
ASSETS = SHARED / "assets"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def kit():
    """The reference kit's `weights` and `kit_selftest` modules (../shared/reference)."""
    if not (REFERENCE / "weights.py").is_file():
        pytest.skip(f"reference kit not found at {REFERENCE}")
    sys.path.insert(0, str(REFERENCE))
    import kit_selftest
    import weights

    return weights, kit_selftest


@pytest.fixture(scope="session")
def assets() -> Path:
    if not (ASSETS / "s6.jpg").is_file():
        pytest.skip(f"test assets not found at {ASSETS}")
    return ASSETS


@pytest.fixture(scope="session")
def kit_models(kit):
    """The seven networks with the kit's synthetic weights (those the fixtures were made with)."""
    from lp_live.models import LivePortraitModels, build

    weights, _ = kit
    manifest = weights.load_manifest()
    nets = {}
    for name in ("appearance_feature_extractor", "motion_extractor", "warping_module", "spade_generator",
                 "stitching", "lip", "eye"):
        nets[name] = build(name)
        nets[name].load_state_dict(weights.make_state_dict(name, manifest), strict=True)
        nets[name].requires_grad_(False)
    return LivePortraitModels(**nets, kind="synthetic", source="reference kit")


@pytest.fixture(scope="session")
def synthetic_models():
    from lp_live.models import synthetic_liveportrait

    return synthetic_liveportrait()


@pytest.fixture
def no_tf32():
    """CUDA float32 without TF32 (convolutions and matmuls), restored afterwards."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture(scope="session")
def video(assets) -> str:
    """The shared driving video (78 frames, 25 fps) as a path string."""
    return str(assets / "d0.mp4")


@pytest.fixture
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)


@pytest.fixture
def no_virtualcam(monkeypatch):
    from lp_live.stream import platform

    monkeypatch.setattr(platform, "v4l2loopback_devices", lambda: [])
