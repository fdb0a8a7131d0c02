"""Compiled engines kept between runs: inductor's caches in one folder per machine and torch version.

The optimized engine compiles M, W and G with inductor freezing (`compiled.FrozenCompiled`).
Inductor keeps what it generates (the FX graph cache: the lowered graph's code; the compiled C++
kernels, Triton kernels and autotuning results) in its cache folder; with the oneDNN-packed
weights made cacheable (`compiled.cache_frozen_mkldnn_weights`), a second process with the same
graph skips lowering and code generation and loads them. Inductor's own key holds the graph (so
the input size, batch size, precision and rewrite plan), its config and the torch version; the
weights are never stored (a frozen weight is keyed by shape and dtype and, on a hit, read from the
process's own frozen graph), so a cached graph is right for any weights.

This module gives that cache a home: `<user cache>/lp-live/inductor/<partition>`, one partition
per torch version and device (CPU model and all its instruction-set flags; GPU name and compute
capability), with `key.json` naming them. Partitions are bounded together
(`LP_LIVE_ENGINE_CACHE_MAX_GB`, default 6): the least recently used go first. A damaged graph
entry (truncated, unreadable) is removed before compiling, with one INFO line, and compiled again.
$TORCHINDUCTOR_CACHE_DIR, where set, is used as is.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import shutil
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

DEFAULT_MAX_GB = 6.0
KEY_NAME = "key.json"
_chosen: Path | None = None  # the partition this process set $TORCHINDUCTOR_CACHE_DIR to


def cache_root() -> Path:
    """<user cache>/lp-live/inductor: $XDG_CACHE_HOME or ~/.cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lp-live" / "inductor"


def max_bytes() -> int:
    """The partitions' size bound: $LP_LIVE_ENGINE_CACHE_MAX_GB (default 6) GB."""
    try:
        return int(float(os.environ.get("LP_LIVE_ENGINE_CACHE_MAX_GB", DEFAULT_MAX_GB)) * 1e9)
    except ValueError:
        return int(DEFAULT_MAX_GB * 1e9)


def device_key(device: torch.device) -> dict[str, object]:
    """What about this machine changes generated code: torch's version; the CPU model and a digest of
    all its instruction-set flags; on CUDA the GPU's name and compute capability."""
    from ..core import cputune

    flags = cputune._cpuinfo("flags") or ""
    key: dict[str, object] = {"torch": torch.__version__, "cpu": cputune.cpu_model(),
                              "isa": hashlib.sha256(flags.encode()).hexdigest()[:12],
                              "features": " ".join(cputune.cpu_features())}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        key["gpu"] = torch.cuda.get_device_name(index)
        key["capability"] = ".".join(map(str, torch.cuda.get_device_capability(index)))
    return key


def partition(device: torch.device) -> Path:
    """The cache folder for this machine, torch version and device kind."""
    key = device_key(device)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / f"{device.type}-{digest}"


def user_folder() -> Path | None:
    """$TORCHINDUCTOR_CACHE_DIR where the user (or a script) set it; None where unset, ours, or torch's
    default (inductor writes its default into the variable when anything asks for the folder first)."""
    env = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not env or (_chosen is not None and Path(env) == _chosen):
        return None
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
        if os.path.abspath(env) == os.path.abspath(default_cache_dir()):
            return None
    except ImportError:
        pass
    return Path(env)


def use_cache(device: torch.device) -> Path:
    """Point inductor at this machine's partition (unless $TORCHINDUCTOR_CACHE_DIR is the user's), mark it
    used, drop damaged graph entries and keep the partitions within the bound. Returns the folder."""
    global _chosen
    user = user_folder()
    if user is not None:
        folder = user  # the user's (or a script's) choice
    else:
        folder = _chosen = _chosen or partition(device)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)  # inductor reads it on every cache access
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / KEY_NAME).write_text(json.dumps(device_key(device), indent=1) + "\n")  # also marks it used
        except OSError as e:
            log.warning("cannot write the compile cache %s: %s", folder, e)
        evict(keep=folder)
    drop_damaged(folder)
    return folder


def drop_damaged(folder: Path) -> list[Path]:
    """Remove the FX graph entries under `folder` that cannot be read back (one INFO line); inductor
    then compiles those graphs again and stores them afresh. Returns what was removed."""
    gone = []
    for path in sorted((folder / "fxgraph").glob("*/*/*")) if (folder / "fxgraph").is_dir() else []:
        if not path.is_file() or path.name.startswith("."):
            continue
        try:
            pickle.loads(path.read_bytes())
        except Exception:  # truncated or foreign: whatever unpickling raises
            path.unlink(missing_ok=True)
            gone.append(path)
    if gone:
        log.info("compile cache: %d damaged entr%s removed from %s, compiled again by this run", len(gone),
                 "y" if len(gone) == 1 else "ies", folder)
    return gone


def _size(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def entries(root: Path | None = None) -> list[dict[str, object]]:
    """The partitions, least recently used first: {"path", "bytes", "graphs", "used", "key"} each."""
    root = root or cache_root()
    out = []
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        if not folder.is_dir():
            continue
        try:
            key = json.loads((folder / KEY_NAME).read_text())
            used = (folder / KEY_NAME).stat().st_mtime
        except (OSError, ValueError):
            key, used = {}, folder.stat().st_mtime
        graphs = sum(1 for _ in (folder / "fxgraph").glob("*/*/*")) if (folder / "fxgraph").is_dir() else 0
        out.append({"path": folder, "bytes": _size(folder), "graphs": graphs, "used": used, "key": key})
    return sorted(out, key=lambda e: e["used"])


def evict(keep: Path | None = None, limit: int | None = None) -> list[Path]:
    """Delete the least recently used partitions until they hold at most `limit` bytes (default
    `max_bytes()`); never `keep`. Returns what was deleted."""
    limit = max_bytes() if limit is None else limit
    found = entries()
    total = sum(e["bytes"] for e in found)
    gone = []
    for e in found:
        if total <= limit:
            break
        if e["path"] == keep:
            continue
        shutil.rmtree(e["path"], ignore_errors=True)
        total -= e["bytes"]
        gone.append(e["path"])
        log.info("compile cache over %.1f GB: removed %s (last used %s)", limit / 1e9, e["path"].name,
                 time.strftime("%Y-%m-%d", time.localtime(e["used"])))
    return gone
