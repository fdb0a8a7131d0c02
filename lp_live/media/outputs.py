"""The files a run will write, checked before any work starts (models load, frames decode).

`check_outputs` refuses, with one line saying what to do: an output that is a folder, in a folder
that does not exist or cannot be written, in a format PyAV cannot mux H.264 into, or that is the
same file as an input; a stats path that cannot be written. Each path is proved writable by
creating it (or, if it exists, opening it for appending) and removing what the probe created.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..core.errors import UserError


def check_outputs(output: Path | None, stats_json: Path | None, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise UserError when `output` (a video) or `stats_json` cannot be written as asked, or either is
    one of `inputs` (the source photo, the driving video or camera; non-paths are ignored)."""
    existing = [Path(p) for p in inputs if p is not None and Path(p).is_file()]
    for path, flag in ((output, "--output"), (stats_json, "--stats-json")):
        if path is None:
            continue
        _check_writable(path, flag)
        same = next((p for p in existing if path.exists() and os.path.samefile(path, p)), None)
        if same is not None:
            raise UserError(f"{flag} {path} is the input {same}: writing it would destroy it; "
                            f"choose another {flag}")
    if output is not None and stats_json is not None and output.absolute() == stats_json.absolute():
        raise UserError(f"--stats-json {stats_json} is also the --output video; choose another --stats-json")
    if output is not None:
        _check_video_format(output)


def _check_writable(path: Path, flag: str) -> None:
    if path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name in it, e.g. {flag} {path / _example(flag)}")
    folder = path.absolute().parent
    if not folder.is_dir():
        raise UserError(f"cannot write {flag} {path}: the folder {folder} does not exist; create it or choose "
                        f"another {flag}")
    existed = path.exists()
    try:
        if existed:
            with open(path, "ab"):  # not truncated: the run replaces it only when it writes
                pass
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.close(fd)
            os.unlink(path)
    except OSError as e:
        raise UserError(f"cannot write {flag} {path} ({e.strerror or e}); choose a file in a folder you can "
                        "write") from e


def _check_video_format(path: Path) -> None:
    """An H.264 stream can be muxed into `path`'s format (chosen by its extension): write the header of an
    empty video to a probe file beside it, then remove the probe."""
    import av

    probe = path.with_name(f".{path.stem}.lp-live-probe{path.suffix}")
    try:
        with av.open(str(probe), mode="w") as container:
            stream = container.add_stream("libx264", rate=25)
            stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
            container.start_encoding()
    except (av.FFmpegError, ValueError, OSError) as e:
        suffix = path.suffix or "(no extension)"
        raise UserError(f"cannot write --output {path}: {suffix} is not a video format lp-live can write "
                        f"({type(e).__name__}: {e}); use .mp4 (or .mkv, .mov)") from e
    finally:
        probe.unlink(missing_ok=True)


def _example(flag: str) -> str:
    return "stats.json" if flag == "--stats-json" else "out.mp4"
