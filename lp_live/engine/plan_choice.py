"""The optimized engine's `RewritePlan` on a CPU, chosen by measurement per instruction set.

Why: `default_plan` was measured where AVX-512 exists; on an AVX2-only CPU (2-core Zen 3) the
same plan made W slower than the baseline's (4.1 vs 3.8 s per frame). Each rewrite is exact,
so only its speed decides, and that depends on the ISA oneDNN and ATen's kernels run at.

How: starting from `default_plan`, each rewrite of W and then of G is timed on and off (the
others as decided so far) on the engine's own networks, in W's and G's dtypes, eager, on just
the parts it changes: W's wide hourglass convs, three hourglass convs and the mask/occlusion
heads on inputs captured from one forward at input `PROBE_SIZE`, cropped to `CROP` pixels;
W's sampler whole at that size; G whole on a small feature. A rewrite is kept only where it
takes at most `KEEP_RATIO` of the time without it (rewrites cost build time and, in bf16, an
extra rounding, so a tie drops them). Eager timing of parts is a proxy for the compiled
engine (inductor with freezing picks its own conv layouts, so the layout rewrites matter less
there); `lp-live bench` times the real stages. A few seconds, once: the choice is cached per
CPU model, ISA, torch version, thread count, dtypes and input size in
<user cache>/lp-live/rewrite-plan.json.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from typing import Any

import torch
from torch import nn

from ..core import cpuisa, cputune, usercache
from .dtypes import NAMES
from .fast import FastGenerator, FastWarping, Occlusion, Occlusion3d, build_sampler
from .plan import RewritePlan, default_plan
from .precision import cpu_supports_bf16
from .rewrites import SplitConv3d, cast, occlusion_as_conv3d

log = logging.getLogger(__name__)

CACHE_NAME = "rewrite-plan.json"
REWRITE_PLANS = ("measured", "default")
PROBE_SIZE = 128  # W's smallest input (volume (16, 32, 32)); its conv inputs are cropped to CROP pixels wide
CROP = 16
GENERATOR_FEATURE = 8  # G's probe runs on an 8 x 8 feature (input 32's; G takes any size)
KEEP_RATIO = 0.97
REPEATS = 3
OFF = {"hourglass_chunk": None, "split_channels": None}  # a rewrite's "off" value where it is not False
ON = {"hourglass_chunk": 256, "split_channels": 64}  # and its "on" value where it is not True
WARPING_REWRITES = ("hourglass_chunk", "warping_channels_last", "split_channels", "occlusion_as_conv3d",
                    "sample_channels_last", "split_sampling", "separable_sampling")
GENERATOR_REWRITES = ("polyphase_spade", "generator_channels_last")


def cpu_isa() -> str:
    """The instruction set torch's CPU kernels run at here: ATen's dispatch level (lowered by
    ATEN_CPU_CAPABILITY), with oneDNN's cap where ONEDNN_MAX_CPU_ISA sets one."""
    aten = torch.backends.cpu.get_cpu_capability().lower()
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA", "").lower()
    isa = aten if not onednn or onednn == aten else f"{aten}, onednn {onednn}"
    level = cpuisa.override()  # LP_LIVE_CPU_ISA: lp-live's own view of the CPU, capped
    return isa if level is None else f"{isa}, lp-live {level}"


def isa_runs_bf16() -> bool:
    """False where ATen is capped below AVX-512, oneDNN below its bf16 level (`cpu_isa`), or the
    CPU (as LP_LIVE_CPU_ISA may cap it) has no native bf16: bf16 is then emulated."""
    parts = [part for part in cpu_isa().split(", ") if not part.startswith("lp-live ")]
    levels = [part.split()[-1] for part in parts]
    onednn_ok = len(levels) == 1 or any(k in levels[1] for k in ("bf16", "fp16", "amx", "all", "default"))
    return levels[0].startswith("avx512") and onednn_ok and cpu_supports_bf16()


def cache_key(dtypes: dict[str, torch.dtype], input_size: int) -> str:
    return (f"{cputune.cpu_model()} | {cpu_isa()} | torch {cputune.torch_version()} | "
            f"{torch.get_num_threads()} threads | W {NAMES[dtypes['warping']]}, G {NAMES[dtypes['generator']]} | "
            f"input {input_size}")


def _best_ms(fns: dict[str, Callable[[], Any]], repeats: int = REPEATS) -> dict[str, float]:
    """Least ms of each callable over `repeats` (after the probe's untimed first call); the
    callables alternate, so a change of machine load hits all of them."""
    best = dict.fromkeys(fns, float("inf"))
    with torch.no_grad():
        for _ in range(repeats):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                best[name] = min(best[name], (time.perf_counter() - t0) * 1e3)
    return best


def _crop(x: torch.Tensor) -> torch.Tensor:
    """At most `CROP` pixels of H and W (the last two dims), as a new contiguous tensor."""
    return x[..., :CROP, :CROP].clone()


