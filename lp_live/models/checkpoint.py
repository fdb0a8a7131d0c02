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
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import integrity
from .integrity import WeightsError
from .registry import build
from .synthetic import recipe_key, synthetic_state_dict

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
    nets = _nets_from(base)
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
# synthetic weights, built once and kept as official-layout files in the weights cache
# ---------------------------------------------------------------------------------------------
NETWORK_NAMES = (*BASE_FILES, *RETARGETING_ENTRIES)


def save_official_layout(state_dicts: Mapping[str, Mapping[str, torch.Tensor]], base: Path) -> Path:
    """The seven networks' state dicts (by network name) saved as the five official files under `base`
    (keys as released: flat state dicts, the retargeting MLPs as sub-dicts with `module.` keys)."""
    for name, rel in BASE_FILES.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        torch.save(dict(state_dicts[name]), base / rel)
    (base / RETARGETING_FILE).parent.mkdir(parents=True, exist_ok=True)
    torch.save({entry: {f"module.{k}": v for k, v in state_dicts[name].items()}
                for name, entry in RETARGETING_ENTRIES.items()}, base / RETARGETING_FILE)
    return base


def synthetic_weights_dir() -> Path:
    """Where the synthetic weights are kept: <weights cache>/synthetic/<recipe key>, beside the
    downloaded official files."""
    return default_cache_dir() / SYNTHETIC / recipe_key(NETWORK_NAMES)


def _build_synthetic_files(folder: Path) -> Path:
    """Build the synthetic weights and write them (with their digests) into `folder`, atomically:
    written in a temporary sibling, then renamed; another process's finished copy wins."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    tmp.chmod(0o755)  # mkdtemp's is 0700
    try:
        with torch.device("cpu"):
            save_official_layout({name: synthetic_state_dict(name) for name in NETWORK_NAMES}, tmp)
        integrity.write_digests(tmp, {f: integrity.sha256_file(tmp / f) for f in CHECKPOINT_FILES})
        shutil.rmtree(folder, ignore_errors=True)
        try:
            tmp.rename(folder)
        except OSError:  # another process renamed its copy first: keep that one
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in folder.parent.iterdir():  # files of an older recipe or torch: never read again
        if old.is_dir() and old != folder and not old.name.startswith(".building-"):
            shutil.rmtree(old, ignore_errors=True)
    return folder


def ensure_synthetic_weights() -> Path:
    """The folder of the cached synthetic weights, built first when missing or damaged (one INFO line).

    Raises OSError when the cache cannot be written."""
    folder = synthetic_weights_dir()
    if not (folder / integrity.DIGESTS_NAME).is_file():
        log.info("building the synthetic weights once into %s", folder)
        _build_synthetic_files(folder)
    return folder


def _nets_from(base: Path) -> dict[str, nn.Module]:
    """The seven networks loaded strictly from the official files under `base` (digests checked)."""
    nets: dict[str, nn.Module] = {}
    for name, state_dict, origin in _state_dicts(base):
        nets[name] = build(name)
        load_strict(nets[name], state_dict, origin)
    return nets


def synthetic_liveportrait(
    device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LivePortraitModels:
    """The seven networks with deterministic synthetic weights (no download; not a trained model).

    Loaded like the official files from the weights cache (digests checked); built there first when
    missing, and rebuilt (one INFO line) when a file is damaged. Where the cache cannot be written,
    built in memory."""
    try:
        folder = ensure_synthetic_weights()
        try:
            nets = _nets_from(folder)
        except WeightsError as e:
            log.info("rebuilding the cached synthetic weights: %s", e)
            nets = _nets_from(_build_synthetic_files(folder))
    except OSError as e:
        log.warning("cannot keep the synthetic weights in the cache (%s); building them in memory", e)
        nets = {}
        for name in NETWORK_NAMES:
            nets[name] = build(name)
            nets[name].load_state_dict(synthetic_state_dict(name, nets[name]), strict=True)
    return _finish(nets, SYNTHETIC, SYNTHETIC, device, dtype)
