"""lp-live command line: live animation, offline render, benchmark, weights download, doctor.

    lp-live --source me.jpg --camera 0                  animate live (virtual camera + preview)
    lp-live --source me.jpg --camera in.mp4 --output out.mp4   render every frame to a file
    lp-live bench --json                                 baseline vs optimized, measured
    lp-live download-weights [DIR]                       fetch the official weights
    lp-live doctor                                       what this machine has, and what to do
    lp-live serve [--host H --token T]                   a browser page animated over WebRTC
    lp-live serve-bench --json PATH                      N loopback clients against the server, measured
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
import textwrap
import typing
from pathlib import Path

from . import __version__
from .core import cpuisa, cpuload, cputune, signals
from .core.config import RUN_SECTIONS, Config, EngineConfig, add_flags, load_config, overrides_from_args
from .core.errors import UserError
from .core.modes import MODES
from .core.usercache import cache_path
from .stream.hotkeys import describe as describe_hotkeys

log = logging.getLogger("lp_live")


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the problem, then where the usage is."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(minimum: int) -> typing.Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _add_common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, metavar="YAML",
                   help="run configuration (default: the packaged default.yaml; `python -m lp_live.core.config yaml` "
                   "prints it)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")


COMMAND_LINES = (  # (command, what it does): the top of `lp-live --help`
    ("lp-live [options]", "animate live (camera -> virtual camera + window), or render to --output"),
    ("lp-live serve", "a browser page animated over WebRTC"),
    ("lp-live bench", "baseline vs optimized engine, measured"),
    ("lp-live doctor", "what this machine has, and what to do"),
    ("lp-live download-weights", "fetch the official weights"),
    ("lp-live serve-bench", "N loopback clients against the server, measured"),
)


def _commands_text() -> str:
    width = max(len(c) for c, _ in COMMAND_LINES) + 2
    lines = [f"  {c:<{width}}{what}" for c, what in COMMAND_LINES]
    return "commands (each has --help):\n" + "\n".join(lines)


def _run_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="lp-live",
        usage="lp-live [options]  |  lp-live COMMAND [options]",
        description="Animate a portrait photo with a webcam or a driving video (LivePortrait networks).\n\n"
        + _commands_text(),
        epilog="\n".join(textwrap.wrap(f"hotkeys (preview window, or the terminal): {describe_hotkeys()}.", 100)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"lp-live {__version__}")
    p.add_argument("--source", type=Path, action="append", metavar="PHOTO",
                   help="the photo to animate, or a folder of photos; give it several times for several photos, "
                   "keys 1-9 switch live (default: the packaged NASA astronaut portrait)")
    p.add_argument("--camera", default="0", help="camera index, video file or stream URL (default: 0)")
    p.add_argument("--output", type=Path, metavar="PATH",
                   help="render to this video file, every frame in order (with --sink file: record the live run)")
    p.add_argument("--max-frames", type=_count(1), metavar="N", help="stop after N driving frames (default: all)")
    p.add_argument("--stats-json", type=Path, metavar="PATH",
                   help="write final FPS, latency percentiles, drops, mode switches")
    p.add_argument("--loop", action="store_true", help="play a video file used as a camera in a loop")
    p.add_argument("--list-cameras", action="store_true", help="list camera indices that open, then exit")
    p.add_argument("--side-by-side", action="store_true", help="render driving | output side by side")
    _add_common_flags(p)
    add_flags(p, RUN_SECTIONS)
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    """The YAML configuration with the flags that were given applied on top, every value checked."""
    return load_config(args.config, overrides_from_args(args))


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.WARNING, format="lp-live: %(levelname)s: %(message)s")
    logging.getLogger("lp_live").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _progress_logging(verbose: bool) -> None:
    """Runs say what they do as they go (INFO); the engine's internals only with -v."""
    logging.getLogger("lp_live").setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger("lp_live.engine").setLevel(logging.DEBUG if verbose else logging.WARNING)


PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
MAX_PHOTOS = 9  # keys 1-9


def source_photos(given: list[Path] | None) -> list[Path]:
    """The photos for `--source` (each a photo or a folder of photos, in name order; none given:
    none); UserError when a folder has none or there are more than the keys can select."""
    photos: list[Path] = []
    for path in given or []:
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
            if not found:
                raise UserError(f"--source {path}: no photo in this folder ({', '.join(PHOTO_SUFFIXES)})")
            photos.extend(found)
        else:
            photos.append(path)
    if len(photos) > MAX_PHOTOS:
        raise UserError(f"--source: {len(photos)} photos; keys 1-{MAX_PHOTOS} select at most {MAX_PHOTOS}")
    return photos


