"""Official LivePortrait checkpoints: find, load strictly, or build deterministic synthetic weights.

The official files (hub repository `KwaiVGI/LivePortrait`, folder `liveportrait/`):

    base_models/appearance_feature_extractor.pth    flat state dict
    base_models/motion_extractor.pth                flat state dict, keys under `detector.`
    base_models/warping_module.pth                  flat state dict
    base_models/spade_generator.pth                 flat state dict
    retargeting_models/stitching_retargeting_module.pth
        {"retarget_shoulder": sd, "retarget_mouth": sd, "retarget_eye": sd}, keys `module.mlp.N.*`
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import integrity
from .integrity import WeightsError
from .registry import build

log = logging.getLogger(__name__)

HUB_REPO = "KwaiVGI/LivePortrait"
BASE_FILES = {
    "appearance_feature_extractor": "base_models/appearance_feature_extractor.pth",
    "motion_extractor": "base_models/motion_extractor.pth",
    "warping_module": "base_models/warping_module.pth",
    "spade_generator": "base_models/spade_generator.pth",
}
RETARGETING_FILE = "retargeting_models/stitching_retargeting_module.pth"
# network name -> sub-dict of the retargeting file
RETARGETING_ENTRIES = {"stitching": "retarget_shoulder", "lip": "retarget_mouth", "eye": "retarget_eye"}
CHECKPOINT_FILES = (*BASE_FILES.values(), RETARGETING_FILE)
SYNTHETIC = "synthetic"


@dataclass
class LivePortraitModels:
    """The seven networks, in eval mode on one device, and where their weights came from."""

    appearance_feature_extractor: nn.Module
    motion_extractor: nn.Module
    warping_module: nn.Module
    spade_generator: nn.Module
    stitching: nn.Module
    lip: nn.Module
    eye: nn.Module
    kind: str  # "real" or "synthetic"
    source: str  # directory of the files, or "synthetic"

    def named(self) -> dict[str, nn.Module]:
        return {name: getattr(self, name) for name in (*BASE_FILES, *RETARGETING_ENTRIES)}


def default_cache_dir() -> Path:
    """Where `lp-live download-weights` puts the official files unless told otherwise."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lp-live" / "weights"


def find_checkpoint_root(root: str | os.PathLike) -> Path:
    """The folder holding `base_models/` and `retargeting_models/`: `root` or `root/liveportrait`."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise WeightsError(f"weights directory {root} does not exist; pass --weights DIR, "
                           "run `lp-live download-weights`, or use --weights synthetic")
    candidates = (root, root / "liveportrait", root / "pretrained_weights" / "liveportrait")
    base = next((c for c in candidates if (c / "base_models").is_dir()), root)
    missing = [f for f in CHECKPOINT_FILES if not (base / f).is_file()]
    if missing:
        raise WeightsError(f"{base}: missing {', '.join(missing)}; run `lp-live download-weights {root}` "
                           "or use --weights synthetic")
    return base


def _read(path: Path) -> Mapping[str, object]:
    """The object in a checkpoint file, after checking it against its recorded digest (if any); only
    tensors and containers are unpickled."""
    if not path.is_file():
        raise WeightsError(f"{path}: file not found; run `lp-live download-weights` or use --weights synthetic")
    integrity.verify_digest(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated or foreign files
        code = integrity.code_in_pickle(e)
        if code is not None:
            raise integrity.DamagedWeightsError(
                f"{path}: refused: the file contains code (its pickle calls {code}), not only weights, and lp-live "
                "never runs code from a weights file; delete it and get the official files with "
                "`lp-live download-weights`") from e
        raise WeightsError(f"{path}: cannot be read as a PyTorch checkpoint ({type(e).__name__}: "
                           f"{integrity.brief_torch_error(e)}); the file is damaged or truncated, download it "
                           "again with `lp-live download-weights`") from e
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj


def check_state_dict(expected: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor], origin: str) -> None:
    """The keys and shapes of `expected` exactly, every tensor finite; else one error naming `origin` and
    every bad key."""
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    misshaped = [
        f"{k} {tuple(v.shape)} != {tuple(expected[k].shape)}"
        for k, v in state_dict.items()
        if k in expected and isinstance(v, torch.Tensor) and v.shape != expected[k].shape
    ]
    if missing or unexpected or misshaped:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("mis-shaped keys", misshaped)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise WeightsError(f"{origin}: does not match the network; " + "; ".join(parts))
    integrity.check_finite(state_dict, origin)


def load_strict(module: nn.Module, state_dict: Mapping[str, torch.Tensor], origin: str) -> None:
    """`load_state_dict(strict=True)` with one error naming the origin and every bad key; every tensor
    must be finite."""
    check_state_dict(module.state_dict(), state_dict, origin)
    module.load_state_dict(state_dict, strict=True)


def retargeting_state_dict(checkpoint: Mapping[str, object], name: str, path: Path) -> dict[str, torch.Tensor]:
    """One MLP's sub-dict of the retargeting file, with every `module.` removed from its keys."""
    entry = RETARGETING_ENTRIES[name]
    sub = checkpoint.get(entry)
    if not isinstance(sub, Mapping):
        raise WeightsError(f"{path}: no {entry!r} entry; found {sorted(map(str, checkpoint))}")
    return {k.replace("module.", ""): v for k, v in sub.items()}


