"""Shared fixtures: the reference kit and assets in ../shared, synthetic models."""

from __future__ import annotations

import random
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


def pytest_runtest_setup(item: pytest.Item) -> None:
    """`@pytest.mark.native_bf16` tests skip, saying why, on a CPU that only emulates bf16 (an
    AVX2-only CPU, or `make test-avx2`): bf16 convolutions there are hundreds of times slower."""
    if item.get_closest_marker("native_bf16") is None:
        return
    from lp_live.engine.precision import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("bf16 is emulated on this CPU (no AVX-512 BF16 or AMX, or LP_LIVE_CPU_ISA caps it): "
                    "bf16 convolutions here run hundreds of times slower than fp32, which lp-live never picks")


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
    """The synthetic networks, loaded from the user's weights cache like official files (the first
    process on a machine builds the files there; every later one, and every CLI subprocess, loads them)."""
    from lp_live.models import synthetic_liveportrait

    return synthetic_liveportrait()


def write_official_layout(models, base: Path) -> Path:
    """The seven networks' weights saved as the five official files under `base`."""
    from lp_live.models.checkpoint import NETWORK_NAMES, save_official_layout

    return save_official_layout({name: getattr(models, name).state_dict() for name in NETWORK_NAMES}, base)


@pytest.fixture(scope="session")
def synthetic_weights_dir(synthetic_models, tmp_path_factory) -> Path:
    """The synthetic weights as the hub lays out the official files (`<root>/liveportrait/...`); returns
    the `liveportrait` folder. No ../shared needed. Tests must not modify it (copy or symlink first)."""
    return write_official_layout(synthetic_models, tmp_path_factory.mktemp("weights") / "liveportrait")


@pytest.fixture
def linked_weights(synthetic_weights_dir, tmp_path) -> Path:
    """`tmp_path`/liveportrait/... as symlinks to the synthetic official files; returns the `liveportrait`
    folder. A test replaces (unlinks, then writes) what it breaks."""
    base = tmp_path / "liveportrait"
    for src in synthetic_weights_dir.rglob("*.pth"):
        (base / src.relative_to(synthetic_weights_dir)).parent.mkdir(parents=True, exist_ok=True)
        (base / src.relative_to(synthetic_weights_dir)).symlink_to(src)
    return base


def _damage(path: Path, data: bytes | None = None) -> None:
    content = bytearray(path.read_bytes())
    data = data if data is not None else random.Random(0).randbytes(4096)
    middle = len(content) // 2
    content[middle:middle + len(data)] = data
    path.unlink()
    path.write_bytes(bytes(content))


@pytest.fixture
def damage():
    """damage(path, data=None): 4 KB of seeded random bytes (or `data`) written into the middle of a copy of
    `path`, a real-format file: the zip container stays readable, the bytes land in tensor data."""
    return _damage


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
