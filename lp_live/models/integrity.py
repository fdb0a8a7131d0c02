"""Weights that are what they claim: the hub's SHA-256 of each file, a digest manifest beside the
files, and the checks a load makes (digest when recorded, every tensor finite).

`lp-live download-weights` asks the hub for each file's LFS metadata (the `paths-info` API; the
`lfs.oid` of a file stored with Git LFS is the SHA-256 of its content), checks every downloaded
file against it and writes `DIGESTS_NAME` into the download folder: `{"algorithm": "sha256",
"files": {"<path relative to that folder>": "<hex>"}}`. Loading finds that manifest next to the
file or up to two folders above it (the hub's `liveportrait/` and `pretrained_weights/` levels).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from ..core.errors import UserError

log = logging.getLogger(__name__)

DIGESTS_NAME = "lp-live-sha256.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REDOWNLOAD = "run `lp-live download-weights` to fetch it again"


class WeightsError(UserError):
    """A checkpoint is missing, unreadable or does not match the network."""


class DamagedWeightsError(WeightsError):
    """A weights file is not what it claims: wrong digest, non-finite values, or code in its pickle."""


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's content (hex), read in chunks (no second copy in memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def hub_sha256(entry: Mapping[str, object]) -> str:
    """The SHA-256 the hub reports for one file: `lfs.oid` of a `paths-info` / `tree` entry.

    A file not stored with Git LFS has only a git blob id (SHA-1 of a header plus the content), which
    is not a digest of the file; that is an error here, as every weights file lp-live fetches is LFS.
    """
    path = entry.get("path", "?")
    lfs = entry.get("lfs")
    oid = lfs.get("oid") if isinstance(lfs, Mapping) else None
    if not isinstance(oid, str) or not _HEX64.fullmatch(oid.lower()):
        raise WeightsError(f"the hub reports no SHA-256 for {path} (no Git LFS entry: {entry!r}); "
                        "report this, or copy the official files and pass --weights DIR")
    return oid.lower()


def fetch_hub_entries(repo: str, paths: Iterable[str], *, revision: str = "main", endpoint: str | None = None,
                      timeout: float = 30.0) -> dict[str, Mapping[str, object]]:
    """The hub's metadata of `paths` in model repository `repo`, by path (one `paths-info` request).

    `endpoint` defaults to $HF_ENDPOINT or https://huggingface.co. Raises UserError when the hub
    does not answer or does not list a path.
    """
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")
    paths = list(paths)
    url = f"{endpoint}/api/models/{repo}/paths-info/{urllib.parse.quote(revision, safe='')}"
    body = urllib.parse.urlencode({"paths": paths, "expand": "false"}, doseq=True).encode()
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            entries = json.load(response)
    except (OSError, ValueError) as e:  # URLError/HTTPError are OSErrors; bad JSON is a ValueError
        raise WeightsError(f"cannot get the SHA-256 digests of the weights from {url} ({type(e).__name__}: {e}); "
                        "check the internet connection and try again") from e
    by_path = {e.get("path"): e for e in entries if isinstance(e, Mapping)} if isinstance(entries, list) else {}
    missing = [p for p in paths if p not in by_path]
    if missing:
        raise WeightsError(f"the hub repository {repo} does not list {', '.join(missing)}; report this, "
                        "or copy the official files and pass --weights DIR")
    return {p: by_path[p] for p in paths}


def write_digests(folder: str | os.PathLike, digests: Mapping[str, str]) -> Path:
    """Record `digests` ({path relative to `folder`: sha256}) in `folder`/DIGESTS_NAME, keeping
    the entries of other files already recorded there. Written atomically."""
    path = Path(folder) / DIGESTS_NAME
    files = dict(_read_digests(path)) if path.is_file() else {}
    files.update(digests)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"algorithm": "sha256", "files": dict(sorted(files.items()))}, indent=1) + "\n")
    tmp.replace(path)
    return path


def _read_digests(path: Path) -> Mapping[str, str]:
    try:
        data = json.loads(path.read_text())
        files = data["files"]
        if data.get("algorithm") != "sha256" or not isinstance(files, dict):
            raise ValueError("not a sha256 manifest")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DamagedWeightsError(f"{path}: unreadable digest manifest ({type(e).__name__}: {e}); "
                                  "delete it and run `lp-live download-weights`") from e
    return files


def recorded_digest(file: str | os.PathLike) -> tuple[str, Path] | None:
    """(sha256, manifest) recorded for `file` by a download, or None when no manifest lists it."""
    file = Path(os.path.abspath(file))  # not resolved: a symlinked file is looked up where it is named
    for folder in (file.parent, *list(file.parents)[1:3]):
        manifest = folder / DIGESTS_NAME
        if manifest.is_file():
            digest = _read_digests(manifest).get(file.relative_to(folder).as_posix())
            if digest is not None:
                return digest, manifest
    return None


def verify_digest(file: str | os.PathLike) -> bool:
    """Check `file` against its recorded digest; False when none is recorded. Raises
    DamagedWeightsError naming the file when it differs."""
    recorded = recorded_digest(file)
    if recorded is None:
        return False
    expected, manifest = recorded
    actual = sha256_file(file)
    if actual != expected:
        raise DamagedWeightsError(f"{file}: damaged (its SHA-256 {actual[:12]}... is not the {expected[:12]}... "
                                  f"recorded at download in {manifest}); {_REDOWNLOAD}")
    return True


def check_finite(state_dict: Mapping[str, object], origin: str) -> None:
    """Raise DamagedWeightsError naming `origin` and the first tensor with NaN or infinite values."""
    for key, value in state_dict.items():
        if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            continue
        # a finite sum means no NaN or inf (they propagate); only an inf sum of finite values needs the count
        if bool(torch.isfinite(value.sum())) or bool(torch.isfinite(value).all()):
            continue
        bad = int((~torch.isfinite(value)).sum())
        raise DamagedWeightsError(f"{origin}: damaged ({key} has {bad} NaN or infinite values); {_REDOWNLOAD}")


def code_in_pickle(error: BaseException) -> str | None:
    """What a weights-only load refused to call (e.g. "posix.system"), when `error` is torch's refusal of a
    pickle that imports code; None for other errors (damage, truncation)."""
    import pickle

    if not isinstance(error, pickle.UnpicklingError):
        return None
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    return found.group(1) if found else None


def brief_torch_error(error: BaseException) -> str:
    """The specific line of a `torch.load` error, without torch's advice to load with weights_only=False
    (which would run whatever code the file holds)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    specific = [line for line in lines if not line.startswith(("Weights only load failed", "Check the documentation"))]
    return (specific or lines or [type(error).__name__])[0][:300]