class _WarpingProbe:
    """W's parts that its rewrites change, on inputs captured from one forward at `PROBE_SIZE`
    (3-D conv inputs cropped to `CROP` pixels): per rewrite, a callable with it on and one off."""

    def __init__(self, models, dtype: torch.dtype) -> None:
        self.dtype = dtype
        depth = models.appearance_feature_extractor.reshape_depth
        side = PROBE_SIZE // 4
        self.grid = (depth, side, side)
        plain = RewritePlan(generator_channels_last=False, warping_channels_last=False)
        self.warping = FastWarping(models.warping_module, dtype=dtype, plan=plain, grid_shape=self.grid)
        dense = models.warping_module.dense_motion_network
        # copies: `cast` converts in place, and the shared networks must stay as they are
        self.mask_conv, self.occlusion_conv = copy.deepcopy(dense.mask), copy.deepcopy(dense.occlusion)
        convs = [m for m in self.warping.hourglass.modules() if isinstance(m, nn.Conv3d)]
        self.wide = [c for c in convs if c.in_channels >= 2 * ON["hourglass_chunk"]]
        self.layout = [convs[0], convs[len(convs) // 2], convs[-1]]  # first, middle, last of the hourglass
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.feature = torch.randn(1, 32, *self.grid)
            self.kp_source = torch.rand(1, 21, 3) * 1.6 - 0.8
            self.kp_driving = self.kp_source + 0.05 * torch.randn(1, 21, 3)
        inputs: dict[nn.Module, torch.Tensor] = {}

        def capture(module: nn.Module, args: tuple) -> None:  # None: the input is not replaced
            inputs.setdefault(module, _crop(args[0]))

        hooks = [c.register_forward_pre_hook(capture) for c in {*self.wide, *self.layout}]
        with torch.no_grad():
            self.compressed = dense.compress_source(self.feature)
            x = self.warping.sampler.hourglass_input(self.compressed, self.kp_driving, self.kp_source)
            self.prediction = self.warping.hourglass(x.to(dtype))
            self.logits = self.warping.mask(self.prediction)
        for h in hooks:
            h.remove()
        self.inputs = inputs
        self.cropped_prediction = _crop(self.prediction)

    def _convs(self, convs: list[nn.Module], fmt: torch.memory_format, chunk: int | None = None) -> Callable:
        pairs = []
        for conv in convs:
            module = SplitConv3d(conv, tuple(range(chunk, conv.in_channels, chunk))) if chunk else conv
            pairs.append((copy.deepcopy(module).to(memory_format=fmt), self.inputs[conv].contiguous(memory_format=fmt)))
        return lambda: [m(x) for m, x in pairs]

    def _heads(self, fmt: torch.memory_format, chunk: int | None, as_conv3d: bool) -> Callable:
        """The mask conv and the occlusion logits as the engine builds them, on the cropped prediction."""
        channels = self.cropped_prediction.shape[1]
        splits = tuple(range(chunk, channels, chunk)) if chunk else ()
        mask = cast(SplitConv3d(self.mask_conv, splits, float_output=True), self.dtype, fmt)
        if self.occlusion_conv is None:
            occlusion = None
        elif as_conv3d:
            conv3d = occlusion_as_conv3d(self.occlusion_conv, channels, self.grid[0])
            occlusion = Occlusion3d(cast(SplitConv3d(conv3d, splits, float_output=True), self.dtype, fmt))
        else:
            occlusion = Occlusion(cast(self.occlusion_conv, self.dtype, None))
        x = self.cropped_prediction.contiguous(memory_format=fmt)
        return lambda: (mask(x), occlusion.logits(x) if occlusion is not None else None)

    def _sampler(self, plan: RewritePlan) -> Callable:
        sampler = build_sampler(plan, self.grid, torch.device("cpu"))
        fmt = torch.channels_last_3d if plan.sample_channels_last else torch.contiguous_format
        feature, compressed = (v.contiguous(memory_format=fmt) for v in (self.feature, self.compressed))
        kp = (self.kp_driving, self.kp_source)
        return lambda: (sampler.hourglass_input(compressed, *kp),
                        sampler.warp(feature, sampler.deformation(self.logits, *kp)))

    def variant(self, plan: RewritePlan, name: str) -> Callable:
        """The parts `name` changes, built for `plan`."""
        fmt = torch.channels_last_3d if plan.warping_channels_last else torch.contiguous_format
        if name == "hourglass_chunk":
            return self._convs(self.wide, fmt, plan.hourglass_chunk)
        if name == "warping_channels_last":
            convs = self._convs(self.layout, fmt)
            heads = self._heads(fmt, plan.split_channels, plan.occlusion_as_conv3d)
            return lambda: (convs(), heads())
        if name in ("split_channels", "occlusion_as_conv3d"):
            return self._heads(fmt, plan.split_channels, plan.occlusion_as_conv3d)
        return self._sampler(plan)


class _GeneratorProbe:
    """G on a `GENERATOR_FEATURE`-wide feature, built per plan."""

    def __init__(self, models, dtype: torch.dtype) -> None:
        self.generator, self.dtype = models.spade_generator, dtype
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.feature = torch.randn(1, 256, GENERATOR_FEATURE, GENERATOR_FEATURE)

    def variant(self, plan: RewritePlan, name: str) -> Callable:
        module = FastGenerator(self.generator, dtype=self.dtype, channels_last=plan.generator_channels_last,
                               polyphase=plan.polyphase_spade)
        return lambda: module(self.feature)


def measure_plan(models, dtypes: dict[str, torch.dtype]) -> tuple[RewritePlan, dict[str, Any]]:
    """The plan whose rewrites each beat their absence here, and the timings that decided it:
    {"rewrites": {field: {"on": ms, "off": ms, "kept": bool}}} (eager, ms of the parts each
    rewrite changes: `_WarpingProbe`, `_GeneratorProbe`). Starts from `default_plan`; each
    decision holds for the ones after it."""
    cpu = torch.device("cpu")
    plan = replace(default_plan(cpu, dtypes["warping"]),
                   generator_channels_last=default_plan(cpu, dtypes["generator"]).generator_channels_last)
    rewrites: dict[str, dict[str, Any]] = {}
    for probe, names in ((_WarpingProbe(models, dtypes["warping"]), WARPING_REWRITES),
                         (_GeneratorProbe(models, dtypes["generator"]), GENERATOR_REWRITES)):
        for name in names:
            on, off = ON.get(name, True), OFF.get(name, False)
            with torch.no_grad():
                fns = {"on": probe.variant(replace(plan, **{name: on}), name),
                       "off": probe.variant(replace(plan, **{name: off}), name)}
                for fn in fns.values():  # oneDNN primitive creation, first-touch allocations
                    fn()
            ms = _best_ms(fns)
            kept = ms["on"] <= KEEP_RATIO * ms["off"]
            plan = replace(plan, **{name: on if kept else off})
            rewrites[name] = {**ms, "kept": kept}
    return plan, {"rewrites": rewrites, "probe_size": PROBE_SIZE, "crop": CROP, "generator_feature": GENERATOR_FEATURE}


def _from_entry(entry: dict) -> RewritePlan:
    names = {f.name for f in fields(RewritePlan)}
    plan = entry["plan"]
    if not isinstance(plan, dict) or set(plan) != names:
        raise KeyError(f"plan fields {sorted(plan) if isinstance(plan, dict) else plan} != {sorted(names)}")
    return RewritePlan(**plan)


def rewrites_on(plan: RewritePlan) -> list[str]:
    """The names of the rewrites `plan` applies."""
    return [f.name for f in fields(plan) if getattr(plan, f.name) not in (None, False)]


def why(timings: dict[str, Any]) -> dict[str, str]:
    """Per rewrite, kept or dropped with its on/off ms; per stage, the chosen copy against the baseline's."""
    out = {name: f"{'kept' if t['kept'] else 'dropped'} {t['on']:.0f}/{t['off']:.0f} ms"
           for name, t in timings.get("rewrites", {}).items()}
    for stage, t in timings.get("stages", {}).items():
        out[stage] = f"{t['optimized']:.0f} vs baseline {t['baseline']:.0f} ms"
    return out


def choose_plan(models, device: torch.device, dtypes: dict[str, torch.dtype], input_size: int, *,
                measured: bool = True) -> tuple[RewritePlan, dict[str, Any]]:
    """(the plan, a report {"source", "isa", "on": the rewrites applied, "why": per rewrite,
    "timings"}) for the optimized engine.

    On a CPU with `measured`: from the user cache, else `measure_plan` (then cached). Elsewhere,
    or with `measured` False, `default_plan` (W's fields by W's dtype, G's by G's).
    """
    plan = replace(default_plan(device, dtypes["warping"]),
                   generator_channels_last=default_plan(device, dtypes["generator"]).generator_channels_last)
    isa = cpu_isa() if device.type == "cpu" else device.type
    if device.type != "cpu" or not measured:
        return plan, {"source": "default table", "isa": isa, "on": rewrites_on(plan), "why": {}, "timings": {}}
    key = cache_key(dtypes, input_size)
    entry = usercache.cache_entry(CACHE_NAME, key)
    if entry is not None:
        try:
            timings = entry.get("timings", {})
            plan = _from_entry(entry)
            return plan, {"source": "cache", "isa": isa, "on": rewrites_on(plan), "why": why(timings),
                          "timings": timings}
        except (KeyError, TypeError) as e:
            log.warning("ignoring the cached rewrite plan for %s (%s: %s)", key, type(e).__name__, e)
    t0 = time.perf_counter()
    plan, timings = measure_plan(models, dtypes)
    timings["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("rewrite plan measured in %.1f s (%s): %s", time.perf_counter() - t0, isa, why(timings))
    usercache.store_cache_entry(CACHE_NAME, key, {"plan": asdict(plan), "timings": timings})
    return plan, {"source": "measured", "isa": isa, "on": rewrites_on(plan), "why": why(timings),
                  "timings": timings}
