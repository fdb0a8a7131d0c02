"""`lp-live bench` in text: the batch sizes it is given, and its results as a table and a chart.

The measurement itself is `bench.py`; this module imports no torch (the CLI parses its arguments
before the CPU threading is set).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

# the engine's `StageTimer` stages, in the order of a step (rows and bars follow it)
STAGES = ("copy_h2d", "pre", "motion", "stitching", "warping", "generator", "post", "copy_d2h")


def parse_batches(values: Sequence[str | int]) -> list[int]:
    """Batch sizes from "1 2 4" or "1,2,4" style arguments, in order, without repeats."""
    sizes: list[int] = []
    for value in values:
        for part in str(value).split(","):
            if not part.strip():
                continue
            size = int(part)
            if size < 1:
                raise ValueError(f"batch sizes must be >= 1, got {size}")
            if size not in sizes:
                sizes.append(size)
    if not sizes:
        raise ValueError("no batch size given")
    return sizes


# ---------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------
def _fmt(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return f"{v:,.1f}{unit}" if abs(v) >= 10 else f"{v:.3g}{unit}"


def _stage_rows(modes: dict[str, Any], names: list[str], both: bool, add) -> list[list[str]]:
    """The per-stage rows (via `add`), then "other", and on CUDA the stage pass's own step time."""
    seen = [s for s in (*STAGES, *sorted({k for n in names for k in modes[n].get("stages_ms", {})} - set(STAGES)))
            if s != "other" and any(s in modes[n].get("stages_ms", {}) for n in names)]
    for stage in seen:
        parents = {modes[n].get("stages_nested", {}).get(stage) for n in names} - {None}
        add(f"  {stage}" + (f" (in {', '.join(sorted(parents))})" if parents else ""), stage, " ms",
            source="stages_ms")
    if any("other" in modes[n].get("stages_ms", {}) for n in names):
        add("  other (outside stages)", "other", " ms", source="stages_ms")
    extra = []
    if any(modes[n].get("stage_pass_ms_per_step") is not None for n in names):
        extra.append(["  = stage pass step", *(_fmt(modes[n].get("stage_pass_ms_per_step"), " ms") for n in names)]
                     + ([""] if both else []))
    return extra


def _setup_lines(results: dict[str, Any]) -> list[str]:
    """Threading, competing load and each engine's precision, one line each (where known)."""
    meta, lines = results["meta"], []
    th = meta.get("threading")
    if th:
        env = ", ".join(f"{k}={v}" for k, v in th.get("env", {}).items()) or "no OpenMP variables"
        lines.append(f"threading: {th['torch_threads']} threads, {th['wait_policy']} wait ({th['openmp']}; "
                     f"{th['source']}{': ' + th['choice'] if th.get('choice') else ''}; {env})")
    load = meta.get("load")
    if load:
        lines.append(f"competing load: {load['processes']} busy {load['kind']} process(es) during the timed steps"
                     if load["processes"] else "competing load: none")
    for name, m in results["modes"].items():
        if m.get("precisions"):
            per = ", ".join(f"{k} {v}" for k, v in m["precisions"].items())
            lines.append(f"{name} precision: {per} ({m.get('precision_source', '-')})")
        report = m.get("plan_report")
        if report:
            took = report.get("timings", {}).get("seconds")
            lines.append(f"{name} rewrite plan ({report['source']}{f' in {took:.1f} s' if took else ''}, "
                         f"{report['isa']}): "
                         f"{', '.join(report.get('on') or ['none'])}")
            if report.get("why"):
                lines.append("  on vs off, ms of the parts each changes (kept where on wins by 3 %): "
                             + "; ".join(f"{k} {v}" for k, v in report["why"].items()))
    return lines


def format_table(results: dict[str, Any]) -> str:
    """The comparison as a plain-text table: rows are measures, columns the modes and the ratio."""
    meta, modes = results["meta"], results["modes"]
    names = list(modes)
    both = "baseline" in modes and "optimized" in modes
    header = ["", *names] + (["improvement"] if both else [])
    rows: list[list[str]] = []

    def add(label: str, key: str, unit: str = "", higher_better: bool = False, source: str | None = None) -> None:
        vals = [(modes[n].get(source, {}) if source else modes[n]).get(key) for n in names]
        row = [label, *(_fmt(v, unit) for v in vals)]
        if both:
            b, o = vals[names.index("baseline")], vals[names.index("optimized")]
            ratio = (o / b if higher_better else b / o) if b and o else None
            row.append(f"{ratio:.2f}x" if ratio else "-")
        rows.append(row)

    add("time per frame", "ms_per_frame", " ms")
    add("frames per second", "fps", "", higher_better=True)
    add("latency p50 (step)", "ms_per_step_p50", " ms")
    add("latency p95 (step)", "ms_per_step_p95", " ms")
    add("peak memory", "peak_memory_mb", " MiB")
    add("source (once)", "source_ms", " ms")
    rows += _stage_rows(modes, names, both, add)
    rows.append(["compile", *(_fmt(modes[n].get("compile_s"), " s") for n in names)] + ([""] if both else []))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        f"lp-live bench: {meta['device']}, torch {meta['torch']}, commit {meta['git_commit'][:12]}, {meta['date']}",
        f"{meta['weights']} weights, {meta['inputs']}, input {meta['input_size']}, batch {meta['batch']}",
        *_setup_lines(results),
        "  ".join(h.ljust(w) for h, w in zip(header, widths)),
    ]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    if "roofline" in results:
        lines += ["", format_roofline(results)]
    if len(results.get("batches", {})) > 1:
        lines += ["", format_batches(results)]
    if "kernels" in results:
        from .kernel_bench import format_kernel_benchmarks

        lines += ["", format_kernel_benchmarks(results["kernels"])]
    return "\n".join(lines)


