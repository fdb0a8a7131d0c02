"""Small statistics shared by the live app's and the server's figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 95)) -> list[float | None]:
    """The `qs` percentiles of `values` (None each when there are none)."""
    if len(values) == 0:
        return [None] * len(qs)
    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), qs)]


def rate(times: Sequence[float]) -> float | None:
    """Events per second from a sequence of event times: (n - 1) / span."""
    if len(times) < 2 or times[-1] <= times[0]:
        return None
    return (len(times) - 1) / (times[-1] - times[0])


def speed_ratio(ms_per_frame: Mapping[str, Sequence[float]]) -> float | None:
    """Median baseline ms / median optimized ms: how many times faster the optimized engine is
    (None until both have frames)."""
    base, opt = ms_per_frame.get("baseline"), ms_per_frame.get("optimized")
    if not base or not opt:
        return None
    return float(np.median(base) / np.median(opt))
