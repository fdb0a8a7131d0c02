"""Fetch the official LivePortrait weights from the Hugging Face hub (each file checked against the hub's
SHA-256), and find them at run time."""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .checkpoint import CHECKPOINT_FILES, HUB_REPO, SYNTHETIC, WeightsError, default_cache_dir, find_checkpoint_root
from .integrity import DamagedWeightsError, fetch_hub_entries, hub_sha256, sha256_file, write_digests

log = logging.getLogger(__name__)

# Files of the hub repository lp-live uses: the five networks, plus the optional face models
# (InsightFace detector and 106-point landmarks, LivePortrait's 203-point landmark model).
NETWORK_FILES = tuple(f"liveportrait/{name}" for name in CHECKPOINT_FILES)
FACE_FILES = (
    "liveportrait/landmark.onnx",
    "insightface/models/buffalo_l/det_10g.onnx",
    "insightface/models/buffalo_l/2d106det.onnx",
)


def _check_hub_reachable(timeout: float = 5.0) -> None:
    """Fail in seconds, not after the hub client's minute of retries, when there is no connection."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise WeightsError(
            f"cannot reach {host} to download the LivePortrait weights ({e.strerror or e}); check the internet "
            "connection, or copy the official files into a folder and pass --weights DIR, "
            "or run with --weights synthetic"
        ) from e


def download_weights(dest: str | os.PathLike | None = None, *, face_models: bool = True) -> Path:
    """Download the needed files (not the whole repository) into `dest`, with progress bars, each
    checked against the SHA-256 the hub reports for it; the digests are recorded in
    `dest`/DIGESTS_NAME for later loads to re-check. A file already there with the right digest is
    kept; one with another digest is fetched again.

    Returns `dest`. Raises WeightsError at once when the hub cannot be reached, and
    DamagedWeightsError (the file deleted) when a download does not match its digest.
    """
    dest = Path(dest).expanduser() if dest is not None else default_cache_dir()
    _check_hub_reachable()
    files = NETWORK_FILES + (FACE_FILES if face_models else ())
    expected = {name: hub_sha256(entry) for name, entry in fetch_hub_entries(HUB_REPO, files).items()}
    log.warning("downloading the LivePortrait weights into %s (about 500 MB, once)", dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in files:
        target = dest / name
        if target.is_file() and sha256_file(target) == expected[name]:
            log.info("have %s (SHA-256 checked)", target)
        else:
            target.unlink(missing_ok=True)  # damaged or partial: the hub client would keep it
            _fetch(name, dest)
            actual = sha256_file(target)
            if actual != expected[name]:
                target.unlink()
                raise DamagedWeightsError(
                    f"{target}: the download is damaged (SHA-256 {actual[:12]}... instead of the hub's "
                    f"{expected[name][:12]}...) and was deleted; run `lp-live download-weights` again")
            log.info("have %s (SHA-256 matches the hub)", target)
        write_digests(dest, {name: expected[name]})
    return dest


def _fetch(name: str, dest: Path) -> None:
    """One file of the hub repository into `dest`/`name`."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:  # a declared dependency, but say what to do if it is missing
        raise WeightsError("huggingface_hub is not installed; run `pip install huggingface_hub`") from e
    try:
        hf_hub_download(HUB_REPO, name, local_dir=dest, etag_timeout=10)
    except Exception as e:  # network errors come in many types (httpx, requests, OSError, hub errors)
        raise WeightsError(
            f"cannot download {name} from the hub repository {HUB_REPO} ({type(e).__name__}); check the "
            f"internet connection, or copy the official files into {dest}, or run with --weights synthetic"
        ) from e


def resolve_weights(spec: str | None, *, download: bool = True) -> str:
    """The weights to load: "synthetic", an explicit directory, or the cache (downloaded on first use)."""
    if spec == SYNTHETIC:
        return SYNTHETIC
    if spec is not None:
        return str(find_checkpoint_root(spec))
    cache = default_cache_dir()
    try:
        return str(find_checkpoint_root(cache))
    except WeightsError:
        if not download:
            raise
    return str(find_checkpoint_root(download_weights(cache)))
