"""Where a result came from: the git commit of this checkout (torch-free, for scripts too)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMIT_FILE = REPO / "shared" / "commit.json"  # the commit of a checkout copied without .git


def git_commit() -> str:
    """HEAD of this checkout ("-dirty" appended for uncommitted changes to tracked files).

    Without git (a checkout copied alone to a GPU machine, .git left behind) it is read from
    shared/commit.json, written beside the copied kit by scripts/prepare_gpu_run.sh.
    """
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return rev.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        recorded = json.loads(COMMIT_FILE.read_text())
        return str(recorded["commit"]) + ("-dirty" if recorded.get("dirty") else "")
    except (OSError, ValueError, KeyError, TypeError):
        return "unknown"
