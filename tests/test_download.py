"""`lp-live download-weights`: each file checked against the hub's SHA-256, the digests recorded.

No network: the hub's metadata API is a local HTTP server (HF_ENDPOINT), the file transfer
(`huggingface_hub.hf_hub_download`) is replaced by a copy of the synthetic official files.
"""

from __future__ import annotations

import http.server
import json
import os
import threading
import urllib.parse
from pathlib import Path

import pytest

from lp_live import cli
from lp_live.models import WeightsError
from lp_live.models import download as download_module
from lp_live.models.checkpoint import CHECKPOINT_FILES, HUB_REPO, verify_checkpoint
from lp_live.models.integrity import DIGESTS_NAME, fetch_hub_entries, hub_sha256, sha256_file

# Two entries of a `paths-info` answer, in the hub's format (the shape huggingface_hub's RepoFile
# parses: git blob `oid`, `size`, and for LFS files `lfs: {oid (SHA-256), size, pointerSize}`).
RECORDED = [
    {"type": "file", "oid": "5f2e8a1c0b9d7e6f4a3b2c1d0e9f8a7b6c5d4e3f", "size": 182146444,
     "lfs": {"oid": "7C1B0F0E5D2A9B8C7D6E5F4A3B2C1D0E9F8A7B6C5D4E3F2A1B0C9D8E7F6A5B4C", "size": 182146444,
             "pointerSize": 135},
     "path": "liveportrait/base_models/warping_module.pth"},
    {"type": "file", "oid": "a3c9e1f27b5d4c6e8f0a1b2c3d4e5f60718293a4", "size": 1519, "path": "README.md"},
]


def test_hub_sha256_from_recorded_metadata():
    assert hub_sha256(RECORDED[0]) == "7c1b0f0e5d2a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c"
    with pytest.raises(WeightsError, match=r"the hub reports no SHA-256 for README\.md \(no Git LFS entry"):
        hub_sha256(RECORDED[1])  # a git blob id is not a digest of the file
    with pytest.raises(WeightsError, match="no SHA-256"):
        hub_sha256({**RECORDED[0], "lfs": {"oid": "not-hex", "size": 1, "pointerSize": 1}})


class FakeHub:
    """A local `paths-info` endpoint answering from `entries` (path -> entry); records the requests."""

    def __init__(self, entries: dict[str, dict]):
        self.entries, self.requests = entries, []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                hub.requests.append((self.path, form))
                body = json.dumps([hub.entries[p] for p in form.get("paths", []) if p in hub.entries]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub({e["path"]: e for e in RECORDED})
    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    yield fake
    fake.close()


def test_fetch_hub_entries_asks_paths_info(hub):
    paths = ["liveportrait/base_models/warping_module.pth", "README.md"]
    assert fetch_hub_entries(HUB_REPO, paths) == {e["path"]: e for e in RECORDED}
    assert hub.requests == [(f"/api/models/{HUB_REPO}/paths-info/main", {"paths": paths, "expand": ["false"]})]
    with pytest.raises(WeightsError, match=rf"the hub repository {HUB_REPO} does not list nothing\.pth; "):
        fetch_hub_entries(HUB_REPO, ["README.md", "nothing.pth"])


def test_fetch_hub_entries_without_a_hub_is_one_line():
    server = FakeHub({})
    endpoint = server.endpoint
    server.close()  # nothing listens there now
    with pytest.raises(WeightsError) as err:
        fetch_hub_entries(HUB_REPO, ["README.md"], endpoint=endpoint, timeout=5)
    assert "cannot get the SHA-256 digests" in str(err.value) and "\n" not in str(err.value)


@pytest.fixture
def official_hub(synthetic_weights_dir, monkeypatch):
    """The hub for the five network files (their true digests) and a transfer that hard-links the synthetic
    files (or the bytes in `hub.served[name]`, a damaged transfer); `hub.fetched` lists what was fetched."""
    entries = {}
    for rel in CHECKPOINT_FILES:
        size = (synthetic_weights_dir / rel).stat().st_size
        entries[f"liveportrait/{rel}"] = {"type": "file", "oid": "0" * 40, "size": size, "path": f"liveportrait/{rel}",
                                          "lfs": {"oid": sha256_file(synthetic_weights_dir / rel), "size": size,
                                                  "pointerSize": 134}}
    fake = FakeHub(entries)
    fake.fetched, fake.served = [], {}

    def fetch(name: str, dest: Path) -> None:
        fake.fetched.append(name)
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name in fake.served:
            target.write_bytes(fake.served[name])
        else:
            os.link(synthetic_weights_dir / name.removeprefix("liveportrait/"), target)

    monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
    monkeypatch.setattr(download_module, "_check_hub_reachable", lambda: None)
    monkeypatch.setattr(download_module, "_fetch", fetch)
    yield fake
    fake.close()


def test_download_checks_and_records_digests(official_hub, tmp_path, capsys, damage):
    dest = tmp_path / "weights"
    assert cli.main(["download-weights", str(dest), "--no-face-models"]) == 0
    assert capsys.readouterr().out == f"weights in {dest}\n"
    names = [f"liveportrait/{rel}" for rel in CHECKPOINT_FILES]
    assert official_hub.fetched == names
    manifest = json.loads((dest / DIGESTS_NAME).read_text())
    assert manifest == {"algorithm": "sha256",
                        "files": {n: official_hub.entries[n]["lfs"]["oid"] for n in sorted(names)}}
    assert verify_checkpoint(dest) == (dest / "liveportrait", True)  # the load's checks, digests included

    official_hub.fetched.clear()  # again: every file kept (digest checked), nothing fetched
    assert cli.main(["download-weights", str(dest), "--no-face-models"]) == 0
    assert official_hub.fetched == []

    damaged = dest / "liveportrait" / CHECKPOINT_FILES[3]
    damage(damaged, bytes(4096))  # finite garbage: refused at load by its digest ...
    with pytest.raises(WeightsError, match=r"spade_generator\.pth: damaged \(its SHA-256"):
        verify_checkpoint(dest)
    assert cli.main(["download-weights", str(dest), "--no-face-models"]) == 0  # ... and fetched again
    assert official_hub.fetched == [names[3]]
    assert verify_checkpoint(dest) == (dest / "liveportrait", True)


def test_a_damaged_download_is_refused_and_deleted(official_hub, tmp_path, capsys):
    dest = tmp_path / "weights"
    name = f"liveportrait/{CHECKPOINT_FILES[1]}"
    official_hub.served[name] = b"PK\x03\x04" + bytes(1000)
    assert cli.main(["download-weights", str(dest), "--no-face-models"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith(f"lp-live: error: {dest / name}: the download is damaged (SHA-256 ")
    assert err.endswith("...) and was deleted; run `lp-live download-weights` again")
    assert not (dest / name).exists()
    manifest = json.loads((dest / DIGESTS_NAME).read_text())["files"]
    assert list(manifest) == [f"liveportrait/{CHECKPOINT_FILES[0]}"]  # only what was verified is recorded
