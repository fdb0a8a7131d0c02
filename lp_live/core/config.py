"""Run configuration: every option declared once, as a dataclass field made with `opt`.

A field carries its default, its allowed values (a `Literal` type, or `low`/`high` bounds, or a
`check`), its help text and its command-line flag. The packaged `default.yaml`, the CLI flags and
their help, and the README's option table are all derived from these declarations
(`python -m lp_live.core.config yaml|table` writes them). Loading checks every value and reports every
problem in one `ConfigError` line. This module imports neither torch nor the engines.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from .errors import UserError, one_line

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

DEFAULT_CONFIG: Traversable = resources.files("lp_live") / "data" / "default.yaml"
# Multiples of 128 only: F downsamples 4x and W's hourglass halves the feature grid 5 times
# (160, 192, 224 and 320 fail there). 256 is what LivePortrait was trained at.
INPUT_SIZES = (128, 256, 384, 512)
SINKS = ("auto", "virtualcam", "window", "file", "null")


class ConfigError(UserError):
    """A configuration file or value that cannot be used."""


def opt(default: Any, help: str, *, flag: str | None = "", low: float | None = None, high: float | None = None,
        check: Callable[[Any], str | None] | None = None, const: Any = None, allowed: str = "") -> Any:
    """A declared option: `default`, one-line `help`, CLI `flag` ("" for --field-name, None for none),
    inclusive bounds `low`/`high`, and `check` (value -> problem or None). `const`: the value of a
    Literal flag given without a value; `allowed`: the allowed values in words, where `check` decides."""
    meta = {"help": help, "flag": flag, "low": low, "high": high, "check": check, "const": const, "allowed": allowed}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _device(value: str) -> str | None:
    if value in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", value):
        return None
    return f"{value!r} is not a device; use auto, cpu, cuda or cuda:N"


def _not_empty(value: str | None) -> str | None:
    return "empty; pass a directory, 'synthetic', or leave it unset" if value == "" else None


@dataclass
class EngineConfig:
    mode: Literal["baseline", "optimized"] = opt(
        "optimized", "engine to start with (baseline: eager, as the official code); `b` toggles live")
    device: str = opt("auto", "torch device; auto is cuda when PyTorch sees a GPU, else cpu", check=_device,
                      allowed="auto | cpu | cuda | cuda:N")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = opt("auto", "optimized engine precision of W and G")
    input_size: Literal[128, 256, 384, 512] = opt(
        256, "network input side; LivePortrait was trained at 256 (the output is twice this)")
    weights: str | None = opt(None, "official weights directory, 'synthetic' (no download, not a trained face), "
                              "or null for the download cache", check=_not_empty)
    compile: bool = opt(True, "torch.compile the optimized per-frame path")
    cuda_graph: bool = opt(True, "replay the optimized per-frame path as CUDA graphs (CUDA only)")
    kernels: Literal["auto", "on", "off"] = opt(
        "auto", "fused Triton warping kernels: auto uses them on CUDA with triton; on warns where they cannot run",
        flag="--triton-kernels", const="on")

    def optimized_kwargs(self) -> dict:
        """Keyword arguments of `OptimizedEngine` from this configuration."""
        return {"precision": self.precision, "compile": self.compile, "cuda_graph": self.cuda_graph,
                "kernels": None if self.kernels == "auto" else self.kernels == "on"}  # None: wherever they can run


@dataclass
class AnimateOptions:
    """How driving motion maps onto the source; may be changed between frames (hotkeys).

    The defaults are the official CLI's: relative motion, stitching, expression-friendly
    rescaling, no lip normalisation, no eye/lip retargeting, multiplier 1.
    """

    stitching: bool = opt(True, "stitching MLP: keeps the shoulders still under head motion; `s` toggles live")
    expression_friendly: bool = opt(True, "rescale the driving expression to the source's (the official default)")
    normalize_lip: bool = opt(False, "close the source's open mouth before animating")
    eye_retargeting: bool = opt(False, "drive the eyes from landmark ratios (needs landmark.onnx and onnxruntime)")
    lip_retargeting: bool = opt(False, "drive the lips from landmark ratios (needs landmark.onnx and onnxruntime)")
    multiplier: float = opt(1.0, "scale of the driving motion", low=0.0, high=10.0)


@dataclass
class AnimationConfig(AnimateOptions):
    """The keypoint options (`AnimateOptions`: stitching, retargeting, ...) plus paste-back and smoothing."""

    paste_back: bool = opt(True, "paste the animated face back into the full photo; `p` toggles live")
    smoothing: bool = opt(True, "One-Euro filter on the driving motion")
    smoothing_min_cutoff: float = opt(1.0, "One-Euro minimum cutoff in Hz; lower is smoother when still",
                                      low=0.01, high=100.0)
    smoothing_beta: float = opt(0.5, "One-Euro speed coefficient; higher is less lag when moving", low=0.0, high=100.0)

    def options(self) -> AnimateOptions:
        return AnimateOptions(**{f.name: getattr(self, f.name) for f in dataclasses.fields(AnimateOptions)})


@dataclass
class FaceConfig:
    redetect_every: int = opt(10, "full-frame face detection at least every N driving frames", low=1, high=10000)
    box_smoothing: float = opt(0.5, "exponential smoothing of the driving face box (0 = none)", low=0.0, high=0.99)
    crop_driving: bool = opt(True, "crop driving frames around the face (off for videos that are already face crops)")


@dataclass
class StreamConfig:
    sink: list[Literal["auto", "virtualcam", "window", "file", "null"]] = opt(
        ["auto"], "live outputs, several allowed; auto = virtual camera and preview window where they exist")
    size: int | None = opt(None, "output frame side in pixels (longer side); null = the engine's output",
                           low=64, high=4096)
    fps: float | None = opt(None, "live output frame rate; null = the input's", low=1.0, high=240.0)
    hud: bool = opt(True, "draw the HUD (FPS, latency, engine) on the preview; `h` toggles live")
    hud_on_virtualcam: bool = opt(False, "draw the HUD on the virtual camera too")
    mirror: bool = opt(False, "mirror the camera (selfie view); `m` toggles live")
    pace: bool = opt(True, "play a video file used as a camera at its own frame rate")
    calibrate_frames: int = opt(0, "frames per engine timed after the first animated frame for the live speed "
                                "ratio (0: measured as you toggle with `b`)", low=0, high=100)
    in_flight: int = opt(2, "frames between submit and finish: 2 prepares the next frame while the device runs "
                         "this one, 1 runs one frame at a time", low=1, high=2)
    reconnect_s: float = opt(30.0, "a camera or live stream that stops is opened again (backoff 0.5 s to 5 s) for "
                             "up to this many seconds, then the run ends as 'camera lost'; 0: end at once",
                             low=0.0, high=3600.0)


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else f"{value} is not a TCP port; use 1..65535 (0: any free port)"


@dataclass
class ServeConfig:
    """`lp-live serve`: the browser page, its HTTP API and its limits (see the README's "Serve" section)."""

    host: str = opt("127.0.0.1", "address to listen on; anything but loopback needs an access token")
    port: int = opt(8080, "TCP port to listen on (0: any free port)", check=_port, allowed="0..65535")
    token: str | None = opt(None, "access token for the page, the API and the offer; null on a non-loopback "
                            "host: one is generated and printed once")
    cert: str | None = opt(None, "TLS certificate (PEM) for HTTPS; browsers give the camera only to HTTPS "
                           "pages or localhost")
    key: str | None = opt(None, "TLS private key (PEM) matching --cert")
    max_sessions: int = opt(4, "most streams animated at once; more get 'server full' (503)", low=1, high=256)
    max_upload_mb: float = opt(10.0, "largest source photo upload in MB", low=0.01, high=200.0)
    max_pixels: int = opt(25_000_000, "largest source photo in pixels (width x height), checked before decoding",
                          low=4096, high=200_000_000)
    max_sdp_kb: int = opt(64, "largest WebRTC offer in KB", low=1, high=1024)
    max_sources: int = opt(64, "uploaded photos kept (the oldest unused one is forgotten first)", low=1, high=10000)
    idle_timeout_s: float = opt(30.0, "close a stream that sent no frame for this many seconds",
                                low=1.0, high=86400.0)
    photo_side: int = opt(1280, "longer side of a source photo after upload (the output size with paste-back)",
                          low=128, high=4096)


@dataclass
class Config:
    engine: EngineConfig = field(default_factory=EngineConfig)
    animation: AnimationConfig = field(default_factory=AnimationConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))