def cmd_run(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    _setup_logging(args.verbose)
    if args.list_cameras:
        from .stream import list_cameras

        cams = list_cameras()
        print("cameras: " + (", ".join(map(str, cams)) if cams else "none found"))
        return 0
    offline = args.output is not None and getattr(args, "stream.sink") is None
    if offline and getattr(args, "stream.fps") is not None:
        raise UserError("--fps sets the live output rate; a render to --output keeps the driving video's frame "
                        "rate: drop --fps (or add --sink file to record a live run)")
    from .media.outputs import check_outputs

    photos = source_photos(args.source)
    check_outputs(args.output, args.stats_json, [*photos, args.camera])  # before anything loads
    cfg = config_from_args(args)
    configure_cpu_threading(cfg.engine.device)
    check_precision(cfg.engine)
    from .core.progress import Progress
    from .session import DEFAULT_SOURCE, build_animator, fit_source, read_image

    sources = [read_image(p) for p in photos or [DEFAULT_SOURCE]]
    _progress_logging(args.verbose)  # runs say what they pick and do as they go
    progress = Progress()
    if offline:
        if len(sources) > 1:
            log.warning("a render animates one photo, %s; the other --source photos are for live runs", photos[0])
        return _render(args, cfg, sources[0], progress)
    from .stream import AnimatorFactory, open_live

    def build():  # in the inference thread, where all device state (CUDA graphs, streams) must live
        return build_animator(cfg, sources[0], more_sources=sources[1:], progress=progress)

    session = None
    try:
        with signals.deferred():  # a signal while the session is set up stops it once it runs (stats written)
            session = open_live(AnimatorFactory(build, still=fit_source(sources[0]), progress=progress),
                                args.camera, cfg.stream, output=args.output, loop=args.loop,
                                max_frames=args.max_frames)
        stats = session.run(args.stats_json)
    except KeyboardInterrupt as e:  # its Python handler ran just after the setup, before `run` took over
        if session is None or session.entered:
            raise
        session.interrupt(e)
        stats = session.run(args.stats_json)
    print(stats.summary())
    recording = stats.sinks.get("file")
    if recording is not None and recording.error:  # the run went on; the file the user asked for did not
        raise UserError(f"recording failed: {recording.error}")
    return signals.EXIT_CAMERA_LOST if stats.stop_reason == "camera lost" else 0


def _render(args: argparse.Namespace, cfg: Config, source_rgb, progress) -> int:
    from .media.video import VideoReader
    from .session import build_animator
    from .stream.render import render_video

    VideoReader(args.camera).close()  # a bad driving video fails before the weights load
    animator = build_animator(cfg, source_rgb, progress=progress)
    summary = render_video(animator, args.camera, args.output, max_frames=args.max_frames, size=cfg.stream.size,
                           with_driving=args.side_by_side, progress=sys.stderr.isatty(), steps=progress,
                           t_start=progress.t_start)
    w, h = summary.size
    per_frame = summary.seconds / max(summary.frames, 1)
    engines = " then ".join(f"{mode} ({n})" for mode, n in summary.frames_by_mode.items()) \
        if len(summary.frames_by_mode) > 1 else f"{animator.mode} engine"
    line = (f"wrote {summary.output}: {summary.frames} frames, {w}x{h} at {summary.fps:g} fps, "
            f"{summary.seconds:.1f} s ({per_frame:.2f} s/frame, {engines} on {animator.device}, "
            f"{animator.weights_kind} weights); {summary.frames_without_face} frames without a face")
    if summary.frames_missing:
        line += f"; driving video truncated ({summary.frames_missing} frames missing)"
    print(f"interrupted: {line}" if summary.interrupted else line, file=sys.stderr if summary.interrupted else None)
    if args.stats_json:
        args.stats_json.write_text(json.dumps({
            "frames": summary.frames, "seconds": summary.seconds, "frames_without_face": summary.frames_without_face,
            "mode": animator.mode, "device": str(animator.device), "weights": animator.weights_kind,
            "interrupted": summary.interrupted, "first_frame_s": summary.first_frame_s,
            "frames_missing": summary.frames_missing, "frames_by_mode": summary.frames_by_mode,
        }, indent=2))
    return 130 if summary.interrupted else 0  # `main` makes it 143 for SIGTERM


def cmd_bench(argv: list[str]) -> int:
    from .tools import bench_format

    p = Parser(prog="lp-live bench", description="Baseline vs optimized engine, measured side by side in one "
               "process on the same inputs.")
    p.add_argument("--json", nargs="?", const="-", metavar="PATH", help="write results as JSON (no PATH: stdout)")
    p.add_argument("--plot", type=Path, metavar="PATH", help="write a PNG chart of the comparison")
    p.add_argument("--frames", type=int, default=None, help="timed frames per mode (default: 20 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed frames per mode (default: 3 on CUDA, 1 on CPU)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                   help="engines to time (default: both)")
    p.add_argument("--batch", nargs="+", default=["1"], metavar="B",
                   help="driving frames per step, one or more sizes: --batch 1 2 4 or --batch 1,2,4 (default: 1)")
    p.add_argument("--source", type=Path, help="source photo (default: the packaged portrait)")
    p.add_argument("--driving", type=Path,
                   help="driving video (default: the reference kit's d0.mp4 beside a checkout, else synthetic frames)")
    p.add_argument("--kernels", action="store_true", help="also time the warping kernels against PyTorch")
    p.add_argument("--profile", type=Path, metavar="PATH",
                   help="write a torch.profiler table of one optimized step")
    p.add_argument("--no-stages", dest="stages", action="store_false",
                   help="skip the per-stage times (on CUDA a separate pass that synchronises at stage edges)")
    p.add_argument("--no-roofline", dest="roofline", action="store_false",
                   help="skip the matmul peak and the per-stage GFLOP/s and share of it")
    p.add_argument("--load", type=int, default=0, metavar="N",
                   help="run N busy processes beside the timed steps, as a video call would "
                        f"(0..{cpuload.max_load()}, default 0)")
    p.add_argument("--retune", action="store_true",
                   help="measure the CPU threading again before this run (and cache the new choice)")
    _add_common_flags(p)
    add_flags(p, ["engine"])
    # timings do not depend on weight values (the results say which were used)
    p._option_string_actions["--weights"].help = ("official weights directory, 'synthetic', or null for the "
                                                  "download cache (default: synthetic)")
    args = p.parse_args(argv)
    if not 0 <= args.load <= cpuload.max_load():
        p.error(f"--load must be 0..{cpuload.max_load()} (one busy process per CPU at most)")
    _setup_logging(args.verbose)
    if getattr(args, "engine.weights") is None:
        setattr(args, "engine.weights", "synthetic")
    try:
        batches = bench_format.parse_batches(args.batch)
    except ValueError as e:
        p.error(f"--batch: {e}")
    cfg = config_from_args(args)
    configure_cpu_threading(cfg.engine.device, retune=args.retune)
    if "optimized" in args.modes:
        check_precision(cfg.engine)
    from .tools import bench  # torch: after the threading is set

    results = bench.run(cfg, modes=args.modes, frames=args.frames, warmup=args.warmup, batch=batches,
                        source=args.source, driving=args.driving, kernels=args.kernels, stages=args.stages,
                        profile=args.profile, load=args.load, roofline=args.roofline)
    if args.json and args.json != "-":
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(bench_format.format_table(results), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json == "-":
        print(json.dumps(results, indent=2))
    if args.plot:
        bench_format.plot(results, args.plot)
    return 0


def cmd_download(argv: list[str]) -> int:
    from .models import default_cache_dir
    from .models.download import download_weights

    p = Parser(prog="lp-live download-weights",
                                description="Fetch the official LivePortrait weights (only the needed files).")
    p.add_argument("dir", nargs="?", type=Path, help=f"destination (default: {default_cache_dir()})")
    p.add_argument("--no-face-models", dest="face_models", action="store_false",
                   help="skip the InsightFace and landmark models (the Haar detector is used then)")
    args = p.parse_args(argv)
    _setup_logging(False)
    dest = download_weights(args.dir, face_models=args.face_models)
    print(f"weights in {dest}")
    return 0


def cmd_doctor(argv: list[str]) -> int:
    from .doctor import print_report, run_checks

    Parser(prog="lp-live doctor", description="Check what lp-live can use here.").parse_args(argv)
    cpuisa.check_override()
    return 0 if print_report(run_checks()) else 1


SERVE_SECTIONS = ("engine", "animation", "face", "serve")


def _serve_package():
    try:
        from . import server
    except ImportError as e:
        raise UserError(f"lp-live serve needs aiohttp and aiortc ({e}): pip install 'lp-live[serve]'") from None
    return server


def cmd_serve(argv: list[str]) -> int:
    import asyncio

    p = Parser(prog="lp-live serve",
               description="Serve a page where a webcam drives the portrait over WebRTC, many people on one engine.")
    _add_common_flags(p)
    add_flags(p, SERVE_SECTIONS)
    args = p.parse_args(argv)
    _setup_logging(args.verbose)
    logging.getLogger("lp_live").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    cfg = config_from_args(args)
    configure_cpu_threading(cfg.engine.device)
    check_precision(cfg.engine)
    asyncio.run(_serve_package().serve_forever(cfg))
    return 0


def cmd_serve_bench(argv: list[str]) -> int:
    p = Parser(prog="lp-live serve-bench",
               description="Start the server on loopback and N aiortc clients streaming a video; measure it.")
    p.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    p.add_argument("--clients", nargs="+", type=_count(1), default=[1, 2, 4], metavar="N",
                   help="numbers of simultaneous clients, one run each (default: 1 2 4)")
    p.add_argument("--seconds", type=float, default=30.0, help="measured time per run (default: 30)")
    p.add_argument("--warmup", type=float, default=None,
                   help="seconds streamed before measuring (default: until every client got a frame)")
    p.add_argument("--driving", type=Path, help="driving video (default: the reference kit's d0.mp4 beside a "
                   "checkout)")
    p.add_argument("--side", type=_count(64), metavar="PX",
                   help="resize the driving frames to PX x PX before sending (default: the video's size)")
    p.add_argument("--fps", type=float, default=None, help="frames per second each client sends (default: the "
                   "video's)")
    _add_common_flags(p)
    add_flags(p, SERVE_SECTIONS)
    args = p.parse_args(argv)
    _setup_logging(args.verbose)
    if getattr(args, "engine.weights") is None:
        setattr(args, "engine.weights", "synthetic")
    cfg = config_from_args(args)
    configure_cpu_threading(cfg.engine.device)
    check_precision(cfg.engine)
    _serve_package()
    from .tools import serve_bench as serve_bench

    results = serve_bench.run(cfg, clients=args.clients, seconds=args.seconds, warmup=args.warmup,
                              driving=args.driving, side=args.side, fps=args.fps)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(serve_bench.format_table(results))
    return 0


COMMANDS = {"bench": cmd_bench, "download-weights": cmd_download, "doctor": cmd_doctor, "serve": cmd_serve,
            "serve-bench": cmd_serve_bench}


def configure_cpu_threading(device: str, *, retune: bool = False) -> None:
    """Set this process's measured (or cached) CPU threading (`cputune.set_process_threading`) before torch loads.

    Called once per command, after its arguments and configuration are parsed and checked.

    Args:
        device: the configured `engine.device` (file or flag); a CUDA run skips it (nothing runs
            on the CPU's thread pools; its host threads keep torch's defaults).
        retune: measure again and replace the cached choice (`lp-live bench --retune`).
    """
    cpuisa.check_override()
    if device.startswith("cuda"):
        return
    tuning = cputune.set_process_threading(retune=retune, on_measure=lambda: print(
        "lp-live: measuring the CPU threading for this machine (once, a few seconds)", file=sys.stderr))
    if tuning.source == "measured":
        print(f"lp-live: CPU threading: {tuning.choice.label} (cached in {cache_path(cputune.CACHE_NAME)})",
              file=sys.stderr)


def check_precision(engine: EngineConfig) -> None:
    """Refuse an explicit bf16/fp16 that this CPU would only emulate (`precision.check_native`), before
    models load, unless --force-precision. Called after `configure_cpu_threading` (it loads torch)."""
    if engine.precision in ("auto", "fp32") or engine.force_precision:
        return
    from .engine.precision import check_native
    from .session.build import resolve_device

    check_native(engine.precision, resolve_device(engine.device))


def main(argv: list[str] | None = None) -> int:
    """Run a command; the exit codes are listed in `lp_live.core.signals`."""
    program = argv is None  # the process's entry point (not a call from Python code)
    argv = sys.argv[1:] if argv is None else argv
    command = COMMANDS.get(argv[0], cmd_run) if argv else cmd_run
    if command is not cmd_run:
        argv = argv[1:]
    elif argv and not argv[0].startswith("-"):  # `lp-live` itself takes no word first: a mistyped command
        close = difflib.get_close_matches(argv[0], COMMANDS, n=1, cutoff=0.5)
        hint = f"did you mean `lp-live {close[0]}`? " if close else ""
        print(f"lp-live: error: unknown command {argv[0]!r}; {hint}commands: {', '.join(COMMANDS)} "
              "(or options only, for a live run: lp-live --help)", file=sys.stderr)
        return 2
    with signals.handled(program=program):
        try:
            code = command(argv)
        except UserError as e:
            print(f"lp-live: error: {e}", file=sys.stderr)
            code = 2
        except KeyboardInterrupt as e:
            print(f"lp-live: interrupted{f' ({e})' if str(e) else ''}", file=sys.stderr)
            code = 130
        if signals.received() is not None:  # a run ended by a signal says so, however it ended
            code = signals.exit_code_for(signals.received())
        busy = signals.busy_threads()
        if busy:
            log.warning("exiting while %s %s still busy (in native code)", ", ".join(t.name for t in busy),
                        "is" if len(busy) == 1 else "are")
            signals.exit_now(code)
        signals.chosen(code)
    return code

if __name__ == "__main__":
    sys.exit(main())