def format_roofline(results: dict[str, Any]) -> str:
    """The roofline: the matmul peak per dtype, then per stage GFLOP per frame and each engine's
    GFLOP/s with its share of the peak of the stage's dtype."""
    roof, modes = results["roofline"], results["modes"]
    peaks = ", ".join(f"{k} {_fmt(v)} GFLOP/s" for k, v in roof["peak_gflop_per_s"].items())
    lines = [f"roofline: matmul peak {peaks} ({roof['peak_gemm']}); GFLOP per frame by {roof['flop_counter']} "
             f"on the baseline's networks ({roof['flops_source']})"]
    names = list(modes)
    header = ["stage", "GFLOP/frame", *(f"{n} GFLOP/s (share)" for n in names)]
    rows = []
    for stage in sorted({s for n in names for s in modes[n].get("roofline", {})}, key=STAGES.index):
        per = [modes[n].get("roofline", {}).get(stage) for n in names]
        gflop = next(p["gflop_per_frame"] for p in per if p)
        rows.append([stage, _fmt(gflop), *("-" if p is None else f"{_fmt(p['gflop_per_s'])} ("
                                            + (f"{p['share_of_peak']:.0%} of {p['dtype']}" if p["share_of_peak"]
                                               is not None else f"no {p['dtype']} peak") + ")" for p in per)])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
              for r in [header, *rows]]
    return "\n".join(lines)


def format_batches(results: dict[str, Any]) -> str:
    """One row per batch size and mode: step latency p50/p95, time per frame, frames/s (B / step)."""
    header = ["batch", "mode", "step p50", "step p95", "per frame", "frames/s", "frames/s (p50)"]
    rows = []
    for b, entry in results["batches"].items():
        for mode, r in entry["modes"].items():
            rows.append([b, mode, _fmt(r["ms_per_step_p50"], " ms"), _fmt(r["ms_per_step_p95"], " ms"),
                         _fmt(r["ms_per_frame"], " ms"), _fmt(r["fps"]), _fmt(r.get("fps_p50"))])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in [header, *rows])


def plot(results: dict[str, Any], path: str | Path) -> None:
    """A PNG bar chart of time per frame and per-stage milliseconds, drawn with OpenCV."""
    modes = results["modes"]
    names = list(modes)
    colors = {"baseline": (80, 80, 200), "optimized": (60, 170, 60)}
    labels = ["per frame", *[s for s in STAGES if any(s in modes[n].get("stages_ms", {}) for n in names)]]
    values = {n: [modes[n]["ms_per_frame"], *[modes[n].get("stages_ms", {}).get(s, 0.0) for s in labels[1:]]]
              for n in names}
    top = max(max(v) for v in values.values()) or 1.0
    w, h, left, bottom = 900, 480, 70, 90
    img = np.full((h, w, 3), 255, np.uint8)
    meta = results["meta"]
    cv2.putText(img, f"lp-live bench: {meta['device'][:60]}", (10, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                cv2.LINE_AA)
    cv2.putText(img, f"torch {meta['torch']}  {meta['git_commit'][:10]}  {meta['date']}  {meta['weights']} weights",
                (10, 44), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (60, 60, 60), 1, cv2.LINE_AA)
    plot_h = h - bottom - 60
    group = (w - left - 20) / len(labels)
    bar = group / (len(names) + 1)
    for gi, label in enumerate(labels):
        for ni, name in enumerate(names):
            v = values[name][gi]
            x0 = int(left + gi * group + ni * bar)
            y0 = int(h - bottom - plot_h * v / top)
            cv2.rectangle(img, (x0, y0), (int(x0 + bar - 2), h - bottom), colors.get(name, (120, 120, 120)), -1)
            cv2.putText(img, _fmt(v), (x0, y0 - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
        cv2.putText(img, label, (int(left + gi * group), h - bottom + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.42,
                    (0, 0, 0), 1, cv2.LINE_AA)
    cv2.line(img, (left - 5, h - bottom), (w - 10, h - bottom), (0, 0, 0), 1)
    cv2.putText(img, "ms", (10, h - bottom - plot_h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    for ni, name in enumerate(names):
        cv2.rectangle(img, (left + ni * 160, h - 40), (left + ni * 160 + 14, h - 26), colors.get(name, (0, 0, 0)), -1)
        cv2.putText(img, name, (left + ni * 160 + 20, h - 28), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1,
                    cv2.LINE_AA)
    if "speedup" in results:
        cv2.putText(img, f"optimized: {results['speedup']['time_per_frame']:.2f}x faster per frame",
                    (w - 360, h - 28), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
        raise OSError(f"cannot write the chart to {path}")