RUN_SECTIONS: tuple[str, ...] = tuple(s for s in SECTIONS if s != "serve")  # the flags of `lp-live` itself


# ---------------------------------------------------------------------------------------------
# checking values
# ---------------------------------------------------------------------------------------------
class _Bad(ValueError):
    pass


def _show(value: Any) -> str:
    return " | ".join(map(str, value)) if isinstance(value, tuple) else repr(value)


def _convert(tp: Any, value: Any) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value)
    if origin is list:
        items = value if isinstance(value, list) else [value]
        if not items:
            raise _Bad("expected at least one value")
        return [_convert(args[0], v) for v in items]
    if origin is Literal:
        if isinstance(value, bool) or value not in args or type(value) not in (type(args[0]), float):
            raise _Bad(f"{value!r} is not one of {_show(args)}")
        return type(args[0])(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise _Bad(f"expected true or false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Bad(f"expected a number, got {value!r}")
        if not math.isfinite(value):
            raise _Bad(f"expected a finite number, got {value!r}")
        if tp is int and not float(value).is_integer():
            raise _Bad(f"expected an integer, got {value!r}")
        return tp(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Bad(f"expected text, got {value!r}")
        return value
    raise TypeError(f"option type {tp} is not supported")


def _checked(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    value = _convert(tp, value)
    meta = f.metadata
    if value is not None and not isinstance(value, list):
        low, high = meta.get("low"), meta.get("high")
        if (low is not None and value < low) or (high is not None and value > high):
            raise _Bad(f"{value!r} is out of range {low:g}..{high:g}")
        if meta.get("check") and (problem := meta["check"](value)):
            raise _Bad(problem)
    return value


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _build(cls: type, data: Any, where: str, problems: list[str]) -> Any:
    if not isinstance(data, dict):
        problems.append(f"{where or 'the file'}: expected a mapping of keys, got {type(data).__name__}")
        return cls()
    fields = _fields(cls)
    unknown = [str(k) for k in data if k not in fields]
    if unknown:
        problems.append(f"{where + ': ' if where else ''}unknown key(s) {', '.join(unknown)}; "
                        f"valid: {', '.join(fields)}")
    kwargs = {}
    for name, value in data.items():
        if name not in fields:
            continue
        f, tp = fields[name]
        key = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, {} if value is None else value, key, problems)
            continue
        try:
            kwargs[name] = _checked(f, tp, value)
        except _Bad as e:
            problems.append(f"{key}: {e}")
    return cls(**kwargs)


def read_config_file(path: str | Path | Traversable) -> Any:
    """The parsed YAML of `path` ({} when empty), or ConfigError in one line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if path is DEFAULT_CONFIG:
            raise ConfigError(f"the package's default config {path} is missing; reinstall lp-live") from None
        raise ConfigError(f"config file {path} not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file (not UTF-8); pass a YAML file with --config") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{at}: not valid YAML: {one_line(e.problem or e.context or e)}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {one_line(e)}") from None
    return {} if data is None else data


def flag_name(section: str, name: str) -> str | None:
    """The CLI flag of option `section.name` (None when it has none)."""
    f, _ = _fields(type(getattr(Config(), section)))[name]
    flag = f.metadata.get("flag", "")
    return "--" + name.replace("_", "-") if flag == "" else flag


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """The configuration in `path` (default: the packaged default.yaml) with `overrides`
    ({"section.key": value}, from CLI flags) applied; every value checked. All problems are
    reported together in one ConfigError line."""
    source = DEFAULT_CONFIG if path is None else Path(path)
    problems: list[str] = []
    cfg = _build(Config, read_config_file(source), "", problems)
    if problems:
        problems = [f"{source}: {'; '.join(problems)}"]
    for dotted, value in (overrides or {}).items():
        section, _, name = dotted.partition(".")
        f, tp = _fields(type(getattr(cfg, section)))[name]
        try:
            setattr(getattr(cfg, section), name, _checked(f, tp, value))
        except _Bad as e:
            problems.append(f"{flag_name(section, name) or dotted}: {e}")
    if problems:
        raise ConfigError("; ".join(problems))
    return cfg


def override(obj: Config, dotted: str, value: Any) -> None:
    """Set `section.key` on a Config, with the same checks as the file."""
    section, _, name = dotted.partition(".")
    f, tp = _fields(type(getattr(obj, section)))[name]
    try:
        setattr(getattr(obj, section), name, _checked(f, tp, value))
    except _Bad as e:
        raise ConfigError(f"{dotted}: {e}") from None


# ---------------------------------------------------------------------------------------------
# what is derived from the declarations: CLI flags, default.yaml, the README table
# ---------------------------------------------------------------------------------------------
def options(sections: Iterable[str] = SECTIONS) -> list[tuple[str, dataclasses.Field, Any]]:
    """(dotted key, field, type) of every option, in declaration order."""
    out = []
    for section in sections:
        for name, (f, tp) in _fields(type(getattr(Config(), section))).items():
            out.append((f"{section}.{name}", f, tp))
    return out


def _literal(tp: Any) -> tuple | None:
    if typing.get_origin(tp) is list:
        tp = typing.get_args(tp)[0]
    return typing.get_args(tp) if typing.get_origin(tp) is Literal else None


def _base(tp: Any) -> type:
    """The scalar Python type of an option type (int for Literal[128, ...], str for list[Literal[str]])."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
    if (values := _literal(tp)) is not None:
        return type(values[0])
    if typing.get_origin(tp) is list:
        return _base(typing.get_args(tp)[0])
    return tp


def allowed(f: dataclasses.Field, tp: Any) -> str:
    """The allowed values in words: "a | b", "1..10", "" (any)."""
    if f.metadata.get("allowed"):
        return f.metadata["allowed"]
    if (values := _literal(tp)) is not None:
        return " | ".join(map(str, values)) + (" (several)" if typing.get_origin(tp) is list else "")
    low, high = f.metadata.get("low"), f.metadata.get("high")
    if low is not None or high is not None:
        return f"{low:g}..{high:g}" + (" or null" if type(None) in typing.get_args(tp) else "")
    if _base(tp) is bool:
        return "true | false"
    return ""


def yaml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    return yaml.safe_dump(value, default_flow_style=True).removesuffix("\n...\n").strip()


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def add_flags(parser: argparse.ArgumentParser, sections: Iterable[str] = SECTIONS) -> None:
    """One flag per declared option of `sections`, dest "section.key", default None (= not given)."""
    for dotted, f, tp in options(sections):
        flag = flag_name(*dotted.split("."))
        if flag is None:
            continue
        base, values = _base(tp), _literal(tp)
        shown = "null" if _default(f) is None else ", ".join(map(str, _default(f))) if isinstance(
            _default(f), list) else str(_default(f)).lower() if base is bool else str(_default(f))
        rng = allowed(f, tp) if values is None and base is not bool else ""
        if f.metadata.get("allowed"):
            kw_metavar = f.metadata["allowed"].replace(" ", "")
        else:
            kw_metavar = None
        help_text = f"{f.metadata['help']}{f' ({rng})' if rng else ''} (default: {shown})".replace("%", "%%")
        kw: dict[str, Any] = {"dest": dotted, "default": None, "help": help_text}
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if values is not None:
            kw["metavar"] = "{" + ",".join(map(str, values)) + "}"
        elif kw_metavar:
            kw["metavar"], help_text = kw_metavar, help_text.replace(f" ({rng})", "")
            kw["help"] = help_text
        if typing.get_origin(tp) is list:
            kw["nargs"] = "+"
        elif f.metadata.get("const") is not None:
            kw.update(nargs="?", const=f.metadata["const"])
        parser.add_argument(flag, type=base, **kw)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """{"section.key": value} for the option flags that were given."""
    return {k: v for k, v in vars(args).items() if "." in k and v is not None}


def default_yaml() -> str:
    """The text of the packaged default.yaml, from the declarations."""
    lines = ["# lp-live run configuration: every key, its default and what it does. Generated from",
             "# lp_live/config.py by `python -m lp_live.core.config yaml`; edit the declarations there.",
             "# Unknown keys and bad values are errors. Command-line flags override these values.", ""]
    for section in SECTIONS:
        lines.append(f"{section}:")
        for dotted, f, tp in options([section]):
            entry = f"  {dotted.split('.')[1]}: {yaml_value(_default(f))}"
            what = allowed(f, tp)
            comment = f.metadata["help"] + (f" [{what}]" if what and _base(tp) is not bool else "")
            lines.append(f"{entry:<32}# {comment}")
        lines.append("")
    return "\n".join(lines[:-1]) + "\n"


def options_table() -> str:
    """The README's option table (markdown), from the declarations."""
    rows = ["| key | flag | default | allowed | what it does |", "|---|---|---|---|---|"]
    for dotted, f, tp in options():
        flag = flag_name(*dotted.split("."))
        base = _base(tp)
        flag_text = f"`{flag}`" + (f" / `--no-{flag[2:]}`" if base is bool and flag else "") if flag else ""
        rows.append(f"| `{dotted}` | {flag_text} | `{yaml_value(_default(f))}` | {allowed(f, tp)} "
                    f"| {f.metadata['help'].replace('|', '/')} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    what = (sys.argv[1:] if argv is None else argv) or ["yaml"]
    if what[0] not in ("yaml", "table"):
        print("usage: python -m lp_live.core.config yaml|table", file=sys.stderr)
        return 2
    sys.stdout.write(default_yaml() if what[0] == "yaml" else options_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
