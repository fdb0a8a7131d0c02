"""One-Euro filter (Casiez et al., CHI 2012) for the driving motion: smooth when still, responsive when moving."""

from __future__ import annotations

import math

import torch

from .kinematics import Motion, rotation_matrix


def _alpha(dt: float, cutoff: torch.Tensor | float) -> torch.Tensor | float:
    tau = 1.0 / (2 * math.pi * cutoff)
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """Element-wise One-Euro filter over a tensor stream sampled at timestamps in seconds.

    Args:
        min_cutoff: cutoff frequency (Hz) at rest; lower removes more jitter.
        beta: how fast the cutoff rises with speed; higher removes more lag.
        d_cutoff: cutoff (Hz) of the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5, d_cutoff: float = 1.0) -> None:
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.reset()

    def reset(self) -> None:
        self.x: torch.Tensor | None = None
        self.dx: torch.Tensor | None = None
        self.t: float | None = None

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        if self.x is None or self.t is None or t <= self.t:
            # first sample, or a clock that did not advance: nothing to filter against
            self.x, self.dx, self.t = x, torch.zeros_like(x), t
            return x
        dt = t - self.t
        dx = (x - self.x) / dt
        self.dx = self.dx + _alpha(dt, self.d_cutoff) * (dx - self.dx)
        cutoff = self.min_cutoff + self.beta * self.dx.abs()
        self.x = self.x + _alpha(dt, cutoff) * (x - self.x)
        self.t = t
        return self.x


class MotionSmoother:
    """One-Euro filters on the pose angles, translation, expression and scale of the driving motion."""

    FIELDS = ("pitch", "yaw", "roll", "t", "exp", "scale")

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.5) -> None:
        self.filters = {name: OneEuroFilter(min_cutoff, beta) for name in self.FIELDS}

    def reset(self) -> None:
        for f in self.filters.values():
            f.reset()

    def __call__(self, motion: Motion, t: float) -> Motion:
        smoothed = {name: self.filters[name](getattr(motion, name), t) for name in self.FIELDS}
        return Motion(
            **smoothed,
            R=rotation_matrix(smoothed["pitch"], smoothed["yaw"], smoothed["roll"]),
            kp=motion.kp,
        )
