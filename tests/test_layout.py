"""The package layout shows the data flow: imports run one way (camera -> sink), no import circles,
no file over 450 lines. Read from the source with `ast`: function-level imports count too."""

from __future__ import annotations

import ast
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lp_live"
MAX_LINES = 450

# Lower layers never import higher ones; packages of one layer do not import each other.
LAYERS = [
    {"core"},  # options, errors, signals, progress, CPU tuning: no torch model code
    {"media", "models"},  # video in/out; the networks only
    {"motion", "kernels"},  # keypoint maths and the motion filter; W's samplers and Triton kernels
    {"face"},  # detection, crops, paste-back
    {"engine"},  # baseline and optimized engines
    {"session"},  # the per-frame path: photos, driving streams, the animator
    {"stream"},  # the live app's threads, sinks, HUD, the offline render
    {"server"},  # lp-live serve
    {"tools"},  # bench, kernel bench, serve bench, test client, browser driver
    {"doctor"},  # lp-live doctor: checks every layer
    {"cli", "__main__", "__init__"},  # the command line
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module(path: Path) -> str:
    parts = ["lp_live", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in PACKAGE.rglob("*.py")}


def _imports(module: str, path: Path) -> set[str]:
    """The lp_live modules `module` imports (a name imported from a package counts as that
    submodule when it is one, else as the package itself)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "lp_live":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.split(".")[0] == "lp_live")
    return out - {module}


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_imports_run_one_way():
    wrong = []
    for module, targets in GRAPH.items():
        for target in targets:
            a, b = _part(module), _part(target)
            if a == b or (b == "__init__" and target == "lp_live"):
                continue
            if LAYER[b] >= LAYER[a]:
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the flow: " + ", ".join(sorted(wrong))


def test_no_import_circles():
    circles, state = [], {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == "open":
                circles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles: " + "; ".join(circles)


def test_no_file_over_450_lines():
    lines = {str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in MODULES.values()}
    long = {name: n for name, n in lines.items() if n > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"


def test_every_package_has_a_layer():
    assert {_part(m) for m in MODULES} <= set(LAYER)


def test_paths_to_the_checkout_still_point_at_it():
    """Modules that find the checkout from their own file (provenance, bench, the threading probe)."""
    from lp_live.core import cputune, provenance
    from lp_live.tools import bench

    root = PACKAGE.parent
    assert provenance.REPO == bench.REPO == root
    assert cputune._probe_env("PASSIVE", 1)["PYTHONPATH"].split(os.pathsep)[0] == str(root)
