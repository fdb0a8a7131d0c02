"""Run configuration: loading and checking values, and what is derived from the declarations.

The options are declared once, in `config_schema` (re-exported here). The packaged
`default.yaml`, the CLI flags and their help, and the README's option table are all derived
from those declarations (`python -m lp_live.core.config yaml|table` writes them). Loading checks
every value and reports every problem in one `ConfigError` line. This module imports neither
torch nor the engines.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import types
import typing
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from .config_schema import (
    INPUT_SIZES,
    RUN_SECTIONS,
    SECTIONS,
    SINKS,
    AnimateOptions,
    AnimationConfig,
    Config,
    EngineConfig,
    FaceConfig,
    ServeConfig,
    StreamConfig,
    opt,
)
from .errors import UserError, one_line

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

__all__ = [
    "DEFAULT_CONFIG",
    "INPUT_SIZES",
    "RUN_SECTIONS",
    "SECTIONS",
    "SINKS",
    "AnimateOptions",
    "AnimationConfig",
    "Config",
    "ConfigError",
    "EngineConfig",
    "FaceConfig",
    "ServeConfig",
    "StreamConfig",
    "add_flags",
    "default_yaml",
    "load_config",
    "opt",
    "options_table",
    "override",
    "overrides_from_args",
    "read_config_file",
]

DEFAULT_CONFIG: Traversable = resources.files("lp_live") / "data" / "default.yaml"


class ConfigError(UserError):
    """A configuration file or value that cannot be used."""


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


def _metavar(key: str, base: type) -> str:
    """How a flag's value reads in the help: N for a count, SECONDS, MB, X for a number, else the key ("HOST")."""
    named = {"size": "PX", "photo_side": "PX", "port": "PORT", "fps": "FPS", "smoothing_min_cutoff": "HZ",
             "max_sdp_kb": "KB"}
    if key in named:
        return named[key]
    if base is int:
        return "N"
    if base is float:
        return "SECONDS" if key.endswith("_s") else "MB" if key.endswith("_mb") else "X"
    return key.upper()


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
        else:
            kw["metavar"] = f.metadata.get("metavar") or _metavar(dotted.split(".")[1], base)
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
             "# lp_live/core/config_schema.py by `python -m lp_live.core.config yaml`; edit the declarations there.",
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
