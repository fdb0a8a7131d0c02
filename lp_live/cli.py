"""lp-live command line: live animation, offline render, benchmark, weights download, doctor.

    lp-live --source me.jpg --camera 0                  animate live (virtual camera + preview)
    lp-live --source me.jpg --camera in.mp4 --output out.mp4   render every frame to a file
    lp-live bench --json                                 baseline vs optimized, measured
    lp-live download-weights [DIR]                       fetch the official weights
    lp-live doctor                                       what this machine has, and what to do
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .config import Config, load_config, override
from .errors import UserError

log = logging.getLogger("lp_live")

HOTKEYS = "b baseline/optimized, r re-anchor, p paste-back, s stitching, m mirror, h HUD, q/Esc quit"
SINKS = ("auto", "virtualcam", "window", "file", "null")


def _add_engine_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto)")
    p.add_argument("--weights", help="official weights directory, or 'synthetic' (default: the download cache)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"),
                   help="optimized engine precision (default: auto)")
    p.add_argument("--input-size", type=int, help="network input side, 128..256 (default: 256)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the optimized per-frame path (default: on)")
    p.add_argument("--triton-kernels", dest="use_kernels", action=argparse.BooleanOptionalAction, default=None,
                   help="fused Triton warping kernels in the optimized engine on CUDA (default: on)")
    p.add_argument("--config", type=Path, help="YAML run configuration (default: configs/default.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress details")


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lp-live",
        description="Animate a portrait photo with a webcam or a driving video (LivePortrait networks).",
        epilog=f"hotkeys (preview window, or the terminal): {HOTKEYS}. "
        "Other commands: lp-live bench | download-weights [DIR] | doctor (each has --help).",
    )
    p.add_argument("--source", type=Path, help="the photo to animate (default: the NASA astronaut in assets/)")
    p.add_argument("--camera", default="0", help="camera index, video file or stream URL (default: 0)")
    p.add_argument("--output", type=Path,
                   help="render to this video file, every frame in order (with --sink file: record the live run)")
    p.add_argument("--sink", nargs="+", choices=SINKS, help="live outputs, several allowed (default: auto)")
    p.add_argument("--size", type=int, help="output frame side in pixels (longer side)")
    p.add_argument("--fps", type=float, help="output frame rate (default: the input's)")
    p.add_argument("--mode", choices=("baseline", "optimized"), help="engine to start with (default: optimized)")
    p.add_argument("--max-frames", type=int, help="stop after N driving frames")
    p.add_argument("--stats-json", type=Path, help="write final FPS, latency percentiles, drops, mode switches")
    p.add_argument("--loop", action="store_true", help="play a video file used as a camera in a loop")
    p.add_argument("--list-cameras", action="store_true", help="list camera indices that open, then exit")
    p.add_argument("--paste-back", action=argparse.BooleanOptionalAction, default=None,
                   help="paste the animated face into the full photo (default: on)")
    p.add_argument("--stitching", action=argparse.BooleanOptionalAction, default=None, help="(default: on)")
    p.add_argument("--eye-retargeting", action=argparse.BooleanOptionalAction, default=None,
                   help="drive the eyes from landmark ratios (needs landmark.onnx)")
    p.add_argument("--lip-retargeting", action=argparse.BooleanOptionalAction, default=None,
                   help="drive the lips from landmark ratios (needs landmark.onnx)")
    p.add_argument("--smoothing", action=argparse.BooleanOptionalAction, default=None,
                   help="One-Euro filter on the driving motion (default: on)")
    p.add_argument("--crop-driving", action=argparse.BooleanOptionalAction, default=None,
                   help="crop driving frames around the face (off for videos that are already face crops)")
    p.add_argument("--side-by-side", action="store_true", help="render driving | output side by side")
    p.add_argument("--pace", action=argparse.BooleanOptionalAction, default=None,
                   help="play a video file used as a camera at its own frame rate (default: on)")
    p.add_argument("--hud", action=argparse.BooleanOptionalAction, default=None, help="(default: on)")
    p.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=None, help="mirror the camera")
    p.add_argument("--in-flight", type=int, choices=(1, 2),
                   help="frames in flight: 2 prepares the next frame while the device runs this one, "
                   "1 runs one at a time (default: 2)")
    _add_engine_flags(p)
    return p


def _apply_engine_flags(cfg: Config, args: argparse.Namespace) -> None:
    for flag, key in (("device", "engine.device"), ("weights", "engine.weights"), ("precision", "engine.precision"),
                      ("input_size", "engine.input_size"), ("compile", "engine.compile"),
                      ("use_kernels", "engine.kernels")):
        if getattr(args, flag, None) is not None:
            override(cfg, key, getattr(args, flag))


def config_from_args(args: argparse.Namespace) -> Config:
    """The YAML configuration with the flags that were given applied on top."""
    cfg = load_config(args.config)
    _apply_engine_flags(cfg, args)
    for flag, key in (
        ("mode", "engine.mode"), ("paste_back", "animation.paste_back"), ("stitching", "animation.stitching"),
        ("eye_retargeting", "animation.eye_retargeting"), ("lip_retargeting", "animation.lip_retargeting"),
        ("smoothing", "animation.smoothing"), ("crop_driving", "face.crop_driving"), ("sink", "stream.sink"),
        ("size", "stream.size"), ("fps", "stream.fps"), ("pace", "stream.pace"), ("hud", "stream.hud"),
        ("mirror", "stream.mirror"), ("in_flight", "stream.in_flight"),
    ):
        if getattr(args, flag) is not None:
            override(cfg, key, getattr(args, flag))
    return cfg


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.WARNING, format="lp-live: %(levelname)s: %(message)s")
    logging.getLogger("lp_live").setLevel(logging.DEBUG if verbose else logging.WARNING)


def cmd_run(argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    _setup_logging(args.verbose)
    if args.list_cameras:
        from .stream import list_cameras

        cams = list_cameras()
        print("cameras: " + (", ".join(map(str, cams)) if cams else "none found"))
        return 0
    cfg = config_from_args(args)
    from .pipeline import DEFAULT_SOURCE, build_animator, read_image

    source = args.source or DEFAULT_SOURCE
    source_rgb = read_image(source)
    offline = args.output is not None and args.sink is None
    if offline:
        return _render(args, cfg, source_rgb)
    from .stream import run_live

    # Live runs report what they picked (sinks, calibration) as they go.
    logging.getLogger("lp_live").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    # Built in the inference thread, where all device state (CUDA graphs, streams) must live.
    stats = run_live(lambda: build_animator(cfg, source_rgb), args.camera, cfg.stream, max_frames=args.max_frames,
                     stats_json=args.stats_json, output=args.output, loop=args.loop)
    print(stats.summary())
    return 0


def _render(args: argparse.Namespace, cfg: Config, source_rgb) -> int:
    from .pipeline import build_animator
    from .render import render_video
    from .video import VideoReader

    VideoReader(args.camera).close()  # a bad driving video fails before the weights load
    out_dir = args.output.resolve().parent
    if not out_dir.is_dir() or not os.access(out_dir, os.W_OK) or args.output.is_dir():
        raise UserError(f"cannot write {args.output}: {out_dir} is not a writable folder; choose another --output")
    animator = build_animator(cfg, source_rgb)
    summary = render_video(animator, args.camera, args.output, max_frames=args.max_frames, size=cfg.stream.size,
                           with_driving=args.side_by_side, progress=sys.stderr.isatty())
    w, h = summary.size
    per_frame = summary.seconds / max(summary.frames, 1)
    line = (f"wrote {summary.output}: {summary.frames} frames, {w}x{h} at {summary.fps:g} fps, "
            f"{summary.seconds:.1f} s ({per_frame:.2f} s/frame, {animator.mode} engine on {animator.device}, "
            f"{animator.weights_kind} weights); {summary.frames_without_face} frames without a face")
    if summary.interrupted:
        print(f"interrupted: {line}", file=sys.stderr)
        return 130
    print(line)
    if args.stats_json:
        args.stats_json.write_text(json.dumps({
            "frames": summary.frames, "seconds": summary.seconds, "frames_without_face": summary.frames_without_face,
            "mode": animator.mode, "device": str(animator.device), "weights": animator.weights_kind,
        }, indent=2))
    return 0


def cmd_bench(argv: list[str]) -> int:
    from . import bench

    p = argparse.ArgumentParser(prog="lp-live bench", description=bench.__doc__.splitlines()[0])
    p.add_argument("--json", nargs="?", const="-", metavar="PATH", help="write results as JSON (no PATH: stdout)")
    p.add_argument("--plot", type=Path, metavar="PATH", help="write a PNG chart of the comparison")
    p.add_argument("--frames", type=int, default=None, help="timed frames per mode (default: 20 on CUDA, 3 on CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed frames per mode (default: 3 on CUDA, 1 on CPU)")
    p.add_argument("--modes", nargs="+", choices=("baseline", "optimized"), default=["baseline", "optimized"])
    p.add_argument("--batch", type=int, default=1, help="driving streams per step (throughput)")
    p.add_argument("--source", type=Path, help="source photo (default: ../shared/assets/s6.jpg if present)")
    p.add_argument("--driving", type=Path, help="driving video (default: ../shared/assets/d0.mp4 if present)")
    p.add_argument("--kernels", action="store_true", help="also time the warping kernels against PyTorch")
    p.add_argument("--profile", type=Path, metavar="PATH",
                   help="write a torch.profiler table of one optimized step")
    p.add_argument("--no-stages", dest="stages", action="store_false",
                   help="skip the per-stage pass (it synchronises at stage edges)")
    _add_engine_flags(p)
    args = p.parse_args(argv)
    _setup_logging(args.verbose)
    cfg = load_config(args.config)
    if args.weights is None:
        args.weights = "synthetic"  # timings do not depend on weight values; say so in the results
    _apply_engine_flags(cfg, args)
    results = bench.run(cfg, modes=args.modes, frames=args.frames, warmup=args.warmup, batch=args.batch,
                        source=args.source, driving=args.driving, kernels=args.kernels, stages=args.stages,
                        profile=args.profile)
    if args.json and args.json != "-":
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    print(bench.format_table(results), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json == "-":
        print(json.dumps(results, indent=2))
    if args.plot:
        bench.plot(results, args.plot)
    return 0


def cmd_download(argv: list[str]) -> int:
    from .models import default_cache_dir
    from .models.download import download_weights

    p = argparse.ArgumentParser(prog="lp-live download-weights",
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

    argparse.ArgumentParser(prog="lp-live doctor", description="Check what lp-live can use here.").parse_args(argv)
    return 0 if print_report(run_checks()) else 1


COMMANDS = {"bench": cmd_bench, "download-weights": cmd_download, "doctor": cmd_doctor}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = COMMANDS.get(argv[0], cmd_run) if argv else cmd_run
    if command is not cmd_run:
        argv = argv[1:]
    try:
        return command(argv)
    except UserError as e:
        print(f"lp-live: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lp-live: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