def load_liveportrait(
    root: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LivePortraitModels:
    """Build the seven networks and load the official files from `root` (or build synthetic ones).

    `root` is a folder with the official layout (also accepted one level up, as the hub's
    `liveportrait/` folder), or "synthetic". Loading is strict; any problem raises
    `WeightsError` naming the file and the keys.
    """
    if str(root) == SYNTHETIC:
        return synthetic_liveportrait(device, dtype)
    base = find_checkpoint_root(root)
    nets: dict[str, nn.Module] = {}
    for name, state_dict, origin in _state_dicts(base):
        nets[name] = build(name)
        load_strict(nets[name], state_dict, origin)
    log.info("loaded LivePortrait weights from %s", base)
    return _finish(nets, "real", str(base), device, dtype)


def verify_checkpoint(root: str | os.PathLike) -> tuple[Path, bool]:
    """Check the official files under `root` without building the networks: each file against its
    recorded digest (if a download recorded them), then keys, shapes and finite values. Returns (the
    folder, whether digests were checked); raises WeightsError naming the first bad file."""
    base = find_checkpoint_root(root)
    for name, state_dict, origin in _state_dicts(base):
        with torch.device("meta"):
            expected = build(name).state_dict()
        check_state_dict(expected, state_dict, origin)
    return base, integrity.recorded_digest(base / CHECKPOINT_FILES[0]) is not None


def _state_dicts(base: Path) -> Iterator[tuple[str, Mapping[str, torch.Tensor], str]]:
    """(network name, its state dict, where it came from) for the seven networks, each file read once."""
    for name, rel in BASE_FILES.items():
        yield name, _read(base / rel), str(base / rel)
    retarget_path = base / RETARGETING_FILE
    retarget = _read(retarget_path)
    for name, entry in RETARGETING_ENTRIES.items():
        yield name, retargeting_state_dict(retarget, name, retarget_path), f"{retarget_path} [{entry}]"


def _finish(nets: dict[str, nn.Module], kind: str, source: str, device, dtype) -> LivePortraitModels:
    for net in nets.values():
        net.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return LivePortraitModels(**nets, kind=kind, source=source)


# ---------------------------------------------------------------------------------------------
# synthetic weights
# ---------------------------------------------------------------------------------------------
# Gains for dense weights by rank (Linear, Conv2d, Conv3d): chosen so that the generator's
# sigmoid does not saturate, the warping softmax is far from uniform and the MLP deltas stay
# small (about 0.04 rms), i.e. the synthetic networks behave like trained ones numerically.
_GAIN = {2: 0.7, 3: 1.0, 4: 1.0, 5: math.sqrt(2.0)}


def _normal(tag: str, shape: tuple[int, ...]) -> torch.Tensor:
    gen = torch.Generator().manual_seed(zlib.crc32(tag.encode()))
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def synthetic_state_dict(name: str, module: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Deterministic weights for network `name`: the same on every machine and torch version
    that keeps `torch.randn`'s CPU stream, each tensor seeded by crc32("<name>/<key>")."""
    module = module if module is not None else build(name)
    template = module.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, ref in template.items():
        leaf, shape, tag = key.rsplit(".", 1)[-1], tuple(ref.shape), f"{name}/{key}"
        if leaf == "num_batches_tracked":
            value = torch.zeros((), dtype=torch.int64)
        elif leaf == "running_mean":
            value = 0.1 * _normal(tag, shape)
        elif leaf == "running_var":
            value = torch.exp(0.2 * _normal(tag, shape))
        elif leaf in ("weight", "weight_orig") and len(shape) >= 2:
            value = _normal(tag, shape) * (_GAIN.get(len(shape), 1.0) / math.sqrt(math.prod(shape[1:])))
        elif leaf == "weight" and len(shape) == 1:
            value = 1 + 0.1 * _normal(tag, shape)
        elif leaf == "bias":
            value = 0.02 * _normal(tag, shape)
        elif leaf in ("weight_u", "weight_v"):
            continue  # filled below from weight_orig
        else:
            value = 0.1 * _normal(tag, shape)
        out[key] = value.to(ref.dtype)
    for key in template:
        if key.endswith(".weight_u"):
            prefix = key[: -len(".weight_u")]
            u, v = _power_iteration(out[prefix + ".weight_orig"].double(), f"{name}/{key}")
            out[key], out[prefix + ".weight_v"] = u.float(), v.float()
    return {k: out[k] for k in template}


def _power_iteration(weight: torch.Tensor, tag: str, iters: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """Leading singular vectors (u, v) of weight.reshape(out, -1), ending with u = normalize(W v)."""
    mat = weight.reshape(weight.shape[0], -1)
    u = _normal(tag, (mat.shape[0],))
    u = u / u.norm()
    v = mat.T @ u
    for _ in range(iters):
        v = mat.T @ u
        v = v / v.norm()
        u = mat @ v
        u = u / u.norm()
    return u, v


def synthetic_liveportrait(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LivePortraitModels:
    """The seven networks with deterministic synthetic weights (no download; not a trained model)."""
    nets = {}
    for name in (*BASE_FILES, *RETARGETING_ENTRIES):
        nets[name] = build(name)
        nets[name].load_state_dict(synthetic_state_dict(name, nets[name]), strict=True)
    return _finish(nets, SYNTHETIC, SYNTHETIC, device, dtype)
