"""CPU threading chosen by measurement: intra-op threads and the OpenMP wait policy, set before torch loads.

Why: PyTorch's CPU build runs its intra-op parallelism on GNU OpenMP (libgomp; see
`torch.__config__.parallel_info()`). By default a libgomp thread that reaches the end of a
parallel region spins (about 300k iterations) before sleeping, and the next region waits for
every thread of the team. When another process holds one of the cores (a video call, a
recorder, another lp-live), the team thread that shares a core with it gets a scheduler slice
only every few milliseconds, while its spinning team-mates burn the other core: every parallel
region then costs a slice. Measured on a 2-core Intel(R) Xeon(R) Processor (AVX-512 BF16, no
AMX) with one busy process beside it: an element-wise add of 393k floats 7.9 ms with 2 threads
(0.12 ms quiet), 0.2 ms with OMP_WAIT_POLICY=PASSIVE or 1 thread; the motion extractor
(eager, 256) 6.8 s with 2 threads, 0.34 s with PASSIVE, 0.75 s with 1 thread. Quiet, PASSIVE
costs a little (threads sleep and are woken per region), so neither setting is right
everywhere: `choose_threading()` measures.

How: the thread count and wait policy must be in the environment before torch is imported
(libgomp reads them when it loads), so the candidates are timed in short subprocesses, one per
wait policy (the thread count can change inside one): a small workload of the engine's kinds of
ops (2-D and 3-D convs, norms, element-wise ops), once quiet and once beside one competing busy
process (`CompetingLoad`). The candidate with the least quiet + loaded time wins: the loaded
time is what a user on a call sees, the quiet time breaks ties. The choice is cached per CPU
model, torch version and CPU count in <user cache>/lp-live/cpu-threading.json (`usercache`); `lp-live bench
--retune` measures again. A user's own OMP_NUM_THREADS / OMP_WAIT_POLICY (or GOMP_SPINCOUNT,
KMP_BLOCKTIME) always wins over the choice. This module imports no torch (its probe
subprocesses do).

Deciding (`choose_threading`) only reads the environment; one step writes it:
`set_process_threading`, which the CLI calls once at a command's start.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from . import cpuisa, usercache

log = logging.getLogger(__name__)

CACHE_NAME = "cpu-threading.json"
PRECISION_CACHE_NAME = "cpu-precision.json"  # written by engine.cpu_precision; `--retune` clears it too
WAIT_POLICIES = ("default", "PASSIVE")  # default: libgomp spins, then sleeps; PASSIVE: sleeps at once
THREAD_VARS = ("OMP_NUM_THREADS",)
WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # libgomp; KMP_*: Intel's libiomp
PROBE_SECONDS = 0.25  # per candidate and condition
PROBE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Threading:
    """One candidate: intra-op threads and the OpenMP wait policy."""

    threads: int
    wait_policy: str = "default"

    @property
    def label(self) -> str:
        return f"{self.threads} threads, {self.wait_policy} wait" if self.threads > 1 else "1 thread"

    def env(self) -> dict[str, str]:
        """The environment variables that select it (the default policy is no variable)."""
        env = {"OMP_NUM_THREADS": str(self.threads)}
        if self.wait_policy != "default":
            env["OMP_WAIT_POLICY"] = self.wait_policy
        return env


@dataclass
class Tuning:
    """What `choose_threading()` decided (and `set_process_threading` set), for reports (bench JSON, doctor).

    source: "measured", "cache", "env" (the user's variables cover everything), "failed"
        (measurement failed: torch's defaults), or "not applied" (torch was imported first).
    choice: the measured or cached best, None where nothing was measured or cached.
    env: the threading variables in effect for this process once set, the user's included.
    timings: mean ms per probe step, {candidate label: {"quiet": ms, "loaded": ms}}.
    """

    source: str
    choice: Threading | None
    env: dict[str, str]
    key: str
    timings: dict[str, dict[str, float]] = field(default_factory=dict)
    openmp: str = "unknown"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["choice"] = self.choice.label if self.choice else None
        return d


class _Applied:
    """What `set_process_threading` set in this process (once, before torch loads)."""

    def __init__(self) -> None:
        self.tuning: Tuning | None = None


_applied = _Applied()


# ---------------------------------------------------------------------------------------------
# machine and cache
# ---------------------------------------------------------------------------------------------
def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def physical_cores() -> int:
    """Physical cores among the usable CPUs (torch's default thread count); CPUs if unknown."""
    cpus = usable_cpus()
    try:
        allowed = os.sched_getaffinity(0)
        cores, proc, phys = set(), None, "0"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (s.strip() for s in line.partition(":"))
            if key == "processor":
                proc = int(value)
            elif key == "physical id":
                phys = value
            elif key == "core id" and proc in allowed:
                cores.add((phys, value))
        return max(1, min(len(cores), cpus)) if cores else cpus
    except (OSError, ValueError, AttributeError):
        return cpus


def _cpuinfo(key: str) -> str | None:
    """The first value of `key` ("model name", "flags") in /proc/cpuinfo; None where absent or unreadable."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            if name.strip() == key:
                return value.strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


# the instruction-set flags that decide CPU speed here (AMX: bf16 tile matmuls; AVX-512 BF16: bf16 dot products)
FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_features() -> list[str]:
    """Which of `FEATURES` /proc/cpuinfo lists for this CPU (empty where it cannot be read), less
    those the `LP_LIVE_CPU_ISA` override hides (`cpuisa`)."""
    flags = cpuisa.cpu_flags()
    return [f for f in FEATURES if f in flags]


def torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "unknown"


def machine_key() -> str:
    """The cache key: CPU model, torch version, usable CPUs (and the `LP_LIVE_CPU_ISA` cap, if any)."""
    level = cpuisa.override()
    return f"{cpu_model()} | torch {torch_version()} | {usable_cpus()} cpus" + (f" | isa {level}" if level else "")


def read_cache(key: str) -> tuple[Threading, dict] | None:
    """The cached threading choice for `key` and its entry, or None (a malformed entry is ignored)."""
    entry = usercache.cache_entry(CACHE_NAME, key)
    if entry is None:
        return None
    try:
        choice = Threading(int(entry["threads"]), str(entry["wait_policy"]))
        if choice.threads < 1 or choice.wait_policy not in WAIT_POLICIES:
            raise ValueError(f"bad choice {choice}")
    except (KeyError, ValueError, TypeError) as e:
        log.warning("ignoring the cached CPU threading for %s (%s: %s)", key, type(e).__name__, e)
        return None
    return choice, entry


def write_cache(key: str, choice: Threading, timings: dict, openmp: str) -> None:
    usercache.store_cache_entry(CACHE_NAME, key, {"threads": choice.threads, "wait_policy": choice.wait_policy,
                                        "timings": timings, "openmp": openmp})


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
def candidates(cores: int) -> list[Threading]:
    """All cores or one fewer (a core left to the other application), each with both wait
    policies; one thread has no team to wait for."""
    counts = sorted({cores, max(1, cores - 1)}, reverse=True)
    return [Threading(n, p) for n in counts for p in (WAIT_POLICIES if n > 1 else WAIT_POLICIES[:1])]


def choose(timings: dict[str, dict[str, float]], options: list[Threading]) -> Threading:
    """The candidate with the least quiet + loaded time (both must have been measured)."""
    scored = [(timings[c.label]["quiet"] + timings[c.label]["loaded"], i, c) for i, c in enumerate(options)
              if c.label in timings]
    if not scored:
        raise ValueError("no candidate was measured")
    return min(scored)[2]


def _probe_env(policy: str, threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS + WAIT_VARS}
    env.update(Threading(threads, policy).env())
    root = str(Path(__file__).resolve().parents[2])  # this lp_live, whatever sys.path says
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def measure(cores: int) -> tuple[dict[str, dict[str, float]], str]:
    """Time every candidate for `cores` in probe subprocesses: ({label: {quiet, loaded}}, OpenMP runtime)."""
    options = candidates(cores)
    timings: dict[str, dict[str, float]] = {}
    openmp = "unknown"
    for policy in WAIT_POLICIES:
        counts = sorted({c.threads for c in options if c.wait_policy == policy}, reverse=True)
        if not counts:
            continue
        cmd = [sys.executable, "-m", "lp_live.core.cputune", "--probe", *map(str, counts)]
        out = subprocess.run(cmd, env=_probe_env(policy, counts[0]), capture_output=True, text=True,
                             timeout=PROBE_TIMEOUT_S)
        if out.returncode != 0:
            raise RuntimeError(f"threading probe failed (exit {out.returncode}): {out.stderr.strip()[-500:]}")
        result = json.loads(out.stdout.strip().splitlines()[-1])
        openmp = result["openmp"]
        for n, t in result["timings"].items():
            timings[Threading(int(n), policy).label] = t
    return timings, openmp


def _openmp_runtime() -> str:
    """The OpenMP library this process has loaded (Linux: from /proc/self/maps)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    for lib in ("libgomp", "libiomp5", "libomp"):
        if lib in maps:
            return lib
    return "none found"


def _probe(counts: list[int]) -> dict[str, Any]:
    """Runs in a probe subprocess (environment already set): mean ms per workload step for each
    thread count, quiet and beside one competing busy process."""
    import torch
    import torch.nn.functional as F

    from .cpuload import CompetingLoad

    torch.manual_seed(0)
    conv2 = torch.nn.Conv2d(32, 32, 3, padding=1).eval()
    conv3 = torch.nn.Conv3d(16, 16, 3, padding=1).eval()
    x2, x3 = torch.randn(1, 32, 64, 64), torch.randn(1, 16, 8, 32, 32)

    @torch.no_grad()
    def step() -> None:  # about 15 parallel regions of a few hundred microseconds, as in M, W and G
        y = F.gelu(conv2(x2))
        y = F.layer_norm(y.permute(0, 2, 3, 1), (32,)).permute(0, 3, 1, 2) + x2
        y = F.group_norm(y * torch.sigmoid(y), 8)
        z = F.relu(F.instance_norm(conv3(x3)))
        z = torch.softmax(z.reshape(1, 16, -1), dim=1).reshape_as(z) + x3
        (y.mean() + z.mean()).item()

    def mean_ms() -> float:
        n, t0 = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - t0 < PROBE_SECONDS:
            step()
            n += 1
        return (time.perf_counter() - t0) / n * 1e3

    timings: dict[int, dict[str, float]] = {}
    for n in counts:
        torch.set_num_threads(n)
        step(), step()  # oneDNN primitive creation, pool start
        timings[n] = {"quiet": mean_ms()}
    with CompetingLoad(1):
        time.sleep(0.05)  # the load is scheduled
        for n in counts:
            torch.set_num_threads(n)
            step()
            timings[n]["loaded"] = mean_ms()
    return {"timings": timings, "openmp": _openmp_runtime()}


# ---------------------------------------------------------------------------------------------
# the entry point
# ---------------------------------------------------------------------------------------------
def threading_env() -> dict[str, str]:
    """The OpenMP threading variables set in this process's environment."""
    return {k: os.environ[k] for k in THREAD_VARS + WAIT_VARS if k in os.environ}


def _torch_loaded() -> bool:
    return "torch" in sys.modules


def choose_threading(*, retune: bool = False, on_measure: Callable[[], None] | None = None) -> Tuning:
    """The CPU threading for this process, from the user's variables, the cache or a measurement.

    Reads the environment and writes only the cache file: `set_process_threading` applies the result.

    Args:
        retune: measure again and replace the cached choice (and forget the cached CPU precisions,
            which depend on the threading).
        on_measure: called just before a measurement starts (to tell the user why they wait).
    """
    key = machine_key()
    if _torch_loaded():
        log.debug("CPU threading not applied: torch was imported first")
        return Tuning("not applied", None, threading_env(), key)
    user = threading_env()
    user_threads = any(k in user for k in THREAD_VARS)
    user_wait = any(k in user for k in WAIT_VARS)
    if user_threads and user_wait and not retune:
        return Tuning("env", None, user, key)
    if retune:  # the precision timings depend on the threading: measured again at the next engine build
        usercache.forget_cache_entries(PRECISION_CACHE_NAME, key)
    cached = None if retune else read_cache(key)
    if cached is not None:
        choice, entry = cached
        tuning = Tuning("cache", choice, {}, key, entry.get("timings", {}), entry.get("openmp", "unknown"))
    else:
        cores = physical_cores()
        if on_measure is not None and len(candidates(cores)) > 1:
            on_measure()
        t0 = time.perf_counter()
        try:
            # one core: one candidate, nothing to measure
            timings, openmp = measure(cores) if len(candidates(cores)) > 1 else ({}, "unknown")
            choice = choose(timings, candidates(cores)) if timings else candidates(cores)[0]
        except (OSError, RuntimeError, ValueError, KeyError, IndexError, subprocess.TimeoutExpired) as e:
            log.warning("CPU threading measurement failed (%s); using torch's defaults", e)
            return Tuning("failed", None, user, key)
        log.info("CPU threading measured in %.1f s: %s (%s)", time.perf_counter() - t0, choice.label,
                 ", ".join(f"{k}: {v['quiet']:.1f} ms quiet, {v['loaded']:.1f} ms loaded" for k, v in timings.items()))
        write_cache(key, choice, timings, openmp)
        tuning = Tuning("measured", choice, {}, key, timings, openmp)
    # the choice's variables, except where the user set threads (or a wait setting) themselves
    chosen = {var: value for var, value in choice.env().items()
              if not (var in THREAD_VARS and user_threads) and not (var in WAIT_VARS and user_wait)}
    tuning.env = {**chosen, **user}
    return tuning


def set_process_threading(*, retune: bool = False, on_measure: Callable[[], None] | None = None) -> Tuning:
    """Choose the CPU threading (`choose_threading`) and set its variables in this process's environment.

    The one place that writes them: the CLI calls it once, at a command's start, before torch is
    imported (libgomp reads them when it loads). Variables the user set are kept.

    Args:
        retune: measure again and replace the cached choice.
        on_measure: called just before a measurement starts.
    """
    tuning = choose_threading(retune=retune, on_measure=on_measure)
    if tuning.source in ("cache", "measured"):
        for var, value in tuning.env.items():
            os.environ.setdefault(var, value)  # the user's own values are in `env` already, unchanged
    _applied.tuning = tuning
    return tuning


def applied() -> Tuning | None:
    """What `set_process_threading()` did in this process, or None if it was not called."""
    return _applied.tuning


def describe() -> dict[str, Any]:
    """The threading of this process for reports: the tuning (if any) and the live torch values."""
    import torch

    tuning = _applied.tuning or Tuning("not configured", None, threading_env(), machine_key())
    d = tuning.as_dict()
    d["torch_threads"] = torch.get_num_threads()
    d["wait_policy"] = os.environ.get("OMP_WAIT_POLICY", "default")
    if d["openmp"] == "unknown":
        d["openmp"] = _openmp_runtime()
    return d


if __name__ == "__main__" and sys.argv[1:2] == ["--probe"]:
    print(json.dumps(_probe([int(n) for n in sys.argv[2:]])))
