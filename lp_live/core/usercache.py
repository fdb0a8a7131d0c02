"""The user's cache of measured choices: small versioned JSON files under <user cache>/lp-live/.

Each file holds {"version": CACHE_VERSION, "entries": {key: entry}}; `cputune` keeps the CPU
threading there and `engine.cpu_precision` the per-network CPU precisions, keyed by machine.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_path(name: str) -> Path:
    """<user cache>/lp-live/`name`: $XDG_CACHE_HOME or ~/.cache."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lp-live" / name


def cache_entries(name: str) -> dict[str, dict] | None:
    """All entries of the JSON cache file `name`, or None (missing, unreadable or malformed files
    are ignored, with a warning for the last two; so are malformed entries)."""
    path = cache_path(name)
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(
                data.get("entries"), dict):
            raise ValueError(f"not a version {CACHE_VERSION} cache")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # JSONDecodeError is a ValueError
        log.warning("ignoring the cache file %s (%s: %s)", path, type(e).__name__, e)
        return None
    return {k: v for k, v in data["entries"].items() if isinstance(v, dict)}


def cache_entry(name: str, key: str) -> dict | None:
    """The entry for `key` in the JSON cache file `name`, or None (see `cache_entries`)."""
    return (cache_entries(name) or {}).get(key)


def forget_cache_entries(name: str, prefix: str) -> None:
    """Drop the entries of cache file `name` whose key starts with `prefix`."""
    entries = cache_entries(name)
    if entries and any(k.startswith(prefix) for k in entries):
        _write_cache_file(name, {k: v for k, v in entries.items() if not k.startswith(prefix)})


def _write_cache_file(name: str, entries: dict[str, dict]) -> None:
    path = cache_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=2) + "\n")
        tmp.replace(path)  # atomic: a concurrent reader sees the old or the new file
    except OSError as e:
        log.warning("cannot write the cache file %s: %s", path, e)


def store_cache_entry(name: str, key: str, entry: dict) -> None:
    """Add or replace `key` in the JSON cache file `name` (a malformed file is started afresh)."""
    entries = cache_entries(name) or {}
    entries[key] = {**entry, "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    _write_cache_file(name, entries)
